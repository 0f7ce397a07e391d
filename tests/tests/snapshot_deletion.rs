//! Snapshot deletions go through the log: both sinks apply them in log order (batch by batch,
//! against real PostgreSQL and FerretDB), `xclog snapshot ID --delete` publishes one that the
//! projectors apply, a rebuild keeps the snapshot deleted, and `xclog verify` accounts for them.

mod projector_mongo_support;
mod projector_pg_support;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use mongodb::bson::{Document, doc};
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::postgres::PgReader;
use xclog_projector::read::{Page, SnapshotStore};
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::sink::postgres::PgSink;
use xclog_projector::sink::{OffsetAdvance, Sink, SinkRecord, SourcePosition, WriteBatch};
use xclog_schema::{Encoding, Record, SnapshotDeletion};
use xclog_tests::{TestMongo, TestPg, TestTopic, brokers, run_to_end, unique_suffix};

use projector_pg_support::{
    Published, config, producer, publish, snapshot, workload, xclog_binary,
};

const CATCH_UP: Duration = Duration::from_secs(120);
const COMMAND: Duration = Duration::from_secs(180);

fn deletion(instance: &str, at: i64) -> Record {
    Record::SnapshotDeletion(SnapshotDeletion {
        instance_id: instance.into(),
        snapshot_deleted_at: at,
        sequence: None,
    })
}

/// Batch `n` (0-based) of a single-partition log whose batches each hold `records`, the
/// offsets continuing from `from`.
fn batch(records: Vec<Record>, from: i64) -> WriteBatch {
    let next = from + records.len() as i64;
    WriteBatch {
        topic: "t".into(),
        records: records
            .into_iter()
            .enumerate()
            .map(|(i, record)| SinkRecord {
                record,
                source: SourcePosition {
                    topic: "t".into(),
                    partition: 0,
                    offset: from + i as i64,
                },
            })
            .collect(),
        offsets: vec![OffsetAdvance {
            partition: 0,
            expected: (from > 0).then_some(from),
            next,
        }],
    }
}

/// The stored state of each instance's snapshot, through the read API.
async fn states(store: &impl SnapshotStore, ids: &[&str]) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.snapshot(id).await?.map(|s| s.instance.current_state));
    }
    Ok(out)
}

async fn pg_sink(pg: &TestPg) -> anyhow::Result<PgSink> {
    let sink = PgSink::from_pool(pg.pool.clone(), "p");
    sink.migrate().await?;
    Ok(sink)
}

async fn mongo_sink(m: &TestMongo, projection: &str) -> anyhow::Result<MongoSink> {
    let sink = MongoSink::from_database(m.database(), projection, true);
    sink.ensure_indexes().await?;
    Ok(sink)
}

/// Three batches: snapshots of i1 and i2; the deletion of i1; a later snapshot of i1 with a
/// lower sequence than the deleted one. Returns the states after each batch.
async fn delete_then_bring_back(
    sink: &impl Sink,
    store: &impl SnapshotStore,
) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let ids = ["i1", "i2"];
    let mut seen = Vec::new();
    sink.write(&batch(
        vec![
            snapshot("i1", 10, Some(5), "Five"),
            snapshot("i2", 10, Some(1), "Other"),
        ],
        0,
    ))
    .await?;
    seen.push(states(store, &ids).await?);
    let out = sink.write(&batch(vec![deletion("i1", 20)], 2)).await?;
    ensure!(out.snapshots_deleted == 1, "{out:?}");
    seen.push(states(store, &ids).await?);
    sink.write(&batch(vec![snapshot("i1", 30, Some(3), "Back")], 3))
        .await?;
    seen.push(states(store, &ids).await?);
    Ok(seen)
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[tokio::test]
async fn a_deletion_removes_the_postgres_snapshot_and_a_later_snapshot_brings_it_back()
-> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    let sink = pg_sink(&pg).await?;
    let seen = delete_then_bring_back(&sink, &PgReader::new(pg.pool.clone())).await?;
    assert_eq!(
        seen,
        vec![
            vec![some("Five"), some("Other")],
            vec![None, some("Other")],
            vec![some("Back"), some("Other")],
        ]
    );
    // The instance view is left as it is.
    let instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM fsm_instances WHERE instance_id = 'i1'")
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(instances, 1);
    Ok(())
}

#[tokio::test]
async fn a_deletion_removes_the_mongo_snapshot_and_a_later_snapshot_brings_it_back()
-> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = mongo_sink(&m, "p").await?;
    let seen = delete_then_bring_back(&sink, &MongoReader::new(m.database())).await?;
    assert_eq!(
        seen,
        vec![
            vec![some("Five"), some("Other")],
            vec![None, some("Other")],
            vec![some("Back"), some("Other")],
        ]
    );
    let instances = m
        .database()
        .collection::<Document>("instances")
        .count_documents(doc! {"_id": "i1"})
        .await?;
    assert_eq!(instances, 1);
    Ok(())
}

