//! Shared helpers of the MongoDB projector end-to-end tests: run the projector (in process or
//! as the `xclog` binary) into a test database, wait until it caught up, and compare the store
//! with the topic document for document. Publishing helpers come from the PostgreSQL tests'
//! support module (`projector_pg_support`), shared, not copied.

#![allow(dead_code)] // each test file uses a subset

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use xclog_projector::sink::order::InstanceOrder;

use anyhow::{Context as _, bail, ensure};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::{EventStore, Page, SnapshotStore, StoredEvent};
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::{CancellationToken, ErrorClass, Projector, ProjectorConfig};
use xclog_schema::{InstanceSnapshot, PersistedEvent, Record};
use xclog_tests::{brokers, wait_until};

use super::projector_pg_support::{InProcess, Published, end_offsets};

/// Creates the indexes, retrying while the server is unreachable.
pub async fn ensure_indexes(sink: &MongoSink) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(60), "MongoDB indexes", || async {
        match sink.ensure_indexes().await {
            Ok(()) => Ok(Some(())),
            Err(e) if matches!(e.class(), ErrorClass::Transient | ErrorClass::TimedOut) => {
                Err(e.into())
            }
            Err(e) => Err(anyhow::Error::from(e).context("fatal")),
        }
    })
    .await
}

/// A MongoDB projector running in this process, writing into `db`.
pub async fn start_in_process(config: ProjectorConfig, db: Database) -> anyhow::Result<InProcess> {
    let sink = MongoSink::from_database(db, &config.group_id, true);
    start_sink_in_process(config, sink).await
}

/// A MongoDB projector running in this process, writing through `sink` (for a sink with
/// non-default settings).
pub async fn start_sink_in_process(
    config: ProjectorConfig,
    sink: MongoSink,
) -> anyhow::Result<InProcess> {
    ensure_indexes(&sink).await?;
    let projector = Projector::new(config, sink)?;
    let token = CancellationToken::new();
    let task = tokio::spawn(projector.run(token.clone()));
    Ok(InProcess { token, task })
}

/// Stored offsets of `projection` for `topic`.
pub async fn stored_offsets(
    db: &Database,
    topic: &str,
    projection: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut cursor = db
        .collection::<Document>("xclog_offsets")
        .find(doc! {"projection": projection, "topic": topic})
        .await?;
    let mut out = BTreeMap::new();
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        out.insert(d.get_i32("partition")?, d.get_i64("nextOffset")?);
    }
    Ok(out)
}

/// Waits until the stored offsets of `projection` reach the end of every partition.
pub async fn wait_caught_up(
    db: &Database,
    topic: &str,
    projection: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let want: BTreeMap<i32, i64> = end_offsets(topic, partitions)?
        .into_iter()
        .filter(|(_, h)| *h > 0)
        .collect();
    wait_until(
        timeout,
        "stored offsets to reach the end of the topic",
        || {
            let want = want.clone();
            async move {
                let got = stored_offsets(db, topic, projection).await?;
                if got == want {
                    Ok(Some(()))
                } else {
                    bail!("stored {got:?}, want {want:?}")
                }
            }
        },
    )
    .await
}

