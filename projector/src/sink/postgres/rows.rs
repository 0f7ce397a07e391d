//! Pure mapping from decoded records to the column arrays the bulk statements UNNEST.
//!
//! Invariant: one array element per row, all arrays of a struct the same length, in batch
//! order; nothing here touches the database, so it is tested with plain and property tests.
//! The columns borrow from the batch: nothing is copied but the few values built here (the
//! `caused_by` arrays, the in-batch `caused`, the pending timeouts), so a batch is not cloned
//! and freed twice.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::types::Json;
use xclog_schema::{InstanceSnapshot, PersistedEvent, Record};

use crate::sink::SinkRecord;

/// Column arrays of `fsm_events` rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct EventColumns<'a> {
    pub id: Vec<&'a str>,
    pub instance_id: Vec<&'a str>,
    pub machine_name: Vec<&'a str>,
    pub component_name: Vec<&'a str>,
    pub event_type: Vec<&'a str>,
    pub event_payload: Vec<&'a Value>,
    pub state_before: Vec<&'a str>,
    pub state_after: Vec<&'a str>,
    pub persisted_at: Vec<i64>,
    /// `caused_by` of each row as a JSON array (UNNEST cannot take ragged 2-D arrays).
    pub caused_by: Vec<Json<&'a [String]>>,
    pub source_component_name: Vec<Option<&'a str>>,
    pub target_component_name: Vec<Option<&'a str>>,
    pub sequence: Vec<Option<i64>>,
    pub event_timestamp: Vec<Option<i64>>,
    pub event_extra: Vec<Option<Json<&'a Map<String, Value>>>>,
    pub public_member_snapshot: Vec<Option<&'a Value>>,
    pub source_topic: Vec<&'a str>,
    pub source_partition: Vec<i32>,
    pub source_offset: Vec<i64>,
    /// `caused` of each row from the children in this batch (JSON array, `None`: no child
    /// here), sorted by `persisted_at`, then id. Only a first value: the `caused` update
    /// recomputes every affected parent from all the edges and rewrites the row if it differs
    /// (a child from another batch, ids ordered otherwise by the database's collation), so a
    /// parent inserted with all its links is simply not rewritten.
    pub caused: Vec<Option<Json<Vec<&'a str>>>>,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn len(&self) -> usize {
        self.id.len()
    }

    fn push(&mut self, e: &'a PersistedEvent, r: &'a SinkRecord) {
        self.id.push(&e.id);
        self.instance_id.push(&e.instance_id);
        self.machine_name.push(&e.machine_name);
        self.component_name.push(&e.component_name);
        self.event_type.push(&e.event.event_type);
        self.event_payload.push(&e.event.payload);
        self.state_before.push(&e.state_before);
        self.state_after.push(&e.state_after);
        self.persisted_at.push(e.persisted_at);
        self.caused_by.push(Json(&e.caused_by));
        self.source_component_name
            .push(e.source_component_name.as_deref());
        self.target_component_name
            .push(e.target_component_name.as_deref());
        self.sequence
            .push(e.sequence.and_then(|s| i64::try_from(s).ok()));
        self.event_timestamp.push(e.event.timestamp);
        self.event_extra
            .push((!e.event.extra.is_empty()).then_some(Json(&e.event.extra)));
        self.public_member_snapshot
            .push(e.public_member_snapshot.as_ref());
        self.source_topic.push(&r.source.topic);
        self.source_partition.push(r.source.partition);
        self.source_offset.push(r.source.offset);
    }

    /// Fills [`EventColumns::caused`] from the rows' `caused_by`; `index` maps each row's id
    /// to its position.
    fn link_children_in_batch(&mut self, index: &HashMap<&str, usize>) {
        let mut children: Vec<Vec<(i64, &'a str)>> = vec![Vec::new(); self.id.len()];
        for (child, parents) in self.caused_by.iter().enumerate() {
            for parent in parents.0 {
                if let Some(&p) = index.get(parent.as_str()) {
                    children[p].push((self.persisted_at[child], self.id[child]));
                }
            }
        }
        self.caused = children
            .into_iter()
            .map(|mut c| {
                c.sort_unstable();
                c.dedup();
                (!c.is_empty()).then(|| Json(c.into_iter().map(|(_, id)| id).collect()))
            })
            .collect();
    }

    /// Every id this batch inserts plus every parent it names: the ids whose causality rows it
    /// must lock, sorted and deduplicated (lock order prevents deadlocks).
    pub(crate) fn causality_ids(&self) -> Vec<&'a str> {
        let mut ids: Vec<&'a str> = self.id.clone();
        for parents in &self.caused_by {
            ids.extend(parents.0.iter().map(String::as_str));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Column arrays of `fsm_snapshots` rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SnapshotColumns<'a> {
    pub instance_id: Vec<&'a str>,
    pub machine_name: Vec<&'a str>,
    pub current_state: Vec<&'a str>,
    pub status: Vec<&'static str>,
    pub context: Vec<&'a Value>,
    pub public_member: Vec<Option<&'a Value>>,
    pub snapshot_at: Vec<i64>,
    pub last_event_id: Vec<&'a str>,
    pub pending_timeouts: Vec<Option<Value>>,
    pub sequence: Vec<Option<i64>>,
    pub internal_member: Vec<Option<&'a Value>>,
    pub is_entry_point: Vec<Option<bool>>,
    pub parent_instance_id: Vec<Option<&'a str>>,
    pub parent_machine_name: Vec<Option<&'a str>>,
    pub instance_created_at: Vec<i64>,
    pub instance_updated_at: Vec<i64>,
    pub source_topic: Vec<&'a str>,
    pub source_partition: Vec<i32>,
    pub source_offset: Vec<i64>,
}

impl<'a> SnapshotColumns<'a> {
    pub(crate) fn len(&self) -> usize {
        self.instance_id.len()
    }

    fn push(&mut self, s: &'a InstanceSnapshot, r: &'a SinkRecord) {
        let i = &s.instance;
        self.instance_id.push(&i.id);
        self.machine_name.push(&i.machine_name);
        self.current_state.push(&i.current_state);
        self.status.push(i.status.as_str());
        self.context.push(&i.context);
        self.public_member.push(i.public_member.as_ref());
        self.snapshot_at.push(s.snapshot_at);
        self.last_event_id.push(&s.last_event_id);
        self.pending_timeouts.push(
            s.pending_timeouts
                .as_ref()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null)),
        );
        self.sequence
            .push(s.sequence.and_then(|q| i64::try_from(q).ok()));
        self.internal_member.push(i.internal_member.as_ref());
        self.is_entry_point.push(i.is_entry_point);
        self.parent_instance_id
            .push(i.parent_instance_id.as_deref());
        self.parent_machine_name
            .push(i.parent_machine_name.as_deref());
        self.instance_created_at.push(i.created_at);
        self.instance_updated_at.push(i.updated_at);
        self.source_topic.push(&r.source.topic);
        self.source_partition.push(r.source.partition);
        self.source_offset.push(r.source.offset);
    }
}

