//! Batching: turning consumed records into [`Batch`]es whose offsets the sink can fence.
//!
//! Invariant: for every partition, consecutive batches chain: a batch's
//! [`OffsetAdvance::expected`] is the previous batch's [`OffsetAdvance::next`] (or the offset
//! stored in the sink at assignment), and `next` is one past the last offset the batch covers.
//! A record below a partition's position (redelivered after a seek) is skipped, never written
//! twice in one chain. Pure logic: no I/O.
//!
//! One file: the batcher and its lanes keep one chain invariant and share the tests below.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::sink::{OffsetAdvance, SinkRecord, WriteBatch};

/// The raw bytes of a record, kept so a record the store rejects can be dead-lettered as it
/// was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Option<Vec<u8>>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawRecord {
    /// Bytes the record holds in memory (key, value, header names and values).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A record that goes to the dead-letter topic, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as read.
    pub raw: RawRecord,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Error kind: `decode`, `validation` or `rejected`.
    pub kind: &'static str,
    /// Human-readable reason (what was wrong and where).
    pub reason: String,
}

/// A cut batch: what to write, the raw bytes of its records, and what to dead-letter first.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The assignment generation the batch belongs to; a stale batch is dropped unwritten.
    pub generation: u64,
    /// Records and offset advances for the sink.
    pub write: WriteBatch,
    /// `raw[i]` is the record `write.records[i]` as read.
    pub raw: Vec<RawRecord>,
    /// Records to send to the dead-letter topic before the write commits.
    pub dead_letters: Vec<DeadLetter>,
}

impl Batch {
    /// Splits the records in two halves (to isolate a record the store rejects). Each half
    /// chains its partitions' offsets: the first ends where the second starts. Dead letters
    /// stay with the first half.
    pub fn split(self) -> (Batch, Batch) {
        let mid = self.write.records.len() / 2;
        let mut first_records = self.write.records;
        let second_records = first_records.split_off(mid);
        let mut first_raw = self.raw;
        let second_raw = first_raw.split_off(mid.min(first_raw.len()));

        let mut first_next: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &first_records {
            first_next.insert(r.source.partition, r.source.offset + 1);
        }
        let mut first_offsets = Vec::new();
        let mut second_offsets = Vec::new();
        for o in &self.write.offsets {
            match first_next.get(&o.partition) {
                Some(&n) => {
                    first_offsets.push(OffsetAdvance {
                        partition: o.partition,
                        expected: o.expected,
                        next: n,
                    });
                    second_offsets.push(OffsetAdvance {
                        partition: o.partition,
                        expected: Some(n),
                        next: o.next,
                    });
                }
                None => second_offsets.push(*o),
            }
        }
        let first = Batch {
            generation: self.generation,
            write: WriteBatch {
                topic: self.write.topic.clone(),
                records: first_records,
                offsets: first_offsets,
            },
            raw: first_raw,
            dead_letters: self.dead_letters,
        };
        let second = Batch {
            generation: self.generation,
            write: WriteBatch {
                topic: self.write.topic,
                records: second_records,
                offsets: second_offsets,
            },
            raw: second_raw,
            dead_letters: Vec::new(),
        };
        (first, second)
    }
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Stored offset the next cut batch starts from (`None`: nothing stored yet).
    expected: Option<i64>,
    /// One past the last offset accepted (`None`: nothing accepted since assignment).
    next: Option<i64>,
}

/// What to do with a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Add it to the pending batch.
    Accept,
    /// Already covered (redelivered below the position): drop it.
    Skip,
    /// Its partition is not assigned to this worker (any more): drop it.
    NotAssigned,
}

