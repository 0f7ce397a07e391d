//! Small cleanup and check tools: `mongo-count`, `mongo-drop`, `delete-topics`.

use std::time::Duration;

use anyhow::Context as _;
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};

/// Options naming one Mongo database (and optionally a collection).
#[derive(Debug, clap::Args)]
pub struct MongoArgs {
    /// MongoDB URI.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/"
    )]
    uri: String,
    /// Database.
    #[arg(long)]
    db: String,
    /// Collection (for `mongo-count`).
    #[arg(long, default_value = "events")]
    collection: String,
}

/// Options of `delete-topics`.
#[derive(Debug, clap::Args)]
pub struct DeleteTopicsArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topics to delete (missing ones are ignored).
    topics: Vec<String>,
}

/// Prints the exact number of documents in the collection.
pub async fn mongo_count(args: MongoArgs) -> anyhow::Result<Value> {
    let client = mongodb::Client::with_uri_str(&args.uri).await?;
    let n = client
        .database(&args.db)
        .collection::<Document>(&args.collection)
        .count_documents(doc! {})
        .await
        .with_context(|| format!("counting {}.{}", args.db, args.collection))?;
    Ok(json!(n))
}

/// Drops the database.
pub async fn mongo_drop(args: MongoArgs) -> anyhow::Result<Value> {
    let client = mongodb::Client::with_uri_str(&args.uri).await?;
    client
        .database(&args.db)
        .drop()
        .await
        .with_context(|| format!("dropping {}", args.db))?;
    Ok(json!({"dropped": args.db}))
}

/// Deletes topics.
pub async fn delete_topics(args: DeleteTopicsArgs) -> anyhow::Result<Value> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let names: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    Ok(json!({"deleted": deleted}))
}