/// Splits a batch into event rows, snapshot rows and the instances whose stored snapshot is
/// deleted (before the snapshot rows are written; [`crate::sink::snapshot_plan`]). Snapshots
/// are reduced to the newest per instance after its last deletion (an upsert cannot touch one
/// row twice in a statement), sorted by instance id: row locks in a fixed order.
pub(crate) fn columns(
    records: &[SinkRecord],
) -> (EventColumns<'_>, SnapshotColumns<'_>, Vec<&str>) {
    let mut events = EventColumns::default();
    // Row of each event id: dedups the batch and, after it, finds the parents in it.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for r in records {
        // The same event id twice in one batch (a producer retry): the first copy wins, as it
        // would across batches.
        if let Record::Event(e) = &r.record
            && let std::collections::hash_map::Entry::Vacant(slot) = index.entry(&e.id)
        {
            slot.insert(events.len());
            events.push(e, r);
        }
    }
    events.link_children_in_batch(&index);
    let plan = crate::sink::snapshot_plan(records);
    let mut snapshots = SnapshotColumns::default();
    for (s, r) in plan.snapshots {
        snapshots.push(s, r);
    }
    (events, snapshots, plan.deleted)
}

/// Why PostgreSQL would refuse this record's content, checked before writing so that common
/// poison records never cost a failed batch: NUL characters (TEXT and JSONB reject them) and
/// sequences beyond BIGINT.
pub(crate) fn check(record: &Record) -> Result<(), String> {
    crate::sink::check_index_keys(record)?;
    fn text(field: &str, s: &str) -> Result<(), String> {
        if s.contains('\0') {
            Err(format!(
                "{field} contains a NUL character, which PostgreSQL text cannot hold"
            ))
        } else {
            Ok(())
        }
    }
    fn json(field: &str, v: &Value) -> Result<(), String> {
        match v {
            Value::String(s) => text(field, s),
            Value::Array(items) => items.iter().try_for_each(|x| json(field, x)),
            Value::Object(map) => map.iter().try_for_each(|(k, x)| {
                text(field, k)?;
                json(field, x)
            }),
            _ => Ok(()),
        }
    }
    crate::sink::check_required_ids(record)?;
    crate::sink::each_key_text(record, |field, s, _| text(field, s))?;
    match record {
        Record::Event(e) => {
            json("event.payload", &e.event.payload)?;
            for (k, v) in &e.event.extra {
                text("event", k)?;
                json("event", v)?;
            }
            if let Some(v) = &e.public_member_snapshot {
                json("publicMemberSnapshot", v)?;
            }
        }
        Record::Snapshot(s) => {
            let i = &s.instance;
            json("instance.context", &i.context)?;
            for (f, v) in [
                ("instance.publicMember", &i.public_member),
                ("instance.internalMember", &i.internal_member),
            ] {
                if let Some(v) = v {
                    json(f, v)?;
                }
            }
            for (f, v) in [
                ("instance.parentInstanceId", &i.parent_instance_id),
                ("instance.parentMachineName", &i.parent_machine_name),
            ] {
                if let Some(v) = v {
                    text(f, v)?;
                }
            }
            if let Some(p) = &s.pending_timeouts {
                for t in p {
                    text("pendingTimeouts.stateKey", &t.state_key)?;
                    text("pendingTimeouts.eventType", &t.event_type)?;
                }
            }
        }
        Record::SnapshotDeletion(_) => {}
    }
    match crate::sink::record_sequence(record) {
        Some(s) if i64::try_from(s).is_err() => Err(format!(
            "sequence {s} exceeds the BIGINT range of PostgreSQL"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourcePosition;
    use proptest::prelude::*;
    use serde_json::json;
    use xclog_schema::{FsmEvent, FsmInstance, InstanceStatus, SnapshotDeletion};

    fn event(id: &str, parents: &[&str]) -> PersistedEvent {
        PersistedEvent {
            id: id.to_owned(),
            instance_id: "i1".to_owned(),
            machine_name: "Order".to_owned(),
            component_name: "Shop".to_owned(),
            event: FsmEvent {
                event_type: "SUBMIT".to_owned(),
                payload: json!({"a": 1}),
                timestamp: Some(5),
                extra: serde_json::Map::new(),
            },
            state_before: "Draft".to_owned(),
            state_after: "Submitted".to_owned(),
            persisted_at: 10,
            caused_by: parents.iter().map(|p| (*p).to_owned()).collect(),
            caused: vec![],
            source_component_name: None,
            target_component_name: None,
            public_member_snapshot: None,
            sequence: Some(1),
        }
    }

    fn snapshot(instance: &str, at: i64, seq: Option<u64>, state: &str) -> InstanceSnapshot {
        InstanceSnapshot {
            instance: FsmInstance {
                id: instance.to_owned(),
                machine_name: "Order".to_owned(),
                current_state: state.to_owned(),
                context: json!({}),
                public_member: None,
                internal_member: None,
                created_at: 1,
                updated_at: at,
                status: InstanceStatus::Active,
                is_entry_point: None,
                parent_instance_id: None,
                parent_machine_name: None,
            },
            snapshot_at: at,
            last_event_id: "e".to_owned(),
            pending_timeouts: None,
            sequence: seq,
        }
    }

    fn rec(record: Record, offset: i64) -> SinkRecord {
        SinkRecord {
            record,
            source: SourcePosition {
                topic: "t".to_owned(),
                partition: 0,
                offset,
            },
        }
    }

    #[test]
    fn a_parent_gets_the_links_of_its_children_in_the_batch_in_stored_order() {
        let at = |mut e: PersistedEvent, persisted_at: i64| {
            e.persisted_at = persisted_at;
            e
        };
        let records = vec![
            rec(Record::Event(at(event("p", &[]), 1)), 0),
            rec(Record::Event(at(event("c2", &["p", "elsewhere"]), 5)), 1),
            // Same time as c2: ordered by id, like `array_agg(... ORDER BY persisted_at, id)`.
            rec(Record::Event(at(event("c1", &["p", "p"]), 5)), 2),
            rec(Record::Event(at(event("c0", &["p"]), 3)), 3),
            // A second copy of c0 (first copy wins) and a parent stored by an earlier batch.
            rec(Record::Event(at(event("c0", &["p"]), 9)), 4),
            rec(Record::Event(at(event("lone", &["gone"]), 7)), 5),
        ];
        let (events, _, _) = columns(&records);
        assert_eq!(events.caused.len(), events.len());
        let caused: Vec<Option<Vec<&str>>> = events
            .caused
            .iter()
            .map(|c| c.as_ref().map(|j| j.0.clone()))
            .collect();
        assert_eq!(
            caused,
            vec![Some(vec!["c0", "c1", "c2"]), None, None, None, None]
        );
    }

    #[test]
    fn causality_ids_are_the_sorted_union_of_row_ids_and_named_parents() {
        let records = vec![
            rec(Record::Event(event("b", &["z", "a"])), 0),
            rec(Record::Event(event("a", &[])), 1),
        ];
        let (events, _, _) = columns(&records);
        assert_eq!(events.causality_ids(), vec!["a", "b", "z"]);
    }

    #[test]
    fn only_the_newest_snapshot_of_an_instance_in_a_batch_is_kept() {
        let records = vec![
            rec(Record::Snapshot(snapshot("i1", 20, Some(2), "B")), 0),
            rec(Record::Snapshot(snapshot("i1", 30, Some(1), "A")), 1),
            rec(Record::Snapshot(snapshot("i2", 5, None, "X")), 2),
            rec(Record::Snapshot(snapshot("i2", 5, None, "Y")), 3),
        ];
        let (_, snaps, _) = columns(&records);
        assert_eq!(snaps.instance_id, vec!["i1", "i2"]);
        // i1: sequence 2 beats sequence 1 although older by time; i2: same ms, later offset wins.
        assert_eq!(snaps.current_state, vec!["B", "Y"]);
    }

    fn deletion(instance: &str) -> Record {
        Record::SnapshotDeletion(SnapshotDeletion {
            instance_id: instance.to_owned(),
            snapshot_deleted_at: 40,
            sequence: None,
        })
    }

    #[test]
    fn a_deletion_drops_the_snapshots_before_it_and_keeps_the_newest_after_it() {
        let records = vec![
            rec(Record::Snapshot(snapshot("i1", 20, Some(9), "Before")), 0),
            rec(deletion("i1"), 1),
            rec(Record::Snapshot(snapshot("i1", 30, Some(2), "After")), 2),
            rec(Record::Snapshot(snapshot("i2", 5, None, "Gone")), 3),
            rec(deletion("i2"), 4),
            rec(deletion("i3"), 5),
        ];
        let (_, snaps, deleted) = columns(&records);
        assert_eq!(deleted, vec!["i1", "i2", "i3"]);
        // i1 comes back with the snapshot after its deletion, although its sequence is lower.
        assert_eq!(snaps.instance_id, vec!["i1"]);
        assert_eq!(snaps.current_state, vec!["After"]);
    }

    #[test]
    fn a_snapshot_deletion_with_a_nul_or_a_sequence_beyond_bigint_is_refused() {
        let Record::SnapshotDeletion(mut d) = deletion("i\u{0}") else {
            unreachable!()
        };
        assert!(check(&Record::SnapshotDeletion(d.clone())).is_err());
        d.instance_id = "i".to_owned();
        assert!(check(&Record::SnapshotDeletion(d.clone())).is_ok());
        d.sequence = Some(u64::MAX);
        assert!(
            check(&Record::SnapshotDeletion(d))
                .unwrap_err()
                .contains("sequence")
        );
    }

    #[test]
    fn a_duplicate_event_id_in_one_batch_becomes_one_row() {
        let records = vec![
            rec(Record::Event(event("a", &[])), 0),
            rec(Record::Event(event("a", &[])), 1),
        ];
        let (events, _, _) = columns(&records);
        assert_eq!(events.id, vec!["a"]);
        assert_eq!(events.source_offset, vec![0]);
    }

    #[test]
    fn a_nul_character_anywhere_is_reported_with_its_field() {
        let mut e = event("a", &[]);
        e.event.payload = json!({"k": ["ok", "bad\u{0}"]});
        let err = check(&Record::Event(e)).unwrap_err();
        assert!(err.contains("event.payload"), "{err}");
        let mut e = event("a", &[]);
        e.sequence = Some(u64::MAX);
        assert!(check(&Record::Event(e)).unwrap_err().contains("sequence"));
        assert!(check(&Record::Event(event("a", &["p"]))).is_ok());
    }

    proptest! {
        #[test]
        fn every_event_becomes_exactly_one_row_with_all_columns_aligned(
            ids in proptest::collection::btree_set("[a-z0-9]{1,8}", 0..40)
                .prop_map(|s| s.into_iter().collect::<Vec<String>>()),
            parents in proptest::collection::vec(proptest::collection::vec("[a-z]{1,3}", 0..4), 40),
            ats in proptest::collection::vec(0i64..4, 40),
        ) {
            let records: Vec<SinkRecord> = ids.iter().enumerate().map(|(n, id)| {
                let ps: Vec<&str> = parents[n].iter().map(String::as_str).collect();
                let mut e = event(id, &ps);
                e.persisted_at = ats[n];
                rec(Record::Event(e), n as i64)
            }).collect();
            let (events, snaps, deleted) = columns(&records);
            prop_assert!(deleted.is_empty());
            prop_assert_eq!(events.len(), ids.len());
            prop_assert_eq!(snaps.len(), 0);
            prop_assert_eq!(events.caused_by.len(), ids.len());
            prop_assert_eq!(events.source_offset.len(), ids.len());
            prop_assert_eq!(events.caused.len(), ids.len());
            prop_assert_eq!(&events.id, &ids);
            // Each row's in-batch `caused` is exactly the rows naming it, by (time, id).
            for (i, id) in ids.iter().enumerate() {
                let mut naming: Vec<(i64, &str)> = ids.iter().enumerate()
                    .filter(|(n, _)| parents[*n].contains(id))
                    .map(|(n, c)| (ats[n], c.as_str())).collect();
                naming.sort_unstable();
                let want: Vec<&str> = naming.into_iter().map(|(_, c)| c).collect();
                let got = events.caused[i].as_ref().map(|j| j.0.clone()).unwrap_or_default();
                prop_assert_eq!(got, want);
            }
            let lock = events.causality_ids();
            for id in &ids { prop_assert!(lock.binary_search(&id.as_str()).is_ok()); }
            for ps in parents.iter().take(ids.len()) {
                for p in ps { prop_assert!(lock.binary_search(&p.as_str()).is_ok()); }
            }
            prop_assert!(lock.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
