//! The producer keeps each instance's order across many instances and several partitions
//! (real Kafka).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use xclog_producer::{Producer, ProducerConfig};
use xclog_schema::{Decoded, Limits, Record};
use xclog_tests::{TestTopic, brokers};
use xclog_workload::{Workload, WorkloadConfig};

fn decode(message: &OwnedMessage) -> Decoded {
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
    .unwrap_or_else(|error| {
        panic!(
            "record at offset {} does not decode: {error}",
            message.offset()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_instance_order_survives_many_instances_over_several_partitions() -> anyhow::Result<()>
{
    let topic = TestTopic::create(6).await?;
    let producer = Producer::connect(ProducerConfig::new(brokers(), &topic.name)).await?;
    assert_eq!(producer.partitions(), 6);

    let records: Vec<Record> = Workload::new(WorkloadConfig {
        seed: 42,
        events: 4_000,
        instances: 300,
        payload_bytes: 200,
        snapshot_interval: NonZeroU32::new(3).unwrap(),
    })
    .collect();
    // Fire-and-forget everything, then await every acknowledgement.
    let mut acks = Vec::with_capacity(records.len());
    for record in &records {
        acks.push(producer.publish_nowait(record, None).await?);
    }
    let mut positions = Vec::with_capacity(acks.len());
    for ack in acks {
        positions.push(ack.await?);
    }
    producer.close(Duration::from_secs(30)).await?;

    let messages = topic
        .consume(records.len(), Duration::from_secs(60))
        .await?;
    assert_eq!(messages.len(), records.len());

    // Read back partition by partition in offset order: that is the order a projector sees.
    let mut by_partition: HashMap<i32, Vec<&OwnedMessage>> = HashMap::new();
    for message in &messages {
        by_partition
            .entry(message.partition())
            .or_default()
            .push(message);
    }
    let partitions_used = by_partition.len();
    let mut instance_partition: HashMap<String, i32> = HashMap::new();
    let mut read_back: HashMap<String, Vec<Record>> = HashMap::new();
    for (partition, mut messages) in by_partition {
        messages.sort_by_key(|m| m.offset());
        for message in messages {
            let record = decode(message).record;
            let instance = record.instance_id().to_owned();
            let first = *instance_partition
                .entry(instance.clone())
                .or_insert(partition);
            assert_eq!(first, partition, "instance {instance} is on two partitions");
            read_back.entry(instance).or_default().push(record);
        }
    }
    assert!(
        partitions_used >= 5,
        "records used only {partitions_used} of 6 partitions"
    );

    // Each instance's records come back exactly in the order they were published.
    let mut published: HashMap<String, Vec<Record>> = HashMap::new();
    for record in records {
        published
            .entry(record.instance_id().to_owned())
            .or_default()
            .push(record);
    }
    assert!(
        published.len() > 1_000,
        "only {} instances",
        published.len()
    );
    assert_eq!(published.len(), read_back.len());
    for (instance, expected) in &published {
        assert_eq!(
            read_back.get(instance),
            Some(expected),
            "instance {instance} differs"
        );
    }

    // And the acknowledged positions are exactly where the records are.
    let mut consumed_positions: Vec<(i32, i64)> = messages
        .iter()
        .map(|m| (m.partition(), m.offset()))
        .collect();
    let mut acked: Vec<(i32, i64)> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    consumed_positions.sort_unstable();
    acked.sort_unstable();
    assert_eq!(acked, consumed_positions);
    Ok(())
}
