//! `xclog produce`: the load generator. Publishes the reproducible workload of
//! `xclog_workload` (Order, Inventory and Payment flows with causedBy chains and
//! snapshots) and prints what the brokers acknowledged.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use xclog_producer::{Compression, Encoding, PendingAck, Producer, ProducerConfig, TopicSpec};
use xclog_schema::RecordKind;
use xclog_workload::{Workload, WorkloadConfig};

/// The linger of `xclog produce`: fire-and-forget publishing ran 1.2x-1.7x faster with 5 ms
/// than with none (`docs/BENCHMARKS.md`, "Producer").
const BULK_LINGER: Duration = Duration::from_millis(5);

/// Options of `xclog produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Create the topic with this many partitions if it does not exist (infinite retention);
    /// an existing topic is checked for settings that would lose data. Without it, the
    /// topic must exist.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// Replication factor used when --partitions creates the topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub replication: i32,
    /// Number of events to publish (snapshots come in addition).
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Order flows in progress at once; each flow is one Order, one Inventory and one
    /// Payment instance, replaced by a new flow when it finishes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub instances: u64,
    /// Target publishing rate in events per second; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Approximate size in bytes of each event's JSON payload.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Seed of the workload: the same seed publishes the same ids and contents.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Snapshot every N transitions of an instance (and always on final/error states).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub snapshot_interval: u32,
    /// Wire encoding of record values.
    #[arg(long, default_value = "protobuf", value_parser = ["protobuf", "json"])]
    pub encoding: String,
    /// Batch compression: none, gzip, snappy or lz4.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4"])]
    pub compression: String,
    /// Most records awaiting acknowledgement at once (bounds the generator's memory).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending: u64,
    // The topic to publish to, and its brokers.
    #[command(flatten)]
    pub log: super::LogTopicArgs,
}

/// Runs the load generator until the workload is published or Ctrl-C, then prints totals.
pub async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let mut config = ProducerConfig::new(&args.log.brokers, &args.log.topic);
    config.client_id = "xclog-produce".to_owned();
    // A bulk publisher that awaits no record on its own: it lingers to fill larger requests
    // (the producer's default of none serves runtimes that await each append).
    config.linger = BULK_LINGER;
    config.encoding = args
        .encoding
        .parse::<Encoding>()
        .map_err(|problem| anyhow::anyhow!("--encoding: {problem}"))?;
    config.compression = args.compression.parse::<Compression>()?;
    args.log.kafka.apply_to_producer(&mut config)?;
    config.validate()?;

    if let Some(partitions) = args.partitions {
        let spec = TopicSpec::new(&args.log.topic, partitions, args.replication);
        let ensured = xclog_producer::ensure_topic(&config, &spec)
            .await
            .with_context(|| format!("preparing topic {}", args.log.topic))?;
        eprintln!(
            "topic {} {} ({} partitions)",
            args.log.topic,
            if ensured.created { "created" } else { "exists" },
            ensured.partitions
        );
    }
    let producer = Producer::connect(config)
        .await
        .with_context(|| super::kafka_hint(&args.log.brokers, &args.log.topic))?;

    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_signal = Arc::clone(&stop);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop_on_signal.store(true, Ordering::Relaxed);
        }
    });

    let workload = Workload::new(WorkloadConfig {
        seed: args.seed,
        events: args.events,
        instances: usize::try_from(args.instances).unwrap_or(usize::MAX),
        payload_bytes: args.payload_bytes,
        snapshot_interval: NonZeroU32::new(args.snapshot_interval).unwrap_or(NonZeroU32::MIN),
    });
    let max_pending = usize::try_from(args.max_pending).unwrap_or(usize::MAX);
    let mut totals = Totals::default();
    let mut pending: VecDeque<(RecordKind, usize, PendingAck)> = VecDeque::new();
    let started = Instant::now();
    let mut sent_events = 0u64;
    for record in workload {
        if stop.load(Ordering::Relaxed) {
            eprintln!("interrupted: draining what was sent");
            break;
        }
        if args.rate > 0 && record.kind() == RecordKind::Event {
            // Pace on the event count: event n is due at n / rate seconds.
            let due = started + Duration::from_secs_f64(sent_events as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if record.kind() == RecordKind::Event {
            sent_events += 1;
        }
        let ack = producer.publish_nowait(&record, None).await?;
        pending.push_back((record.kind(), ack.bytes(), ack));
        while pending.len() >= max_pending {
            if let Some((kind, bytes, ack)) = pending.pop_front() {
                totals.settle(kind, bytes, ack.await);
            }
        }
    }
    while let Some((kind, bytes, ack)) = pending.pop_front() {
        totals.settle(kind, bytes, ack.await);
    }
    let elapsed = started.elapsed();
    producer.close(Duration::from_secs(30)).await?;

    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "acknowledged {} events and {} snapshots ({} records, {:.1} MB of values) in {:.2} s: \
         {:.0} events/s, {:.0} records/s, {:.2} MB/s; failed {}",
        totals.events,
        totals.snapshots,
        totals.events + totals.snapshots,
        totals.bytes as f64 / 1e6,
        seconds,
        totals.events as f64 / seconds,
        (totals.events + totals.snapshots) as f64 / seconds,
        totals.bytes as f64 / 1e6 / seconds,
        totals.failed
    );
    if let Some(error) = &totals.first_error {
        eprintln!("first failure: {error}");
    }
    Ok(if totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Default)]
struct Totals {
    events: u64,
    snapshots: u64,
    bytes: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Totals {
    fn settle(
        &mut self,
        kind: RecordKind,
        bytes: usize,
        outcome: Result<xclog_producer::Position, xclog_producer::Error>,
    ) {
        match outcome {
            Ok(_) => {
                match kind {
                    RecordKind::Event => self.events += 1,
                    RecordKind::Snapshot | RecordKind::SnapshotDeletion => self.snapshots += 1,
                }
                self.bytes += bytes as u64;
            }
            Err(error) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error.to_string());
                }
            }
        }
    }
}
