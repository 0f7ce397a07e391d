//! The instance view's fold (step 4 of the Mongo sink), decided from what is stored.
//!
//! An `instances` document counts each event once and shows the fields of the instance's
//! latest event. Which events are new is decided per partition: `foldedOffsets.p<N>` is the
//! offset of the last event of partition N folded in, and only events above it count (a replay
//! after a crash finds its events already folded). Which event is latest is decided by the
//! order key valid across partitions ([`InstanceOrder`]), stored beside the event's fields as
//! `lastEventSequence`, `lastEventPersistedAt`, `lastEventPartition`, `lastEventOffset`.
//!
//! The update's filter holds every stored value the decision read (the partitions' folded
//! offsets and `lastEventId`), so it matches only if nothing changed in between: a concurrent
//! writer makes it match nothing, and the batch is retried with a fresh read.
//!
//! Documents written before `foldedOffsets` existed carry only `lastEventOffset`; it stands for
//! the folded offset of every partition (their instances' events shared one partition).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mongodb::bson::{Bson, Document, doc};
use xclog_schema::PersistedEvent;

use super::classify::classify_code;
use super::commands::by_id;
use super::document::as_i64;
use super::{DUPLICATE_KEY, INSTANCES, MongoSink};
use crate::sink::order::{InstanceOrder, NO_SEQUENCE};
use crate::sink::{SinkError, SourcePosition};

/// Field of the folded offset of `partition`.
fn folded_field(partition: i32) -> String {
    format!("foldedOffsets.p{partition}")
}

/// The update statement that folds `events` (one instance's stored events of a batch) into
/// the instance document `stored` (`None`: there is none yet), or `None` when every event is
/// already folded.
pub(crate) fn fold_statement(
    instance: &str,
    stored: Option<&Document>,
    events: &[(&PersistedEvent, &SourcePosition)],
) -> Option<Document> {
    let int = |d: &Document, key: &str| d.get(key).and_then(as_i64);
    let folded = stored.and_then(|d| d.get_document("foldedOffsets").ok());
    let legacy = match folded {
        None => stored.and_then(|d| int(d, "lastEventOffset")),
        Some(_) => None,
    };
    let folded_offset = |partition: i32| -> Option<i64> {
        match folded {
            Some(f) => f.get(format!("p{partition}")).and_then(as_i64),
            None => legacy,
        }
    };

    let fresh: Vec<&(&PersistedEvent, &SourcePosition)> = events
        .iter()
        .filter(|(_, s)| folded_offset(s.partition).is_none_or(|o| s.offset > o))
        .collect();
    let (latest, latest_source) = fresh
        .iter()
        .max_by_key(|(e, s)| InstanceOrder::of_event(e, s))
        .map(|x| **x)?;

    let mut filter = doc! {"_id": instance};
    let mut set = doc! {"instanceId": instance};
    let mut partitions: Vec<(i32, i64)> = Vec::new();
    for (_, s) in &fresh {
        match partitions.iter_mut().find(|(p, _)| *p == s.partition) {
            Some((_, max)) => *max = (*max).max(s.offset),
            None => partitions.push((s.partition, s.offset)),
        }
    }
    for (partition, max) in partitions {
        let was = match folded {
            Some(f) => f
                .get(format!("p{partition}"))
                .cloned()
                .unwrap_or(Bson::Null),
            None => Bson::Null,
        };
        filter.insert(folded_field(partition), was);
        set.insert(folded_field(partition), max);
    }
    if let Some(o) = legacy {
        filter.insert("lastEventOffset", o);
    }
    let stored_last = stored.and_then(|d| d.get_str("lastEventId").ok());
    filter.insert("lastEventId", stored_last.map_or(Bson::Null, Bson::from));

    // The stored last event's key; a document from before the key was stored shows an event
    // of the one partition its instance used, older than every event above its offset.
    let stored_key = stored.filter(|_| stored_last.is_some()).and_then(|d| {
        Some(InstanceOrder {
            sequence: int(d, "lastEventSequence").unwrap_or(NO_SEQUENCE),
            at: int(d, "lastEventPersistedAt")?,
            partition: i32::try_from(int(d, "lastEventPartition")?).ok()?,
            offset: int(d, "lastEventOffset")?,
        })
    });
    let key = InstanceOrder::of_event(latest, latest_source);
    if stored_key.is_none_or(|k| key > k) {
        set.insert("machineName", &latest.machine_name);
        set.insert("componentName", &latest.component_name);
        set.insert("currentState", &latest.state_after);
        set.insert("lastEventId", &latest.id);
        set.insert(
            "lastEventSequence",
            if key.sequence == NO_SEQUENCE {
                Bson::Null
            } else {
                Bson::Int64(key.sequence)
            },
        );
        set.insert("lastEventPersistedAt", key.at);
        set.insert("lastEventPartition", key.partition);
        set.insert("lastEventOffset", key.offset);
    }
    let first_at = fresh.iter().map(|(e, _)| e.persisted_at).min()?;
    let last_at = fresh.iter().map(|(e, _)| e.persisted_at).max()?;
    Some(by_id(
        filter,
        doc! {
            "$inc": {"eventCount": fresh.len() as i64},
            "$min": {"firstEventAt": first_at},
            "$max": {"lastEventAt": last_at},
            "$set": set,
            "$setOnInsert": {"status": "active"},
        },
        true,
    ))
}

