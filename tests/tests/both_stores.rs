//! Both projectors (PostgreSQL and MongoDB) on the same topic, each in its own consumer group:
//! both stores hold the same events, the same causality and the same snapshots, read through
//! the one read API.

mod projector_mongo_support;
mod projector_pg_support;

use std::time::Duration;

use projector_mongo_support as mongo;
use projector_pg_support as pg;
use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::postgres::PgReader;
use xclog_projector::read::{EventStore, Page, SnapshotStore, StoredEvent};
use xclog_schema::{Encoding, InstanceSnapshot};
use xclog_tests::{TestMongo, TestPg, TestTopic, unique_suffix};

/// Deadline of each catch-up: FerretDB 1.24 takes about 50-70 events/s on 2 cores (docs/DESIGN.md).
const CATCH_UP: Duration = Duration::from_secs(240);

async fn events<S: EventStore>(store: &S) -> anyhow::Result<Vec<StoredEvent>> {
    let mut out = Vec::new();
    let mut page = Page::first(1000);
    loop {
        let got = store.list_events(&page).await?;
        out.extend(got.events);
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    for e in &mut out {
        e.event.caused.sort(); // a set in both stores; PostgreSQL orders it by time
    }
    Ok(out)
}

async fn snapshots<S: SnapshotStore>(store: &S) -> anyhow::Result<Vec<InstanceSnapshot>> {
    let mut out = Vec::new();
    let mut page = Page::first(500);
    loop {
        let got = store.list_snapshots(&page).await?;
        out.extend(got.snapshots);
        match got.next {
            Some(next) => page.after = Some(next),
            None => return Ok(out),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_projectors_on_one_topic_hold_the_same_events_causality_and_snapshots()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let pg_db = TestPg::create().await?;
    let m = TestMongo::create().await?;
    let records = pg::workload(1500, 40, 77);
    let published =
        pg::publish(&pg::producer()?, &topic.name, &records, Encoding::Protobuf).await?;

    let pg_group = format!("pg-{}", unique_suffix());
    let mongo_group = format!("mongo-{}", unique_suffix());
    let a = pg::start_in_process(pg::config(&topic.name, &pg_group), &pg_db.url).await?;
    let b = mongo::start_in_process(pg::config(&topic.name, &mongo_group), m.database()).await?;
    pg::wait_caught_up(&pg_db.pool, &topic.name, &pg_group, 4, CATCH_UP).await?;
    mongo::wait_caught_up(&m.database(), &topic.name, &mongo_group, 4, CATCH_UP).await?;
    a.stop().await?;
    b.stop().await?;
    pg::assert_store_equals(&pg_db.pool, &published).await?;
    mongo::assert_store_equals(&m.database(), &published).await?;

    let pg_reader = PgReader::new(pg_db.pool.clone());
    let mongo_reader = MongoReader::new(m.database());
    let from_pg = events(&pg_reader).await?;
    let from_mongo = events(&mongo_reader).await?;
    assert_eq!(from_pg.len(), 1500);
    assert_eq!(
        from_pg, from_mongo,
        "the stores differ in events or causality"
    );
    assert_eq!(
        snapshots(&pg_reader).await?,
        snapshots(&mongo_reader).await?
    );

    // Traces agree too (same events, same causal order).
    let root = from_pg
        .iter()
        .find(|e| !e.event.caused.is_empty())
        .expect("a parent");
    let t_pg = xclog_projector::read::trace(&pg_reader, &root.event.id, 100).await?;
    let t_mongo = xclog_projector::read::trace(&mongo_reader, &root.event.id, 100).await?;
    let ids = |t: Option<xclog_projector::read::Trace>| -> Vec<String> {
        t.map(|t| t.events.into_iter().map(|e| e.event.event.id).collect())
            .unwrap_or_default()
    };
    assert_eq!(ids(t_pg), ids(t_mongo));
    Ok(())
}
