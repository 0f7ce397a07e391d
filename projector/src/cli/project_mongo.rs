//! `xclog project --target mongo`: the same pipeline as PostgreSQL, into MongoDB / FerretDB.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use xclog_projector::sink::mongo::{MongoSink, MongoSinkConfig};
use xclog_projector::{ErrorClass, Projector, Secret};

/// MongoDB options of `xclog project` (used with `--target mongo`).
#[derive(Debug, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string (`mongodb://user:password@127.0.0.1:27017/`); never logged.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true, default_value = "mongodb://127.0.0.1:27017/", value_parser = super::parse_secret)]
    pub mongodb_uri: Secret,
    /// MongoDB database holding `events`, `snapshots`, `instances` and `xclog_offsets`.
    #[arg(long, env = "XCLOG_MONGODB_DATABASE", default_value = "xcomponent")]
    pub mongodb_database: String,
    /// Do not ask for `w: "majority"` on writes (majority is what a replica set needs for an
    /// acknowledged batch to survive a failover; standalone servers treat it as `w: 1`).
    #[arg(long, env = "XCLOG_MONGODB_NO_MAJORITY")]
    pub mongodb_no_majority: bool,
    /// How long one write-path command may wait for the server's reply, in ms; then the batch
    /// fails as transient and is retried (so a frozen server never holds a writer for ever).
    #[arg(long, env = "XCLOG_MONGODB_COMMAND_TIMEOUT_MS", default_value_t = xclog_projector::sink::mongo::DEFAULT_COMMAND_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub mongodb_command_timeout_ms: u64,
}

/// Runs the projector into MongoDB until SIGINT/SIGTERM.
pub async fn run(args: super::project::ProjectArgs) -> anyhow::Result<ExitCode> {
    let config = args.projector_config()?;
    let mut sink_config = MongoSinkConfig::new(
        args.mongo.mongodb_uri.clone(),
        args.projection
            .clone()
            .unwrap_or_else(|| args.group.clone()),
    );
    sink_config.database = args.mongo.mongodb_database.clone();
    sink_config.majority_writes = !args.mongo.mongodb_no_majority;
    sink_config.command_timeout = Duration::from_millis(args.mongo.mongodb_command_timeout_ms);
    tracing::info!(config = ?config, uri = %sink_config.uri, database = %sink_config.database, "starting projector");
    let sink = MongoSink::connect(&sink_config).await?;
    let mut backoff = Duration::from_millis(200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match sink.ensure_indexes().await {
            Ok(()) => break,
            Err(error)
                if error.class() == ErrorClass::Transient
                    && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %error, "MongoDB not reachable for index creation; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error).context("creating MongoDB indexes"),
        }
    }
    let projector = Projector::new(config, sink)?;
    projector.run(super::shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