/// When a pending batch is cut, given what its writer is doing ([`WriterLoad`]).
///
/// A full batch is always cut. A partial one is cut only when no batch waits in the writer's
/// queue: at once (after `linger`) when the writer is idle, or after `max_latency` while it
/// writes, so that it is next. While a batch waits, the pending one keeps growing: when the
/// writer falls behind, its batches grow with the backlog instead of queueing up small ones,
/// and when it keeps up, a record waits about `linger` instead of `max_latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutPolicy {
    /// A batch holding this many records is cut.
    pub max_records: usize,
    /// A batch whose records (good and dead-lettered) hold this many bytes is cut.
    pub max_bytes: usize,
    /// A partial batch is cut after its first record waited this long, while the writer writes
    /// and nothing waits in its queue.
    pub max_latency: Duration,
    /// A partial batch is cut after its first record waited this long when the writer is idle.
    pub linger: Duration,
}

/// What the writer of a lane is doing, as far as cutting its pending batch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterLoad {
    /// Nothing queued and nothing being written: a batch handed over now is written at once.
    Idle,
    /// Writing a batch, none waiting in its queue.
    Writing,
    /// At least one batch waits in its queue (or is held for it).
    Queued,
}

/// The pending batch and the position of every assigned partition.
#[derive(Debug)]
pub struct Batcher {
    topic: String,
    policy: CutPolicy,
    positions: BTreeMap<i32, Position>,
    pending: Batch,
    /// Bytes of the pending batch's records ([`RawRecord::size`]).
    pending_bytes: usize,
    touched: BTreeMap<i32, i64>,
    started: Option<Instant>,
}

impl Batcher {
    /// An empty batcher with no partition assigned.
    pub fn new(topic: impl Into<String>, policy: CutPolicy) -> Self {
        Self {
            topic: topic.into(),
            policy,
            positions: BTreeMap::new(),
            pending: Batch::default(),
            pending_bytes: 0,
            touched: BTreeMap::new(),
            started: None,
        }
    }

    /// Replaces the assignment: every partition with the offset stored for it (or none), and
    /// drops whatever was pending (it was not written; it will be read again).
    pub fn assign(&mut self, generation: u64, partitions: &BTreeMap<i32, Option<i64>>) {
        self.positions = partitions
            .iter()
            .map(|(&p, &stored)| {
                (
                    p,
                    Position {
                        expected: stored,
                        next: stored,
                    },
                )
            })
            .collect();
        self.pending = Batch {
            generation,
            ..Batch::default()
        };
        self.pending_bytes = 0;
        self.touched.clear();
        self.started = None;
    }

    /// Assigned partitions.
    pub fn partitions(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Next offset to read per assigned partition, as far as this worker has read.
    pub fn read_positions(&self) -> BTreeMap<i32, Option<i64>> {
        self.positions
            .iter()
            .map(|(&p, pos)| (p, pos.next))
            .collect()
    }

    /// Decides whether a consumed record at `partition`/`offset` belongs in the pending batch;
    /// on [`Admit::Accept`] the position moves past it (the caller then adds it with
    /// [`Batcher::push`] or [`Batcher::push_dead_letter`]).
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        let verdict = self.would_admit(partition, offset);
        if verdict != Admit::Accept {
            return verdict;
        }
        let Some(pos) = self.positions.get_mut(&partition) else {
            return Admit::NotAssigned;
        };
        pos.next = Some(offset + 1);
        self.touched.insert(partition, offset + 1);
        self.started.get_or_insert_with(Instant::now);
        Admit::Accept
    }

    /// What [`Batcher::admit`] would answer, without moving the position.
    pub fn would_admit(&self, partition: i32, offset: i64) -> Admit {
        match self.positions.get(&partition) {
            None => Admit::NotAssigned,
            Some(pos) if pos.next.is_some_and(|n| offset < n) => Admit::Skip,
            Some(_) => Admit::Accept,
        }
    }

