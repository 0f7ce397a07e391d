//! Subcommands of `xclog`. One file per subcommand; each owns its clap `Args` struct,
//! whose doc comments are the `--help` text.

mod events;
mod kafka;
mod produce;
mod project;
mod project_mongo;
mod rebuild;
mod rebuild_mongo;
mod snapshot;
mod status;
mod store;
mod trace;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// xclog: the durable event log for FSM runtimes (Kafka -> PostgreSQL / MongoDB).
#[derive(Debug, Parser)]
#[command(name = "xclog", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (for example `info,xclog_projector=debug`).
    #[arg(long, env = "XCLOG_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "XCLOG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a realistic, reproducible FSM workload to the log topic (load generator).
    Produce(produce::ProduceArgs),
    /// Project the log topic into a store (daemon; stops on SIGINT/SIGTERM).
    Project(project::ProjectArgs),
    /// Rebuild the PostgreSQL store from the topic beside the live one, then swap atomically.
    Rebuild(rebuild::RebuildArgs),
    /// Show stored events: one instance's history (log order) or a time range.
    Events(events::EventsArgs),
    /// Show the causes and effects of an event, across components.
    Trace(trace::TraceArgs),
    /// Show, list or delete instance snapshots.
    Snapshot(snapshot::SnapshotArgs),
    /// How far a projection's store has got through the topic (stored offsets against the
    /// topic's end); `--wait` blocks until it has caught up.
    Status(status::StatusArgs),
    /// Compare the topic, the PostgreSQL store and the MongoDB store (exit 0: they agree,
    /// 1: they differ, 2: the comparison could not be made).
    Verify(verify::VerifyArgs),
}

/// Which topic and which projection of it, for the commands that compare a store with the
/// topic (`status`, `verify`).
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The log topic.
    #[arg(long, env = "XCLOG_TOPIC", default_value = "xclog.events")]
    pub topic: String,
    /// Consumer group of the projector (its offsets are stored under this name unless
    /// --projection is given).
    #[arg(long, env = "XCLOG_GROUP", default_value = "xclog-projector")]
    pub group: String,
    /// Name under which the projector stores its offsets (default: the group).
    #[arg(long, env = "XCLOG_PROJECTION")]
    pub projection: Option<String>,
    #[command(flatten)]
    pub kafka: kafka::KafkaSecurityArgs,
}

impl StreamArgs {
    /// The name the offsets are stored under.
    pub fn projection(&self) -> String {
        self.projection
            .clone()
            .unwrap_or_else(|| self.group.clone())
    }
}

/// Where the store is, for the read subcommands.
#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// Store to read: `postgres` or `mongo` (MongoDB / FerretDB).
    #[arg(long, env = "XCLOG_TARGET", default_value = "postgres", value_parser = ["postgres", "mongo"])]
    pub target: String,
    /// PostgreSQL URL (`postgres://user:password@127.0.0.1:5432/xclog`); never logged.
    /// Required with `--target postgres`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<xclog_projector::Secret>,
    /// MongoDB connection string (with `--target mongo`); never logged.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true, default_value = "mongodb://127.0.0.1:27017/", value_parser = parse_secret)]
    pub mongodb_uri: xclog_projector::Secret,
    /// MongoDB database (with `--target mongo`).
    #[arg(long, env = "XCLOG_MONGODB_DATABASE", default_value = "xcomponent")]
    pub mongodb_database: String,
}

impl DbArgs {
    /// A small pool for one command.
    pub async fn connect(&self) -> anyhow::Result<sqlx::PgPool> {
        use anyhow::Context as _;
        let url = self
            .database_url
            .as_ref()
            .context("--database-url (DATABASE_URL) is required with --target postgres")?;
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url.expose())
            .await
            .with_context(|| format!("connecting to {url}"))
    }
}

/// Parses a secret flag value (kept out of `Debug` output).
pub fn parse_secret(value: &str) -> Result<xclog_projector::Secret, String> {
    if value.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(xclog_projector::Secret::new(value))
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for SIGTERM; only Ctrl-C stops");
                    let _ = ctrl_c.await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; draining");
        t.cancel();
    });
    token
}

/// Installs the global tracing subscriber (logs go to stderr; stdout is for command output).
pub fn init_tracing(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the chosen subcommand until it finishes or is stopped (Ctrl-C / SIGTERM).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Produce(args) => produce::run(args).await,
        Command::Project(args) => project::run(args).await,
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Snapshot(args) => snapshot::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Verify(args) => Ok(verify::run(args).await),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_database_url_never_shows_in_the_parsed_arguments() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "xclog",
            "project",
            "--database-url",
            "postgres://u:hunter2@127.0.0.1/db",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
