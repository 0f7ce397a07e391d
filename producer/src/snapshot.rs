//! The snapshot policy, like xcomponent-ai's `snapshotInterval`: a snapshot every N
//! transitions of an instance, and always when it reaches a final or error state.
//!
//! Invariant: for each instance, [`SnapshotPolicy::observe`] returns a snapshot exactly on
//! its N-th, 2N-th, ... transition (creation events do not count, as in xcomponent-ai) and
//! on the event that makes its status `completed` or `error`; when both happen on the same
//! event, one snapshot (with the terminal status) is returned, not two. A terminal instance
//! is then forgotten, so memory stays bounded by the number of live instances.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{SystemTime, UNIX_EPOCH};

use xclog_schema::{FsmInstance, InstanceSnapshot, InstanceStatus, PersistedEvent};

use crate::error::Error;
use crate::position::Position;
use crate::producer::Producer;

/// xcomponent-ai's default `snapshotInterval`.
pub const DEFAULT_SNAPSHOT_INTERVAL: NonZeroU32 = NonZeroU32::new(10).expect("10 is not zero");

/// Decides when an instance gets a snapshot. Keep one per runtime.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    interval: NonZeroU32,
    transitions: HashMap<String, u32>,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self::every(DEFAULT_SNAPSHOT_INTERVAL)
    }
}

impl SnapshotPolicy {
    /// A snapshot every `interval` transitions of each instance (and on final/error states).
    pub fn every(interval: NonZeroU32) -> Self {
        Self {
            interval,
            transitions: HashMap::new(),
        }
    }

    /// The configured interval.
    pub fn interval(&self) -> NonZeroU32 {
        self.interval
    }

    /// Call after each persisted event with the instance as it is after that event.
    /// Returns the snapshot to publish when one is due (with `snapshot_at`, the id and
    /// sequence of `last_event`), or `None`.
    pub fn observe(
        &mut self,
        instance: &FsmInstance,
        last_event: &PersistedEvent,
        snapshot_at: i64,
    ) -> Option<InstanceSnapshot> {
        let creation = last_event.state_before.is_empty();
        let terminal = matches!(
            instance.status,
            InstanceStatus::Completed | InstanceStatus::Error
        );
        let due = if creation {
            false
        } else {
            let count = self.transitions.entry(instance.id.clone()).or_insert(0);
            *count += 1;
            if *count >= self.interval.get() {
                *count = 0;
                true
            } else {
                false
            }
        };
        if terminal {
            self.transitions.remove(&instance.id);
        }
        (due || terminal).then(|| InstanceSnapshot {
            instance: instance.clone(),
            snapshot_at,
            last_event_id: last_event.id.clone(),
            pending_timeouts: None,
            sequence: last_event.sequence,
        })
    }

    /// [`SnapshotPolicy::observe`] with the wall clock, then publishes the snapshot if one
    /// is due and waits for its acknowledgement.
    ///
    /// # Errors
    /// Whatever [`Producer::save_snapshot`] returns.
    pub async fn publish_if_due(
        &mut self,
        producer: &Producer,
        instance: &FsmInstance,
        last_event: &PersistedEvent,
    ) -> Result<Option<Position>, Error> {
        match self.observe(instance, last_event, now_millis()) {
            Some(snapshot) => producer.save_snapshot(&snapshot).await.map(Some),
            None => Ok(None),
        }
    }

    /// How many live instances the policy tracks.
    pub fn tracked_instances(&self) -> usize {
        self.transitions.len()
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use xclog_schema::FsmEvent;

    fn instance(id: &str, status: InstanceStatus) -> FsmInstance {
        FsmInstance {
            id: id.into(),
            machine_name: "Order".into(),
            current_state: "S".into(),
            context: json!({}),
            public_member: None,
            internal_member: None,
            created_at: 0,
            updated_at: 0,
            status,
            is_entry_point: None,
            parent_instance_id: None,
            parent_machine_name: None,
        }
    }

    fn event(instance_id: &str, state_before: &str, sequence: u64) -> PersistedEvent {
        PersistedEvent {
            id: format!("{instance_id}-{sequence}"),
            instance_id: instance_id.into(),
            machine_name: "Order".into(),
            component_name: "OrderComponent".into(),
            event: FsmEvent {
                event_type: "GO".into(),
                payload: json!({}),
                timestamp: None,
                extra: Default::default(),
            },
            state_before: state_before.into(),
            state_after: "S".into(),
            persisted_at: 0,
            caused_by: vec![],
            caused: vec![],
            source_component_name: None,
            target_component_name: None,
            public_member_snapshot: None,
            sequence: Some(sequence),
        }
    }

    proptest! {
        #[test]
        fn snapshots_come_every_n_transitions_and_creation_does_not_count(
            interval in 1u32..8,
            transitions in 0u32..50,
        ) {
            let mut policy = SnapshotPolicy::every(NonZeroU32::new(interval).unwrap());
            let live = instance("a", InstanceStatus::Active);
            let mut taken = Vec::new();
            prop_assert!(policy.observe(&live, &event("a", "", 1), 0).is_none());
            for n in 1..=transitions {
                if let Some(s) = policy.observe(&live, &event("a", "S", u64::from(n) + 1), 0) {
                    prop_assert_eq!(s.sequence, Some(u64::from(n) + 1));
                    taken.push(n);
                }
            }
            let expected: Vec<u32> = (1..=transitions).filter(|n| n % interval == 0).collect();
            prop_assert_eq!(taken, expected);
        }
    }

    #[test]
    fn a_final_or_error_state_always_gets_exactly_one_snapshot() {
        let mut policy = SnapshotPolicy::every(NonZeroU32::new(2).unwrap());
        let live = instance("a", InstanceStatus::Active);
        assert!(policy.observe(&live, &event("a", "S", 2), 0).is_none());
        // The 2nd transition is both due and terminal: one snapshot, terminal status.
        let done = instance("a", InstanceStatus::Completed);
        let snapshot = policy.observe(&done, &event("a", "S", 3), 7).unwrap();
        assert_eq!(snapshot.instance.status, InstanceStatus::Completed);
        assert_eq!(snapshot.last_event_id, "a-3");
        assert_eq!(snapshot.snapshot_at, 7);
        assert_eq!(policy.tracked_instances(), 0);
        let failed = instance("b", InstanceStatus::Error);
        assert!(policy.observe(&failed, &event("b", "S", 2), 0).is_some());
    }

    #[test]
    fn an_instance_created_in_a_final_state_gets_a_snapshot() {
        let mut policy = SnapshotPolicy::default();
        let done = instance("a", InstanceStatus::Completed);
        assert!(policy.observe(&done, &event("a", "", 1), 0).is_some());
    }
}