    /// The offset the partition's next record is expected at (`None`: not assigned, or no
    /// stored offset and nothing read yet).
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.positions.get(&partition).and_then(|pos| pos.next)
    }

    /// Adds an admitted, decoded record.
    pub fn push(&mut self, record: SinkRecord, raw: RawRecord) {
        self.pending_bytes += raw.size();
        self.pending.write.records.push(record);
        self.pending.raw.push(raw);
    }

    /// Adds an admitted record that goes to the dead-letter topic.
    pub fn push_dead_letter(&mut self, dead: DeadLetter) {
        self.pending_bytes += dead.raw.size();
        self.pending.dead_letters.push(dead);
    }

    /// Bytes of the records in the pending batch.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Records (good and bad) in the pending batch.
    pub fn pending_len(&self) -> usize {
        self.pending.write.records.len() + self.pending.dead_letters.len()
    }

    /// How long until the pending batch is to be cut if nothing changes: `Some(ZERO)` now,
    /// `None` never (nothing pending, or it waits for the writer's queue to empty).
    pub fn cut_in(&self, now: Instant, writer: WriterLoad) -> Option<Duration> {
        if self.touched.is_empty() {
            return None;
        }
        if self.pending_len() >= self.policy.max_records
            || self.pending_bytes >= self.policy.max_bytes
        {
            return Some(Duration::ZERO);
        }
        let wait = match writer {
            WriterLoad::Idle => self.policy.linger,
            WriterLoad::Writing => self.policy.max_latency,
            WriterLoad::Queued => return None,
        };
        let waited = self
            .started
            .map_or(Duration::ZERO, |s| now.duration_since(s));
        Some(wait.saturating_sub(waited))
    }

    /// Cuts the pending batch: it carries an offset advance for every partition it touched,
    /// chained on the previous batch. `None` if nothing is pending.
    pub fn cut(&mut self) -> Option<Batch> {
        if self.touched.is_empty() {
            return None;
        }
        let mut offsets = Vec::with_capacity(self.touched.len());
        for (&partition, &next) in &self.touched {
            let pos = self.positions.get_mut(&partition)?;
            offsets.push(OffsetAdvance {
                partition,
                expected: pos.expected,
                next,
            });
            pos.expected = Some(next);
        }
        self.touched.clear();
        self.started = None;
        self.pending_bytes = 0;
        let generation = self.pending.generation;
        let mut batch = std::mem::replace(
            &mut self.pending,
            Batch {
                generation,
                ..Batch::default()
            },
        );
        batch.write.topic = self.topic.clone();
        batch.write.offsets = offsets;
        Some(batch)
    }
}

/// One [`Batcher`] per lane: the assigned partitions are dealt out over the lanes in partition
/// order (the `i`-th assigned partition goes to lane `i % lanes`), so a partition's batches
/// always go to the same lane, whose batches are written one at a time and in order, and the
/// lanes' batches never share a partition (their transactions are independent). Pure logic:
/// no I/O.
#[derive(Debug)]
pub struct Lanes {
    lanes: Vec<Batcher>,
    lane_of: BTreeMap<i32, usize>,
}

impl Lanes {
    /// `lanes` empty batchers (at least one).
    pub fn new(topic: impl Into<String>, lanes: usize, policy: CutPolicy) -> Self {
        let topic = topic.into();
        Self {
            lanes: (0..lanes.max(1))
                .map(|_| Batcher::new(topic.clone(), policy))
                .collect(),
            lane_of: BTreeMap::new(),
        }
    }

    /// Number of lanes.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Always false: there is at least one lane.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Replaces the assignment of every lane (see [`Batcher::assign`]), dealing the partitions
    /// out anew.
    pub fn assign(&mut self, generation: u64, partitions: &BTreeMap<i32, Option<i64>>) {
        let n = self.lanes.len();
        let mut shares = vec![BTreeMap::new(); n];
        self.lane_of.clear();
        for (i, (&p, &stored)) in partitions.iter().enumerate() {
            shares[i % n].insert(p, stored);
            self.lane_of.insert(p, i % n);
        }
        for (lane, share) in self.lanes.iter_mut().zip(&shares) {
            lane.assign(generation, share);
        }
    }

