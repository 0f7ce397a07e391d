//! Records the projector must neither crash on, stall on nor skip silently: a newer schema
//! version, a header name that is not UTF-8, ids too long for the stores' indexes, records
//! deleted from the topic before they were projected, and dead letters the dead-letter topic
//! refuses. Against real Kafka, PostgreSQL and FerretDB.

#![allow(unsafe_code)] // one test writes a header name that is not UTF-8 (see `send_to`)

mod projector_mongo_support;
mod projector_pg_support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use projector_mongo_support as mongo;
use projector_pg_support::*;
use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestMongo, TestPg, TestTopic, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(120);

/// Sends one record to `partition`, with headers whose names are bytes (librdkafka's C API
/// takes a name and its length, so a name need not be UTF-8, as from any other client).
async fn send_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &[u8],
    headers: &[(&[u8], &[u8])],
) -> anyhow::Result<i64> {
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    let raw = owned.as_borrowed() as *const _ as *mut rdkafka::bindings::rd_kafka_headers_t;
    for (name, value) in headers {
        // SAFETY: `raw` is the header list `owned` owns (what `as_borrowed` points to), alive
        // for this call; librdkafka copies the name and value.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                raw,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        ensure!(
            err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "adding a header: {err:?}"
        );
    }
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value)
        .headers(owned);
    let delivery = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    Ok(delivery.offset)
}

/// Sends `record` encoded as JSON to `partition`, with its headers changed by `edit`.
async fn send_record(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    record: &Record,
    edit: impl FnOnce(&mut Vec<(Vec<u8>, Vec<u8>)>),
) -> anyhow::Result<Published> {
    let encoded = xclog_schema::encode(record, Encoding::Json);
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = encoded
        .headers
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
        .collect();
    edit(&mut headers);
    let refs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let offset = send_to(
        producer,
        topic,
        partition,
        encoded.key.as_bytes(),
        &encoded.value,
        &refs,
    )
    .await?;
    Ok(Published {
        record: record.clone(),
        partition,
        offset,
    })
}

fn events(prefix: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::Event(event(
                &format!("{prefix}-{i}-{}", unique_suffix()),
                &format!("{prefix}-inst"),
                &[],
                1_700_000_000_000 + i as i64,
            ))
        })
        .collect()
}

async fn publish_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    records: &[Record],
) -> anyhow::Result<Vec<Published>> {
    let mut out = Vec::new();
    for r in records {
        out.push(send_record(producer, topic, partition, r, |_| {}).await?);
    }
    Ok(out)
}

