//! `xclog verify`: compares the topic and the stores (the logic is `xclog_projector::verify`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use xclog_projector::read::postgres::PgReader;
use xclog_projector::verify::sources::TopicSource;
use xclog_projector::verify::{SourceKind, VerifyOptions, verify};

/// Options of `xclog verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Sources to compare, two or three of `topic`, `postgres`, `mongo` (comma-separated).
    #[arg(long, env = "XCLOG_VERIFY_SOURCES", default_value = "topic,postgres", value_delimiter = ',', value_parser = SourceKind::parse)]
    pub sources: Vec<SourceKind>,
    /// Name under which the MongoDB projector stores its offsets (default: as PostgreSQL's).
    #[arg(long, env = "XCLOG_MONGO_PROJECTION")]
    pub mongo_projection: Option<String>,
    /// Most differences printed per pair of sources.
    #[arg(long, default_value_t = 20)]
    pub max_differences: usize,
    /// Give up reading the topic after this many seconds without a record.
    #[arg(long, default_value_t = 30)]
    pub topic_timeout_secs: u64,
    /// Print the report as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stream: super::StreamArgs,
    #[command(flatten)]
    pub store: super::StoreArgs,
}

/// Runs the comparison: exit code 0 when the sources agree, 1 when they differ, 2 when the
/// comparison could not be made (the error is printed).
pub async fn run(args: VerifyArgs) -> ExitCode {
    match compare(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn compare(args: &VerifyArgs) -> anyhow::Result<bool> {
    let projection = args.stream.projection();
    let postgres = if args.sources.contains(&SourceKind::Postgres) {
        let url = args.store.database_url.as_ref().context(
            "--database-url (DATABASE_URL) is required with --sources postgres; \
             or compare other sources, e.g. --sources topic,mongo",
        )?;
        Some(PgReader::new(super::connect_postgres(url, 2).await?))
    } else {
        None
    };
    let mongo = if args.sources.contains(&SourceKind::Mongo) {
        Some(
            super::connect_mongo(
                &args.store.mongodb_uri,
                &args.store.mongodb_database,
                "xclog-verify",
            )
            .await?,
        )
    } else {
        None
    };
    let options = VerifyOptions {
        sources: args.sources.clone(),
        topic: TopicSource {
            brokers: args.stream.log.brokers.clone(),
            topic: args.stream.log.topic.clone(),
            limits: xclog_schema::Limits::default(),
            idle_timeout: Duration::from_secs(args.topic_timeout_secs),
            kafka_settings: args.stream.log.kafka.settings()?,
        },
        postgres,
        postgres_projection: projection.clone(),
        mongo,
        mongo_projection: args.mongo_projection.clone().unwrap_or(projection),
        max_differences: args.max_differences,
    };
    let report = verify(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.agree)
}
