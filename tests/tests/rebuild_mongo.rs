//! `xclog rebuild --target mongo` against FerretDB: a rebuild beside a live projector under
//! traffic with a reader polling the store; a rebuild killed midway and rerun; a swap killed
//! midway and finished by the next run; refusals that change nothing. Sized for FerretDB (a few hundred events; it writes ~100 events/s).

mod projector_mongo_support;
mod projector_pg_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use mongodb::Database;
use mongodb::bson::{Document, doc};
use projector_mongo_support::{assert_store_equals, start_in_process, wait_caught_up};
use projector_pg_support::{
    Published, config, producer, publish, publish_until_stopped, workload, xclog_binary,
};
use xclog_projector::rebuild::mongo::MongoRebuild;
use xclog_projector::{CancellationToken, Projector};
use xclog_schema::{Encoding, Record};
use xclog_tests::{
    TestMongo, TestTopic, brokers, check_resumed_run, delete_records_before, events_only,
    run_to_end, unique_suffix, wait_until,
};

const LONG: Duration = Duration::from_secs(120);
/// The longest a reader may find the store incomplete during the swap (docs/DESIGN.md,
/// section 8: one rename command per collection, milliseconds; generous for a loaded CI box).
const WINDOW_BOUND: Duration = Duration::from_secs(2);

