//! End-to-end tests of the MongoDB projector against real Kafka and FerretDB (or MongoDB).

mod projector_mongo_support;
mod projector_pg_support;

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use projector_mongo_support as mongo;
use projector_pg_support::{Published, config, event, producer, publish, publish_raw, workload};
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use serde_json::json;
use xclog_projector::ProjectorConfig;
use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::{EventStore, Page};
use xclog_projector::sink::mongo::MongoSink;
use xclog_schema::{Encoding, PersistedEvent, Record};
use xclog_tests::{TestMongo, TestTopic, unique_suffix};

/// Deadline of each catch-up: FerretDB 1.24 takes about 50-70 events/s on 2 cores (docs/DESIGN.md).
const CATCH_UP: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_realistic_workload_lands_document_for_document_and_a_replay_changes_nothing()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let records = workload(1500, 40, 11);
    let published = publish(&producer()?, &topic.name, &records, Encoding::Protobuf).await?;

    let p = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    p.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;

    // The xcomponent-ai shell queries answer correctly.
    let (events, _) = mongo::expected(&published);
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in events.values() {
        *want.entry(e.component_name.clone()).or_default() += 1;
    }
    let mut cursor = db
        .collection::<Document>("events")
        .aggregate(vec![
            doc! {"$group": {"_id": "$componentName", "count": {"$sum": 1}}},
        ])
        .await?;
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    while cursor.advance().await? {
        let d: Document = cursor.deserialize_current()?;
        let n = d
            .get_i32("count")
            .map(i64::from)
            .or_else(|_| d.get_i64("count"))?;
        got.insert(d.get_str("_id")?.to_owned(), n);
    }
    assert_eq!(got, want);
    let with_effects = events.values().filter(|e| !e.caused.is_empty()).count() as u64;
    assert!(with_effects > 0);
    assert_eq!(
        db.collection::<Document>("events")
            .count_documents(doc! {"caused.0": {"$exists": true}})
            .await?,
        with_effects
    );
    let parent = events.values().find(|e| !e.caused.is_empty()).unwrap();
    assert_eq!(
        db.collection::<Document>("events")
            .count_documents(doc! {"causedBy": &parent.id})
            .await?,
        parent.caused.len() as u64
    );
    let history = MongoReader::new(db.clone())
        .events_of_instance(&parent.instance_id, &Page::first(1000))
        .await?;
    let mut want_history: Vec<&PersistedEvent> = events
        .values()
        .filter(|e| e.instance_id == parent.instance_id)
        .collect();
    want_history.sort_by_key(|e| e.sequence);
    assert_eq!(
        history.events.iter().map(|e| &e.event).collect::<Vec<_>>(),
        want_history,
        "an instance's history is in log order"
    );
    let trace = xclog_projector::read::trace(&MongoReader::new(db.clone()), &parent.caused[0], 100)
        .await?
        .expect("traced");
    assert!(trace.events.iter().any(|t| t.event.event.id == parent.id));

    // Replay the whole topic from the start (stored offsets dropped): nothing changes.
    let before = mongo::dump(&db).await?;
    db.collection::<Document>("xclog_offsets")
        .delete_many(doc! {})
        .await?;
    let p = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    p.stop().await?;
    assert_eq!(
        mongo::dump(&db).await?,
        before,
        "a replay changed the store"
    );
    Ok(())
}

/// The start of the causality tests: a 3-partition topic, a fresh database, a group, a
/// producer, and a parent event (instance `pi-<suffix>`) not yet published.
struct Causal {
    topic: TestTopic,
    _mongo: TestMongo,
    db: mongodb::Database,
    group: String,
    producer: rdkafka::producer::FutureProducer,
    suffix: String,
    parent: PersistedEvent,
}

impl Causal {
    async fn new() -> anyhow::Result<Self> {
        let topic = TestTopic::create(3).await?;
        let mongo = TestMongo::create().await?;
        let suffix = unique_suffix();
        Ok(Self {
            topic,
            db: mongo.database(),
            _mongo: mongo,
            group: format!("g-{}", unique_suffix()),
            producer: producer()?,
            parent: event(
                &format!("parent-{suffix}"),
                &format!("pi-{suffix}"),
                &[],
                100,
            ),
            suffix,
        })
    }

