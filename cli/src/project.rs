//! `xclog project`: the projector daemon. Consumes the log topic in a consumer group and
//! materializes it into the target store until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use xclog_projector::config::defaults;
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::sink::postgres::{PgSink, PgSinkConfig};
use xclog_projector::{ErrorClass, Projector, ProjectorConfig, SinkError};

use super::Target;

/// Options of `xclog project`.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// Dead-letter topic (default: `<topic>.dlq`); created if missing.
    #[arg(long, env = "XCLOG_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Connections in the PostgreSQL pool (raised to `--writers` + 1 if lower).
    #[arg(long, env = "XCLOG_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,
    /// Do not apply the migrations at start (apply them yourself first).
    #[arg(long, env = "XCLOG_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Cut a batch when it holds this many records...
    #[arg(long, env = "XCLOG_BATCH_MAX_RECORDS", default_value_t = defaults::BATCH_MAX_RECORDS)]
    pub batch_max_records: usize,
    /// ...or when its records hold this many MiB (bounds memory whatever the record sizes)...
    #[arg(long, env = "XCLOG_BATCH_MAX_MIB", default_value_t = defaults::BATCH_MAX_MIB)]
    pub batch_max_mib: usize,
    /// ...or, while the writer is busy, when its first record has waited this many
    /// milliseconds...
    #[arg(long, env = "XCLOG_BATCH_MAX_LATENCY_MS", default_value_t = defaults::BATCH_MAX_LATENCY_MS)]
    pub batch_max_latency_ms: u64,
    /// ...or, when the writer is idle, after this many milliseconds (at most the max latency).
    #[arg(long, env = "XCLOG_BATCH_LINGER_MS", default_value_t = defaults::BATCH_LINGER_MS)]
    pub batch_linger_ms: u64,
    /// Batches cut but not yet written; when full, partitions are paused.
    #[arg(long, env = "XCLOG_MAX_QUEUED_BATCHES", default_value_t = defaults::MAX_QUEUED_BATCHES)]
    pub max_queued_batches: usize,
    /// Writers committing concurrently, each on its own database connection; they share the
    /// batches of the assigned partitions (dealt out over one lane more than the writers).
    #[arg(long, env = "XCLOG_WRITERS", default_value_t = defaults::WRITERS)]
    pub writers: usize,
    /// librdkafka prefetch buffer of the consumer (all its partitions), in KiB.
    #[arg(long, env = "XCLOG_FETCH_BUFFER_KBYTES", default_value_t = defaults::FETCH_BUFFER_KBYTES)]
    pub fetch_buffer_kbytes: usize,
    /// First backoff after a transient store error, in ms (doubles up to the max).
    #[arg(long, env = "XCLOG_RETRY_BACKOFF_INITIAL_MS", default_value_t = defaults::RETRY_BACKOFF_INITIAL_MS)]
    pub retry_backoff_initial_ms: u64,
    /// Longest backoff between retries of one batch, in ms.
    #[arg(long, env = "XCLOG_RETRY_BACKOFF_MAX_MS", default_value_t = defaults::RETRY_BACKOFF_MAX_MS)]
    pub retry_backoff_max_ms: u64,
    /// On shutdown or revoke, how long to wait for the in-flight batch, in ms.
    #[arg(long, env = "XCLOG_DRAIN_TIMEOUT_MS", default_value_t = defaults::DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u64,
    /// Consumer group session timeout, in ms: no heartbeat for this long and the partitions go
    /// to the other members (at least 3000).
    #[arg(long, env = "XCLOG_SESSION_TIMEOUT_MS", default_value_t = defaults::SESSION_TIMEOUT_MS)]
    pub session_timeout_ms: u64,
    /// `/readyz` is 200 once assigned and every partition lags by at most this many records.
    #[arg(long, env = "XCLOG_READY_MAX_LAG", default_value_t = defaults::READY_MAX_LAG)]
    pub ready_max_lag: i64,
    /// When records were deleted from the topic before they were projected (retention ran past
    /// a stopped projector), skip the gap (logged, counted in
    /// `xclog_projector_offsets_skipped`) instead of stopping the partition.
    #[arg(long, env = "XCLOG_ACCEPT_OFFSET_GAPS")]
    pub accept_offset_gaps: bool,
    /// Address of the ops server (/healthz, /readyz, /metrics); `off` disables. Loopback by
    /// default; another address (`0.0.0.0:9187` in a container) is allowed and logged.
    #[arg(long, env = "XCLOG_HTTP_ADDR", default_value = "127.0.0.1:9187")]
    pub http_addr: String,
    /// Check the configuration (flags, environment, secret files) and exit without connecting
    /// to anything: 0 when the projector would start with it.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub stream: super::StreamArgs,
    #[command(flatten)]
    pub db: super::DbArgs,
    #[command(flatten)]
    pub mongo: super::project_mongo::MongoWriteArgs,
}

