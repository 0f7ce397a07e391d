//! Sinks: where decoded records are materialized (PostgreSQL and MongoDB).
//!
//! A [`Sink`] receives a [`WriteBatch`]: decoded records in log order plus, for every
//! partition the batch covers, the offset the batch started from and the next offset after it.
//! The invariant every implementation keeps:
//!
//! * **Atomic progress.** The rows of a batch and the new offsets of its partitions become
//!   visible together (one transaction), or neither does.
//! * **Fencing.** The offset of a partition advances only if the stored offset still equals
//!   [`OffsetAdvance::expected`]; otherwise nothing of the batch is kept and the write fails with
//!   [`ErrorClass::Fenced`]. A worker that lost a partition without noticing can never commit it.
//! * **Idempotence.** Writing a record twice (replay after a crash) changes nothing: events are
//!   keyed by id, snapshots only move forward.
//! * **Snapshot deletions in log order.** For one instance, the net effect of a batch is the
//!   last of its snapshot and snapshot-deletion records in log order ([`snapshot_plan`]): a
//!   deletion removes the stored snapshot, a later snapshot brings one back.
//!
//! Everything else (consuming, batching, dead letters, retries, shutdown, metrics) lives in the
//! target-independent pipeline and only sees the sink through this trait and [`SinkError::class`].

pub mod mongo;
pub mod order;
pub mod postgres;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

use xclog_schema::{InstanceSnapshot, Record};

use order::InstanceOrder;

/// Where a record came from in the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcePosition {
    /// Topic the record was read from.
    pub topic: String,
    /// Partition of the topic.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
}

/// One decoded record and its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// The decoded event or snapshot.
    pub record: Record,
    /// Its position in the log.
    pub source: SourcePosition,
}

/// How far a batch moves one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAdvance {
    /// The partition.
    pub partition: i32,
    /// The stored next offset this batch started from (`None`: nothing stored yet).
    pub expected: Option<i64>,
    /// The next offset to read after this batch (last offset covered + 1).
    pub next: i64,
}

/// A batch to write: records in log order (per partition) and the offsets it advances.
///
/// `offsets` may name partitions with no record in `records` (every record of that range was
/// dead-lettered or skipped): the offset still advances, in the same transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// The topic every record and offset belongs to.
    pub topic: String,
    /// The records, in log order within each partition.
    pub records: Vec<SinkRecord>,
    /// One entry per partition the batch covers.
    pub offsets: Vec<OffsetAdvance>,
}

/// What a successful write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Event rows inserted (replayed events already present are not counted).
    pub events_inserted: u64,
    /// Snapshot rows inserted or moved forward.
    pub snapshots_applied: u64,
    /// Instances whose stored snapshot a deletion record of the batch removed (counted whether
    /// or not one was stored).
    pub snapshots_deleted: u64,
}

/// What a batch does to the stored snapshots, per instance, from its snapshot and
/// snapshot-deletion records taken in log order.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SnapshotPlan<'a> {
    /// Instances with a deletion in the batch, sorted: their stored snapshot is deleted first.
    pub deleted: Vec<&'a str>,
    /// Per instance (sorted by instance id), the newest snapshot that comes after the
    /// instance's last deletion in the batch; it is written after the deletions.
    pub snapshots: Vec<(&'a InstanceSnapshot, &'a SinkRecord)>,
}

/// Reduces a batch's snapshot records and deletions to [`SnapshotPlan`]: a deletion drops the
/// snapshots before it, snapshots after it compete by their [`InstanceOrder`].
pub(crate) fn snapshot_plan(records: &[SinkRecord]) -> SnapshotPlan<'_> {
    let mut deleted: BTreeSet<&str> = BTreeSet::new();
    let mut newest: BTreeMap<&str, (&InstanceSnapshot, &SinkRecord)> = BTreeMap::new();
    for r in records {
        match &r.record {
            Record::Event(_) => {}
            Record::Snapshot(s) => {
                let id = s.instance.id.as_str();
                let replace = newest.get(id).is_none_or(|(old, old_r)| {
                    InstanceOrder::of_snapshot(s, &r.source)
                        > InstanceOrder::of_snapshot(old, &old_r.source)
                });
                if replace {
                    newest.insert(id, (s, r));
                }
            }
            Record::SnapshotDeletion(d) => {
                newest.remove(d.instance_id.as_str());
                deleted.insert(d.instance_id.as_str());
            }
        }
    }
    SnapshotPlan {
        deleted: deleted.into_iter().collect(),
        snapshots: newest.into_values().collect(),
    }
}

