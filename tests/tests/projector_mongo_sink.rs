//! The MongoDB sink against a real FerretDB/MongoDB, batch by batch (no Kafka): replays,
//! fencing, causality in any order, newer-only snapshots, awkward payloads, the instance view.

use std::collections::BTreeSet;

use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};
use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::{EventStore, Page, SnapshotStore};
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::sink::{
    ErrorClass, OffsetAdvance, Sink, SinkRecord, SourcePosition, WriteBatch,
};
use xclog_schema::{FsmInstance, InstanceSnapshot, InstanceStatus, PersistedEvent, Record};
use xclog_tests::TestMongo;

/// An event whose state after names it (`S-<id>`), so an instance's current state shows
/// which of its events it came from.
fn event(id: &str, instance: &str, parents: &[&str], at: i64) -> PersistedEvent {
    PersistedEvent {
        state_after: format!("S-{id}"),
        ..xclog_tests::event(id, instance, parents, at)
    }
}

fn snapshot(instance: &str, at: i64, seq: Option<u64>, state: &str) -> InstanceSnapshot {
    InstanceSnapshot {
        instance: FsmInstance {
            id: instance.into(),
            machine_name: "Order".into(),
            current_state: state.into(),
            context: json!({"k": state}),
            public_member: Some(json!({"p": 1})),
            internal_member: None,
            created_at: 1,
            updated_at: at,
            status: if state == "Done" {
                InstanceStatus::Completed
            } else {
                InstanceStatus::Active
            },
            is_entry_point: Some(false),
            parent_instance_id: None,
            parent_machine_name: None,
        },
        snapshot_at: at,
        last_event_id: "x".into(),
        pending_timeouts: None,
        sequence: seq,
    }
}

fn rec(record: Record, partition: i32, offset: i64) -> SinkRecord {
    SinkRecord {
        record,
        source: SourcePosition {
            topic: "t".into(),
            partition,
            offset,
        },
    }
}

/// A batch of `records` on partition `p` from `from` (stored offset `expected`).
fn batch(records: Vec<SinkRecord>, p: i32, expected: Option<i64>, next: i64) -> WriteBatch {
    WriteBatch {
        topic: "t".into(),
        records,
        offsets: vec![OffsetAdvance {
            partition: p,
            expected,
            next,
        }],
    }
}

async fn sink(m: &TestMongo) -> anyhow::Result<MongoSink> {
    let sink = MongoSink::from_database(m.database(), "test", true);
    sink.ensure_indexes().await?;
    sink.ensure_indexes().await?; // idempotent
    Ok(sink)
}

async fn all(m: &TestMongo, collection: &str) -> anyhow::Result<Vec<Document>> {
    let mut c = m
        .database()
        .collection::<Document>(collection)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await?;
    let mut out = vec![];
    while c.advance().await? {
        out.push(c.deserialize_current()?);
    }
    Ok(out)
}

#[tokio::test]
async fn replaying_a_batch_changes_nothing_and_offsets_are_fenced() -> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    let records = vec![
        rec(Record::Event(event("a", "i1", &[], 10)), 0, 0),
        rec(Record::Event(event("b", "i1", &["a"], 11)), 0, 1),
        rec(Record::Snapshot(snapshot("i1", 11, Some(2), "S-b")), 0, 2),
    ];
    let first = sink.write(&batch(records.clone(), 0, None, 3)).await?;
    assert_eq!(first.events_inserted, 2);
    assert_eq!(first.snapshots_applied, 1);
    let events = all(&m, "events").await?;
    let instances = all(&m, "instances").await?;
    let snapshots = all(&m, "snapshots").await?;

    // The same batch again (a zombie, or a restart that did not see the commit) is fenced.
    let err = sink
        .write(&batch(records.clone(), 0, None, 3))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fenced, "{err}");
    // A replay from the stored offset's point of view (after a crash before the offset moved):
    // write the data again under a fresh partition's offsets; nothing changes.
    let replay = sink.write(&batch(records, 1, None, 3)).await?;
    assert_eq!(replay.events_inserted, 0);
    assert_eq!(all(&m, "events").await?, events);
    assert_eq!(all(&m, "instances").await?, instances);
    assert_eq!(all(&m, "snapshots").await?, snapshots);

    assert_eq!(sink.load_offsets("t", &[0, 1, 2]).await?.len(), 2);
    assert_eq!(sink.load_offsets("t", &[0]).await?[&0], 3);
    let inst = &instances[0];
    assert_eq!(inst.get_i64("eventCount")?, 2);
    assert_eq!(inst.get_str("currentState")?, "S-b");
    assert_eq!(inst.get_str("status")?, "active");
    Ok(())
}