/// One batch: i1 snapshot then its deletion; i2 deletion then a snapshot; i3 a stored snapshot
/// deleted, re-snapshotted and deleted again.
fn one_batch_of_each_order() -> Vec<Record> {
    vec![
        snapshot("i1", 10, Some(1), "Gone"),
        snapshot("i3", 10, Some(1), "Three"),
        deletion("i2", 11),
        deletion("i1", 12),
        snapshot("i2", 13, Some(1), "Kept"),
        deletion("i3", 14),
        snapshot("i3", 15, Some(9), "Again"),
        deletion("i3", 16),
    ]
}

#[tokio::test]
async fn a_snapshot_and_its_deletion_in_one_postgres_batch_leave_nothing() -> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    let sink = pg_sink(&pg).await?;
    // i3 has a stored snapshot from an earlier batch.
    sink.write(&batch(vec![snapshot("i3", 5, Some(1), "Stored")], 0))
        .await?;
    sink.write(&batch(one_batch_of_each_order(), 1)).await?;
    let reader = PgReader::new(pg.pool.clone());
    assert_eq!(
        states(&reader, &["i1", "i2", "i3"]).await?,
        vec![None, some("Kept"), None]
    );
    Ok(())
}

#[tokio::test]
async fn a_snapshot_and_its_deletion_in_one_mongo_batch_leave_nothing_and_a_replay_changes_nothing()
-> anyhow::Result<()> {
    let m = TestMongo::create().await?;
    let sink = mongo_sink(&m, "p").await?;
    sink.write(&batch(vec![snapshot("i3", 5, Some(1), "Stored")], 0))
        .await?;
    let the_batch = batch(one_batch_of_each_order(), 1);
    sink.write(&the_batch).await?;
    let reader = MongoReader::new(m.database());
    let want = vec![None, some("Kept"), None];
    assert_eq!(states(&reader, &["i1", "i2", "i3"]).await?, want);
    let stored = |m: &TestMongo| {
        let db = m.database();
        async move {
            let mut c = db
                .collection::<Document>("snapshots")
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await?;
            let mut out = vec![];
            while c.advance().await? {
                out.push(c.deserialize_current()?);
            }
            anyhow::Ok(out)
        }
    };
    let before = stored(&m).await?;
    // A crash before the offsets moved replays the batch's writes: the same data steps, here
    // through a second projection name, whose offsets start from the same place.
    let replay = mongo_sink(&m, "replay").await?;
    let mut again = the_batch.clone();
    again.offsets[0].expected = None;
    replay.write(&again).await?;
    assert_eq!(stored(&m).await?, before);
    assert_eq!(states(&reader, &["i1", "i2", "i3"]).await?, want);
    Ok(())
}

/// A small workload plus, at its end, the deletion of the snapshot of one instance that has
/// one; returns what was published and that instance.
async fn publish_with_a_deletion(topic: &str) -> anyhow::Result<(Vec<Published>, String)> {
    let producer = producer()?;
    let mut published = publish(&producer, topic, &workload(160, 8, 23), Encoding::Json).await?;
    let deleted = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Snapshot(s) => Some(s.instance.id.clone()),
            _ => None,
        })
        .context("the workload has snapshots")?;
    published.extend(
        publish(
            &producer,
            topic,
            &[deletion(&deleted, 1_767_225_600_030)],
            Encoding::Protobuf,
        )
        .await?,
    );
    Ok((published, deleted))
}

