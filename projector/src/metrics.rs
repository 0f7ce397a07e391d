//! Prometheus metrics of the projector. Metric names are constants here, and nowhere else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Records read from the topic (good or bad).
pub const RECORDS_CONSUMED: &str = "xclog_projector_records_consumed";
/// Rows inserted or moved forward in the store, by kind (`event`, `snapshot`).
pub const ROWS_WRITTEN: &str = "xclog_projector_rows_written";
/// Records sent to the dead-letter topic, by reason kind.
pub const DEAD_LETTERED: &str = "xclog_projector_dead_lettered";
/// Seconds to write and commit one batch (including retries).
pub const BATCH_DURATION: &str = "xclog_projector_batch_duration_seconds";
/// Records per written batch.
pub const BATCH_RECORDS: &str = "xclog_projector_batch_records";
/// High watermark minus the committed next offset, per partition.
pub const PARTITION_LAG: &str = "xclog_projector_partition_lag";
/// Seconds from an event's `persistedAt` to its commit in the store.
pub const END_TO_END_DELAY: &str = "xclog_projector_end_to_end_delay_seconds";
/// Write attempts that failed, by error class.
pub const WRITE_ERRORS: &str = "xclog_projector_write_errors";
/// 1 for a partition the projector stopped reading (a record it must not skip and cannot
/// write, such as a newer schema version, or a gap in the offsets); 0 once it reads it again.
pub const PARTITION_STOPPED: &str = "xclog_projector_partition_stopped";
/// Offsets the projector was told to skip over (`--accept-offset-gaps`), per partition.
pub const OFFSETS_SKIPPED: &str = "xclog_projector_offsets_skipped";

/// The most records the writers put into one store write while the store is slow (a write
/// timed out or came near the sink's command timeout); 0 while batches are written whole.
pub const WRITE_RECORD_LIMIT: &str = "xclog_projector_write_record_limit";

/// Label of a partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Partition number.
    pub partition: i32,
}

/// Label of a kind (row kind, dead-letter reason kind, error class).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: &'static str,
}

/// All metrics of one projector, plus its readiness flag.
#[derive(Debug)]
pub struct Metrics {
    /// See [`RECORDS_CONSUMED`].
    pub records_consumed: Counter,
    /// See [`ROWS_WRITTEN`].
    pub rows_written: Family<KindLabel, Counter>,
    /// See [`DEAD_LETTERED`].
    pub dead_lettered: Family<KindLabel, Counter>,
    /// See [`BATCH_DURATION`].
    pub batch_duration: Histogram,
    /// See [`BATCH_RECORDS`].
    pub batch_records: Histogram,
    /// See [`PARTITION_LAG`].
    pub partition_lag: Family<PartitionLabel, Gauge>,
    /// See [`END_TO_END_DELAY`].
    pub end_to_end_delay: Histogram,
    /// See [`WRITE_ERRORS`].
    pub write_errors: Family<KindLabel, Counter>,
    /// See [`PARTITION_STOPPED`].
    pub partition_stopped: Family<PartitionLabel, Gauge>,
    /// See [`OFFSETS_SKIPPED`].
    pub offsets_skipped: Family<PartitionLabel, Counter>,
    /// See [`WRITE_RECORD_LIMIT`].
    pub write_record_limit: Gauge,
    ready: AtomicBool,
    /// Why each stopped partition is stopped (shown by `/readyz`).
    stopped: Mutex<BTreeMap<i32, String>>,
    /// Why the whole projector is stopping, when it is (shown by `/readyz`).
    halted: Mutex<Option<String>>,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let records_consumed = Counter::default();
        let rows_written = Family::<KindLabel, Counter>::default();
        let dead_lettered = Family::<KindLabel, Counter>::default();
        let batch_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let partition_lag = Family::<PartitionLabel, Gauge>::default();
        let end_to_end_delay = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let write_errors = Family::<KindLabel, Counter>::default();
        let partition_stopped = Family::<PartitionLabel, Gauge>::default();
        let offsets_skipped = Family::<PartitionLabel, Counter>::default();
        let write_record_limit = Gauge::default();
        registry.register(
            RECORDS_CONSUMED,
            "Records read from the topic",
            records_consumed.clone(),
        );
        registry.register(
            ROWS_WRITTEN,
            "Rows inserted or moved forward",
            rows_written.clone(),
        );
        registry.register(
            DEAD_LETTERED,
            "Records sent to the dead-letter topic",
            dead_lettered.clone(),
        );
        registry.register(
            BATCH_DURATION,
            "Seconds to write and commit one batch",
            batch_duration.clone(),
        );
        registry.register(
            BATCH_RECORDS,
            "Records per written batch",
            batch_records.clone(),
        );
        registry.register(
            PARTITION_LAG,
            "High watermark minus next offset",
            partition_lag.clone(),
        );
        registry.register(
            END_TO_END_DELAY,
            "Seconds from persistedAt to commit",
            end_to_end_delay.clone(),
        );
        registry.register(
            WRITE_ERRORS,
            "Failed write attempts by class",
            write_errors.clone(),
        );
        registry.register(
            PARTITION_STOPPED,
            "1 while the projector has stopped reading the partition",
            partition_stopped.clone(),
        );
        registry.register(
            OFFSETS_SKIPPED,
            "Offsets skipped over in a gap the operator accepted",
            offsets_skipped.clone(),
        );
        registry.register(
            WRITE_RECORD_LIMIT,
            "Most records per store write while the store is slow (0: no limit)",
            write_record_limit.clone(),
        );
        Arc::new(Self {
            records_consumed,
            rows_written,
            dead_lettered,
            batch_duration,
            batch_records,
            partition_lag,
            end_to_end_delay,
            write_errors,
            partition_stopped,
            offsets_skipped,
            write_record_limit,
            ready: AtomicBool::new(false),
            stopped: Mutex::default(),
            halted: Mutex::default(),
            registry,
        })
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Whether the projector is assigned and caught up (see `ProjectorConfig::ready_max_lag`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Why the projector is not ready beyond lag: stopped partitions and a halt, one line each.
    pub fn blockers(&self) -> Vec<String> {
        let mut out: Vec<String> = lock(&self.halted).iter().cloned().collect();
        out.extend(
            lock(&self.stopped)
                .iter()
                .map(|(p, why)| format!("partition {p} stopped: {why}")),
        );
        out
    }

    /// Partition `partition` is stopped for `reason`; the projector is not ready until it reads
    /// the partition again.
    pub(crate) fn stop_partition(&self, partition: i32, reason: String) {
        lock(&self.stopped).insert(partition, reason);
        self.partition_stopped
            .get_or_create(&PartitionLabel { partition })
            .set(1);
        self.set_ready(false);
    }

    /// Partition `partition` is read again (a new assignment or a reseek starts it over).
    pub(crate) fn clear_stopped(&self, partition: i32) {
        if lock(&self.stopped).remove(&partition).is_some() {
            self.partition_stopped
                .get_or_create(&PartitionLabel { partition })
                .set(0);
        }
    }

    /// The projector stops for `reason` (not ready from now on).
    pub(crate) fn halt(&self, reason: String) {
        lock(&self.halted).get_or_insert(reason);
        self.set_ready(false);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked holding it; the map is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