fn rebuild_command(topic: &str, group: &str, m: &TestMongo) -> anyhow::Result<Command> {
    let mut c = Command::new(xclog_binary()?);
    c.args(["rebuild", "--target", "mongo", "--progress", "log"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", topic)
        .env("XCLOG_GROUP", group)
        .env("MONGODB_URI", &m.uri)
        .env("XCLOG_MONGODB_DATABASE", &m.name)
        .env_remove("DATABASE_URL")
        .env("XCLOG_LOG", "warn");
    Ok(c)
}

async fn collections(db: &Database) -> anyhow::Result<BTreeSet<String>> {
    Ok(db.list_collection_names().await?.into_iter().collect())
}

/// Collections a rebuild leaves behind (the shadow, an old copy).
async fn leftovers(db: &Database) -> anyhow::Result<Vec<String>> {
    Ok(collections(db)
        .await?
        .into_iter()
        .filter(|c| c.starts_with("xclog_rebuild_") || c.starts_with("xclog_old_"))
        .collect())
}

/// Index names per collection of the store.
async fn indexes(db: &Database) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    for c in ["events", "snapshots", "instances"] {
        let mut names = db.collection::<Document>(c).list_index_names().await?;
        names.sort();
        out.push((c.to_owned(), names));
    }
    Ok(out)
}

async fn shadow_progress(db: &Database) -> i64 {
    let Ok(mut cursor) = db
        .collection::<Document>("xclog_rebuild_xclog_offsets")
        .find(doc! {})
        .await
    else {
        return 0;
    };
    let mut sum = 0;
    while let Ok(true) = cursor.advance().await {
        if let Ok(d) = cursor.deserialize_current() {
            sum += d.get_i64("nextOffset").unwrap_or(0);
        }
    }
    sum
}

/// What a reader saw: polls, and the polls that found the store incomplete (a count below one
/// seen before, or a known event missing), as (time since start, `events` present, count).
#[derive(Debug, Default)]
struct ReaderLog {
    polls: u64,
    incomplete: Vec<(Duration, bool, u64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_live_traffic_keeps_every_event_visible_outside_the_rename_window()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish(
        &producer,
        &topic.name,
        &workload(300, 20, 11),
        Encoding::Protobuf,
    )
    .await?;
    let live = start_in_process(config(&topic.name, &group), db.clone()).await?;
    wait_caught_up(&db, &topic.name, &group, 2, LONG).await?;
    let indexes_before = indexes(&db).await?;

    // Damage the live store: the rebuild must repair it.
    let damaged = db
        .collection::<Document>("events")
        .update_one(doc! {}, doc! {"$set": {"stateAfter": "DAMAGED"}})
        .await?;
    ensure!(damaged.modified_count == 1, "no event to damage");

    // A reader: the count never goes down and every event seen stays visible, except in the
    // rename window, where `events` is missing (or re-created by a live batch in flight).
    let known: Vec<String> = published
        .iter()
        .filter_map(|p| match &p.record {
            Record::Event(e) => Some(e.id.clone()),
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    // Two readers: a fast one counting `events`, a slower one looking up every known event.
    let counter = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let events = db.collection::<Document>("events");
            let mut log = ReaderLog::default();
            let mut last = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let count = events.count_documents(doc! {}).await?;
                log.polls += 1;
                if count < last {
                    let present = collections(&db).await?.contains("events");
                    log.incomplete.push((began.elapsed(), present, count));
                } else {
                    last = count;
                }
            }
            anyhow::Ok(log)
        })
    };
    let looker = {
        let (db, stop, known) = (db.clone(), stop.clone(), known.clone());
        tokio::spawn(async move {
            let events = db.collection::<Document>("events");
            let mut log = ReaderLog::default();
            while !stop.load(Ordering::Relaxed) {
                let seen = events
                    .count_documents(doc! {"_id": {"$in": &known}})
                    .await?;
                log.polls += 1;
                if seen < known.len() as u64 {
                    let present = collections(&db).await?.contains("events");
                    log.incomplete.push((began.elapsed(), present, seen));
                }
            }
            anyhow::Ok(log)
        })
    };
    // Live traffic during the whole rebuild (about 50 events/s, what FerretDB keeps up with).
    let writer = publish_until_stopped(
        &producer,
        &topic.name,
        events_only(workload(400, 20, 12)),
        10,
        Duration::from_millis(200),
        stop.clone(),
    );

    let t = Instant::now();
    let (ok, stdout, stderr) = run_to_end(LONG, rebuild_command(&topic.name, &group, &m)?).await?;
    let rebuild_took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    ensure!(ok, "xclog rebuild failed:\n{stdout}\n{stderr}");
    ensure!(stdout.contains("swapped"), "{stdout}");
    ensure!(stdout.contains("built the readers' indexes in"), "{stdout}");
    let (counted, looked) = (counter.await??, looker.await??);
    published.extend(writer.await??);
    let mut incomplete = [counted.incomplete, looked.incomplete].concat();
    incomplete.sort_by_key(|i| i.0);
    eprintln!(
        "rebuild took {rebuild_took:?}; readers: {} counts, {} look-ups, incomplete: {incomplete:?}\n{stdout}",
        counted.polls, looked.polls
    );
    ensure!(
        counted.polls > 10 && looked.polls > 3,
        "the readers polled only {} and {} times",
        counted.polls,
        looked.polls
    );
    // The rebuild measures the window itself (the readers poll too slowly to hit it often).
    let window_ms = stdout
        .split("missing for at most ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .context("no 'missing for at most' in the output")?;
    ensure!(
        Duration::from_millis(window_ms) <= WINDOW_BOUND,
        "a collection was missing for {window_ms} ms"
    );
    // Outside the window every poll sees at least what it saw before; inside it, `events` is
    // missing, or re-created by a live batch in flight (then the rebuild says it dropped one).
    if let (Some(first), Some(last)) = (incomplete.first(), incomplete.last()) {
        ensure!(
            last.0 - first.0 <= WINDOW_BOUND,
            "the store looked incomplete for {:?} (from {:?} to {:?}), over the documented window",
            last.0 - first.0,
            first.0,
            last.0
        );
        ensure!(
            incomplete.iter().all(|i| !i.1 || i.2 == 0) || !stdout.contains("(0 re-created"),
            "events was present but partial, and no collection was re-created: {incomplete:?}"
        );
    }

    wait_caught_up(&db, &topic.name, &group, 2, LONG).await?;
    live.stop().await?;
    assert_store_equals(&db, &published).await?;
    ensure!(
        leftovers(&db).await?.is_empty(),
        "the shadow or the old store was left behind: {:?}",
        leftovers(&db).await?
    );
    let locked = db
        .collection::<Document>("xclog_offsets")
        .count_documents(doc! {"rebuildSwap": {"$exists": true}})
        .await?;
    ensure!(locked == 0, "{locked} live offsets are still locked");
    let indexes_after = indexes(&db).await?;
    ensure!(
        indexes_after == indexes_before,
        "the rebuilt store's indexes differ:\nbefore {indexes_before:?}\nafter  {indexes_after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_killed_midway_continues_from_its_stored_offsets() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let published: Vec<Published> = publish(
        &producer,
        &topic.name,
        &workload(400, 20, 21),
        Encoding::Protobuf,
    )
    .await?;
    let total = published.len() as i64;

    // Small batches, so that the shadow stores offsets long before it is done.
    let mut first = rebuild_command(&topic.name, &group, &m)?;
    first
        .env("XCLOG_BATCH_MAX_RECORDS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = first.spawn()?;
    let started = Instant::now();
    let at_kill = loop {
        if let Some(status) = child.try_wait()? {
            bail!("the rebuild ended ({status}) before it could be killed midway");
        }
        let n = shadow_progress(&db).await;
        if n > 0 {
            child.kill()?; // SIGKILL
            child.wait()?;
            break n;
        }
        ensure!(started.elapsed() < LONG, "the rebuild stored nothing");
        // A short poll step, finer than `wait_until`'s, so the kill lands while the rebuild runs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after_kill = shadow_progress(&db).await;
    ensure!(
        after_kill < total,
        "killed too late ({at_kill}, then {after_kill} of {total})"
    );

    let (ok, stdout, stderr) = run_to_end(LONG, rebuild_command(&topic.name, &group, &m)?).await?;
    check_resumed_run(ok, &stdout, &stderr, total - after_kill)?;
    assert_store_equals(&db, &published).await?;
    ensure!(leftovers(&db).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_topic_missing_history_change_nothing() -> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    publish(
        &producer,
        &topic.name,
        &events_only(workload(100, 5, 31)),
        Encoding::Protobuf,
    )
    .await?;

    let mut dry = rebuild_command(&topic.name, &group, &m)?;
    dry.arg("--dry-run");
    let (ok, stdout, stderr) = run_to_end(LONG, dry).await?;
    ensure!(ok, "dry run failed: {stdout}\n{stderr}");
    ensure!(
        stdout.contains("records to read:           100"),
        "{stdout}"
    );
    ensure!(stdout.contains("dry run: nothing changed"), "{stdout}");
    ensure!(
        collections(&db).await?.is_empty(),
        "a dry run created {:?}",
        collections(&db).await?
    );

    // Retention deleted the first 40 records.
    delete_records_before(&topic.name, 0, 40).await?;
    let (ok, stdout, stderr) = run_to_end(LONG, rebuild_command(&topic.name, &group, &m)?).await?;
    ensure!(!ok, "the rebuild ran on a topic missing history:\n{stdout}");
    ensure!(
        stderr.contains(
            "partition 0: offsets 0..39 are no longer in the topic (it now starts at offset 40)"
        ),
        "{stderr}"
    );
    ensure!(
        collections(&db).await?.is_empty(),
        "a refused rebuild changed the database: {:?}",
        collections(&db).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_killed_after_its_first_rename_is_finished_by_the_next_run() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let published = publish(
        &producer,
        &topic.name,
        &workload(150, 10, 41),
        Encoding::Protobuf,
    )
    .await?;
    // A live store, its projector stopped.
    let live = start_in_process(config(&topic.name, &group), db.clone()).await?;
    wait_caught_up(&db, &topic.name, &group, 2, LONG).await?;
    live.stop().await?;

    // The state a rebuild killed mid-swap leaves: a caught-up shadow, the live offsets locked,
    // and `events` already moved out (readers find it missing until the next run).
    let rb = MongoRebuild::new(db.clone(), "xclog_rebuild", &group, &topic.name, true)?;
    rb.prepare_shadow().await?;
    let mut shadow_config = config(&topic.name, &group);
    shadow_config.group_id = format!("{group}.rebuild");
    let shadow = Projector::new(shadow_config, rb.shadow_sink())?;
    let token = CancellationToken::new();
    let task = tokio::spawn(shadow.run(token.clone()));
    let want = rb.live_offsets().await?.offsets;
    wait_until(LONG, "the shadow to catch up", || async {
        Ok((rb.shadow_offsets().await? == want).then_some(()))
    })
    .await?;
    token.cancel();
    task.await??;
    let old = "xclog_old_20260101_000000";
    let locked = rb.lock_live(&[0, 1], old).await?;
    ensure!(locked.locked.len() == 2 && locked.offsets == want);
    db.client()
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{}.events", m.name),
            "to": format!("{}.{old}_events", m.name),
        })
        .await?;

    let (ok, stdout, stderr) = run_to_end(LONG, rebuild_command(&topic.name, &group, &m)?).await?;
    ensure!(ok, "the rerun failed:\n{stdout}\n{stderr}");
    ensure!(
        stdout.contains("a swap was interrupted after its first rename; finishing it"),
        "{stdout}"
    );
    ensure!(stdout.contains("swapped"), "{stdout}");
    assert_store_equals(&db, &published).await?;
    let after = rb.live_offsets().await?;
    ensure!(
        after.locked.is_empty() && after.offsets == want,
        "live offsets after the rerun: {after:?}"
    );
    ensure!(
        leftovers(&db).await?.is_empty(),
        "{:?}",
        leftovers(&db).await?
    );
    Ok(())
}
