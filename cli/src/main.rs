//! `xclog`, the one binary of xclog: `produce` publishes a reproducible workload, `project`
//! materializes the topic into PostgreSQL or MongoDB, `rebuild`, `status` and `verify` look
//! after the stores, `events`, `trace` and `snapshot` read them back. It is the crate that
//! depends on the producer, the projector and the workload generator together, so that the
//! producer and projector libraries never depend on each other.
//!
//! Thin by design: each subcommand (one file each) owns its clap `Args` struct, whose doc
//! comments are the `--help` text, parses its typed config (flags and `XCLOG_*` environment
//! variables, from one clap definition) and hands it to a library. Errors are reported once,
//! here, with their cause chain.

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

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    if let Err(error) = init_tracing(&args) {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

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
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (for example
    /// `info,xclog_projector=debug`); wins over -v and RUST_LOG. Default: `info` for `project`,
    /// `rebuild` and `produce`; for the commands that print a report (`events`, `trace`,
    /// `snapshot`, `status`, `verify`) warnings only, without librdkafka's connection notices
    /// (the command's error says what failed).
    #[arg(long, env = "XCLOG_LOG", global = true)]
    pub log_filter: Option<String>,
    /// More log lines: -v info, -vv debug, -vvv trace (wins over RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "XCLOG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
}

impl LogArgs {
    /// The log filter in force and where it came from (for the error when it does not
    /// parse): `--log-filter` / `XCLOG_LOG`, then `-v`, then `RUST_LOG`, then the command's
    /// default.
    fn filter(&self, command: &Command) -> (String, &'static str) {
        if let Some(filter) = &self.log_filter {
            return (filter.clone(), "--log-filter (XCLOG_LOG)");
        }
        match self.verbose {
            0 => {}
            1 => return ("info".to_owned(), "-v"),
            2 => return ("debug".to_owned(), "-vv"),
            _ => return ("trace".to_owned(), "-vvv"),
        }
        if let Some(filter) = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.trim().is_empty())
        {
            return (filter, "RUST_LOG");
        }
        // A report command ends with its answer or with one error saying what failed, so
        // librdkafka's running commentary (a broker down, retried every few ms) stays out.
        let default = if command.prints_a_report() {
            "warn,librdkafka=off,xclog_kafka=off"
        } else {
            "info"
        };
        (default.to_owned(), "the default")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a realistic, reproducible FSM workload to the log topic (load generator).
    Produce(produce::ProduceArgs),
    /// Project the log topic into a store (daemon; stops on SIGINT/SIGTERM).
    Project(project::ProjectArgs),
    /// Rebuild a store (PostgreSQL or MongoDB) from the topic beside the live one, then swap.
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

impl Command {
    /// Commands whose output is a report on stdout: they log warnings only unless asked.
    fn prints_a_report(&self) -> bool {
        matches!(
            self,
            Command::Events(_)
                | Command::Trace(_)
                | Command::Snapshot(_)
                | Command::Status(_)
                | Command::Verify(_)
        )
    }
}

/// The store a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// PostgreSQL (`--database-url` / `DATABASE_URL`).
    Postgres,
    /// MongoDB or FerretDB (`--mongodb-uri` / `MONGODB_URI`, `--mongodb-database`).
    Mongo,
}

impl Target {
    /// The name `--target` takes.
    pub fn name(self) -> &'static str {
        match self {
            Target::Postgres => "postgres",
            Target::Mongo => "mongo",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the log is: the brokers, the topic, and how to connect (every command that talks to
/// Kafka).
#[derive(Debug, clap::Args)]
pub struct LogTopicArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The log topic.
    #[arg(long, env = "XCLOG_TOPIC", default_value = "xclog.events")]
    pub topic: String,
    #[command(flatten)]
    pub kafka: kafka::KafkaSecurityArgs,
}

/// Which projection of the topic: the projector's consumer group and the name its offsets are
/// stored under (`project`, `rebuild`, `status`, `verify`).
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Consumer group of the projector; projectors with the same group share the partitions.
    #[arg(long, env = "XCLOG_GROUP", default_value = "xclog-projector")]
    pub group: String,
    /// Name under which the projector stores its offsets in the store (default: the group).
    #[arg(long, env = "XCLOG_PROJECTION")]
    pub projection: Option<String>,
    #[command(flatten)]
    pub log: LogTopicArgs,
}

impl StreamArgs {
    /// The name the offsets are stored under: `--projection`, or else the group.
    pub fn projection(&self) -> String {
        self.projection
            .clone()
            .unwrap_or_else(|| self.group.clone())
    }
}

/// How to reach each store (`verify` compares them; the other commands use the one
/// `--target` names, see [`DbArgs`]).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// PostgreSQL URL (`postgres://user:password@127.0.0.1:5432/xclog`); never logged.
    /// Required with `--target postgres`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<xclog_projector::Secret>,
    /// MongoDB connection string (`mongodb://user:password@127.0.0.1:27017/`, with
    /// `--target mongo`); never logged.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true, default_value = "mongodb://127.0.0.1:27017/", value_parser = parse_secret)]
    pub mongodb_uri: xclog_projector::Secret,
    /// MongoDB database holding `events`, `snapshots`, `instances` and `xclog_offsets`.
    #[arg(long, env = "XCLOG_MONGODB_DATABASE", default_value = "xcomponent")]
    pub mongodb_database: String,
}

impl StoreArgs {
    /// The PostgreSQL URL, or an error naming the flag and the variable.
    pub fn database_url(&self) -> anyhow::Result<&xclog_projector::Secret> {
        self.database_url.as_ref().context(
            "--database-url (DATABASE_URL) is required with --target postgres; \
             or use the MongoDB store with --target mongo",
        )
    }
}

/// The store a command works on, and how to reach it.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Store")]
pub struct DbArgs {
    /// The store.
    #[arg(long, env = "XCLOG_TARGET", default_value = "postgres", value_enum)]
    pub target: Target,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl DbArgs {
    /// A small pool for one command.
    pub async fn connect(&self) -> anyhow::Result<sqlx::PgPool> {
        connect_postgres(self.store.database_url()?, 2).await
    }

    /// A client of the MongoDB database, checked with a ping so that an unreachable server
    /// is named here rather than at the first read.
    pub async fn connect_mongo(&self) -> anyhow::Result<mongodb::Database> {
        connect_mongo(
            &self.store.mongodb_uri,
            &self.store.mongodb_database,
            "xclog",
        )
        .await
    }
}

/// What to check when a store does not answer.
const STORE_HINT: &str = "(`scripts/stack.sh status` for the local stack)";

/// A pool of at most `max_connections` to PostgreSQL, connected now: an unreachable or
/// refusing server fails here, naming the flag to check.
pub async fn connect_postgres(
    url: &xclog_projector::Secret,
    max_connections: u32,
) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url.expose())
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {url}; check --database-url (DATABASE_URL) and that the server runs {STORE_HINT}"
            )
        })
}