    /// The lane a partition belongs to, if it is assigned.
    pub fn lane_of(&self, partition: i32) -> Option<usize> {
        self.lane_of.get(&partition).copied()
    }

    /// The batcher of lane `lane` (panics if out of range).
    pub fn lane(&self, lane: usize) -> &Batcher {
        &self.lanes[lane]
    }

    /// The batcher of lane `lane`, mutably (panics if out of range).
    pub fn lane_mut(&mut self, lane: usize) -> &mut Batcher {
        &mut self.lanes[lane]
    }

    /// Every assigned partition.
    pub fn partitions(&self) -> Vec<i32> {
        self.lane_of.keys().copied().collect()
    }

    /// Next offset to read per assigned partition, over all lanes.
    pub fn read_positions(&self) -> BTreeMap<i32, Option<i64>> {
        self.lanes
            .iter()
            .flat_map(Batcher::read_positions)
            .collect()
    }

    /// [`Batcher::admit`] on the partition's lane ([`Admit::NotAssigned`] if it has none).
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        match self.lane_of(partition) {
            Some(lane) => self.lanes[lane].admit(partition, offset),
            None => Admit::NotAssigned,
        }
    }

    /// [`Batcher::would_admit`] on the partition's lane.
    pub fn would_admit(&self, partition: i32, offset: i64) -> Admit {
        match self.lane_of(partition) {
            Some(lane) => self.lanes[lane].would_admit(partition, offset),
            None => Admit::NotAssigned,
        }
    }

    /// [`Batcher::next_offset`] on the partition's lane.
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.lane_of(partition)
            .and_then(|lane| self.lanes[lane].next_offset(partition))
    }

    /// [`Batcher::push`] on the lane of the record's partition (which admitted it).
    pub fn push(&mut self, record: SinkRecord, raw: RawRecord) {
        if let Some(lane) = self.lane_of(record.source.partition) {
            self.lanes[lane].push(record, raw);
        }
    }

    /// [`Batcher::push_dead_letter`] on the lane of the record's partition (which admitted it).
    pub fn push_dead_letter(&mut self, dead: DeadLetter) {
        if let Some(lane) = self.lane_of(dead.partition) {
            self.lanes[lane].push_dead_letter(dead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourcePosition;
    use proptest::prelude::*;
    use serde_json::json;
    use xclog_schema::{FsmEvent, PersistedEvent, Record};

    fn rec(partition: i32, offset: i64) -> SinkRecord {
        SinkRecord {
            record: Record::Event(PersistedEvent {
                id: format!("{partition}-{offset}"),
                instance_id: "i".into(),
                machine_name: "m".into(),
                component_name: "c".into(),
                event: FsmEvent {
                    event_type: "E".into(),
                    payload: json!({}),
                    timestamp: None,
                    extra: Default::default(),
                },
                state_before: "".into(),
                state_after: "s".into(),
                persisted_at: 0,
                caused_by: vec![],
                caused: vec![],
                source_component_name: None,
                target_component_name: None,
                public_member_snapshot: None,
                sequence: None,
            }),
            source: SourcePosition {
                topic: "t".into(),
                partition,
                offset,
            },
        }
    }

    fn raw() -> RawRecord {
        RawRecord {
            key: None,
            value: None,
            headers: vec![],
        }
    }

    /// Latencies long enough that only a full batch is cut during a test.
    fn policy(max_records: usize) -> CutPolicy {
        CutPolicy {
            max_records,
            max_bytes: usize::MAX,
            max_latency: Duration::from_secs(60),
            linger: Duration::from_secs(60),
        }
    }

    fn batcher(stored: &[(i32, Option<i64>)]) -> Batcher {
        let mut b = Batcher::new("t", policy(3));
        b.assign(1, &stored.iter().copied().collect());
        b
    }

    #[test]
    fn a_batch_is_cut_when_its_records_bytes_reach_the_byte_bound_before_the_record_count() {
        let mut b = Batcher::new(
            "t",
            CutPolicy {
                max_records: 1000,
                max_bytes: 3000,
                max_latency: Duration::from_secs(60),
                linger: Duration::from_secs(60),
            },
        );
        b.assign(1, &[(0, Some(0))].into_iter().collect());
        let big = |n: usize| RawRecord {
            key: Some(vec![b'k'; 10]),
            value: Some(vec![b'v'; n]),
            headers: vec![("h".into(), vec![1, 2])],
        };
        let now = Instant::now();
        for offset in 0..2 {
            assert_eq!(b.admit(0, offset), Admit::Accept);
            b.push(rec(0, offset), big(987));
        }
        assert_eq!(b.pending_bytes(), 2 * 1000);
        assert_eq!(
            b.cut_in(now, WriterLoad::Queued),
            None,
            "under the bound: not cut"
        );
        assert_eq!(b.admit(0, 2), Admit::Accept);
        b.push_dead_letter(DeadLetter {
            raw: big(987),
            partition: 0,
            offset: 2,
            kind: "decode",
            reason: "r".into(),
        });
        assert_eq!(b.cut_in(now, WriterLoad::Queued), Some(Duration::ZERO));
        let batch = b.cut().expect("a batch");
        assert_eq!(batch.write.records.len() + batch.dead_letters.len(), 3);
        assert_eq!(b.pending_bytes(), 0, "the next batch starts empty");
    }

    #[test]
    fn a_partial_batch_is_cut_after_the_linger_when_the_writer_is_idle_else_after_max_latency() {
        let mut b = Batcher::new(
            "t",
            CutPolicy {
                max_records: 100,
                max_bytes: usize::MAX,
                max_latency: Duration::from_millis(200),
                linger: Duration::from_millis(5),
            },
        );
        b.assign(1, &[(0, Some(0))].into_iter().collect());
        let t0 = Instant::now();
        // Nothing pending: never cut, whatever the writer does.
        for load in [WriterLoad::Idle, WriterLoad::Writing, WriterLoad::Queued] {
            assert_eq!(b.cut_in(t0, load), None);
            assert_ne!(
                b.cut_in(t0 + Duration::from_secs(10), load),
                Some(Duration::ZERO)
            );
        }
        assert_eq!(b.admit(0, 0), Admit::Accept);
        b.push(rec(0, 0), raw());
        let start = b.started.unwrap();
        // Idle writer: the linger, counted from the first record.
        assert_ne!(
            b.cut_in(start + Duration::from_millis(4), WriterLoad::Idle),
            Some(Duration::ZERO)
        );
        assert_eq!(
            b.cut_in(start + Duration::from_millis(1), WriterLoad::Idle),
            Some(Duration::from_millis(4))
        );
        assert_eq!(
            b.cut_in(start + Duration::from_millis(5), WriterLoad::Idle),
            Some(Duration::ZERO)
        );
        // Busy writer, empty queue: the max latency.
        assert_ne!(
            b.cut_in(start + Duration::from_millis(199), WriterLoad::Writing),
            Some(Duration::ZERO)
        );
        assert_eq!(
            b.cut_in(start + Duration::from_millis(200), WriterLoad::Writing),
            Some(Duration::ZERO)
        );
        assert_eq!(
            b.cut_in(start + Duration::from_millis(50), WriterLoad::Writing),
            Some(Duration::from_millis(150))
        );
        // A batch waits in the queue: a partial batch keeps growing, however old.
        assert_ne!(
            b.cut_in(start + Duration::from_secs(3600), WriterLoad::Queued),
            Some(Duration::ZERO)
        );
        assert_eq!(b.cut_in(start, WriterLoad::Queued), None);
    }

    #[test]
    fn a_full_batch_is_cut_at_once_even_while_a_batch_is_queued() {
        let mut b = batcher(&[(0, Some(0))]);
        for o in 0..2 {
            assert_eq!(b.admit(0, o), Admit::Accept);
            b.push(rec(0, o), raw());
        }
        let now = Instant::now();
        assert_ne!(b.cut_in(now, WriterLoad::Queued), Some(Duration::ZERO));
        assert_eq!(b.admit(0, 2), Admit::Accept);
        b.push(rec(0, 2), raw());
        for load in [WriterLoad::Idle, WriterLoad::Writing, WriterLoad::Queued] {
            assert_eq!(b.cut_in(now, load), Some(Duration::ZERO));
        }
        assert_eq!(b.cut().unwrap().write.records.len(), 3);
        assert_eq!(b.cut_in(now, WriterLoad::Idle), None);
    }

    #[test]
    fn consecutive_batches_chain_their_offsets() {
        let mut b = batcher(&[(0, Some(10)), (1, None)]);
        for o in 10..13 {
            assert_eq!(b.admit(0, o), Admit::Accept);
            b.push(rec(0, o), raw());
        }
        assert_eq!(
            b.cut_in(Instant::now(), WriterLoad::Queued),
            Some(Duration::ZERO)
        );
        let first = b.cut().unwrap();
        assert_eq!(
            first.write.offsets,
            vec![OffsetAdvance {
                partition: 0,
                expected: Some(10),
                next: 13
            }]
        );
        assert_eq!(b.admit(1, 5), Admit::Accept);
        b.push(rec(1, 5), raw());
        assert_eq!(b.admit(0, 13), Admit::Accept);
        b.push(rec(0, 13), raw());
        let second = b.cut().unwrap();
        assert_eq!(
            second.write.offsets,
            vec![
                OffsetAdvance {
                    partition: 0,
                    expected: Some(13),
                    next: 14
                },
                OffsetAdvance {
                    partition: 1,
                    expected: None,
                    next: 6
                },
            ]
        );
        assert!(b.cut().is_none());
    }

    #[test]
    fn records_below_the_position_or_of_unassigned_partitions_are_dropped() {
        let mut b = batcher(&[(0, Some(10))]);
        assert_eq!(b.admit(0, 9), Admit::Skip);
        assert_eq!(b.admit(2, 50), Admit::NotAssigned);
        assert_eq!(b.admit(0, 12), Admit::Accept); // a gap (compaction, control record) is fine
        assert_eq!(b.admit(0, 11), Admit::Skip);
    }

    #[test]
    fn a_new_assignment_drops_what_was_pending() {
        let mut b = batcher(&[(0, Some(0))]);
        assert_eq!(b.admit(0, 0), Admit::Accept);
        b.push(rec(0, 0), raw());
        b.assign(2, &[(0, Some(0))].into_iter().collect());
        assert_eq!(b.pending_len(), 0);
        assert!(b.cut().is_none());
        assert_eq!(b.admit(0, 0), Admit::Accept);
        assert_eq!(b.cut().unwrap().generation, 2);
    }

    #[test]
    fn lanes_deal_partitions_out_and_keep_each_partition_in_its_lane() {
        let mut lanes = Lanes::new("t", 2, policy(100));
        let assignment: BTreeMap<i32, Option<i64>> = [(7, Some(0)), (2, None), (5, Some(3))]
            .into_iter()
            .collect();
        lanes.assign(4, &assignment);
        // Partition order 2, 5, 7: lanes 0, 1, 0.
        assert_eq!(lanes.lane_of(2), Some(0));
        assert_eq!(lanes.lane_of(5), Some(1));
        assert_eq!(lanes.lane_of(7), Some(0));
        assert_eq!(lanes.lane(0).partitions(), vec![2, 7]);
        assert_eq!(lanes.lane(1).partitions(), vec![5]);
        assert_eq!(lanes.partitions(), vec![2, 5, 7]);
        assert_eq!(lanes.admit(9, 0), Admit::NotAssigned);
        assert_eq!(lanes.admit(5, 2), Admit::Skip);
        for (p, o) in [(2, 0), (5, 3), (7, 0), (2, 1), (5, 4)] {
            assert_eq!(lanes.admit(p, o), Admit::Accept);
            lanes.push(rec(p, o), raw());
        }
        assert_eq!(lanes.admit(7, 1), Admit::Accept);
        lanes.push_dead_letter(DeadLetter {
            raw: raw(),
            partition: 7,
            offset: 1,
            kind: "decode",
            reason: "bad".into(),
        });
        let a = lanes.lane_mut(0).cut().unwrap();
        let b = lanes.lane_mut(1).cut().unwrap();
        assert_eq!(a.generation, 4);
        let parts = |batch: &Batch| -> Vec<i32> {
            batch
                .write
                .records
                .iter()
                .map(|r| r.source.partition)
                .collect()
        };
        assert_eq!(parts(&a), vec![2, 7, 2]);
        assert_eq!(a.dead_letters.len(), 1);
        assert_eq!(parts(&b), vec![5, 5]);
        let advanced = |batch: &Batch| -> Vec<(i32, Option<i64>, i64)> {
            batch
                .write
                .offsets
                .iter()
                .map(|o| (o.partition, o.expected, o.next))
                .collect()
        };
        assert_eq!(advanced(&a), vec![(2, None, 2), (7, Some(0), 2)]);
        assert_eq!(advanced(&b), vec![(5, Some(3), 5)]);
        assert_eq!(
            lanes.read_positions(),
            [(2, Some(2)), (5, Some(5)), (7, Some(2))]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn one_lane_takes_every_partition() {
        let mut lanes = Lanes::new("t", 1, policy(100));
        lanes.assign(1, &[(0, None), (1, None), (2, None)].into_iter().collect());
        assert_eq!(lanes.lane(0).partitions(), vec![0, 1, 2]);
        // More lanes than partitions: the extra lanes stay empty.
        let mut lanes = Lanes::new("t", 4, policy(100));
        lanes.assign(1, &[(0, None), (1, None)].into_iter().collect());
        assert_eq!(lanes.len(), 4);
        assert!(lanes.lane(2).partitions().is_empty());
        assert!(lanes.lane_mut(3).cut().is_none());
    }

    proptest! {
        #[test]
        fn splitting_a_batch_keeps_every_record_once_and_chains_offsets(
            offsets in proptest::collection::vec((0i32..3, 1i64..4), 1..40)
        ) {
            let mut b = Batcher::new("t", policy(usize::MAX));
            b.assign(1, &[(0, Some(0)), (1, None), (2, Some(0))].into_iter().collect());
            let mut next = [0i64; 3];
            for (p, step) in &offsets {
                let o = next[*p as usize];
                next[*p as usize] += step;
                prop_assert_eq!(b.admit(*p, o), Admit::Accept);
                b.push(rec(*p, o), raw());
            }
            let batch = b.cut().unwrap();
            let all = batch.write.records.clone();
            let original = batch.write.offsets.clone();
            let (x, y) = batch.split();
            let mut joined = x.write.records.clone();
            joined.extend(y.write.records.clone());
            prop_assert_eq!(joined, all);
            for o in &original {
                let a = x.write.offsets.iter().find(|a| a.partition == o.partition);
                let c = y.write.offsets.iter().find(|c| c.partition == o.partition).unwrap();
                prop_assert_eq!(c.next, o.next);
                match a {
                    Some(a) => {
                        prop_assert_eq!(a.expected, o.expected);
                        prop_assert_eq!(c.expected, Some(a.next));
                    }
                    None => prop_assert_eq!(c.expected, o.expected),
                }
            }
            // Every record of a half lies inside the range its half advances.
            for half in [&x, &y] {
                for r in &half.write.records {
                    let adv = half.write.offsets.iter().find(|a| a.partition == r.source.partition).unwrap();
                    prop_assert!(r.source.offset < adv.next);
                    prop_assert!(adv.expected.is_none_or(|e| r.source.offset >= e));
                }
            }
        }
    }
}