#[tokio::test]
async fn a_child_stored_before_its_parent_still_fills_the_parents_caused() -> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    // Children on partition 1 first, parent on partition 0 afterwards.
    sink.write(&batch(
        vec![
            rec(Record::Event(event("c1", "i2", &["p"], 20)), 1, 0),
            rec(Record::Event(event("c2", "i2", &["p", "q"], 21)), 1, 1),
        ],
        1,
        None,
        2,
    ))
    .await?;
    sink.write(&batch(
        vec![rec(Record::Event(event("p", "i1", &[], 10)), 0, 0)],
        0,
        None,
        1,
    ))
    .await?;
    let reader = MongoReader::new(m.database());
    let p = reader.event("p").await?.expect("parent stored");
    assert_eq!(p.event.caused, vec!["c1", "c2"]);
    let effects: Vec<String> = reader
        .events_caused_by("p")
        .await?
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(effects, vec!["c1", "c2"]);
    let causes = reader.events_that_caused("c2").await?;
    assert_eq!(causes.len(), 1, "q is not stored, p is");
    // The xcomponent-ai shell query: events that caused something.
    let n = m
        .database()
        .collection::<Document>("events")
        .count_documents(doc! {"caused.0": {"$exists": true}})
        .await?;
    assert_eq!(n, 1);
    Ok(())
}

/// The stored `caused` of event `id`, as the read API returns it.
async fn caused(m: &TestMongo, id: &str) -> anyhow::Result<Vec<String>> {
    Ok(MongoReader::new(m.database())
        .event(id)
        .await?
        .expect("parent stored")
        .event
        .caused)
}

/// A parent inserted in the same batch as a second copy of a child id stored earlier (a
/// producer retry, or a reused id): the link prefilled from that copy stands only if the
/// stored copy names the parent too.
#[tokio::test]
async fn a_second_copy_of_a_stored_child_links_its_parent_only_if_the_stored_copy_names_it()
-> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    // c names p (and so does its second copy); d names nobody, but its second copy names q.
    let c = event("c", "i2", &["p"], 20);
    let d = event("d", "i3", &[], 21);
    let d_again = event("d", "i3", &["q"], 22);
    sink.write(&batch(
        vec![
            rec(Record::Event(c.clone()), 1, 0),
            rec(Record::Event(d), 1, 1),
        ],
        1,
        None,
        2,
    ))
    .await?;
    sink.write(&batch(
        vec![
            rec(Record::Event(event("p", "i1", &[], 10)), 0, 0),
            rec(Record::Event(event("q", "i4", &[], 11)), 0, 1),
            rec(Record::Event(c), 0, 2),
            rec(Record::Event(d_again), 0, 3),
        ],
        0,
        None,
        4,
    ))
    .await?;
    assert_eq!(caused(&m, "p").await?, vec!["c"], "the stored c names p");
    assert_eq!(
        caused(&m, "q").await?,
        Vec::<String>::new(),
        "the stored d names nobody"
    );
    Ok(())
}