/// `xclog verify` of the topic against both stores.
fn verify_all(
    topic: &TestTopic,
    projection: &str,
    pg: &TestPg,
    db: &TestMongo,
) -> anyhow::Result<std::process::Output> {
    std::process::Command::new(xclog_tests::xclog_binary()?)
        .args([
            "verify",
            "--topic",
            &topic.name,
            "--sources",
            "topic,postgres,mongo",
        ])
        .args(["--projection", projection, "--mongodb-database", &db.name])
        .env("DATABASE_URL", &pg.url)
        .env("MONGODB_URI", &db.uri)
        .output()
        .context("running xclog verify")
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn stored_offsets(pool: &sqlx::PgPool, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, next_offset FROM xclog_offsets WHERE topic = $1")
            .bind(topic)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Waits until the stored offsets are exactly `want`.
async fn wait_stored(
    pool: &sqlx::PgPool,
    topic: &str,
    want: BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    wait_until(CATCH_UP, "stored offsets", || {
        let want = want.clone();
        async move {
            let got = stored_offsets(pool, topic).await?;
            if got == want {
                Ok(Some(()))
            } else {
                anyhow::bail!("stored {got:?}, want {want:?}")
            }
        }
    })
    .await
}

fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// The dead-letter topic's records (it holds exactly `count`).
async fn dead_letters(topic: &str, count: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let dlq = format!("{topic}.dlq");
    let got = xclog_tests::consume_topic(&dlq, count, Duration::from_secs(60)).await?;
    let ends = end_offsets(&dlq, 1)?;
    let total: i64 = ends.values().sum();
    ensure!(
        total == count as i64,
        "{dlq} holds {total} records, want {count}"
    );
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_of_a_newer_schema_version_stops_its_partition_before_it_and_the_others_go_on()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;

    let mut published = publish_to(&producer, &topic.name, 0, &events("a", 5)).await?;
    let newer = Record::Event(event(&format!("v2-{}", unique_suffix()), "a-inst", &[], 1));
    let stop_at = send_record(&producer, &topic.name, 0, &newer, |h| {
        h.retain(|(k, _)| k != b"xclog-schema-version");
        h.push((b"xclog-schema-version".to_vec(), b"2".to_vec()));
    })
    .await?
    .offset;
    let after = publish_to(&producer, &topic.name, 0, &events("a-after", 3)).await?;
    published.extend(publish_to(&producer, &topic.name, 1, &events("b", 6)).await?);

    let addr = free_addr()?;
    let mut c = config(&topic.name, &group);
    c.http_addr = Some(addr);
    let p = start_in_process(c, &pg.url).await?;
    // Partition 1 is read to its end; partition 0 up to the newer record, not past it.
    wait_stored(
        &pg.pool,
        &topic.name,
        BTreeMap::from([(0, stop_at), (1, 6)]),
    )
    .await?;
    let (status, ready) = wait_until(
        CATCH_UP,
        "/readyz to name the stopped partition",
        || async move {
            let (status, body) = http_get(addr, "/readyz").await?;
            Ok(body
                .contains("partition 0 stopped")
                .then_some((status, body)))
        },
    )
    .await?;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains(&format!("offset {stop_at}")) && ready.contains("found version 2"),
        "{ready}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await?;
    assert!(
        metrics.contains("xclog_projector_partition_stopped{partition=\"0\"} 1"),
        "{metrics}"
    );
    // A while later it still has not moved past the record, nor dead-lettered it (an absence:
    // there is no condition to await, so a fixed while).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_offsets(&pg.pool, &topic.name).await?[&0], stop_at);
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    let dlq_ends = end_offsets(&format!("{}.dlq", topic.name), 2)?;
    assert!(
        dlq_ends.values().all(|&n| n == 0),
        "nothing dead-lettered: {dlq_ends:?}"
    );
    // The records after it wait for an upgraded projector: none of them is stored.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM fsm_events")
        .fetch_all(&pg.pool)
        .await?;
    for r in &after {
        let Record::Event(e) = &r.record else {
            unreachable!()
        };
        assert!(!ids.contains(&e.id), "{} was stored past the stop", e.id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_with_the_reason_and_the_stream_goes_on()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish_to(&producer, &topic.name, 0, &events("h", 3)).await?;
    let bad = Record::Event(event(&format!("hdr-{}", unique_suffix()), "h-inst", &[], 1));
    let bad_at = send_record(&producer, &topic.name, 0, &bad, |h| {
        h.push((b"trace\xff\xfeid".to_vec(), b"x".to_vec()));
    })
    .await?
    .offset;
    published.extend(publish_to(&producer, &topic.name, 0, &events("h-after", 3)).await?);

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    let dlq = dead_letters(&topic.name, 1).await?;
    assert_eq!(
        header(&dlq[0], "xclog-dlq-source-offset"),
        bad_at.to_string()
    );
    assert_eq!(header(&dlq[0], "xclog-dlq-error-kind"), "decode");
    let reason = header(&dlq[0], "xclog-dlq-reason");
    assert!(reason.contains("not UTF-8"), "{reason}");

    // verify reads the topic the same way: the record counts as dead-lettered, no panic.
    let out = std::process::Command::new(xclog_tests::xclog_binary()?)
        .args([
            "verify",
            "--topic",
            &topic.name,
            "--sources",
            "topic,postgres",
        ])
        .args(["--projection", &group])
        .env("DATABASE_URL", &pg.url)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify: {stdout}\n{stderr}");
    Ok(())
}

/// An event whose instance id is longer than the stores' index keys take.
fn over_long_records() -> Vec<Record> {
    let long = "i".repeat(3000);
    let mut a = event(&format!("long-inst-{}", unique_suffix()), &long, &[], 1);
    a.state_after = "s".repeat(100);
    let parent = "p".repeat(2000);
    let b = event(
        &format!("long-parent-{}", unique_suffix()),
        "ok",
        &[&parent],
        2,
    );
    vec![Record::Event(a), Record::Event(b)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_too_long_for_postgresql_indexes_are_dead_lettered_before_the_write()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish_to(&producer, &topic.name, 0, &events("l", 3)).await?;
    publish_to(&producer, &topic.name, 0, &over_long_records()).await?;
    published.extend(publish_to(&producer, &topic.name, 0, &events("l-after", 3)).await?);

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    let dlq = dead_letters(&topic.name, 2).await?;
    let reasons: Vec<String> = dlq.iter().map(|m| header(m, "xclog-dlq-reason")).collect();
    assert!(
        reasons[0].contains("instanceId is 3000 bytes"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("causedBy[0] is 2000 bytes"),
        "{reasons:?}"
    );
    for m in &dlq {
        assert_eq!(header(m, "xclog-dlq-error-kind"), "validation");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_too_long_for_the_mongo_indexes_are_dead_lettered_before_the_write()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let db = TestMongo::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish_to(&producer, &topic.name, 0, &events("m", 2)).await?;
    publish_to(&producer, &topic.name, 0, &over_long_records()).await?;
    published.extend(publish_to(&producer, &topic.name, 0, &events("m-after", 2)).await?);

    let p = mongo::start_in_process(config(&topic.name, &group), db.database()).await?;
    mongo::wait_caught_up(&db.database(), &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;
    mongo::assert_store_equals(&db.database(), &published).await?;
    let dlq = dead_letters(&topic.name, 2).await?;
    for m in &dlq {
        assert_eq!(header(m, "xclog-dlq-error-kind"), "validation");
        assert!(header(m, "xclog-dlq-reason").contains("bytes"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_deleted_before_they_were_projected_stop_the_partition_unless_the_gap_is_accepted()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let first = publish_to(&producer, &topic.name, 0, &events("g", 10)).await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;

    // While no projector runs, 10 more arrive and retention deletes the first 5 of them.
    let second = publish_to(&producer, &topic.name, 0, &events("g-late", 10)).await?;
    xclog_tests::delete_records_before(&topic.name, 0, 15).await?;

    let addr = free_addr()?;
    let mut c = config(&topic.name, &group);
    c.http_addr = Some(addr);
    let p = start_in_process(c, &pg.url).await?;
    let ready = wait_until(CATCH_UP, "/readyz to name the gap", || async move {
        let (_, body) = http_get(addr, "/readyz").await?;
        Ok(body.contains("partition 0 stopped").then_some(body))
    })
    .await?;
    assert!(ready.contains("offsets 10..=14 were deleted"), "{ready}");
    assert_eq!(stored_offsets(&pg.pool, &topic.name).await?[&0], 10);
    p.stop().await?;
    assert_store_equals(&pg.pool, &first).await?;

    // The operator accepts the loss: the rest is projected and the skipped offsets counted.
    let addr = free_addr()?;
    let mut c = config(&topic.name, &group);
    c.http_addr = Some(addr);
    c.accept_offset_gaps = true;
    let p = start_in_process(c, &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    let (_, metrics) = http_get(addr, "/metrics").await?;
    p.stop().await?;
    assert!(
        metrics.contains("xclog_projector_offsets_skipped_total{partition=\"0\"} 5"),
        "{metrics}"
    );
    let kept: Vec<Published> = first
        .into_iter()
        .chain(second.into_iter().filter(|r| r.offset >= 15))
        .collect();
    assert_store_equals(&pg.pool, &kept).await?;
    Ok(())
}

/// A poison record of `bytes` bytes (not JSON: it fails to decode).
fn poison(bytes: usize) -> Vec<u8> {
    vec![b'#'; bytes]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_too_large_for_its_topic_is_sent_truncated_with_where_the_original_is()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    // Held to the end: dropping a TestTopic deletes the topic.
    let _dlq = TestTopic::create_with(
        format!("{}.dlq", topic.name),
        1,
        &[("max.message.bytes", "200000")],
    )
    .await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let mut published = publish_to(&producer, &topic.name, 0, &events("t", 2)).await?;
    let big_at = send_to(&producer, &topic.name, 0, b"k", &poison(600_000), &[]).await?;
    published.extend(publish_to(&producer, &topic.name, 0, &events("t-after", 2)).await?);

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    let dlq = dead_letters(&topic.name, 1).await?;
    let m = &dlq[0];
    assert_eq!(header(m, "xclog-dlq-source-offset"), big_at.to_string());
    assert!(
        header(m, "xclog-dlq-truncated").contains("cut from 600000 to 65536 bytes"),
        "{}",
        header(m, "xclog-dlq-truncated")
    );
    assert_eq!(m.payload().map(<[u8]>::len), Some(65_536));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_the_topic_can_never_take_stops_the_projector_with_the_reason()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    // Held to the end: dropping a TestTopic deletes the topic.
    let _dlq = TestTopic::create_with(
        format!("{}.dlq", topic.name),
        1,
        &[("max.message.bytes", "1000")],
    )
    .await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    publish_to(&producer, &topic.name, 0, &events("r", 2)).await?;
    let poison_at = send_to(&producer, &topic.name, 0, b"k", &poison(5_000), &[]).await?;

    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    assert_stops_at_dead_letter(p, &pg, &topic.name, poison_at, "max.message.bytes").await
}

/// The projector stops with an error naming the dead-letter topic and `reason`, and nothing
/// at or past `poison_at` (partition 0) was committed: the record is read again after a fix.
async fn assert_stops_at_dead_letter(
    p: InProcess,
    pg: &TestPg,
    topic: &str,
    poison_at: i64,
    reason: &str,
) -> anyhow::Result<()> {
    let result = tokio::time::timeout(Duration::from_secs(150), p.task)
        .await
        .context("the projector kept retrying the dead letter instead of stopping")??;
    let error = format!("{:#}", anyhow::Error::from(result.expect_err("must stop")));
    assert!(
        error.contains("dead-letter") && error.contains(reason),
        "{error}"
    );
    let stored = stored_offsets(&pg.pool, topic).await?;
    assert!(
        stored.get(&0).is_none_or(|&next| next <= poison_at),
        "stored {stored:?}, poison at {poison_at}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_topic_deleted_under_a_running_projector_stops_it_with_the_reason()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    publish_to(&producer, &topic.name, 0, &events("d", 2)).await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    // The projector created the dead-letter topic at start; it goes away under it.
    xclog_tests::delete_topics(&[&format!("{}.dlq", topic.name)]).await?;
    let poison_at = send_to(&producer, &topic.name, 0, b"k", b"not a record", &[]).await?;
    assert_stops_at_dead_letter(p, &pg, &topic.name, poison_at, "deleted or never created").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_event_id_with_other_parents_links_nothing_the_first_copy_wins_in_both_stores()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let pg = TestPg::create().await?;
    let db = TestMongo::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let s = unique_suffix();
    let (p1, p2, c) = (format!("p1-{s}"), format!("p2-{s}"), format!("c-{s}"));
    let first = [
        Record::Event(event(&p1, "i", &[], 1)),
        Record::Event(event(&p2, "i", &[], 2)),
        Record::Event(event(&c, "i", &[&p1], 3)),
    ];
    // The repeat comes once in a later batch and once in the same batch as a new parent.
    let p3 = format!("p3-{s}");
    let repeat = Record::Event(event(&c, "i", &[&p2], 4));
    let mut published = publish_to(&producer, &topic.name, 0, &first).await?;
    let pg_run = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    let later = [
        repeat.clone(),
        Record::Event(event(&p3, "i", &[], 5)),
        Record::Event(event(&c, "i", &[&p3], 6)),
    ];
    published.extend(publish_to(&producer, &topic.name, 0, &later).await?);
    wait_caught_up(&pg.pool, &topic.name, &group, 1, CATCH_UP).await?;
    pg_run.stop().await?;
    let mongo_run = mongo::start_in_process(config(&topic.name, &group), db.database()).await?;
    mongo::wait_caught_up(&db.database(), &topic.name, &group, 1, CATCH_UP).await?;
    mongo_run.stop().await?;

    let caused = |id: String| {
        let pool = pg.pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<String>>("SELECT caused FROM fsm_events WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
        }
    };
    assert_eq!(caused(p1.clone()).await?, vec![c.clone()]);
    assert!(caused(p2.clone()).await?.is_empty());
    assert!(caused(p3.clone()).await?.is_empty());
    let edges: Vec<(String, String)> =
        sqlx::query_as("SELECT parent_id, child_id FROM fsm_causality ORDER BY 1")
            .fetch_all(&pg.pool)
            .await?;
    assert_eq!(edges, vec![(p1.clone(), c.clone())]);
    let stored_parents: Vec<String> =
        sqlx::query_scalar("SELECT caused_by FROM fsm_events WHERE id = $1")
            .bind(&c)
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(stored_parents, vec![p1.clone()]);
    assert_store_equals(&pg.pool, &published).await?;
    mongo::assert_store_equals(&db.database(), &published).await?;

    let out = verify_all(&topic, &group, &pg, &db)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify: {stdout}\n{stderr}");
    Ok(())
}

/// Sends `record` JSON-encoded to `partition` with no key, as hand-written producers do.
async fn send_keyless(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    record: &Record,
) -> anyhow::Result<Published> {
    let encoded = xclog_schema::encode(record, Encoding::Json);
    let mut headers = OwnedHeaders::new_with_capacity(encoded.headers.len());
    for (k, v) in &encoded.headers {
        headers = headers.insert(rdkafka::message::Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    let sent: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .payload(encoded.value.as_slice())
        .headers(headers);
    let delivery = producer
        .send(sent, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    Ok(Published {
        record: record.clone(),
        partition,
        offset: delivery.offset,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_records_of_one_instance_over_several_partitions_give_both_stores_and_verify_one_latest_state()
-> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let pg = TestPg::create().await?;
    let db = TestMongo::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let s = unique_suffix();
    let instance = format!("keyless-{s}");
    let state = |id: &str, at: i64, state: &str| {
        let mut e = event(&format!("{id}-{s}"), &instance, &[], at);
        e.state_after = state.to_owned();
        Record::Event(e)
    };
    // The latest event by time sits at the lowest offset of all, on partition 2; partition 0
    // holds the highest offsets. Offsets alone would pick "Shipped".
    let mut published = Vec::new();
    published.push(send_keyless(&producer, &topic.name, 2, &state("late", 5_000, "Closed")).await?);
    for (i, (at, st)) in [(1_000, "Submitted"), (2_000, "Paid"), (3_000, "Shipped")]
        .into_iter()
        .enumerate()
    {
        published
            .push(send_keyless(&producer, &topic.name, 0, &state(&format!("e{i}"), at, st)).await?);
    }
    published
        .push(send_keyless(&producer, &topic.name, 1, &state("mid", 4_000, "Delivered")).await?);
    // Two snapshots at the same time on two partitions: the higher partition wins the tie,
    // though its offset is the lower one.
    published.push(
        send_keyless(
            &producer,
            &topic.name,
            0,
            &snapshot(&instance, 6_000, None, "FromZero"),
        )
        .await?,
    );
    published.push(
        send_keyless(
            &producer,
            &topic.name,
            1,
            &snapshot(&instance, 6_000, None, "FromOne"),
        )
        .await?,
    );

    let pg_run = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 3, CATCH_UP).await?;
    pg_run.stop().await?;
    let mongo_run = mongo::start_in_process(config(&topic.name, &group), db.database()).await?;
    mongo::wait_caught_up(&db.database(), &topic.name, &group, 3, CATCH_UP).await?;
    mongo_run.stop().await?;

    let view: (String, String, i64) = sqlx::query_as(
        "SELECT current_state, last_event_id, event_count FROM fsm_instances WHERE instance_id = $1",
    )
    .bind(&instance)
    .fetch_one(&pg.pool)
    .await?;
    assert_eq!(view, ("Closed".to_owned(), format!("late-{s}"), 5));
    let doc = db
        .database()
        .collection::<mongodb::bson::Document>("instances")
        .find_one(mongodb::bson::doc! {"_id": &instance})
        .await?
        .context("no instance document")?;
    assert_eq!(doc.get_str("currentState")?, "Closed");
    assert_eq!(doc.get_str("lastEventId")?, format!("late-{s}"));
    assert_eq!(doc.get_i64("eventCount")?, 5);
    let snapshot_state: String =
        sqlx::query_scalar("SELECT current_state FROM fsm_snapshots WHERE instance_id = $1")
            .bind(&instance)
            .fetch_one(&pg.pool)
            .await?;
    assert_eq!(snapshot_state, "FromOne");
    assert_store_equals(&pg.pool, &published).await?;
    mongo::assert_store_equals(&db.database(), &published).await?;

    let out = verify_all(&topic, &group, &pg, &db)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An instance view showing an earlier event is a difference verify names.
    sqlx::query("UPDATE fsm_instances SET current_state = 'Shipped', last_event_id = $2 WHERE instance_id = $1")
        .bind(&instance)
        .bind(format!("e2-{s}"))
        .execute(&pg.pool)
        .await?;
    let out = verify_all(&topic, &group, &pg, &db)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify passed a stale instance view: {stdout}"
    );
    assert!(stdout.contains("instanceView"), "{stdout}");
    Ok(())
}