impl MongoSink {
    /// Step 4: fold stored events into the instance view, once each: per instance and
    /// partition, only events above the offset folded last (`foldedOffsets`); the fields shown
    /// are those of the event latest in the instance order ([`InstanceOrder`]).
    pub(super) async fn fold_instances(
        &self,
        stored: &[(&PersistedEvent, &SourcePosition)],
    ) -> Result<(), SinkError> {
        if stored.is_empty() {
            return Ok(());
        }
        let mut by_instance: BTreeMap<&str, Vec<(&PersistedEvent, &SourcePosition)>> =
            BTreeMap::new();
        for x in stored {
            by_instance
                .entry(x.0.instance_id.as_str())
                .or_default()
                .push(*x);
        }
        // An instance spread over partitions (keyless records) can be folded by two writers of
        // this sink at once: they take turns, as for `caused` (FerretDB 1.24 would lose one of
        // two concurrent updates of a document). Keyed instances never meet here.
        let mut wanted: BTreeSet<String> = by_instance.keys().map(|k| (*k).to_owned()).collect();
        while !wanted.is_empty() {
            let claim = self.instance_claims.claim(&mut wanted).await;
            let round: BTreeMap<&str, &[(&PersistedEvent, &SourcePosition)]> = claim
                .parents()
                .iter()
                .filter_map(|id| by_instance.get_key_value(id.as_str()))
                .map(|(k, v)| (*k, v.as_slice()))
                .collect();
            self.fold_round(&round).await?;
        }
        Ok(())
    }

