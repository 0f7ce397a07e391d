//! `append_all` acknowledges a batch exactly once (real Kafka).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use xclog_producer::{Producer, ProducerConfig};
use xclog_schema::{Encoding, Limits, PersistedEvent, Record};
use xclog_tests::{TestTopic, brokers};
use xclog_workload::{Workload, WorkloadConfig};

fn decode(message: &OwnedMessage) -> Record {
    let headers: Vec<(&str, &[u8])> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    xclog_schema::decode(
        &headers,
        message.key(),
        message.payload().unwrap_or_default(),
        &Limits::default(),
    )
    .expect("record decodes")
    .record
}

fn events(seed: u64, count: u64) -> Vec<PersistedEvent> {
    Workload::new(WorkloadConfig {
        seed,
        events: count,
        instances: 50,
        payload_bytes: 128,
        snapshot_interval: NonZeroU32::MAX,
    })
    .filter_map(|record| match record {
        Record::Event(event) => Some(event),
        Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_exactly_once() -> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let mut config = ProducerConfig::new(brokers(), &topic.name);
    config.encoding = Encoding::Json;
    let producer = Producer::connect(config).await?;

    let batch = events(5, 1_000);
    let positions = producer.append_all(&batch).await?;
    assert_eq!(positions.len(), batch.len(), "one position per record");
    let distinct: HashSet<_> = positions.iter().collect();
    assert_eq!(distinct.len(), batch.len(), "two records share a position");
    producer.close(Duration::from_secs(30)).await?;

    // The topic holds each record once, at the position the batch returned for it.
    let messages = topic.consume(batch.len(), Duration::from_secs(60)).await?;
    let mut seen_ids = HashSet::new();
    for message in &messages {
        let Record::Event(event) = decode(message) else {
            panic!("a snapshot appeared in an events-only batch");
        };
        assert!(
            seen_ids.insert(event.id.clone()),
            "event {} is duplicated",
            event.id
        );
        let index = batch
            .iter()
            .position(|e| e.id == event.id)
            .expect("event from the batch");
        assert_eq!(event, batch[index]);
        assert_eq!(
            (positions[index].partition, positions[index].offset),
            (message.partition(), message.offset()),
            "event {index} is not where append_all said"
        );
    }
    assert_eq!(seen_ids.len(), batch.len());
    // Nothing beyond the batch arrives: a consumer asking for one more record times out.
    let more = topic.consume(batch.len() + 1, Duration::from_secs(5)).await;
    let error = more
        .expect_err("the topic holds more records than the batch")
        .to_string();
    assert!(
        error.contains(&format!("got {} of", batch.len())),
        "{error}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_acknowledged_with_no_positions() -> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;
    let producer = Producer::connect(ProducerConfig::new(brokers(), &topic.name)).await?;
    assert!(producer.append_all(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_says_which_records_are_durable_and_which_to_publish_again()
-> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let producer = Producer::connect(ProducerConfig::new(brokers(), &topic.name)).await?;
    let mut batch = events(6, 10);
    // Record 4 can never be sent (2 MB, above the client's 1 MB message limit).
    batch[4].event.payload = serde_json::json!({ "note": "x".repeat(2_000_000) });

    let error = producer
        .append_all(&batch)
        .await
        .expect_err("record 4 is too large");
    let xclog_producer::Error::Batch { positions, failed } = error else {
        panic!("expected a Batch error, got {error:?}");
    };
    // Records before the failure are acknowledged; the failed one and every later one are not.
    assert!(positions[..4].iter().all(Option::is_some), "{positions:?}");
    assert!(positions[4..].iter().all(Option::is_none), "{positions:?}");
    let failed_indexes: Vec<usize> = failed.iter().map(|(index, _)| *index).collect();
    assert_eq!(failed_indexes, (4..10).collect::<Vec<_>>());
    assert!(matches!(
        failed[0].1,
        xclog_producer::Error::RecordTooLarge { .. }
    ));
    assert!(
        failed[1..]
            .iter()
            .all(|(_, e)| matches!(e, xclog_producer::Error::NotSent { .. }))
    );

    // The topic holds exactly the acknowledged records.
    let messages = topic.consume(4, Duration::from_secs(30)).await?;
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| match decode(m) {
            Record::Event(e) => e.id,
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => {
                panic!("no snapshot was published")
            }
        })
        .collect();
    let expected: HashSet<String> = batch[..4].iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, expected);
    let more = topic.consume(5, Duration::from_secs(5)).await;
    assert!(
        more.is_err(),
        "a record after the failure reached the topic"
    );
    Ok(())
}