/// A batch that inserted a parent with a wrong link prefilled (a second copy of an id whose
/// stored copy does not name it) and stopped before removing it: the replay, cut into other
/// batches, still removes the link.
#[tokio::test]
async fn a_wrong_link_left_by_a_batch_that_stopped_midway_is_removed_by_the_replay()
-> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    // d is stored naming nobody; a second copy of d names p.
    sink.write(&batch(
        vec![rec(Record::Event(event("d", "i3", &[], 21)), 1, 0)],
        1,
        None,
        1,
    ))
    .await?;
    // What the stopped attempt at [p, d again] on partition 0 left: p inserted with `caused`
    // prefilled from the batch, and no stored offset for partition 0.
    let p = event("p", "i1", &[], 10);
    let p_source = SourcePosition {
        topic: "t".into(),
        partition: 0,
        offset: 0,
    };
    let mut left = xclog_projector::sink::mongo::document::event_document(&p, &p_source);
    left.insert("caused", vec!["d"]);
    m.database()
        .collection::<Document>("events")
        .insert_one(left)
        .await?;
    // The replay, cut into two batches.
    sink.write(&batch(vec![rec(Record::Event(p), 0, 0)], 0, None, 1))
        .await?;
    sink.write(&batch(
        vec![rec(Record::Event(event("d", "i3", &["p"], 22)), 0, 1)],
        0,
        Some(1),
        2,
    ))
    .await?;
    assert_eq!(
        caused(&m, "p").await?,
        Vec::<String>::new(),
        "the stored d names nobody"
    );
    Ok(())
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() -> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    sink.write(&batch(
        vec![rec(
            Record::Snapshot(snapshot("i1", 50, Some(5), "Five")),
            0,
            0,
        )],
        0,
        None,
        1,
    ))
    .await?;
    // Older by sequence although newer by time: ignored.
    let out = sink
        .write(&batch(
            vec![rec(
                Record::Snapshot(snapshot("i1", 99, Some(4), "Four")),
                0,
                1,
            )],
            0,
            Some(1),
            2,
        ))
        .await?;
    assert_eq!(out.snapshots_applied, 0);
    // Newer: applied, and the status reaches the instance view.
    let out = sink
        .write(&batch(
            vec![rec(
                Record::Snapshot(snapshot("i1", 60, Some(6), "Done")),
                0,
                2,
            )],
            0,
            Some(2),
            3,
        ))
        .await?;
    assert_eq!(out.snapshots_applied, 1);
    let reader = MongoReader::new(m.database());
    let s = reader.snapshot("i1").await?.expect("snapshot");
    assert_eq!(s, snapshot("i1", 60, Some(6), "Done"));
    let inst = all(&m, "instances").await?;
    assert_eq!(inst[0].get_str("status")?, "completed");
    assert_eq!(
        reader
            .list_snapshots(&Page::first(10))
            .await?
            .snapshots
            .len(),
        1
    );
    Ok(())
}

/// A replayed batch whose first snapshot (in instance order) is stored already: the other
/// snapshots of the batch are still inserted or applied. FerretDB 1.24 ends an unordered
/// command at its first failed statement, so a sink that let the stored one fail (an upsert
/// meeting a duplicate key) stored nothing after it, on every retry.
#[tokio::test]
async fn a_replayed_batch_whose_first_snapshot_is_stored_still_stores_the_others()
-> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    let snap = |instance: &str, seq: u64, offset: i64| {
        rec(
            Record::Snapshot(snapshot(
                instance,
                10 * seq as i64,
                Some(seq),
                &format!("S{seq}"),
            )),
            0,
            offset,
        )
    };
    sink.write(&batch(vec![snap("a", 1, 0), snap("c", 1, 1)], 0, None, 2))
        .await?;
    // `a` as stored, `b` new, `c` newer than stored.
    let out = sink
        .write(&batch(
            vec![snap("a", 1, 0), snap("b", 1, 2), snap("c", 2, 3)],
            0,
            Some(2),
            4,
        ))
        .await?;
    assert_eq!(out.snapshots_applied, 2, "b inserted and c applied");
    // `a` as stored and `c` newer again: no instance is missing, so only the stored state
    // shows whether `c` was applied.
    let out = sink
        .write(&batch(
            vec![snap("a", 1, 0), snap("c", 3, 4)],
            0,
            Some(4),
            5,
        ))
        .await?;
    assert_eq!(out.snapshots_applied, 1);
    let reader = MongoReader::new(m.database());
    for (instance, seq) in [("a", 1u64), ("b", 1), ("c", 3)] {
        let stored = reader.snapshot(instance).await?;
        assert_eq!(
            stored,
            Some(snapshot(
                instance,
                10 * seq as i64,
                Some(seq),
                &format!("S{seq}")
            )),
            "snapshot of {instance}"
        );
    }
    let instances = all(&m, "instances").await?;
    assert_eq!(instances.len(), 3, "{instances:?}");
    Ok(())
}