/// The MongoDB `database` at `uri`, after a ping (`app_name` names the client in the
/// server's logs unless the URI does).
pub async fn connect_mongo(
    uri: &xclog_projector::Secret,
    database: &str,
    app_name: &str,
) -> anyhow::Result<mongodb::Database> {
    let mut options = mongodb::options::ClientOptions::parse(uri.expose())
        .await
        .with_context(|| {
            format!(
                "--mongodb-uri (MONGODB_URI) {uri} is not a MongoDB connection string like \
                 mongodb://127.0.0.1:27017/"
            )
        })?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(10));
    options.app_name.get_or_insert_with(|| app_name.to_owned());
    let database = mongodb::Client::with_options(options)
        .with_context(|| format!("connecting to MongoDB at {uri}"))?
        .database(database);
    database
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await
        .with_context(|| {
            format!(
                "MongoDB at {uri} does not answer; check --mongodb-uri (MONGODB_URI) and that the server runs {STORE_HINT}"
            )
        })?;
    Ok(database)
}

/// What to check when Kafka does not answer or lacks the topic.
pub fn kafka_hint(brokers: &str, topic: &str) -> String {
    format!(
        "check --brokers (XCLOG_KAFKA_BROKERS, now {brokers}), --topic (XCLOG_TOPIC, now {topic}) \
         and the --kafka-* security options; `scripts/stack.sh status` shows the local stack"
    )
}

