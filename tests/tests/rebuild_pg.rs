//! `xclog rebuild --target postgres`: a rebuild beside a live projector under traffic, with a
//! reader polling the store; a rebuild killed midway and rerun; a rebuild whose staged rows a
//! server crash emptied; refusals that change nothing.

mod projector_pg_support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use projector_pg_support::*;
use sqlx::PgPool;
use xclog_schema::{Encoding, Record};
use xclog_tests::{
    TestPg, TestTopic, brokers, check_resumed_run, delete_records_before, events_only, run_to_end,
    unique_suffix,
};

const LONG: Duration = Duration::from_secs(180);

fn rebuild_command(topic: &str, group: &str, db_url: &str) -> anyhow::Result<Command> {
    let mut c = Command::new(xclog_binary()?);
    c.args(["rebuild", "--target", "postgres", "--progress", "log"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", topic)
        .env("XCLOG_GROUP", group)
        .env("DATABASE_URL", db_url)
        .env("XCLOG_LOG", "warn");
    Ok(c)
}

async fn schemas_like(pool: &PgPool, pattern: &str) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1",
    )
    .bind(pattern)
    .fetch_all(pool)
    .await?)
}

/// Index names and definitions on the store's tables in `public`.
async fn indexes(pool: &PgPool) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

/// Starts `xclog rebuild` and kills it (SIGKILL) once the shadow has stored some offsets;
/// returns how many records they cover.
async fn kill_once_the_shadow_stored_some(
    topic: &str,
    group: &str,
    pg: &TestPg,
    bulk: &str,
) -> anyhow::Result<i64> {
    let mut child = rebuild_command(topic, group, &pg.url)?
        .args(["--bulk", bulk])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the rebuild ended ({status}) before it could be killed midway");
        }
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT sum(next_offset)::bigint FROM xclog_rebuild.xclog_offsets")
                .fetch_one(&pg.pool)
                .await
                .unwrap_or(None);
        if let Some(n) = stored.filter(|&n| n > 0) {
            child.kill()?; // SIGKILL
            child.wait()?;
            return Ok(n);
        }
        ensure!(started.elapsed() < LONG, "the rebuild stored nothing");
        // A short poll step, finer than `wait_until`'s, so the kill lands while the rebuild runs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_live_traffic_never_shows_a_reader_less_and_ends_equal_to_the_topic()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish(
        &producer,
        &topic.name,
        &workload(3000, 60, 11),
        Encoding::Protobuf,
    )
    .await?;
    let live = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, LONG).await?;

    let indexes_before = indexes(&pg.pool).await?;
    ensure!(
        indexes_before
            .iter()
            .any(|(n, _)| n == "idx_events_caused_by")
    );
    // Damage the live store: the rebuild must repair it.
    let damaged = sqlx::query(
        "UPDATE fsm_events SET state_after = 'DAMAGED' WHERE id = (SELECT min(id) FROM fsm_events)",
    )
    .execute(&pg.pool)
    .await?
    .rows_affected();
    ensure!(damaged == 1, "no row to damage");

    // A reader: the event count never goes down and every event it has seen stays visible.
    let known: Vec<String> = published
        .iter()
        .filter_map(|p| match &p.record {
            Record::Event(e) => Some(e.id.clone()),
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (pool, stop, known) = (pg.pool.clone(), stop.clone(), known.clone());
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut polls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (count, seen): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM fsm_events), \
                            (SELECT count(*) FROM fsm_events WHERE id = ANY($1))",
                )
                .bind(&known)
                .fetch_one(&pool)
                .await?;
                ensure!(count >= last, "event count went down: {last} -> {count}");
                ensure!(
                    seen == known.len() as i64,
                    "only {seen} of {} events already projected are visible",
                    known.len()
                );
                last = count;
                polls += 1;
                // The reader's pace: it samples the store all through the rebuild, awaiting nothing.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(polls)
        })
    };
    // Live traffic during the whole rebuild.
    let writer = publish_until_stopped(
        &producer,
        &topic.name,
        events_only(workload(4000, 80, 12)),
        40,
        Duration::from_millis(100),
        stop.clone(),
    );

    // The bulk staged and derived set-wise, the tail through the live sink.
    let mut rebuild = rebuild_command(&topic.name, &group, &pg.url)?;
    rebuild.args(["--bulk", "staged"]);
    let (ok, stdout, stderr) = run_to_end(LONG, rebuild).await?;
    stop.store(true, Ordering::Relaxed);
    ensure!(ok, "xclog rebuild failed:\n{stdout}\n{stderr}");
    ensure!(stdout.contains("swapped"), "{stdout}");
    ensure!(
        stdout.contains("derived the store from the staged records"),
        "{stdout}"
    );
    ensure!(stdout.contains("secondary indexes in"), "{stdout}");
    let polls = reader.await??;
    ensure!(polls > 10, "the reader polled only {polls} times");
    published.extend(writer.await??);

    wait_caught_up(&pg.pool, &topic.name, &group, 2, LONG).await?;
    live.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    ensure!(
        schemas_like(&pg.pool, "xclog_%").await?.is_empty(),
        "the shadow or the old store was left behind"
    );
    let indexes_after = indexes(&pg.pool).await?;
    ensure!(
        indexes_after == indexes_before,
        "the rebuilt store's indexes differ:\nbefore {indexes_before:?}\nafter  {indexes_after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_killed_midway_continues_from_its_stored_offsets() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(40_000, 400, 21);
    let published = publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;
    let total = published.len() as i64;

    let at_kill = kill_once_the_shadow_stored_some(&topic.name, &group, &pg, "batches").await?;
    ensure!(at_kill < total, "killed too late ({at_kill} of {total})");
    let after_kill: i64 =
        sqlx::query_scalar("SELECT sum(next_offset)::bigint FROM xclog_rebuild.xclog_offsets")
            .fetch_one(&pg.pool)
            .await?;
    ensure!(after_kill < total, "the first run finished the shadow");

    let (ok, stdout, stderr) =
        run_to_end(LONG, rebuild_command(&topic.name, &group, &pg.url)?).await?;
    check_resumed_run(ok, &stdout, &stderr, total - after_kill)?;
    assert_store_equals(&pg.pool, &published).await?;
    ensure!(schemas_like(&pg.pool, "xclog_%").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_whose_staged_rows_a_server_crash_emptied_stages_again_and_ends_equal_to_the_topic()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(40_000, 400, 41);
    // Repeats of event ids with other content, later in the log: the first copy must win.
    let repeats: Vec<Record> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => {
                let mut e = e.clone();
                e.state_after = "REPEATED".to_owned();
                Some(Record::Event(e))
            }
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
        })
        .step_by(97)
        .take(60)
        .collect();
    let mut published = publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;
    published.extend(publish(&producer, &topic.name, &repeats, Encoding::Protobuf).await?);
    let total = published.len() as i64;

    let at_kill = kill_once_the_shadow_stored_some(&topic.name, &group, &pg, "staged").await?;
    ensure!(at_kill < total, "killed too late ({at_kill} of {total})");
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM xclog_rebuild.xclog_stage_events")
        .fetch_one(&pg.pool)
        .await?;
    ensure!(staged > 0, "the killed rebuild staged no event");
    let unlogged: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'xclog_rebuild' AND relname LIKE 'xclog_stage_%' \
           AND relkind = 'r' AND relpersistence = 'u' ORDER BY 1",
    )
    .fetch_all(&pg.pool)
    .await?;
    ensure!(
        unlogged
            == [
                "xclog_stage_events",
                "xclog_stage_marker",
                "xclog_stage_snapshots"
            ],
        "staging tables that a crash empties: {unlogged:?}"
    );
    // What PostgreSQL's crash recovery does to unlogged tables; the shadow's offsets stay.
    sqlx::query(
        "TRUNCATE xclog_rebuild.xclog_stage_events, xclog_rebuild.xclog_stage_snapshots, \
         xclog_rebuild.xclog_stage_marker",
    )
    .execute(&pg.pool)
    .await?;

    // Without `--bulk`: a resumed rebuild goes on the way it started.
    let (ok, stdout, stderr) =
        run_to_end(LONG, rebuild_command(&topic.name, &group, &pg.url)?).await?;
    ensure!(ok, "the second run failed:\n{stdout}\n{stderr}");
    ensure!(stdout.contains("staging starts over"), "{stdout}");
    ensure!(
        stdout.contains(&format!("records to read:           {total} ")),
        "the second run does not read the whole topic ({total} records):\n{stdout}"
    );
    ensure!(
        stdout.contains("derived the store from the staged records"),
        "{stdout}"
    );
    ensure!(stdout.contains("swapped"), "{stdout}");
    assert_store_equals(&pg.pool, &published).await?;
    ensure!(schemas_like(&pg.pool, "xclog_%").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_topic_missing_history_change_nothing() -> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    publish(
        &producer,
        &topic.name,
        &events_only(workload(100, 5, 31)),
        Encoding::Protobuf,
    )
    .await?;

    let mut dry = rebuild_command(&topic.name, &group, &pg.url)?;
    dry.arg("--dry-run");
    let (ok, stdout, stderr) = run_to_end(LONG, dry).await?;
    ensure!(ok, "dry run failed: {stdout}\n{stderr}");
    ensure!(
        stdout.contains("records to read:           100"),
        "{stdout}"
    );
    ensure!(stdout.contains("dry run: nothing changed"), "{stdout}");
    ensure!(schemas_like(&pg.pool, "xclog_%").await?.is_empty());

    // Retention deleted the first 40 records.
    delete_records_before(&topic.name, 0, 40).await?;
    let (ok, stdout, stderr) =
        run_to_end(LONG, rebuild_command(&topic.name, &group, &pg.url)?).await?;
    ensure!(!ok, "the rebuild ran on a topic missing history:\n{stdout}");
    ensure!(
        stderr.contains(
            "partition 0: offsets 0..39 are no longer in the topic (it now starts at offset 40)"
        ),
        "{stderr}"
    );
    ensure!(
        schemas_like(&pg.pool, "xclog_%").await?.is_empty(),
        "a refused rebuild changed the database"
    );
    Ok(())
}