impl ProjectArgs {
    /// The PostgreSQL sink configuration these options describe.
    pub fn pg_sink_config(&self, config: &ProjectorConfig) -> anyhow::Result<PgSinkConfig> {
        Ok(PgSinkConfig {
            database_url: self.db.store.database_url()?.clone(),
            projection: self.stream.projection(),
            // Every writer holds a connection while it commits, and offsets load on another.
            max_connections: self.db_max_connections.max(config.writers as u32 + 1),
            acquire_timeout: Duration::from_secs(5),
        })
    }

    /// The pipeline configuration (target-independent), validated.
    pub fn projector_config(&self) -> anyhow::Result<ProjectorConfig> {
        let log = &self.stream.log;
        let mut config = ProjectorConfig::new(&log.brokers, &log.topic, &self.stream.group);
        if let Some(dlq) = &self.dead_letter_topic {
            config.dead_letter_topic = dlq.clone();
        }
        config.batch_max_records = self.batch_max_records;
        config.batch_max_bytes = self.batch_max_mib.saturating_mul(1 << 20);
        config.accept_offset_gaps = self.accept_offset_gaps;
        config.batch_max_latency = Duration::from_millis(self.batch_max_latency_ms);
        // The linger is at most the max latency (a shorter max latency lowers both).
        config.batch_linger =
            Duration::from_millis(self.batch_linger_ms.min(self.batch_max_latency_ms));
        config.max_queued_batches = self.max_queued_batches;
        config.fetch_buffer_kbytes = self.fetch_buffer_kbytes;
        config.writers = self.writers;
        config.retry_backoff_initial = Duration::from_millis(self.retry_backoff_initial_ms);
        config.retry_backoff_max = Duration::from_millis(self.retry_backoff_max_ms);
        config.drain_timeout = Duration::from_millis(self.drain_timeout_ms);
        config.session_timeout = Duration::from_millis(self.session_timeout_ms);
        config.ready_max_lag = self.ready_max_lag;
        config.kafka_settings = log.kafka.settings()?;
        config.http_addr = match self.http_addr.as_str() {
            "off" | "" => None,
            addr => Some(addr.parse::<SocketAddr>().with_context(|| {
                format!("--http-addr {addr} is not an address like 127.0.0.1:9187 (or `off`)")
            })?),
        };
        config.validate().map_err(super::config_error)?;
        Ok(config)
    }
}

/// Runs the projector until SIGINT/SIGTERM.
pub async fn run(args: ProjectArgs) -> anyhow::Result<ExitCode> {
    let config = args.projector_config()?;
    if args.check_config {
        if args.db.target == Target::Postgres {
            args.pg_sink_config(&config)?;
        }
        println!(
            "configuration valid: target {}, brokers {}, topic {}, group {}, ops server {}",
            args.db.target,
            config.brokers,
            config.topic,
            config.group_id,
            config
                .http_addr
                .map_or_else(|| "off".to_owned(), |addr| addr.to_string())
        );
        return Ok(ExitCode::SUCCESS);
    }
    let shutdown = super::shutdown_on_signal();
    match args.db.target {
        Target::Postgres => {
            let sink_config = args.pg_sink_config(&config)?;
            tracing::info!(config = ?config, database = %sink_config.database_url, "starting projector");
            let sink = PgSink::connect_lazy(&sink_config)?;
            if !args.no_migrate {
                prepare_store(
                    "applying the migrations",
                    "--database-url (DATABASE_URL)",
                    || sink.migrate(),
                )
                .await?;
            }
            Projector::new(config, sink)?.run(shutdown).await?;
        }
        Target::Mongo => {
            let sink_config = args
                .mongo
                .sink_config(&args.db.store, args.stream.projection());
            tracing::info!(config = ?config, uri = %sink_config.uri, database = %sink_config.database, "starting projector");
            let sink = MongoSink::connect(&sink_config).await?;
            prepare_store(
                "creating the MongoDB indexes",
                "--mongodb-uri (MONGODB_URI)",
                || sink.ensure_indexes(),
            )
            .await?;
            Projector::new(config, sink)?.run(shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// First backoff of [`prepare_store`]; it doubles up to [`PREPARE_BACKOFF_MAX`].
const PREPARE_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest backoff of [`prepare_store`].
const PREPARE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long [`prepare_store`] waits for a store that is starting.
const PREPARE_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a store's startup `step` (migrations, indexes) once the store answers: transient
/// errors (the store starting or restarting beside the projector) are retried with a backoff
/// for up to a minute; other errors, and the last transient one, stop the command naming the
/// step and the `flag` to check.
async fn prepare_store<F, Fut>(step: &str, flag: &str, mut attempt: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    let deadline = Instant::now() + PREPARE_DEADLINE;
    let mut backoff = PREPARE_BACKOFF_INITIAL;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(error)
                if matches!(error.class(), ErrorClass::Transient | ErrorClass::TimedOut)
                    && Instant::now() < deadline =>
            {
                tracing::warn!(error = %error, step, "store not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PREPARE_BACKOFF_MAX);
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("{step}; check {flag} and that the store runs"));
            }
        }
    }
}
