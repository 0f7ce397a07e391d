//! `mongo-bulk`: the Mongo limit. Unordered `insertMany` of the documents file into a fresh
//! collection that has the indexes of the xcomponent-ai store. Parsing the file is not timed,
//! only the inserts are.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mongodb::bson::{Document, doc};
use mongodb::options::InsertManyOptions;
use mongodb::{Client, IndexModel};
use serde_json::{Value, json};

/// Options of `xclog-bench mongo-bulk`.
#[derive(Debug, clap::Args)]
pub struct MongoBulkArgs {
    /// MongoDB URI.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/"
    )]
    uri: String,
    /// Database to create the collection in (dropped first).
    #[arg(long)]
    db: String,
    /// Collection name.
    #[arg(long, default_value = "events")]
    collection: String,
    /// The documents, one JSON object per line (`prepare --docs-file`).
    #[arg(long)]
    file: PathBuf,
    /// Documents per `insertMany` call.
    #[arg(long, default_value_t = 10_000)]
    chunk: usize,
}

/// Runs the inserts; returns `{"docs":..,"seconds":..,"rate":..}`.
pub async fn run(args: MongoBulkArgs) -> anyhow::Result<Value> {
    let client = Client::with_uri_str(&args.uri)
        .await
        .with_context(|| format!("connecting to {}", args.uri))?;
    let db = client.database(&args.db);
    db.drop().await.context("dropping the bulk database")?;
    let collection = db.collection::<Document>(&args.collection);
    let indexes = [
        "instanceId",
        "componentName",
        "machineName",
        "persistedAt",
        "causedBy",
    ]
    .into_iter()
    .map(|field| IndexModel::builder().keys(doc! { field: 1 }).build());
    collection
        .create_indexes(indexes)
        .await
        .context("creating the indexes")?;

    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut lines = BufReader::new(file).lines();
    let options = InsertManyOptions::builder().ordered(false).build();
    let mut timed = Duration::ZERO;
    let mut docs = 0u64;
    let mut line_no = 0usize;
    loop {
        let mut chunk = Vec::with_capacity(args.chunk);
        for line in lines.by_ref().take(args.chunk.max(1)) {
            line_no += 1;
            let line = line?;
            let value: serde_json::Map<String, Value> = serde_json::from_str(&line)
                .with_context(|| format!("{} line {line_no}", args.file.display()))?;
            chunk.push(
                Document::try_from(value)
                    .with_context(|| format!("{} line {line_no}", args.file.display()))?,
            );
        }
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        let started = Instant::now();
        let result = collection
            .insert_many(chunk)
            .with_options(options.clone())
            .await
            .context("insertMany")?;
        timed += started.elapsed();
        if result.inserted_ids.len() != n {
            bail!(
                "insertMany acknowledged {} of {n} documents",
                result.inserted_ids.len()
            );
        }
        docs += n as u64;
    }
    let seconds = timed.as_secs_f64();
    Ok(json!({"docs": docs, "seconds": seconds, "rate": docs as f64 / seconds.max(1e-9)}))
}