    async fn fold_round(
        &self,
        by_instance: &BTreeMap<&str, &[(&PersistedEvent, &SourcePosition)]>,
    ) -> Result<(), SinkError> {
        let ctx = "updating the instance view";
        let ids: Vec<&str> = by_instance.keys().copied().collect();
        let stored: HashMap<String, Document> = self
            .find_all(
                INSTANCES,
                doc! {"_id": {"$in": &ids}},
                doc! {
                    "foldedOffsets": 1, "lastEventOffset": 1, "lastEventId": 1,
                    "lastEventSequence": 1, "lastEventPersistedAt": 1, "lastEventPartition": 1,
                },
                ctx,
            )
            .await?
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect();
        let mut statements = Vec::new();
        for (instance, list) in by_instance {
            if let Some(statement) = fold_statement(instance, stored.get(*instance), list) {
                statements.push(statement);
            }
        }
        let expected = statements.len() as u64;
        let (n, errors) = self.update(INSTANCES, statements, ctx).await?;
        if let Some((_, code, message)) = errors.iter().find(|e| e.1 != DUPLICATE_KEY) {
            return Err(classify_code(*code, message.clone(), ctx));
        }
        if n != expected || !errors.is_empty() {
            return Err(SinkError::Transient {
                context: ctx,
                source: "another writer folded events into an instance concurrently".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, seq: Option<u64>, at: i64, state: &str) -> PersistedEvent {
        let mut e: PersistedEvent = serde_json::from_value(serde_json::json!({
            "id": id, "timestamp": at, "persistedAt": at, "instanceId": "i",
            "machineName": "M", "componentName": "C", "stateBefore": "A", "stateAfter": state,
            "event": {"type": "T", "payload": {}, "timestamp": at},
        }))
        .expect("a valid event");
        e.sequence = seq;
        e
    }

    fn at(partition: i32, offset: i64) -> SourcePosition {
        SourcePosition {
            topic: "t".into(),
            partition,
            offset,
        }
    }

    fn set_of(statement: &Document) -> &Document {
        statement
            .get_document("u")
            .and_then(|u| u.get_document("$set"))
            .expect("a $set")
    }

    #[test]
    fn a_new_instance_shows_the_latest_event_by_sequence_across_partitions() {
        let (a, b) = (
            event("a", Some(2), 10, "Two"),
            event("b", Some(1), 20, "One"),
        );
        let (pa, pb) = (at(1, 5), at(0, 900));
        let s = fold_statement("i", None, &[(&a, &pa), (&b, &pb)]).expect("a statement");
        let set = set_of(&s);
        assert_eq!(set.get_str("currentState").ok(), Some("Two"));
        assert_eq!(set.get_i64("foldedOffsets.p1").ok(), Some(5));
        assert_eq!(set.get_i64("foldedOffsets.p0").ok(), Some(900));
        let q = s.get_document("q").expect("a filter");
        assert_eq!(q.get("foldedOffsets.p0"), Some(&Bson::Null));
        assert_eq!(q.get("lastEventId"), Some(&Bson::Null));
        let inc = s.get_document("u").and_then(|u| u.get_document("$inc"));
        assert_eq!(inc.and_then(|i| i.get_i64("eventCount")).ok(), Some(2));
    }

    #[test]
    fn events_at_or_below_a_partitions_folded_offset_are_not_counted_again() {
        let stored = doc! {
            "_id": "i", "foldedOffsets": {"p0": 10i64, "p1": 3i64}, "lastEventId": "x",
            "lastEventSequence": Bson::Null, "lastEventPersistedAt": 50i64,
            "lastEventPartition": 0, "lastEventOffset": 10i64,
        };
        let replayed = event("r", None, 40, "Old");
        let newer = event("n", None, 60, "New");
        let (p0, p1) = (at(0, 10), at(1, 4));
        assert!(fold_statement("i", Some(&stored), &[(&replayed, &p0)]).is_none());
        let s = fold_statement("i", Some(&stored), &[(&replayed, &p0), (&newer, &p1)])
            .expect("the partition-1 event is new");
        let q = s.get_document("q").expect("a filter");
        assert_eq!(q.get_i64("foldedOffsets.p1").ok(), Some(3));
        assert_eq!(q.get_str("lastEventId").ok(), Some("x"));
        assert!(!q.contains_key("foldedOffsets.p0"));
        assert_eq!(set_of(&s).get_str("currentState").ok(), Some("New"));
        let inc = s.get_document("u").and_then(|u| u.get_document("$inc"));
        assert_eq!(inc.and_then(|i| i.get_i64("eventCount")).ok(), Some(1));
    }

    #[test]
    fn an_event_earlier_in_the_instance_order_is_counted_but_not_shown() {
        let stored = doc! {
            "_id": "i", "foldedOffsets": {"p0": 10i64}, "lastEventId": "x",
            "lastEventSequence": 7i64, "lastEventPersistedAt": 50i64,
            "lastEventPartition": 0, "lastEventOffset": 10i64,
        };
        let late_arrival = event("l", Some(3), 99, "Stale");
        let p2 = at(2, 0);
        let s = fold_statement("i", Some(&stored), &[(&late_arrival, &p2)]).expect("new");
        let set = set_of(&s);
        assert!(!set.contains_key("currentState"));
        assert_eq!(set.get_i64("foldedOffsets.p2").ok(), Some(0));
    }

    #[test]
    fn a_document_with_only_last_event_offset_folds_events_above_it() {
        let stored = doc! {"_id": "i", "lastEventId": "x", "lastEventOffset": 8i64};
        let (old, new) = (event("o", None, 1, "Old"), event("n", None, 2, "New"));
        let (p8, p9) = (at(0, 8), at(0, 9));
        let s = fold_statement("i", Some(&stored), &[(&old, &p8), (&new, &p9)]).expect("new");
        let q = s.get_document("q").expect("a filter");
        assert_eq!(q.get_i64("lastEventOffset").ok(), Some(8));
        assert_eq!(set_of(&s).get_str("currentState").ok(), Some("New"));
        let inc = s.get_document("u").and_then(|u| u.get_document("$inc"));
        assert_eq!(inc.and_then(|i| i.get_i64("eventCount")).ok(), Some(1));
    }
}
