//! Wiring: `Projector::new(config, sink)` then `run(shutdown)`. The shutdown token is an
//! argument so tests pass their own; the binary cancels it on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use xclog_kafka::{ConnectError, create_error};

use crate::config::{ConfigError, ProjectorConfig, defaults};
use crate::consumer::{ConsumerLoop, RecordCheck};
use crate::dead_letter::{DeadLetterError, DeadLetterProducer};
use crate::kafka;
use crate::lanes::{LaneSenders, Shared};
use crate::metrics::Metrics;
use crate::rebalance::{OffsetLoader, ProjectorContext};
use crate::sink::{Sink, SinkError};
use crate::watermarks::{self, Watermarks};
use crate::writer::{WriteLimit, Writer};

/// Why the projector stopped (or could not start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The configuration cannot work: fix the named field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka client setup failed: check brokers and Kafka settings.
    #[error("cannot set up the Kafka consumer; check brokers and Kafka settings")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The brokers refused the connection (credentials, certificate) or a Kafka client could
    /// not be created from the settings: fix the Kafka security settings.
    #[error("cannot connect to Kafka")]
    Connect(#[source] ConnectError),
    /// The dead-letter topic or producer could not be set up.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// The ops server could not bind its address: pick a free port.
    #[error("cannot bind the ops server on {addr}; pick a free port")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed in a way retrying cannot fix: check configuration and migrations.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// An internal task panicked (a bug): restart; the store is consistent (offsets are data).
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A configured projector for one sink.
#[derive(Debug)]
pub struct Projector<S> {
    config: ProjectorConfig,
    sink: Arc<S>,
    metrics: Arc<Metrics>,
}

impl<S: Sink> Projector<S> {
    /// Validates the configuration; connects nothing yet.
    pub fn new(config: ProjectorConfig, sink: S) -> Result<Self, ProjectorError> {
        config.validate()?;
        Ok(Self {
            config,
            sink: Arc::new(sink),
            metrics: Metrics::new(),
        })
    }

    /// The projector's metrics (also served on `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Consumes and materializes until `shutdown` is cancelled (or a fatal error), then stops
    /// fetching, finishes or abandons the in-flight batch, and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        let Projector {
            config,
            sink,
            metrics,
        } = self;
        // A child token: a fatal error stops this projector without cancelling the caller's.
        let stop = shutdown.child_token();

        let mut http_task = None;
        if let Some(addr) = config.http_addr {
            let (local, serve) = crate::http::bind(addr, metrics.clone(), stop.clone())
                .await
                .map_err(|source| ProjectorError::Http { addr, source })?;
            if local.ip().is_loopback() {
                tracing::info!(addr = %local, "ops server listening (/healthz, /readyz, /metrics)");
            } else {
                tracing::warn!(
                    addr = %local,
                    "ops server listening beyond loopback (/healthz, /readyz, /metrics): other \
                     hosts can read the metrics"
                );
            }
            http_task = Some(tokio::spawn(serve));
        }

        let lanes = config.lanes();
        let shared = Arc::new(Shared::new(lanes, config.writers));
        let handle = tokio::runtime::Handle::current();
        let loader: OffsetLoader = {
            let sink = sink.clone();
            let topic = config.topic.clone();
            Arc::new(move |partitions: &[i32]| {
                handle.block_on(sink.load_offsets(&topic, partitions))
            })
        };
        let check: RecordCheck = {
            let sink = sink.clone();
            Arc::new(move |record| sink.check(record))
        };
        let context = ProjectorContext {
            topic: config.topic.clone(),
            shared: shared.clone(),
            loader: loader.clone(),
            drain_timeout: config.drain_timeout,
            backoff_max: config.retry_backoff_max,
            shutdown: stop.clone(),
        };
        // Connect first: a refused password or certificate stops the projector here, with
        // what to check, instead of a consumer that retries for ever. Brokers that are down
        // are waited for by the consumer, as before.
        let partitions = {
            let (brokers, settings, topic) = (
                config.brokers.clone(),
                config.kafka_settings.clone(),
                config.topic.clone(),
            );
            let connected = tokio::task::spawn_blocking(move || {
                kafka::connect(&brokers, &settings, Some(&topic), Duration::from_secs(10)).map(
                    |(_, metadata)| {
                        metadata
                            .topics()
                            .iter()
                            .find(|t| t.name() == topic)
                            .map(|t| t.partitions().len() as i32)
                    },
                )
            })
            .await
            .map_err(|e| ProjectorError::Task(e.to_string()))?;
            match connected {
                Ok(partitions) => partitions.unwrap_or(1),
                Err(error @ ConnectError::Unreachable { .. }) => {
                    tracing::warn!(error = %error, "Kafka does not answer yet; starting anyway");
                    1
                }
                Err(error) => return Err(ProjectorError::Connect(error)),
            }
        };
        let consumer: BaseConsumer<ProjectorContext> =
            kafka::client_config(&config.brokers, &config.kafka_settings)
                .set("group.id", &config.group_id)
                // Group offsets, for lag tools only: each committed batch stores its offsets
                // locally and librdkafka commits what is stored once a second (and on revoke and
                // close), instead of one `OffsetCommit` request per batch.
                .set("enable.auto.commit", "true")
                .set(
                    "auto.commit.interval.ms",
                    defaults::GROUP_COMMIT_INTERVAL_MS.to_string(),
                )
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("partition.assignment.strategy", "roundrobin")
                .set(
                    "queued.max.messages.kbytes",
                    config.fetch_buffer_kbytes.to_string(),
                )
                .set(
                    "fetch.queue.backoff.ms",
                    defaults::FETCH_QUEUE_BACKOFF_MS.to_string(),
                )
                .set(
                    "session.timeout.ms",
                    config.session_timeout.as_millis().to_string(),
                )
                .set(
                    "heartbeat.interval.ms",
                    defaults::HEARTBEAT_INTERVAL_MS.to_string(),
                )
                .create_with_context(context)
                .map_err(|e| ProjectorError::Connect(create_error(&e)))?;
        let consumer = Arc::new(consumer);

        DeadLetterProducer::ensure_topic(&config, partitions).await?;
        let dead_letters = DeadLetterProducer::new(&config)?;

        consumer
            .subscribe(&[&config.topic])
            .map_err(ProjectorError::Kafka)?;
        tracing::info!(topic = %config.topic, group = %config.group_id, sink = sink.name(), "projector started");

        // The queue bound is shared out over the lanes, at least one batch each.
        let per_lane = config.max_queued_batches.div_ceil(lanes).max(1);
        let (queues, handoff) = LaneSenders::channel(lanes, per_lane);
        let mut writer_tasks = Vec::with_capacity(config.writers);
        let limit = Arc::new(WriteLimit::new(
            sink.command_timeout(),
            config.batch_max_records,
        ));
        for index in 0..config.writers {
            let writer = Writer {
                sink: sink.clone(),
                shared: shared.clone(),
                index,
                dead_letters: dead_letters.clone(),
                consumer: Some(consumer.clone()),
                metrics: metrics.clone(),
                backoff_initial: config.retry_backoff_initial,
                backoff_max: config.retry_backoff_max,
                shutdown: stop.clone(),
                limit: limit.clone(),
            };
            writer_tasks.push(tokio::spawn(writer.run(handoff.clone())));
        }
        drop(handoff);
        drop(dead_letters);
        let watermarks = Arc::new(Watermarks::default());
        let probe_client: BaseConsumer =
            kafka::client_config(&config.brokers, &config.kafka_settings)
                .set("group.id", format!("{}-watermarks", config.group_id))
                .create()
                .map_err(|e| ProjectorError::Connect(create_error(&e)))?;
        let probe_topic = config.topic.clone();
        let probe_marks = watermarks.clone();
        let consumer_loop = ConsumerLoop {
            consumer,
            shared,
            queues,
            check,
            loader,
            config,
            metrics,
            watermarks,
            shutdown: stop.clone(),
        };
        let consumer_thread = std::thread::Builder::new()
            .name("xclog-consumer".into())
            .spawn(move || consumer_loop.run())
            .map_err(|e| ProjectorError::Task(format!("cannot spawn the consumer thread: {e}")))?;

        let probe_thread =
            watermarks::spawn_probe(probe_client, probe_topic, probe_marks, stop.clone()).map_err(
                |e| {
                    stop.cancel();
                    ProjectorError::Task(format!("cannot spawn the watermark probe: {e}"))
                },
            )?;
        // The first fatal error of any writer is the projector's.
        let mut written = Ok(());
        for task in writer_tasks {
            let result = task
                .await
                .map_err(|e| ProjectorError::Task(e.to_string()))?;
            if written.is_ok() {
                written = result;
            }
        }
        // The writers end when the consumer closes the queues; make sure the consumer is gone.
        stop.cancel();
        tokio::task::spawn_blocking(move || consumer_thread.join())
            .await
            .map_err(|e| ProjectorError::Task(e.to_string()))?
            .map_err(|_| ProjectorError::Task("consumer thread panicked".into()))?;
        tokio::task::spawn_blocking(move || probe_thread.join())
            .await
            .map_err(|e| ProjectorError::Task(e.to_string()))?
            .map_err(|_| ProjectorError::Task("watermark probe thread panicked".into()))?;
        if let Some(task) = http_task {
            let _ = task.await;
        }
        tracing::info!("projector stopped");
        written.map_err(ProjectorError::from)
    }
}