/// Longest id, instance id, machine or component name, state or `causedBy` entry the stores
/// take, in bytes. These are btree index keys, two to an entry in `(parent_id, child_id)` and
/// `(machine_name, current_state)`, and PostgreSQL refuses an entry above about 2,700 bytes
/// (SQLSTATE 54000); FerretDB keeps its collections' indexes in PostgreSQL too. The TypeScript
/// package refuses the same at publish time (docs/WIRE-FORMAT.md, section 3.2).
pub const INDEX_KEY_MAX_BYTES: usize = 1300;

/// Why a store would refuse one of the record's index keys ([`INDEX_KEY_MAX_BYTES`]), checked
/// by both sinks before writing, so such a record is dead-lettered instead of failing batches.
pub(crate) fn check_index_keys(record: &Record) -> Result<(), String> {
    each_key_text(record, |field, s, indexed| {
        if indexed && s.len() > INDEX_KEY_MAX_BYTES {
            Err(format!(
                "{field} is {} bytes long; the stores index it and take at most \
                 {INDEX_KEY_MAX_BYTES} bytes",
                s.len()
            ))
        } else {
            Ok(())
        }
    })
}

/// Visits the text fields both stores keep as plain text and query by (`visit(field, value,
/// indexed)`), stopping at the first error: ids, names, states, `causedBy` entries, the optional
/// component names, a snapshot's last event id; `indexed` for those that are btree index keys.
pub(crate) fn each_key_text(
    record: &Record,
    mut visit: impl FnMut(&str, &str, bool) -> Result<(), String>,
) -> Result<(), String> {
    match record {
        Record::Event(e) => {
            for (f, s, indexed) in [
                ("id", &e.id, true),
                ("instanceId", &e.instance_id, true),
                ("machineName", &e.machine_name, true),
                ("componentName", &e.component_name, true),
                ("event.type", &e.event.event_type, false),
                ("stateBefore", &e.state_before, true),
                ("stateAfter", &e.state_after, true),
            ] {
                visit(f, s, indexed)?;
            }
            for (i, p) in e.caused_by.iter().enumerate() {
                visit(&format!("causedBy[{i}]"), p, true)?;
            }
            for (f, s) in [
                ("sourceComponentName", &e.source_component_name),
                ("targetComponentName", &e.target_component_name),
            ] {
                if let Some(s) = s {
                    visit(f, s, false)?;
                }
            }
            Ok(())
        }
        Record::Snapshot(s) => {
            for (f, v, indexed) in [
                ("instance.id", &s.instance.id, true),
                ("instance.machineName", &s.instance.machine_name, true),
                ("instance.currentState", &s.instance.current_state, true),
                ("lastEventId", &s.last_event_id, false),
            ] {
                visit(f, v, indexed)?;
            }
            Ok(())
        }
        Record::SnapshotDeletion(d) => visit("instanceId", &d.instance_id, true),
    }
}

/// Why a record lacks an id its store keys it by: an event's id, a snapshot's or a
/// deletion's instance id.
pub(crate) fn check_required_ids(record: &Record) -> Result<(), String> {
    let missing = match record {
        Record::Event(e) => e.id.is_empty().then_some("event id is empty"),
        Record::Snapshot(s) => s
            .instance
            .id
            .is_empty()
            .then_some("snapshot instance.id is empty"),
        Record::SnapshotDeletion(d) => d
            .instance_id
            .is_empty()
            .then_some("snapshot deletion instanceId is empty"),
    };
    missing.map_or(Ok(()), |m| Err(m.to_owned()))
}

/// A record's per-instance sequence, if it has one.
pub(crate) fn record_sequence(record: &Record) -> Option<u64> {
    match record {
        Record::Event(e) => e.sequence,
        Record::Snapshot(s) => s.sequence,
        Record::SnapshotDeletion(d) => d.sequence,
    }
}

