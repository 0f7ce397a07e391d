//! Per-instance sequence numbers, so runtimes do not have to number their records.
//!
//! Invariant: for one [`SequenceAssigner`], the numbers handed out for an instance start at
//! 1 (or right after the value given to [`SequenceAssigner::resume`]) and increase by
//! exactly 1 per event, with no gap and no repeat. Snapshots carry the number of the last
//! event they include and do not advance the counter.

use std::collections::HashMap;

use xclog_schema::{InstanceSnapshot, PersistedEvent};

/// Hands out each instance's next `sequence`.
///
/// Keep one assigner per runtime (instances are owned by one runtime at a time). After a
/// restart, call [`SequenceAssigner::resume`] with the last sequence you know of (for
/// example from a snapshot) so numbering continues instead of restarting at 1.
#[derive(Debug, Clone, Default)]
pub struct SequenceAssigner {
    last: HashMap<String, u64>,
}

impl SequenceAssigner {
    /// An assigner that knows no instance yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `event.sequence` to its instance's next number and returns that number.
    pub fn assign(&mut self, event: &mut PersistedEvent) -> u64 {
        let next = self.next(&event.instance_id);
        event.sequence = Some(next);
        next
    }

    /// Takes the next number for `instance_id` (1 for an instance never seen).
    pub fn next(&mut self, instance_id: &str) -> u64 {
        let slot = match self.last.get_mut(instance_id) {
            Some(slot) => slot,
            None => self.last.entry(instance_id.to_owned()).or_insert(0),
        };
        *slot += 1;
        *slot
    }

    /// The last number handed out for `instance_id`, if any.
    pub fn last(&self, instance_id: &str) -> Option<u64> {
        self.last.get(instance_id).copied()
    }

    /// Sets `snapshot.sequence` to the last number handed out for its instance (the
    /// snapshot includes every event up to it) and returns it.
    pub fn stamp_snapshot(&self, snapshot: &mut InstanceSnapshot) -> Option<u64> {
        snapshot.sequence = self.last(&snapshot.instance.id);
        snapshot.sequence
    }

    /// Continues numbering `instance_id` after `last_sequence` (for example the sequence
    /// of the instance's latest snapshot after a restart).
    pub fn resume(&mut self, instance_id: impl Into<String>, last_sequence: u64) {
        self.last.insert(instance_id.into(), last_sequence);
    }

    /// Forgets an instance that reached a final state, to bound memory.
    pub fn forget(&mut self, instance_id: &str) {
        self.last.remove(instance_id);
    }

    /// How many instances the assigner currently tracks.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no instance is tracked.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn each_instance_gets_gapless_numbers_from_one(picks in proptest::collection::vec(0usize..5, 0..200)) {
            let mut assigner = SequenceAssigner::new();
            let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
            for pick in picks {
                let n = assigner.next(&format!("instance-{pick}"));
                seen.entry(pick).or_default().push(n);
            }
            for numbers in seen.values() {
                let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
                prop_assert_eq!(numbers, &expected);
            }
        }
    }

    #[test]
    fn numbering_resumes_after_the_given_sequence() {
        let mut assigner = SequenceAssigner::new();
        assigner.resume("a", 41);
        assert_eq!(assigner.next("a"), 42);
        assert_eq!(assigner.next("b"), 1);
        assigner.forget("a");
        assert_eq!(assigner.last("a"), None);
        assert_eq!(assigner.len(), 1);
    }
}
