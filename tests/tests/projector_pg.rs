//! End-to-end tests of the PostgreSQL projector against real Kafka and PostgreSQL.

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use serde_json::json;
use xclog_projector::read::postgres::PgReader;
use xclog_projector::read::{EventStore, Page, SnapshotStore};
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestPg, TestTopic, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(120);

/// Lag tools (`kafka-consumer-groups.sh --describe`) read the group's offsets in Kafka, which
/// the projector commits about once a second: they reach the store's offsets while it runs.
async fn group_offsets_reach_the_stored_ones(
    pool: &sqlx::PgPool,
    topic: &str,
    group: &str,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM xclog_offsets \
         WHERE topic = $1 AND projection = $2 ORDER BY partition",
    )
    .bind(topic)
    .bind(group)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(!stored.is_empty(), "no stored offsets");
    // Reads the group's offsets without joining the group.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", xclog_tests::brokers())
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (partition, _) in &stored {
        tpl.add_partition(topic, *partition);
    }
    let (reader, tpl, stored) = (&reader, &tpl, &stored);
    wait_until(
        Duration::from_secs(20),
        "the group's offsets to reach the stored ones",
        || async move {
            let committed = tokio::task::block_in_place(|| {
                reader.committed_offsets(tpl.clone(), Duration::from_secs(5))
            })?;
            let got: Vec<(i32, i64)> = committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => (e.partition(), o),
                    _ => (e.partition(), -1),
                })
                .collect();
            anyhow::ensure!(
                got == *stored,
                "the group's offsets {got:?} are not the stored {stored:?}"
            );
            Ok(Some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_realistic_workload_lands_row_for_row_and_a_replay_changes_nothing() -> anyhow::Result<()>
{
    let topic = TestTopic::create(4).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(3000, 40, 11);
    let published = publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await?;
    group_offsets_reach_the_stored_ones(&pg.pool, &topic.name, &group).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;

    // The xcomponent-ai documented queries run unchanged and agree with the topic.
    let per_component: Vec<(String, i64)> = sqlx::query_as(
        "SELECT component_name, COUNT(*) FROM fsm_events GROUP BY component_name ORDER BY 1",
    )
    .fetch_all(&pg.pool)
    .await?;
    let total: i64 = per_component.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 3000);
    assert!(per_component.len() >= 2, "{per_component:?}");
    let chains: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT id, component_name, array_length(caused, 1) AS caused_count FROM fsm_events \
         WHERE caused IS NOT NULL AND array_length(caused, 1) > 0",
    )
    .fetch_all(&pg.pool)
    .await?;
    assert!(!chains.is_empty(), "the workload has causedBy chains");
    let (parent, _, _) = &chains[0];
    let effects: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM fsm_events WHERE $1 = ANY(caused_by) ORDER BY persisted_at")
            .bind(parent)
            .fetch_all(&pg.pool)
            .await?;
    assert_eq!(effects.len() as i32, chains[0].2.unwrap_or(0));
    let sizes: Vec<(String, String)> = sqlx::query_as(
        "SELECT tablename::text, pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) \
         FROM pg_tables WHERE tablename IN ('fsm_events','fsm_snapshots') ORDER BY 1",
    )
    .fetch_all(&pg.pool)
    .await?;
    assert_eq!(sizes.len(), 2);

    // Replay the whole topic from the start (offsets forgotten): nothing changes.
    let before: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM fsm_events), (SELECT sum(event_count)::bigint FROM fsm_instances), \
         (SELECT count(*) FROM fsm_causality)",
    )
    .fetch_one(&pg.pool)
    .await?;
    sqlx::query("DELETE FROM xclog_offsets")
        .execute(&pg.pool)
        .await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await?;
    p.stop().await?;
    let after: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM fsm_events), (SELECT sum(event_count)::bigint FROM fsm_instances), \
         (SELECT count(*) FROM fsm_causality)",
    )
    .fetch_one(&pg.pool)
    .await?;
    assert_eq!(before, after);
    assert_store_equals(&pg.pool, &published).await?;

    // Reads: an instance's history is its log order; paging lists every event exactly once.
    let reader = PgReader::new(pg.pool.clone());
    let first = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Event(e) => Some(e.instance_id.clone()),
            _ => None,
        })
        .expect("an event");
    let want: Vec<String> = published
        .iter()
        .filter_map(|p| match &p.record {
            Record::Event(e) if e.instance_id == first => Some(e.id.clone()),
            _ => None,
        })
        .collect();
    let mut got = Vec::new();
    let mut page = Page::first(3);
    loop {
        let r = reader.events_of_instance(&first, &page).await?;
        got.extend(r.events.into_iter().map(|e| e.event.id));
        match r.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    assert_eq!(got, want);
    let mut listed = Vec::new();
    let mut page = Page::first(700);
    loop {
        let r = reader.list_events(&page).await?;
        listed.extend(r.events.into_iter().map(|e| e.event.id));
        match r.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 3000);
    let caused = reader.events_caused_by(parent).await?;
    assert_eq!(caused.len(), effects.len());
    let causes = reader.events_that_caused(&caused[0].event.id).await?;
    assert!(causes.iter().any(|e| &e.event.id == parent));
    let trace = xclog_projector::read::trace(&reader, &caused[0].event.id, 1000)
        .await?
        .expect("traced");
    let pos = |id: &str| trace.events.iter().position(|t| t.event.event.id == id);
    assert!(
        pos(parent).expect("cause in trace") < pos(&caused[0].event.id).expect("root in trace")
    );
    let snaps = reader.list_snapshots(&Page::first(10_000)).await?;
    let one = snaps
        .snapshots
        .first()
        .expect("snapshots exist")
        .instance
        .id
        .clone();
    assert!(reader.snapshot(&one).await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_projected_before_its_parent_still_appears_in_the_parents_caused()
-> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let suffix = unique_suffix();
    let parent = event(
        &format!("parent-{suffix}"),
        &format!("pi-{suffix}"),
        &[],
        100,
    );
    let child_a = event(
        &format!("child-a-{suffix}"),
        &format!("ci-{suffix}"),
        &[&parent.id],
        200,
    );
    let child_b = event(
        &format!("child-b-{suffix}"),
        &format!("ci2-{suffix}"),
        &[&parent.id],
        150,
    );

    let mut published = publish(
        &producer,
        &topic.name,
        &[Record::Event(child_a.clone())],
        Encoding::Json,
    )
    .await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 3, CATCH_UP).await?;
    // Parent and a second child arrive together, after the first child is committed.
    published.extend(
        publish(
            &producer,
            &topic.name,
            &[
                Record::Event(parent.clone()),
                Record::Event(child_b.clone()),
            ],
            Encoding::Protobuf,
        )
        .await?,
    );
    wait_caught_up(&pg.pool, &topic.name, &group, 3, CATCH_UP).await?;
    p.stop().await?;

    let caused: Vec<String> = sqlx::query_scalar("SELECT caused FROM fsm_events WHERE id = $1")
        .bind(&parent.id)
        .fetch_one(&pg.pool)
        .await?;
    // Ordered by the children's persistedAt.
    assert_eq!(caused, vec![child_b.id.clone(), child_a.id.clone()]);
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dead_letter_topic_with_their_reason_and_every_good_row_lands()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let good = workload(400, 10, 5);
    let mut published = Vec::new();
    let mut poison: Vec<(i32, i64, &str)> = Vec::new();
    let mut nul = event(&format!("nul-{}", unique_suffix()), "inst-nul", &[], 1);
    nul.event.payload = json!({"note": "bad\u{0}byte"});
    let nul_bytes = xclog_schema::encode(&Record::Event(nul), Encoding::Json);
    for (n, chunk) in good.chunks(50).enumerate() {
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
                publish_raw(
                    &producer,
                    &topic.name,
                    "inst-y",
                    b"{\"id\": 42}",
                    &[
                        ("content-type", b"application/json"),
                        ("xclog-kind", b"event"),
                    ],
                )
                .await?
            }
            _ => {
                let headers: Vec<(&str, &[u8])> = nul_bytes
                    .headers
                    .iter()
                    .map(|(k, v)| (*k, v.as_slice()))
                    .collect();
                publish_raw(
                    &producer,
                    &topic.name,
                    &nul_bytes.key,
                    &nul_bytes.value,
                    &headers,
                )
                .await?
            }
        };
        poison.push((p, o, if n % 3 == 2 { "validation" } else { "decode" }));
    }

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;

    let dlq = xclog_tests::consume_topic(
        &format!("{}.dlq", topic.name),
        poison.len(),
        Duration::from_secs(60),
    )
    .await?;
    let mut seen = Vec::new();
    for m in &dlq {
        let header = |name: &str| -> String {
            m.headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("xclog-dlq-source-topic"), topic.name);
        assert!(!header("xclog-dlq-reason").is_empty());
        seen.push((
            header("xclog-dlq-source-partition").parse::<i32>()?,
            header("xclog-dlq-source-offset").parse::<i64>()?,
            header("xclog-dlq-error-kind"),
        ));
        assert!(m.payload().is_some());
    }
    seen.sort();
    let mut want: Vec<(i32, i64, String)> = poison
        .iter()
        .map(|(p, o, k)| (*p, *o, (*k).to_owned()))
        .collect();
    want.sort();
    assert_eq!(seen, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_in_one_group_share_the_partitions_and_one_stopping_midway_loses_nothing()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(4000, 40, 21);
    let (first, second) = records.split_at(records.len() / 2);

    let a = start_in_process(config(&topic.name, &group), &pg.url).await?;
    let b = start_in_process(config(&topic.name, &group), &pg.url).await?;
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    // Both must have written something before one goes away.
    xclog_tests::wait_until(CATCH_UP, "both projectors to commit", || {
        let pool = pg.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fsm_events")
                .fetch_one(&pool)
                .await?;
            Ok((n > 0).then_some(()))
        }
    })
    .await?;
    a.stop().await?;
    published.extend(publish(&producer, &topic.name, second, Encoding::Json).await?);
    wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await?;
    b.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}