    /// A child of the parent, in its own instance `<name>-i-<suffix>`.
    fn child(&self, name: &str, at: i64) -> PersistedEvent {
        event(
            &format!("{name}-{}", self.suffix),
            &format!("{name}-i-{}", self.suffix),
            &[&self.parent.id],
            at,
        )
    }

    async fn publish(
        &self,
        events: &[&PersistedEvent],
        encoding: Encoding,
    ) -> anyhow::Result<Vec<Published>> {
        let records: Vec<Record> = events.iter().map(|e| Record::Event((*e).clone())).collect();
        publish(&self.producer, &self.topic.name, &records, encoding).await
    }

    /// Runs a projector with `config` until it has caught up with the topic, then stops it.
    async fn project(&self, config: ProjectorConfig) -> anyhow::Result<()> {
        let p = mongo::start_in_process(config, self.db.clone()).await?;
        mongo::wait_caught_up(&self.db, &self.topic.name, &self.group, 3, CATCH_UP).await?;
        p.stop().await
    }

    /// The stored `caused` of the parent.
    async fn parents_caused(&self) -> anyhow::Result<Vec<String>> {
        Ok(MongoReader::new(self.db.clone())
            .event(&self.parent.id)
            .await?
            .expect("parent")
            .event
            .caused)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_projected_before_its_parent_still_appears_in_the_parents_caused()
-> anyhow::Result<()> {
    let t = Causal::new().await?;
    let child_a = t.child("child-a", 200);
    let child_b = t.child("child-b", 150);

    // child-a is stored first; its parent and a second child arrive later, on a running
    // projector.
    let mut published = t.publish(&[&child_a], Encoding::Json).await?;
    let p = mongo::start_in_process(config(&t.topic.name, &t.group), t.db.clone()).await?;
    mongo::wait_caught_up(&t.db, &t.topic.name, &t.group, 3, CATCH_UP).await?;
    published.extend(
        t.publish(&[&t.parent, &child_b], Encoding::Protobuf)
            .await?,
    );
    mongo::wait_caught_up(&t.db, &t.topic.name, &t.group, 3, CATCH_UP).await?;
    p.stop().await?;

    let mut want = vec![child_a.id.clone(), child_b.id.clone()];
    want.sort();
    assert_eq!(t.parents_caused().await?, want);
    mongo::assert_store_equals(&t.db, &published).await?;
    Ok(())
}

/// Children on every partition, written by both writers at once, each add themselves to the
/// same parent's `caused`: none of the concurrent additions may be lost (FerretDB applies an
/// update as read, modify, write of the whole document, without a lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_written_by_both_writers_at_once_all_land_in_their_parents_caused()
-> anyhow::Result<()> {
    let t = Causal::new().await?;
    let mut c = config(&t.topic.name, &t.group);
    c.batch_max_records = 8;
    c.writers = 2;
    let mut published = t.publish(&[&t.parent], Encoding::Json).await?;
    t.project(c.clone()).await?;

    // The children are published while no projector runs, so both writers start with a full
    // backlog of small batches on different partitions, each naming the same parent.
    let children: Vec<PersistedEvent> = (0..240)
        .map(|n| t.child(&format!("kid-{n:03}"), 200 + n))
        .collect();
    published.extend(
        t.publish(&children.iter().collect::<Vec<_>>(), Encoding::Protobuf)
            .await?,
    );
    t.project(c).await?;

    let caused = t.parents_caused().await?;
    let mut want: Vec<String> = children.iter().map(|e| e.id.clone()).collect();
    want.sort();
    let missing: Vec<&String> = want.iter().filter(|id| !caused.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} children missing from the parent's caused, e.g. {:?}",
        missing.len(),
        want.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(caused, want);
    mongo::assert_store_equals(&t.db, &published).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_and_awkward_payloads_are_dead_lettered_or_stored_losslessly_and_the_stream_goes_on()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let s = unique_suffix();

    // Awkward but storable: each must come back exactly.
    let mut deep = json!({"bottom": [[1], {"$x": "y"}]});
    for n in 0..50 {
        deep = json!({ format!("l.{n}"): deep });
    }
    let awkward: Vec<serde_json::Value> = vec![
        json!({"$set": {"a.b": 1}, "": 0, "%25": "pct"}),
        json!({"big": u64::MAX, "min": i64::MIN, "neg": -0.25}),
        json!({"nul": "a\u{0}b", "matrix": [[1, 2], [[3]]]}),
        deep,
    ];
    let mut good: Vec<Record> = workload(300, 8, 5);
    for (n, p) in awkward.iter().enumerate() {
        let mut e = event(
            &format!("awk-{n}-{s}"),
            &format!("ai-{s}"),
            &[],
            10 + n as i64,
        );
        e.event.payload = p.clone();
        e.event.extra.insert("$meta.x".into(), p.clone());
        good.push(Record::Event(e));
    }
    let mut published = Vec::new();
    let mut poison: Vec<(i32, i64)> = Vec::new();
    for (n, chunk) in good.chunks(60).enumerate() {
        published.extend(publish(&producer, &topic.name, chunk, Encoding::Protobuf).await?);
        let (p, o) = match n % 3 {
            0 => {
                publish_raw(
                    &producer,
                    &topic.name,
                    "inst-x",
                    b"\x00\x01not a record",
                    &[],
                )
                .await?
            }
            1 => {
                // Decodes, but BSON cannot compare its sequence: refused by the sink's check.
                let mut e = event(&format!("seq-{n}-{s}"), "inst-seq", &[], 1);
                e.sequence = Some(u64::MAX);
                let enc = xclog_schema::encode(&Record::Event(e), Encoding::Json);
                let headers: Vec<(&str, &[u8])> = enc
                    .headers
                    .iter()
                    .map(|(k, v)| (*k, v.as_slice()))
                    .collect();
                publish_raw(&producer, &topic.name, &enc.key, &enc.value, &headers).await?
            }
            _ => {
                let e = event(&format!("nulid-{n}-{s}"), "inst\u{0}nul", &[], 1);
                let enc = xclog_schema::encode(&Record::Event(e), Encoding::Json);
                let headers: Vec<(&str, &[u8])> = enc
                    .headers
                    .iter()
                    .map(|(k, v)| (*k, v.as_slice()))
                    .collect();
                publish_raw(&producer, &topic.name, "inst-nul", &enc.value, &headers).await?
            }
        };
        poison.push((p, o));
    }

    let p = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;

    let dlq =
        xclog_tests::consume_topic(&format!("{}.dlq", topic.name), poison.len(), CATCH_UP).await?;
    let mut got: Vec<(i32, i64)> = Vec::new();
    for msg in &dlq {
        let headers = msg.headers().expect("dead letters carry headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("xclog-dlq-source-topic"), topic.name);
        let reason = header("xclog-dlq-reason");
        assert!(!reason.is_empty());
        if header("xclog-dlq-error-kind") != "decode" {
            assert!(
                reason.contains("sequence") || reason.contains("NUL"),
                "unexpected reason {reason}"
            );
        }
        got.push((
            header("xclog-dlq-source-partition").parse()?,
            header("xclog-dlq-source-offset").parse()?,
        ));
    }
    got.sort();
    poison.sort();
    assert_eq!(got, poison);
    Ok(())
}

/// Two projectors of one group hand partitions over. They write through clones of one sink,
/// as two projectors of one process would: on FerretDB 1.24, two *processes* updating the
/// same parent's `caused` at once can lose a link (docs/OPERATIONS.md, "FerretDB: one
/// projector process per projection"), and this test is about the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_in_one_group_share_the_partitions_and_one_stopping_midway_loses_nothing()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(1500, 50, 21);
    let (first, second) = records.split_at(records.len() / 2);
    let sink = MongoSink::from_database(db.clone(), &group, true);
    let a = mongo::start_sink_in_process(config(&topic.name, &group), sink.clone()).await?;
    let b = mongo::start_sink_in_process(config(&topic.name, &group), sink).await?;
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    // One worker leaves while the second half is being published: the other takes over.
    let publishing = publish(&producer, &topic.name, second, Encoding::Json);
    let (stopped, rest) = tokio::join!(a.stop(), publishing);
    stopped?;
    published.extend(rest?);
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    b.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}

/// `writers = 2` on 3 partitions: two writers commit concurrently into the same collections,
/// parents and children in different writers' batches; every document lands once, with every
/// `caused` complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_in_one_projector_land_every_document_once_with_complete_causality()
-> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(1500, 50, 34);
    let mut cfg = config(&topic.name, &group);
    cfg.writers = 2;
    let a = mongo::start_in_process(cfg, db.clone()).await?;
    let published = publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 3, CATCH_UP).await?;
    a.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}
