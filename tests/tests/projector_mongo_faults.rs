//! Fault tests of the MongoDB projector: the `xclog project --target mongo` process killed
//! with SIGKILL at random points, the server restarted mid-run, and the server frozen mid-batch
//! (FerretDB with SIGSTOP on the native stack, the MongoDB container paused on containers:
//! `xclog_tests::services`). After recovery the store equals the topic, document for document.
//!
//! The tests of this file run one at a time (`#[serial]`): they share one server and one
//! restarts it, so each catch-up deadline measures that test's own recovery only. (The sink
//! sends no statement of an unordered command that can fail, which FerretDB 1.24 would end
//! there: docs/DESIGN.md, "FerretDB 1.24: the rules the sink follows".)

mod projector_mongo_support;
mod projector_pg_support;

use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Document, doc};
use projector_mongo_support as mongo;
use projector_pg_support::{SigkillRun, config, producer, publish, workload, xclog_binary};
use serial_test::serial;
use xclog_projector::sink::mongo::MongoSink;
use xclog_schema::Encoding;
use xclog_tests::{Service, TestMongo, TestTopic, services, unique_suffix, wait_until};

/// Deadline of each catch-up: FerretDB 1.24 takes about 50-70 events/s on 2 cores (docs/DESIGN.md).
const CATCH_UP: Duration = Duration::from_secs(300);

async fn stored_events(db: &Database) -> u64 {
    db.collection::<Document>("events")
        .count_documents(doc! {})
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[serial]
async fn sigkill_at_random_points_then_a_restart_leaves_the_store_equal_to_the_topic()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(4).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let run = SigkillRun {
        topic: &topic.name,
        records: workload(3000, 60, 31),
        chunk_len: 600,
        kills: 4,
        catch_up: CATCH_UP,
    };
    let published = run
        .run(
            || mongo::spawn_binary(&bin, &topic.name, &group, &m.uri, &m.name),
            async || stored_events(&db).await,
            async || mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await,
        )
        .await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[serial]
async fn the_mongo_server_restarting_mid_run_loses_nothing() -> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(2000, 40, 41);
    let (first, second) = records.split_at(2500);
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    let p = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    wait_until(CATCH_UP, "the projector to store something", || {
        let db = db.clone();
        async move { Ok((stored_events(&db).await > 0).then_some(())) }
    })
    .await?;
    services::restart(Service::Mongo).await?;
    published.extend(publish(&producer, &topic.name, second, Encoding::Protobuf).await?);
    mongo::wait_caught_up(&db, &topic.name, &group, 3, CATCH_UP).await?;
    p.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}

/// A server that takes a command and never answers must not hold a writer for ever: with
/// the server frozen mid-run, the command timeout fails the batch as timed out, so a stop
/// request is honoured while the server is still frozen. Thawed, a new projector finishes the
/// topic and the store equals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[serial]
async fn a_frozen_server_times_out_the_command_and_the_projector_still_stops() -> anyhow::Result<()>
{
    let topic = TestTopic::create(3).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(3000, 60, 43);
    let published = publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;
    let mut cfg = config(&topic.name, &group);
    cfg.batch_max_records = 200;
    cfg.drain_timeout = Duration::from_secs(2);
    let sink = MongoSink::from_database(db.clone(), &group, true)
        .with_command_timeout(Duration::from_secs(2));
    let frozen_run = mongo::start_sink_in_process(cfg.clone(), sink).await?;
    wait_until(CATCH_UP, "the projector to store something", || {
        let db = db.clone();
        async move { Ok((stored_events(&db).await > 0).then_some(())) }
    })
    .await?;

    let frozen = services::freeze(Service::Mongo).await?;
    // Let the writer's next command go out and wait on the frozen server (a command waiting on
    // a frozen server shows nowhere to await it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    frozen_run.token.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), frozen_run.task).await;
    drop(frozen);
    let result = stopped.map_err(|_| {
        anyhow::anyhow!(
            "the projector did not stop within 30 s of the stop request while the server was frozen"
        )
    })?;
    result??;

    let p = mongo::start_in_process(cfg, db.clone()).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 3, CATCH_UP).await?;
    p.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}