#[tokio::test]
async fn awkward_payloads_are_stored_losslessly_and_read_back_exactly() -> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    let mut deep = json!({"bottom": [1, 2, {"$x": "y"}]});
    for n in 0..60 {
        deep = json!({ format!("level.{n}"): deep });
    }
    let payloads: Vec<Value> = vec![
        json!({"$set": {"a.b": 1}, "$inc": 2, "": "empty key", "50%": "pct"}),
        json!({"big": u64::MAX, "min": i64::MIN, "f": -0.5, "e": 1e300}),
        json!({"nul": "a\u{0}b", "nested": {"%json": "not a marker", "%num": 3}}),
        deep,
        json!({"unicode": "żółw 🐢", "arr": [[], {}, null, true]}),
    ];
    let mut records = vec![];
    for (n, p) in payloads.iter().enumerate() {
        let mut e = event(&format!("w{n}"), "i1", &[], 100 + n as i64);
        e.event.payload = p.clone();
        e.public_member_snapshot = Some(p.clone());
        e.event
            .extra
            .insert("_sourceComponent".into(), json!("Other"));
        e.event.extra.insert("$odd.key".into(), json!(1));
        e.sequence = Some(n as u64);
        assert!(sink.check(&Record::Event(e.clone())).is_ok());
        records.push(rec(Record::Event(e), 0, n as i64));
    }
    let mut s = snapshot("i1", 5, Some(1), "S");
    s.instance.context = payloads[0].clone();
    s.instance.internal_member = Some(payloads[2].clone());
    records.push(rec(Record::Snapshot(s.clone()), 0, 10));
    sink.write(&batch(records.clone(), 0, None, 11)).await?;

    let reader = MongoReader::new(m.database());
    for r in &records[..payloads.len()] {
        let Record::Event(e) = &r.record else {
            unreachable!()
        };
        let got = reader.event(&e.id).await?.expect("stored");
        assert_eq!(&got.event, e, "event {} read back differently", e.id);
        assert_eq!(got.source.as_ref(), Some(&r.source));
    }
    assert_eq!(reader.snapshot("i1").await?, Some(s));

    // What it looks like in the store: escaped keys, marker documents, Int64 times.
    let d = m
        .database()
        .collection::<Document>("events")
        .find_one(doc! {"_id": "w0"})
        .await?
        .expect("w0");
    let payload = d.get_document("event")?.get_document("payload")?;
    let keys: BTreeSet<&str> = payload.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["%24set", "%24inc", "%", "50%25"]));
    assert!(matches!(d.get("persistedAt"), Some(Bson::Int64(100))));

    // Too large for a document: refused before any write, with the reason.
    let mut huge = event("huge", "i1", &[], 1);
    huge.event.payload = json!({"blob": "x".repeat(17 * 1024 * 1024)});
    let reason = sink.check(&Record::Event(huge)).unwrap_err();
    assert!(reason.contains("16777216"), "{reason}");
    let mut bad = event("bad", "i1", &[], 1);
    bad.sequence = Some(u64::MAX);
    assert!(
        sink.check(&Record::Event(bad))
            .unwrap_err()
            .contains("sequence")
    );
    Ok(())
}

