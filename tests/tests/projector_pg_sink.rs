//! The PostgreSQL sink on its own, against a real database: fencing and the causality race
//! between concurrent workers.

mod projector_pg_support;

use std::sync::Arc;

use projector_pg_support::migrate;
use serde_json::json;
use xclog_projector::sink::postgres::PgSink;
use xclog_projector::sink::{
    ErrorClass, OffsetAdvance, Sink, SinkRecord, SourcePosition, WriteBatch,
};
use xclog_schema::{PersistedEvent, Record};
use xclog_tests::TestPg;

/// An event alone in an instance of its own (`inst-<id>`).
fn event(id: String, parents: Vec<String>, at: i64) -> PersistedEvent {
    let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
    projector_pg_support::event(&id, &format!("inst-{id}"), &parents, at)
}

fn batch(partition: i32, expected: Option<i64>, events: Vec<PersistedEvent>) -> WriteBatch {
    let start = expected.unwrap_or(0);
    let n = events.len() as i64;
    WriteBatch {
        topic: "t".into(),
        records: events
            .into_iter()
            .enumerate()
            .map(|(i, e)| SinkRecord {
                record: Record::Event(e),
                source: SourcePosition {
                    topic: "t".into(),
                    partition,
                    offset: start + i as i64,
                },
            })
            .collect(),
        offsets: vec![OffsetAdvance {
            partition,
            expected,
            next: start + n,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parents_and_children_written_at_once_by_two_workers_always_link() -> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let a = Arc::new(PgSink::from_pool(pg.pool.clone(), "p"));
    let b = Arc::new(PgSink::from_pool(pg.pool.clone(), "p"));
    const ROUNDS: i64 = 150;
    const PAIRS: i64 = 20;
    for round in 0..ROUNDS {
        // Worker A writes the children (partition 0), worker B their parents (partition 1),
        // at the same moment.
        let children: Vec<PersistedEvent> = (0..PAIRS)
            .map(|k| event(format!("c{round}-{k}"), vec![format!("p{round}-{k}")], 2))
            .collect();
        let parents: Vec<PersistedEvent> = (0..PAIRS)
            .map(|k| event(format!("p{round}-{k}"), vec![], 1))
            .collect();
        let expected = (round > 0).then_some(round * PAIRS);
        let ba = batch(0, expected, children);
        let bb = batch(1, expected, parents);
        let (ra, rb) = tokio::join!(
            {
                let a = a.clone();
                async move { a.write(&ba).await }
            },
            {
                let b = b.clone();
                async move { b.write(&bb).await }
            }
        );
        ra?;
        rb?;
    }
    let broken: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT id, COALESCE(caused, '{}') FROM fsm_events WHERE id LIKE 'p%' \
         AND COALESCE(caused, '{}') <> ARRAY['c' || substr(id, 2)]",
    )
    .fetch_all(&pg.pool)
    .await?;
    assert!(
        broken.is_empty(),
        "parents without their child in caused: {:?}",
        &broken[..broken.len().min(5)]
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fsm_events")
        .fetch_one(&pg.pool)
        .await?;
    assert_eq!(n, ROUNDS * PAIRS * 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_starts_from_a_stale_offset_is_fenced_and_leaves_nothing() -> anyhow::Result<()>
{
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let owner = PgSink::from_pool(pg.pool.clone(), "p");
    let zombie = PgSink::from_pool(pg.pool.clone(), "p");
    owner
        .write(&batch(0, None, vec![event("e0".into(), vec![], 1)]))
        .await?;
    owner
        .write(&batch(0, Some(1), vec![event("e1".into(), vec![], 1)]))
        .await?;
    // The zombie still believes the partition is at offset 1.
    let error = zombie
        .write(&batch(0, Some(1), vec![event("z1".into(), vec![], 1)]))
        .await
        .expect_err("a stale batch must not commit");
    assert_eq!(error.class(), ErrorClass::Fenced);
    // Nor may a second "first" batch.
    let error = zombie
        .write(&batch(0, None, vec![event("z0".into(), vec![], 1)]))
        .await
        .expect_err("a second first batch must not commit");
    assert_eq!(error.class(), ErrorClass::Fenced);
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM fsm_events ORDER BY id")
        .fetch_all(&pg.pool)
        .await?;
    assert_eq!(ids, vec!["e0", "e1"]);
    assert_eq!(owner.load_offsets("t", &[0, 1]).await?.get(&0), Some(&2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_older_than_the_stored_one_never_replaces_it() -> anyhow::Result<()> {
    use xclog_schema::{FsmInstance, InstanceSnapshot, InstanceStatus};
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let sink = PgSink::from_pool(pg.pool.clone(), "p");
    let snap = |state: &str, at: i64, seq: Option<u64>| InstanceSnapshot {
        instance: FsmInstance {
            id: "i1".into(),
            machine_name: "M".into(),
            current_state: state.into(),
            context: json!({}),
            public_member: Some(json!({"k": state})),
            internal_member: None,
            created_at: 1,
            updated_at: at,
            status: InstanceStatus::Active,
            is_entry_point: None,
            parent_instance_id: None,
            parent_machine_name: None,
        },
        snapshot_at: at,
        last_event_id: "e".into(),
        pending_timeouts: None,
        sequence: seq,
    };
    let write = |s: InstanceSnapshot, offset: i64, expected: Option<i64>| WriteBatch {
        topic: "t".into(),
        records: vec![SinkRecord {
            record: Record::Snapshot(s),
            source: SourcePosition {
                topic: "t".into(),
                partition: 0,
                offset,
            },
        }],
        offsets: vec![OffsetAdvance {
            partition: 0,
            expected,
            next: offset + 1,
        }],
    };
    sink.write(&write(snap("B", 200, Some(5)), 0, None)).await?;
    sink.write(&write(snap("A", 300, Some(4)), 1, Some(1)))
        .await?; // later clock, older sequence
    sink.write(&write(snap("C", 100, None), 2, Some(2))).await?; // no sequence, older time
    let state: String =
        sqlx::query_scalar("SELECT current_state FROM fsm_snapshots WHERE instance_id = 'i1'")
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(state, "B");
    sink.write(&write(snap("D", 400, Some(6)), 3, Some(3)))
        .await?;
    let state: String =
        sqlx::query_scalar("SELECT current_state FROM fsm_snapshots WHERE instance_id = 'i1'")
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(state, "D");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parent_written_with_its_children_is_stored_complete_and_not_rewritten()
-> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let sink = PgSink::from_pool(pg.pool.clone(), "p");
    // One child stored before its parent, two in the parent's batch, one after it.
    sink.write(&batch(
        0,
        None,
        vec![event("c0".into(), vec!["p".into()], 2)],
    ))
    .await?;
    sink.write(&batch(
        0,
        Some(1),
        vec![
            event("q".into(), vec![], 1),
            event("p".into(), vec![], 1),
            event("c2".into(), vec!["p".into(), "q".into()], 4),
            event("c1".into(), vec!["p".into()], 3),
            // q's second child, at the same time as the first: ordered by id.
            event("c4".into(), vec!["q".into()], 4),
        ],
    ))
    .await?;
    // Row versions: an updated row gets a new one (a new ctid), an untouched one keeps it.
    let ctid = |id: &'static str| {
        let pool = pg.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT ctid::text FROM fsm_events WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
        }
    };
    let (q_at, p_at) = (ctid("q").await?, ctid("p").await?);
    let caused = |id: &'static str| {
        let pool = pg.pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<String>>("SELECT caused FROM fsm_events WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
        }
    };
    assert_eq!(caused("q").await?, vec!["c2", "c4"]);
    assert_eq!(caused("p").await?, vec!["c0", "c1", "c2"]);
    // q's children came with it: inserted complete, the update left it alone. p also had a
    // child stored before it, so the update completed it: a second version.
    assert_eq!(q_at, "(0,2)", "q was rewritten");
    assert_ne!(
        p_at, "(0,3)",
        "p was not completed by the update (its child stored earlier)"
    );

    sink.write(&batch(
        0,
        Some(6),
        vec![event("c3".into(), vec!["p".into()], 5)],
    ))
    .await?;
    assert_eq!(caused("p").await?, vec!["c0", "c1", "c2", "c3"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_plans_every_statement_for_the_tables_as_they_are_now() -> anyhow::Result<()> {
    use xclog_projector::config::Secret;
    use xclog_projector::sink::postgres::PgSinkConfig;
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    // One connection, so the sink's prepared statements and the query below share it.
    let sink = PgSink::connect_lazy(&PgSinkConfig {
        database_url: Secret::new(pg.url.clone()),
        projection: "p".into(),
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(10),
    })?;
    // Past the five executions after which PostgreSQL may switch to a cached generic plan,
    // made while the tables are tiny.
    for n in 0..10i64 {
        let expected = (n > 0).then_some(2 * n);
        sink.write(&batch(
            0,
            expected,
            vec![
                event(format!("p{n}"), vec![], 1),
                event(format!("c{n}"), vec![format!("p{n}")], 2),
            ],
        ))
        .await?;
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(generic_plans), 0)::bigint, coalesce(sum(custom_plans), 0)::bigint \
         FROM pg_prepared_statements \
         WHERE statement LIKE '%fsm%' AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_one(sink.pool())
    .await?;
    // Four statements of the store's tables per batch (events, lock rows, edges, `caused`).
    assert!(custom >= 40, "only {custom} custom plans");
    assert_eq!(generic, 0, "a generic plan was used ({custom} custom)");
    Ok(())
}
