//! The order of one instance's records, valid across partitions.
//!
//! The producer keys records by instance id, so an instance's records normally share one
//! partition and log order is their order. Keyless records (which the decoder accepts and
//! hand-written producers send), or a topic whose partition count grew, spread one instance
//! over several partitions, and offsets of two partitions do not compare. Every place that
//! decides which of an instance's records is the latest (the instance view's current state,
//! the stored snapshot, `verify`) compares [`InstanceOrder`] keys instead:
//!
//! 1. the producer's per-instance `sequence` (an absent sequence ranks below every present one);
//! 2. then the record's own time (`persistedAt` of an event, `snapshotAt` of a snapshot);
//! 3. then (partition, offset): within one partition, log order; across partitions an
//!    arbitrary but fixed choice, so every store picks the same record.
//!
//! The key is a total order: every two records of an instance compare the same way whatever
//! the order in which writers see them, which is what lets two stores written by different
//! projectors, and `verify` reading the topic, agree. For records that share a partition and
//! carry increasing sequences (what [`xclog_producer`]'s `SequenceAssigner` hands out) it is log
//! order. The PostgreSQL sink writes the same comparison in SQL, with `COALESCE(sequence, -1)`.
//!
//! [`xclog_producer`]: https://docs.rs/xclog-producer

use xclog_schema::{InstanceSnapshot, PersistedEvent};

use super::SourcePosition;

/// Where a record stands in its instance's order; greater is later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceOrder {
    /// The producer's sequence, `-1` when absent (sequences above `i64::MAX`, which neither
    /// store holds, rank as `i64::MAX`).
    pub sequence: i64,
    /// `persistedAt` of an event, `snapshotAt` of a snapshot (epoch milliseconds).
    pub at: i64,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
}

/// The stored value of an absent sequence in the key: below every sequence a producer can send.
pub const NO_SEQUENCE: i64 = -1;

impl InstanceOrder {
    /// The key of a record with this sequence and time at this position.
    pub fn new(sequence: Option<u64>, at: i64, partition: i32, offset: i64) -> Self {
        Self {
            sequence: sequence.map_or(NO_SEQUENCE, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            at,
            partition,
            offset,
        }
    }

    /// The key of an event read at `source`.
    pub fn of_event(e: &PersistedEvent, source: &SourcePosition) -> Self {
        Self::new(e.sequence, e.persisted_at, source.partition, source.offset)
    }

    /// The key of a snapshot read at `source`.
    pub fn of_snapshot(s: &InstanceSnapshot, source: &SourcePosition) -> Self {
        Self::new(s.sequence, s.snapshot_at, source.partition, source.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_decides_before_time_and_position() {
        let early_but_later_sequence = InstanceOrder::new(Some(2), 10, 0, 0);
        let late_but_earlier_sequence = InstanceOrder::new(Some(1), 99, 5, 99);
        assert!(early_but_later_sequence > late_but_earlier_sequence);
    }

    #[test]
    fn an_absent_sequence_ranks_below_every_present_one() {
        assert!(InstanceOrder::new(None, 99, 9, 99) < InstanceOrder::new(Some(0), 0, 0, 0));
    }

    #[test]
    fn without_sequences_time_decides_then_partition_then_offset() {
        let a = InstanceOrder::new(None, 5, 2, 100);
        let b = InstanceOrder::new(None, 6, 0, 0);
        assert!(b > a, "a later persistedAt is later whatever the partition");
        let same_ms_other_partition = InstanceOrder::new(None, 5, 3, 0);
        assert!(same_ms_other_partition > a);
        let same_ms_next_offset = InstanceOrder::new(None, 5, 2, 101);
        assert!(
            same_ms_next_offset > a,
            "within a partition, log order breaks a time tie"
        );
    }

    #[test]
    fn a_sequence_beyond_bigint_ranks_as_the_largest() {
        assert_eq!(
            InstanceOrder::new(Some(u64::MAX), 0, 0, 0).sequence,
            i64::MAX
        );
    }
}