/// `writers = 3` on 5 partitions: the partitions are dealt out 2/2/1 and three writers commit
/// concurrently, in small batches (so their queues fill and lanes pause). The workload's
/// causality crosses instances, hence partitions, so parents and children land in different
/// writers' transactions. Stopped midway and restarted with 2 writers (another deal of the
/// partitions), the store still holds every row once, with every `caused` complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_writers_in_one_projector_land_every_row_once_with_complete_causality()
-> anyhow::Result<()> {
    let topic = TestTopic::create(5).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(4000, 40, 33);
    let (first, second) = records.split_at(records.len() / 2);
    let mut cfg = config(&topic.name, &group);
    cfg.writers = 3;
    cfg.batch_max_records = 100;

    let a = start_in_process(cfg.clone(), &pg.url).await?;
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 5, CATCH_UP).await?;
    a.stop().await?;
    cfg.writers = 2;
    let b = start_in_process(cfg, &pg.url).await?;
    published.extend(publish(&producer, &topic.name, second, Encoding::Json).await?);
    wait_caught_up(&pg.pool, &topic.name, &group, 5, CATCH_UP).await?;
    b.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}

/// librdkafka keeps a partition's pause flag across a rebalance. A worker whose writer is
/// blocked (here: the test holds a lock on `xclog_offsets`) fills its queue and pauses its
/// partitions; when a second worker joins, the first gets half of them back, and must fetch
/// them once the writer is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_by_a_busy_writer_fetches_the_partitions_a_rebalance_gives_it_back()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(2500, 40, 5);
    let (first, second) = records.split_at(200);
    let mut cfg = config(&topic.name, &group);
    cfg.batch_max_records = 50;
    cfg.drain_timeout = Duration::from_secs(2);

    let a = start_in_process(cfg.clone(), &pg.url).await?;
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await?;

    // Block every offset write (reads still pass: the rebalance loads offsets).
    let mut blocker = pg.pool.begin().await?;
    sqlx::query("LOCK TABLE xclog_offsets IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await?;
    published.extend(publish(&producer, &topic.name, second, Encoding::Json).await?);
    // 2,300 records in batches of 50 against a queue of 2: the consumer pauses within
    // milliseconds; give it ample time (the pause shows in no metric or row to wait for).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = start_in_process(cfg, &pg.url).await?;
    // The revoke waits out the 2 s drain timeout, then both workers get two partitions (the
    // assignment shows in no metric or row while offset writes are blocked, so a fixed wait).
    tokio::time::sleep(Duration::from_secs(8)).await;
    blocker.commit().await?;

    wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await?;
    a.stop().await?;
    b.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_apply_to_a_database_holding_xcomponent_schema_a_rows() -> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    // Schema A exactly as PERSISTENCE.md creates it.
    for stmt in [
        "CREATE TABLE fsm_events (id VARCHAR(50) PRIMARY KEY, instance_id VARCHAR(50) NOT NULL, \
         machine_name VARCHAR(100) NOT NULL, component_name VARCHAR(100) NOT NULL, event_type VARCHAR(50) NOT NULL, \
         event_payload JSONB NOT NULL, state_before VARCHAR(50) NOT NULL, state_after VARCHAR(50) NOT NULL, \
         persisted_at BIGINT NOT NULL, caused_by VARCHAR(50)[], caused VARCHAR(50)[], \
         source_component_name VARCHAR(100), target_component_name VARCHAR(100), created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
        "CREATE INDEX idx_events_instance ON fsm_events(instance_id)",
        "CREATE INDEX idx_events_component ON fsm_events(component_name)",
        "CREATE INDEX idx_events_machine ON fsm_events(machine_name)",
        "CREATE INDEX idx_events_timestamp ON fsm_events(persisted_at)",
        "CREATE INDEX idx_events_caused_by ON fsm_events USING GIN(caused_by)",
        "CREATE TABLE fsm_snapshots (instance_id VARCHAR(50) PRIMARY KEY, machine_name VARCHAR(100) NOT NULL, \
         current_state VARCHAR(50) NOT NULL, status VARCHAR(20) NOT NULL, context JSONB NOT NULL, public_member JSONB, \
         snapshot_at BIGINT NOT NULL, last_event_id VARCHAR(50) NOT NULL, pending_timeouts JSONB, \
         created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
        "INSERT INTO fsm_events VALUES ('old-1','inst-old','Order','Shop','CREATE','{}','','Draft',10,'{}','{}',NULL,NULL,DEFAULT)",
        "INSERT INTO fsm_events VALUES ('old-2','inst-old','Order','Shop','SUBMIT','{\"a\":1}','Draft','Submitted',20,'{old-1}','{}',NULL,NULL,DEFAULT)",
        "INSERT INTO fsm_snapshots VALUES ('inst-old','Order','Submitted','completed','{}',NULL,20,'old-2',NULL,DEFAULT,DEFAULT)",
    ] {
        sqlx::query(stmt).execute(&pg.pool).await?;
    }
    migrate(&pg.pool).await?;
    migrate(&pg.pool).await?; // idempotent

    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM fsm_events ORDER BY id")
        .fetch_all(&pg.pool)
        .await?;
    assert_eq!(ids, vec!["old-1", "old-2"]);
    let caused: Vec<String> =
        sqlx::query_scalar("SELECT caused FROM fsm_events WHERE id = 'old-1'")
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(
        caused,
        vec!["old-2"],
        "caused is backfilled from the existing caused_by"
    );
    let widened: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = 'fsm_events' AND column_name IN ('id', 'caused_by') ORDER BY 1",
    )
    .fetch_all(&pg.pool)
    .await?;
    assert_eq!(
        widened,
        vec![
            ("caused_by".into(), "ARRAY".into()),
            ("id".into(), "text".into())
        ]
    );
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT reloptions::text[] FROM pg_class WHERE oid = 'fsm_events'::regclass",
    )
    .fetch_one(&pg.pool)
    .await?;
    assert_eq!(
        options,
        Some(vec!["fillfactor=50".to_owned()]),
        "fsm_events leaves room for the HOT update of `caused` (0003)"
    );
    let inst: (String, String, i64) = sqlx::query_as(
        "SELECT current_state, status, event_count FROM fsm_instances WHERE instance_id = 'inst-old'",
    )
    .fetch_one(&pg.pool)
    .await?;
    assert_eq!(inst, ("Submitted".into(), "completed".into(), 2));

    // A log event whose cause is an old row links to it.
    let topic = TestTopic::create(1).await?;
    let group = format!("g-{}", unique_suffix());
    let long_id = format!("new-{}-{}", unique_suffix(), "x".repeat(60)); // wider than VARCHAR(50)
    let published = publish(
        &producer()?,
        &topic.name,
        &[Record::Event(event(&long_id, "inst-new", &["old-2"], 30))],
        Encoding::Protobuf,
    )
    .await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;
    let caused: Vec<String> =
        sqlx::query_scalar("SELECT caused FROM fsm_events WHERE id = 'old-2'")
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(caused, vec![long_id]);
    let old_snapshot = PgReader::new(pg.pool.clone())
        .snapshot("inst-old")
        .await?
        .expect("old snapshot");
    assert_eq!(old_snapshot.instance.current_state, "Submitted");
    assert_eq!(published.len(), 1);
    Ok(())
}
