//! A full local queue makes publish calls wait, bounded by `queue_full_timeout`, instead of
//! failing at once or growing memory (real Kafka).

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use serde_json::json;
use xclog_producer::{Error, NextMove, Producer, ProducerConfig};
use xclog_schema::{FsmEvent, Limits, PersistedEvent, Record};
use xclog_tests::{TestTopic, brokers};

fn event(n: u64) -> PersistedEvent {
    PersistedEvent {
        id: xclog_schema::new_event_id(),
        instance_id: format!("instance-{n}"),
        machine_name: "Order".into(),
        component_name: "OrderComponent".into(),
        event: FsmEvent {
            event_type: "PLACE".into(),
            payload: json!({ "n": n }),
            timestamp: None,
            extra: Default::default(),
        },
        state_before: String::new(),
        state_after: "Placed".into(),
        persisted_at: 1,
        caused_by: vec![],
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: Some(1),
    }
}

fn event_id(message: &OwnedMessage) -> String {
    let headers: Vec<(&str, &[u8])> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    match xclog_schema::decode(
        &headers,
        message.key(),
        message.payload().unwrap_or_default(),
        &Limits::default(),
    )
    .expect("record decodes")
    .record
    {
        Record::Event(event) => event.id,
        Record::Snapshot(_) | Record::SnapshotDeletion(_) => panic!("no snapshot was published"),
    }
}

/// A queue of one record that is held for 2 s (linger) before it is sent: the second
/// publish finds the queue full.
fn one_slot_config(topic: &str, queue_full_timeout: Duration) -> ProducerConfig {
    let mut config = ProducerConfig::new(brokers(), topic);
    config.queue_max_messages = 1;
    config.linger = Duration::from_secs(2);
    config.queue_full_timeout = queue_full_timeout;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_queue_makes_the_call_wait_up_to_the_timeout_and_then_fail_without_queueing()
-> anyhow::Result<()> {
    let topic = TestTopic::create(1).await?;

    // Short wait: the second call gives up with QueueFull, and its record is not queued.
    let producer =
        Producer::connect(one_slot_config(&topic.name, Duration::from_millis(200))).await?;
    let first = event(1);
    let first_ack = producer.append_nowait(&first).await?;
    let error = producer
        .append_nowait(&event(2))
        .await
        .expect_err("the one-record queue is full during linger");
    match &error {
        Error::QueueFull { waited } => assert!(*waited >= Duration::from_millis(200), "{waited:?}"),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(error.next_move(), NextMove::Retry);
    first_ack.await?;
    producer.close(Duration::from_secs(10)).await?;

    // Long wait: the second call waits until the first record is delivered, then goes in.
    let producer = Producer::connect(one_slot_config(&topic.name, Duration::from_secs(60))).await?;
    let third = event(3);
    let fourth = event(4);
    let third_ack = producer.append_nowait(&third).await?;
    let fourth_ack = producer.append_nowait(&fourth).await?;
    third_ack.await?;
    fourth_ack.await?;
    producer.close(Duration::from_secs(10)).await?;

    let messages = topic.consume(3, Duration::from_secs(30)).await?;
    let ids: HashSet<String> = messages.iter().map(event_id).collect();
    let expected: HashSet<String> = [first.id, third.id, fourth.id].into_iter().collect();
    assert_eq!(ids, expected);
    let more = topic.consume(4, Duration::from_secs(5)).await;
    let error = more
        .expect_err("the refused record must not be in the topic")
        .to_string();
    assert!(error.contains("got 3 of"), "{error}");
    Ok(())
}