/// Instances with a snapshot on the topic, other than `deleted`.
fn other_snapshotted(published: &[Published], deleted: &str) -> Vec<String> {
    let mut ids: Vec<String> = published
        .iter()
        .filter_map(|p| match &p.record {
            Record::Snapshot(s) if s.instance.id != deleted => Some(s.instance.id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn all_snapshot_ids(store: &impl SnapshotStore) -> anyhow::Result<Vec<String>> {
    Ok(store
        .list_snapshots(&Page::first(1000))
        .await?
        .snapshots
        .into_iter()
        .map(|s| s.instance.id)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xclog_snapshot_delete_publishes_a_deletion_that_both_projectors_apply()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let m = TestMongo::create().await?;
    let (pg_group, mongo_group) = (
        format!("gp-{}", unique_suffix()),
        format!("gm-{}", unique_suffix()),
    );
    let producer = producer()?;
    let published = publish(
        &producer,
        &topic.name,
        &workload(160, 8, 29),
        Encoding::Json,
    )
    .await?;
    let target = other_snapshotted(&published, "")
        .into_iter()
        .next()
        .context("the workload has snapshots")?;
    let pg_projector =
        projector_pg_support::start_in_process(config(&topic.name, &pg_group), &pg.url).await?;
    let mongo_projector =
        projector_mongo_support::start_in_process(config(&topic.name, &mongo_group), m.database())
            .await?;
    projector_pg_support::wait_caught_up(&pg.pool, &topic.name, &pg_group, 2, CATCH_UP).await?;
    projector_mongo_support::wait_caught_up(&m.database(), &topic.name, &mongo_group, 2, CATCH_UP)
        .await?;
    let pg_reader = PgReader::new(pg.pool.clone());
    let mongo_reader = MongoReader::new(m.database());
    ensure!(pg_reader.snapshot(&target).await?.is_some());
    ensure!(mongo_reader.snapshot(&target).await?.is_some());
    let others_before = all_snapshot_ids(&pg_reader).await?.len();

    let mut c = Command::new(xclog_binary()?);
    c.args(["snapshot", &target, "--delete", "--topic", &topic.name])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env_remove("DATABASE_URL")
        .env("XCLOG_LOG", "warn");
    let (ok, out, err) = run_to_end(COMMAND, c).await?;
    ensure!(ok, "xclog snapshot --delete failed: {out}{err}");
    ensure!(
        out.contains(&format!("topic {} partition", topic.name)) && out.contains("offset"),
        "it does not say where it published: {out}"
    );

    projector_pg_support::wait_caught_up(&pg.pool, &topic.name, &pg_group, 2, CATCH_UP).await?;
    projector_mongo_support::wait_caught_up(&m.database(), &topic.name, &mongo_group, 2, CATCH_UP)
        .await?;
    pg_projector.stop().await?;
    mongo_projector.stop().await?;
    ensure!(pg_reader.snapshot(&target).await?.is_none(), "postgres");
    ensure!(mongo_reader.snapshot(&target).await?.is_none(), "mongo");
    let pg_left = all_snapshot_ids(&pg_reader).await?;
    ensure!(pg_left.len() + 1 == others_before, "{pg_left:?}");
    ensure!(all_snapshot_ids(&mongo_reader).await? == pg_left);

    // The published record is a snapshot deletion keyed by the instance, with its kind header.
    let messages = topic
        .consume(published.len() + 1, Duration::from_secs(30))
        .await?;
    let found = messages.iter().any(|msg| {
        let headers: Vec<(&str, &[u8])> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let kind = headers
            .iter()
            .any(|(k, v)| *k == "xclog-kind" && *v == b"snapshot-deletion");
        let decoded = xclog_schema::decode(
            &headers,
            msg.key(),
            msg.payload().unwrap_or_default(),
            &xclog_schema::Limits::default(),
        );
        kind && matches!(
            decoded.map(|d| d.record),
            Ok(Record::SnapshotDeletion(d)) if d.instance_id == target
        )
    });
    ensure!(found, "no snapshot deletion of {target} on the topic");
    Ok(())
}

#[tokio::test]
async fn the_rust_producer_deletes_a_snapshot_by_publishing_a_deletion_on_the_instances_key()
-> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let producer = xclog_producer::Producer::connect(xclog_producer::ProducerConfig::new(
        brokers(),
        &topic.name,
    ))
    .await?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let position = producer.delete_snapshot("order-7").await?;
    producer.close(Duration::from_secs(10)).await?;
    let messages = topic.consume(1, Duration::from_secs(30)).await?;
    let msg = &messages[0];
    ensure!(msg.partition() == position.partition && msg.offset() == position.offset);
    let headers: Vec<(&str, &[u8])> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        headers.contains(&("xclog-kind", b"snapshot-deletion".as_slice())),
        "{headers:?}"
    );
    let decoded = xclog_schema::decode(
        &headers,
        msg.key(),
        msg.payload().unwrap_or_default(),
        &xclog_schema::Limits::default(),
    )?;
    let Record::SnapshotDeletion(d) = decoded.record else {
        anyhow::bail!("not a deletion: {:?}", decoded.record);
    };
    ensure!(d.instance_id == "order-7" && d.sequence.is_none());
    ensure!(d.snapshot_deleted_at >= before, "{d:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_snapshot_stays_deleted_after_a_postgres_rebuild() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let (published, deleted) = publish_with_a_deletion(&topic.name).await?;
    let p = projector_pg_support::start_in_process(config(&topic.name, &group), &pg.url).await?;
    projector_pg_support::wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;
    let reader = PgReader::new(pg.pool.clone());
    let others = other_snapshotted(&published, &deleted);
    ensure!(all_snapshot_ids(&reader).await? == others);

    let mut c = Command::new(xclog_binary()?);
    c.args(["rebuild", "--target", "postgres", "--progress", "log"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", &topic.name)
        .env("XCLOG_GROUP", &group)
        .env("DATABASE_URL", &pg.url)
        .env("XCLOG_LOG", "warn");
    let (ok, out, err) = run_to_end(COMMAND, c).await?;
    ensure!(ok, "rebuild failed: {out}{err}");
    ensure!(reader.snapshot(&deleted).await?.is_none());
    ensure!(all_snapshot_ids(&reader).await? == others);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_snapshot_stays_deleted_after_a_mongo_rebuild() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let m = TestMongo::create().await?;
    let group = format!("g-{}", unique_suffix());
    let (published, deleted) = publish_with_a_deletion(&topic.name).await?;
    let p = projector_mongo_support::start_in_process(config(&topic.name, &group), m.database())
        .await?;
    projector_mongo_support::wait_caught_up(&m.database(), &topic.name, &group, 2, CATCH_UP)
        .await?;
    p.stop().await?;
    let reader = MongoReader::new(m.database());
    let others = other_snapshotted(&published, &deleted);
    ensure!(all_snapshot_ids(&reader).await? == others);

    let mut c = Command::new(xclog_binary()?);
    c.args(["rebuild", "--target", "mongo", "--progress", "log"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", &topic.name)
        .env("XCLOG_GROUP", &group)
        .env("MONGODB_URI", &m.uri)
        .env("XCLOG_MONGODB_DATABASE", &m.name)
        .env_remove("DATABASE_URL")
        .env("XCLOG_LOG", "warn");
    let (ok, out, err) = run_to_end(COMMAND, c).await?;
    ensure!(ok, "rebuild failed: {out}{err}");
    ensure!(reader.snapshot(&deleted).await?.is_none());
    ensure!(all_snapshot_ids(&reader).await? == others);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_agrees_on_a_topic_with_deletions_and_names_a_store_that_kept_a_deleted_snapshot()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let m = TestMongo::create().await?;
    let (pg_group, mongo_group) = (
        format!("gp-{}", unique_suffix()),
        format!("gm-{}", unique_suffix()),
    );
    let (_, deleted) = publish_with_a_deletion(&topic.name).await?;
    let pg_projector =
        projector_pg_support::start_in_process(config(&topic.name, &pg_group), &pg.url).await?;
    let mongo_projector =
        projector_mongo_support::start_in_process(config(&topic.name, &mongo_group), m.database())
            .await?;
    projector_pg_support::wait_caught_up(&pg.pool, &topic.name, &pg_group, 2, CATCH_UP).await?;
    projector_mongo_support::wait_caught_up(&m.database(), &topic.name, &mongo_group, 2, CATCH_UP)
        .await?;
    pg_projector.stop().await?;
    mongo_projector.stop().await?;

    let verify = || {
        let mut c = Command::new(xclog_binary()?);
        c.args(["verify", "--sources", "topic,postgres,mongo", "--json"])
            .env("XCLOG_KAFKA_BROKERS", brokers())
            .env("XCLOG_TOPIC", &topic.name)
            .env("XCLOG_GROUP", &pg_group)
            .env("XCLOG_MONGO_PROJECTION", &mongo_group)
            .env("DATABASE_URL", &pg.url)
            .env("MONGODB_URI", &m.uri)
            .env("XCLOG_MONGODB_DATABASE", &m.name)
            .env_remove("XCLOG_PROJECTION")
            .env_remove("XCLOG_VERIFY_SOURCES")
            .env("XCLOG_LOG", "warn");
        anyhow::Ok(c)
    };
    let (ok, out, err) = run_to_end(COMMAND, verify()?).await?;
    ensure!(ok, "verify does not agree: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(report["agree"] == true, "{report}");

    // A PostgreSQL store that still holds the deleted snapshot is named.
    let kept = sqlx::query(
        "INSERT INTO fsm_snapshots (instance_id, machine_name, current_state, status, context, \
         snapshot_at, last_event_id, source_topic, source_partition, source_offset) \
         VALUES ($1, 'Order', 'Kept', 'active', '{}', 1, '', $2, 0, 0)",
    )
    .bind(&deleted)
    .bind(&topic.name)
    .execute(&pg.pool)
    .await?;
    ensure!(kept.rows_affected() == 1);
    let (ok, out, _) = run_to_end(COMMAND, verify()?).await?;
    ensure!(
        !ok,
        "verify agrees with a store that kept a deleted snapshot: {out}"
    );
    let report: serde_json::Value = serde_json::from_str(&out)?;
    let named = report["pairs"]
        .as_array()
        .context("no pairs")?
        .iter()
        .filter(|p| p["right"] == "postgres" || p["left"] == "postgres")
        .flat_map(|p| p["differences"].as_array().cloned().unwrap_or_default())
        .any(|d| d["instance"] == deleted.as_str() && d["field"] == "snapshot");
    ensure!(
        named,
        "the kept snapshot of {deleted} is not named: {report}"
    );
    Ok(())
}