/// A configuration error with the flag and variable that set the field.
pub fn config_error(error: xclog_projector::ConfigError) -> anyhow::Error {
    let flag = match error.field {
        "brokers" => "--brokers (XCLOG_KAFKA_BROKERS)",
        "topic" => "--topic (XCLOG_TOPIC)",
        "group_id" => "--group (XCLOG_GROUP)",
        "dead_letter_topic" => "--dead-letter-topic (XCLOG_DEAD_LETTER_TOPIC)",
        "batch_max_records" => "--batch-max-records (XCLOG_BATCH_MAX_RECORDS)",
        "batch_max_bytes" => "--batch-max-mib (XCLOG_BATCH_MAX_MIB)",
        "batch_max_latency" => "--batch-max-latency-ms (XCLOG_BATCH_MAX_LATENCY_MS)",
        "batch_linger" => "--batch-linger-ms (XCLOG_BATCH_LINGER_MS)",
        "max_queued_batches" => "--max-queued-batches (XCLOG_MAX_QUEUED_BATCHES)",
        "writers" => "--writers (XCLOG_WRITERS)",
        "fetch_buffer_kbytes" => "--fetch-buffer-kbytes (XCLOG_FETCH_BUFFER_KBYTES)",
        "retry_backoff_initial" => {
            "--retry-backoff-initial-ms / --retry-backoff-max-ms (XCLOG_RETRY_BACKOFF_*_MS)"
        }
        "session_timeout" => "--session-timeout-ms (XCLOG_SESSION_TIMEOUT_MS)",
        "ready_max_lag" => "--ready-max-lag (XCLOG_READY_MAX_LAG)",
        _ => return error.into(),
    };
    anyhow::anyhow!("{error}; set {flag}")
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
/// Fails, naming where the filter came from, when the log filter does not parse.
pub fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let (filter, from) = cli.log.filter(&cli.command);
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).map_err(|error| {
        anyhow::anyhow!(
            "the log filter {filter:?} from {from} does not parse ({error}); give levels like \
             `info` or `warn,xclog_projector=debug`"
        )
    })?;
    let routine = RoutineKafkaNotices {
        show: filter
            .max_level_hint()
            .is_some_and(|level| level >= tracing::level_filters::LevelFilter::DEBUG),
    };
    let registry = tracing_subscriber::registry().with(filter).with(routine);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if cli.log.log_format == "json" {
        registry.with(layer.json()).try_init()?;
    } else {
        registry.with(layer).try_init()?;
    }
    Ok(())
}

/// librdkafka reports that a broker is still loading its group coordinator (`Coordinator load
/// in progress`, normal for a few seconds after a broker starts) and retries by itself: the
/// notice is not a warning for the user, so it shows only when debug logs are on.
struct RoutineKafkaNotices {
    show: bool,
}

impl RoutineKafkaNotices {
    const NOTICES: &[&str] = &["Coordinator load in progress", "CoordinatorLoadInProgress"];
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RoutineKafkaNotices {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        struct Find(bool);
        impl tracing::field::Visit for Find {
            fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let text = format!("{value:?}");
                self.0 |= RoutineKafkaNotices::NOTICES
                    .iter()
                    .any(|n| text.contains(n));
            }
        }
        if self.show {
            return true;
        }
        let mut find = Find(false);
        event.record(&mut find);
        !find.0
    }
}

/// Runs the chosen subcommand until it finishes or is stopped (Ctrl-C / SIGTERM).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Produce(args) => produce::run(args).await,
        Command::Project(args) => project::run(args).await,
        Command::Rebuild(args) => match args.project.db.target {
            Target::Postgres => rebuild::run(args).await,
            Target::Mongo => rebuild_mongo::run(args).await,
        },
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

    #[test]
    fn an_invalid_projector_setting_names_its_flag_and_variable() {
        use clap::Parser;
        for (flag, value, named) in [
            ("--writers", "0", "set --writers (XCLOG_WRITERS)"),
            (
                "--batch-max-records",
                "0",
                "set --batch-max-records (XCLOG_BATCH_MAX_RECORDS)",
            ),
            (
                "--retry-backoff-initial-ms",
                "0",
                "is 0 ms; set --retry-backoff-initial-ms",
            ),
        ] {
            let cli = super::Cli::try_parse_from(["xclog", "project", flag, value]).unwrap();
            let super::Command::Project(args) = cli.command else {
                panic!("parsed as another command");
            };
            let error = args.projector_config().unwrap_err().to_string();
            assert!(error.contains(named), "{error}");
        }
    }

    /// The lines a subscriber with [`super::RoutineKafkaNotices`] writes for two warnings.
    fn written(show: bool) -> String {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt as _;

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(super::RoutineKafkaNotices { show })
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                error = "Message consumption error: CoordinatorLoadInProgress (Broker: Coordinator load in progress)",
                "kafka consumer error"
            );
            tracing::warn!("librdkafka: GroupCoordinator: Coordinator load in progress");
            tracing::warn!(error = "Broker: Not coordinator", "kafka consumer error");
        });
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn coordinator_load_notices_show_only_with_debug_logs_and_other_warnings_always() {
        let quiet = written(false);
        assert!(!quiet.contains("Coordinator load"), "{quiet}");
        assert!(quiet.contains("Not coordinator"), "{quiet}");
        let debug = written(true);
        assert_eq!(
            debug.matches("Coordinator load in progress").count(),
            2,
            "{debug}"
        );
    }
}