/// What the topic says the store must hold: the first copy of every event id with `caused`
/// set to its children (sorted, as the reader returns them), and the newest snapshot per
/// instance in the instance order (sequence, time, partition, offset).
pub fn expected(
    published: &[Published],
) -> (
    BTreeMap<String, PersistedEvent>,
    BTreeMap<String, InstanceSnapshot>,
) {
    let mut events: BTreeMap<String, PersistedEvent> = BTreeMap::new();
    let mut newest: HashMap<String, (&InstanceSnapshot, InstanceOrder)> = HashMap::new();
    for p in published {
        match &p.record {
            Record::Event(e) => {
                events.entry(e.id.clone()).or_insert_with(|| e.clone());
            }
            Record::Snapshot(s) => {
                let key = InstanceOrder::new(s.sequence, s.snapshot_at, p.partition, p.offset);
                if newest.get(&s.instance.id).is_none_or(|(_, old)| key > *old) {
                    newest.insert(s.instance.id.clone(), (s, key));
                }
            }
            Record::SnapshotDeletion(d) => {
                newest.remove(&d.instance_id);
            }
        }
    }
    let mut children: HashMap<String, BTreeSet<String>> = HashMap::new();
    for e in events.values() {
        for p in &e.caused_by {
            children.entry(p.clone()).or_default().insert(e.id.clone());
        }
    }
    for e in events.values_mut() {
        e.caused = children
            .get(&e.id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
    }
    let snapshots = newest
        .into_iter()
        .map(|(id, (s, _))| (id, s.clone()))
        .collect();
    (events, snapshots)
}

/// Every stored event, through the read API, all pages.
pub async fn all_events(reader: &MongoReader) -> anyhow::Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut page = Page::first(1000);
    loop {
        let got = reader.list_events(&page).await?;
        out.extend(got.events);
        match got.next {
            Some(next) => page.after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Every stored snapshot, through the read API, all pages.
pub async fn all_snapshots(reader: &MongoReader) -> anyhow::Result<Vec<InstanceSnapshot>> {
    let mut out = Vec::new();
    let mut page = Page::first(500);
    loop {
        let got = reader.list_snapshots(&page).await?;
        out.extend(got.snapshots);
        match got.next {
            Some(next) => page.after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Checks the store against the published records, document for document: every event
/// exactly once and equal to the published one (with `caused` complete), the newest snapshot
/// per instance, and the instance view's event counts.
pub async fn assert_store_equals(db: &Database, published: &[Published]) -> anyhow::Result<()> {
    let (events, snapshots) = expected(published);
    let reader = MongoReader::new(db.clone());
    let stored = all_events(&reader).await?;
    let raw = db
        .collection::<Document>("events")
        .count_documents(doc! {})
        .await?;
    ensure!(
        raw as usize == stored.len(),
        "the events collection holds {raw} documents but the listing returned {}",
        stored.len()
    );
    let ids: BTreeSet<&str> = stored.iter().map(|e| e.event.id.as_str()).collect();
    if ids.len() != events.len() || stored.len() != events.len() {
        let missing: Vec<&String> = events
            .keys()
            .filter(|k| !ids.contains(k.as_str()))
            .take(5)
            .collect();
        bail!(
            "events holds {} documents ({} distinct), the topic {} distinct events; first missing: {missing:?}",
            stored.len(),
            ids.len(),
            events.len()
        );
    }
    for e in &stored {
        let want = &events[&e.event.id];
        ensure!(
            &e.event == want,
            "event {} differs from the topic:\n stored {:?}\n topic  {:?}",
            e.event.id,
            e.event,
            want
        );
        ensure!(e.source.is_some(), "event {} has no source", e.event.id);
    }
    let stored_snaps = all_snapshots(&reader).await?;
    ensure!(
        stored_snaps.len() == snapshots.len(),
        "snapshots holds {} documents, want {}",
        stored_snaps.len(),
        snapshots.len()
    );
    for s in &stored_snaps {
        let want = snapshots
            .get(&s.instance.id)
            .with_context(|| format!("unexpected snapshot {}", s.instance.id))?;
        ensure!(
            s == want,
            "snapshot {} is not the newest published one",
            s.instance.id
        );
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for e in events.values() {
        *counts.entry(e.instance_id.as_str()).or_default() += 1;
    }
    let mut cursor = db
        .collection::<Document>("instances")
        .find(doc! {"eventCount": {"$gt": 0}})
        .await?;
    let mut seen = 0;
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        let id = d.get_str("_id")?;
        let n = d.get_i64("eventCount")?;
        ensure!(
            counts.get(id) == Some(&n),
            "instances.eventCount of {id} is {n}, want {:?}",
            counts.get(id)
        );
        seen += 1;
    }
    ensure!(
        seen == counts.len(),
        "instances has {seen} instances with events, want {}",
        counts.len()
    );
    Ok(())
}

/// Every document of every collection the projector writes (offsets excepted), for
/// "nothing changed" comparisons.
pub async fn dump(db: &Database) -> anyhow::Result<Vec<Document>> {
    let mut out = Vec::new();
    for c in ["events", "snapshots", "instances"] {
        let mut cursor = db
            .collection::<Document>(c)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await?;
        while cursor.advance().await? {
            let mut d = cursor.deserialize_current()?;
            // `caused` is a set: its order depends on arrival order.
            if let Ok(caused) = d.get_array_mut("caused") {
                caused.sort_by_key(|b| b.as_str().map(str::to_owned));
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// Starts `xclog project --target mongo` as a child process.
pub fn spawn_binary(
    bin: &std::path::Path,
    topic: &str,
    group: &str,
    uri: &str,
    database: &str,
) -> anyhow::Result<std::process::Child> {
    std::process::Command::new(bin)
        .args(["project", "--target", "mongo", "--http-addr", "off"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", topic)
        .env("XCLOG_GROUP", group)
        .env("MONGODB_URI", uri)
        .env("XCLOG_MONGODB_DATABASE", database)
        .env("XCLOG_BATCH_MAX_RECORDS", "200")
        .env("XCLOG_BATCH_MAX_LATENCY_MS", "50")
        .env(
            "XCLOG_LOG",
            std::env::var("XCLOG_TEST_PROJECTOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("spawning xclog project --target mongo")
}