/// What the pipeline does about a failed write. Decided in one place per sink
/// ([`SinkError::class`]); the retry loop, the metrics and the tests all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The store is unavailable or the transaction lost a race (connection lost, restart,
    /// serialization failure, deadlock): retry the same batch after a backoff, never skip it.
    Transient,
    /// The store refuses the *content* of a record in the batch: isolate the record (split the
    /// batch) and send it to the dead-letter topic; the stream goes on.
    Rejected,
    /// The stored offset of a partition is not the one the batch started from (another worker
    /// owns it now): drop the batch, reload offsets, seek.
    Fenced,
    /// The store did not answer within the command timeout: it is up but slow for a batch of
    /// this size. Write the batch again in halves, and smaller batches from then on, so the
    /// projector keeps making progress instead of redoing the same large batch for ever; a
    /// single record is retried after a backoff, as [`ErrorClass::Transient`].
    TimedOut,
    /// Configuration or schema problem that retrying cannot fix: stop the projector.
    Fatal,
}

/// A failed sink operation, with its class decided by the sink's classifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// See [`ErrorClass::Transient`]: retry the same batch after a backoff.
    #[error("store temporarily unavailable ({context}); retry the batch")]
    Transient {
        /// What was being done.
        context: &'static str,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// See [`ErrorClass::Rejected`]: dead-letter the offending record.
    #[error("store rejected a record's content ({context}): {reason}")]
    Rejected {
        /// What was being done.
        context: &'static str,
        /// Why, in the store's words (goes into the dead-letter headers).
        reason: String,
    },
    /// See [`ErrorClass::Fenced`]: reload offsets and seek.
    #[error(
        "partition {partition} is fenced: stored offset is {stored:?}, batch started from {expected:?}; reload offsets and seek"
    )]
    Fenced {
        /// The partition whose stored offset moved.
        partition: i32,
        /// What the batch expected.
        expected: Option<i64>,
        /// What is stored.
        stored: Option<i64>,
    },
    /// See [`ErrorClass::TimedOut`]: write the batch again in smaller parts.
    #[error("no reply from the store within {} ms ({context}); writing smaller batches", after.as_millis())]
    TimedOut {
        /// What was being done.
        context: &'static str,
        /// The timeout that passed.
        after: std::time::Duration,
    },
    /// See [`ErrorClass::Fatal`]: stop and fix the configuration or schema.
    #[error("store error that retrying cannot fix ({context}); check configuration and migrations")]
    Fatal {
        /// What was being done.
        context: &'static str,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SinkError {
    /// The pipeline's next move for this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Transient { .. } => ErrorClass::Transient,
            SinkError::Rejected { .. } => ErrorClass::Rejected,
            SinkError::Fenced { .. } => ErrorClass::Fenced,
            SinkError::TimedOut { .. } => ErrorClass::TimedOut,
            SinkError::Fatal { .. } => ErrorClass::Fatal,
        }
    }
}

/// A materialization target.
///
/// Implementations are cheap to share (`Clone` of a pool handle) and safe to call from several
/// tasks; the pipeline never calls `write` twice at once for the same partition.
pub trait Sink: Send + Sync + 'static {
    /// Name of the target for logs and metrics (`"postgres"`, `"mongodb"`).
    fn name(&self) -> &'static str;

    /// How long one command of a write may take before it fails as [`SinkError::TimedOut`],
    /// if the sink bounds its commands. The writers keep their batches well inside it: a write
    /// that takes over half of it halves the batches that follow.
    fn command_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Stored next offsets of `partitions` of `topic` for this sink's projection. Partitions
    /// with nothing stored are absent from the map.
    fn load_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> impl Future<Output = Result<HashMap<i32, i64>, SinkError>> + Send;

    /// Writes the batch's records and advances its offsets atomically (or idempotently), with
    /// the fencing check described in the module docs.
    fn write(
        &self,
        batch: &WriteBatch,
    ) -> impl Future<Output = Result<WriteOutcome, SinkError>> + Send;

    /// Checks a decoded record against what the store can hold, before any write. A record
    /// that fails goes to the dead-letter topic with the returned reason. The default accepts all.
    fn check(&self, record: &Record) -> Result<(), String> {
        let _ = record;
        Ok(())
    }
}