#[tokio::test]
async fn a_replay_cut_into_different_batches_counts_every_event_once() -> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    let records: Vec<SinkRecord> = (0..10)
        .map(|n| rec(Record::Event(event(&format!("e{n}"), "i1", &[], n)), 0, n))
        .collect();
    // A worker wrote the first 4 records' data but died before advancing the offset...
    sink.write(&batch(records[..4].to_vec(), 5, None, 4))
        .await?;
    // ...and also a duplicate id published again later (a producer retry) must not count.
    let mut dup = records[2].clone();
    dup.source.offset = 10;
    let mut all_records = records.clone();
    all_records.push(dup);
    // The next owner replays everything in one batch.
    sink.write(&batch(all_records, 0, None, 11)).await?;
    let inst = all(&m, "instances").await?;
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0].get_i64("eventCount")?, 10);
    assert_eq!(inst[0].get_str("lastEventId")?, "e9");
    let page = MongoReader::new(m.database())
        .events_of_instance("i1", &Page::first(4))
        .await?;
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["e0", "e1", "e2", "e3"]
    );
    assert!(page.next.is_some());
    Ok(())
}

/// More statements per `update` command that match a stored document than FerretDB 1.x has
/// PostgreSQL connections (`pool_max_conns`: 40 in the local stack, 50 by default): with
/// `multi: false` statements FerretDB held one connection per matching statement until the
/// command ended and waited forever for the 41st (docs/DESIGN.md, "MongoDB"). Every step of
/// the second batch here matches 120 stored documents: `caused` of 120 parents, the instance
/// view of 120 instances, 120 older snapshots.
#[tokio::test]
async fn a_batch_touching_more_stored_documents_than_ferretdbs_pool_completes() -> anyhow::Result<()>
{
    const N: usize = 120;
    let m = TestMongo::create().await?;
    let sink = sink(&m).await?;
    let instance = |i: usize| format!("i{i:03}");
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..N {
        let (parent, child) = (format!("p{i:03}"), format!("c{i:03}"));
        first.push(Record::Event(event(&parent, &instance(i), &[], 10)));
        first.push(Record::Snapshot(snapshot(&instance(i), 10, Some(1), "One")));
        second.push(Record::Event(event(&child, &instance(i), &[&parent], 20)));
        second.push(Record::Snapshot(snapshot(
            &instance(i),
            20,
            Some(2),
            "Done",
        )));
    }
    let records = |list: Vec<Record>| -> Vec<SinkRecord> {
        list.into_iter()
            .enumerate()
            .map(|(o, r)| rec(r, 0, o as i64))
            .collect()
    };
    let limit = std::time::Duration::from_secs(60);
    let n = (2 * N) as i64;
    let stall = "the write did not complete within 60 s: the server stopped answering \
                 (FerretDB: see scripts/stack.sh ferretdb-restart)";
    tokio::time::timeout(limit, sink.write(&batch(records(first), 0, None, n)))
        .await
        .map_err(|_| anyhow::anyhow!(stall))??;
    let mut second = records(second);
    for (k, r) in second.iter_mut().enumerate() {
        r.source.offset = n + k as i64;
    }
    let out = tokio::time::timeout(limit, sink.write(&batch(second, 0, Some(n), 2 * n)))
        .await
        .map_err(|_| anyhow::anyhow!(stall))??;
    assert_eq!(out.events_inserted, N as u64);
    assert_eq!(out.snapshots_applied, N as u64);

    let events = all(&m, "events").await?;
    assert_eq!(events.len(), 2 * N);
    for e in events
        .iter()
        .filter(|e| e.get_str("_id").is_ok_and(|id| id.starts_with('p')))
    {
        let id = e.get_str("_id")?;
        let caused: Vec<&str> = e
            .get_array("caused")?
            .iter()
            .filter_map(Bson::as_str)
            .collect();
        assert_eq!(caused, vec![format!("c{}", &id[1..])], "caused of {id}");
    }
    let instances = all(&m, "instances").await?;
    assert_eq!(instances.len(), N);
    for i in &instances {
        assert_eq!(i.get_i64("eventCount")?, 2, "{i}");
        assert_eq!(i.get_str("status")?, "completed", "{i}");
    }
    let snapshots = all(&m, "snapshots").await?;
    assert_eq!(snapshots.len(), N);
    for s in &snapshots {
        assert_eq!(s.get_document("instance")?.get_str("currentState")?, "Done");
        assert_eq!(s.get_i64("sequence")?, 2);
    }
    Ok(())
}
