//! A broker stopped and restarted in the middle of a send loop: no acknowledged event is
//! lost and none is duplicated (real Kafka, stopped with `scripts/stack.sh stop kafka` on the
//! native stack, its container stopped on containers: `xclog_tests::services`).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use tokio::sync::{mpsc, watch};
use xclog_producer::{PendingAck, Producer, ProducerConfig};
use xclog_schema::{Limits, Record};
use xclog_tests::{Service, TestTopic, brokers, services, wait_until};
use xclog_workload::{Workload, WorkloadConfig};

/// Starts Kafka again if the test fails while it is stopped (other tests share the broker).
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let started = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(services::start(Service::Kafka)))
        })
        .join();
        if let Ok(Err(error)) = started {
            eprintln!("starting Kafka again failed: {error:#}");
        }
    }
}

fn record_id(message: &OwnedMessage) -> String {
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
        Record::Snapshot(snapshot) => format!("snapshot:{}", snapshot.instance.id),
        Record::SnapshotDeletion(d) => format!("snapshot-deletion:{}", d.instance_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_and_restarted_during_a_send_loop_loses_no_acknowledged_event_and_duplicates_none()
-> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let mut config = ProducerConfig::new(brokers(), &topic.name);
    // Long enough for the restart: records wait in the client, they do not fail.
    config.delivery_timeout = Duration::from_secs(300);
    let producer = Arc::new(Producer::connect(config).await?);

    // Events only, so every record has a unique id to check.
    let records: Vec<Record> = Workload::new(WorkloadConfig {
        seed: 9,
        events: 4_500,
        instances: 200,
        payload_bytes: 300,
        snapshot_interval: NonZeroU32::MAX,
    })
    .filter(|r| matches!(r, Record::Event(_)))
    .collect();
    let total = records.len();

    // The send loop publishes fire-and-forget up to `allowed`; an ack task awaits the
    // handles in order and counts the acknowledgements.
    let (allowed_tx, mut allowed_rx) = watch::channel(1_500usize);
    let (ack_tx, mut ack_rx) = mpsc::channel::<(String, PendingAck)>(total);
    let sent = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = {
        let producer = Arc::clone(&producer);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for (n, record) in records.into_iter().enumerate() {
                while n >= *allowed_rx.borrow_and_update() {
                    allowed_rx.changed().await?;
                }
                let ack = producer.publish_nowait(&record, None).await?;
                let Record::Event(event) = record else {
                    unreachable!("events only")
                };
                ack_tx.send((event.id, ack)).await?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            anyhow::Ok(())
        })
    };
    let acker = {
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = Vec::new();
            while let Some((id, ack)) = ack_rx.recv().await {
                match ack.await {
                    Ok(_) => {
                        acknowledged.push(id);
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => failed.push((id, error.to_string())),
                }
            }
            (acknowledged, failed)
        })
    };

    // Phase 1: the loop is running and the broker acknowledges.
    wait_until(Duration::from_secs(60), "1000 acknowledgements", || {
        let n = acked.load(Ordering::SeqCst);
        async move { Ok((n >= 1_000).then_some(())) }
    })
    .await?;
    // Phase 2: stop the broker while records are in flight, keep sending into the client.
    let restart_guard = RestartOnDrop;
    services::stop(Service::Kafka).await?;
    let acked_while_stopped = acked.load(Ordering::SeqCst);
    allowed_tx.send(3_000)?;
    wait_until(Duration::from_secs(60), "3000 records sent", || {
        let n = sent.load(Ordering::SeqCst);
        async move { Ok((n >= 3_000).then_some(())) }
    })
    .await?;
    assert!(
        acked.load(Ordering::SeqCst) < 3_000,
        "records were acknowledged while the broker was down"
    );
    // Phase 3: restart it and let the loop finish.
    services::start(Service::Kafka).await?;
    std::mem::forget(restart_guard);
    allowed_tx.send(total)?;
    sender.await??;
    let (acknowledged, failed) = acker.await?;
    producer.flush(Duration::from_secs(60)).await?;

    assert!(
        acked_while_stopped < 3_000,
        "the stop came after the loop ended"
    );
    assert!(
        failed.is_empty(),
        "{} records failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(acknowledged.len(), total);

    // Every acknowledged event is in the topic, exactly once, and nothing else is.
    let messages = topic.consume(total, Duration::from_secs(120)).await?;
    let ids: Vec<String> = messages.iter().map(record_id).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "the topic holds duplicates");
    let expected: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(distinct, expected);
    let extra = topic.consume(total + 1, Duration::from_secs(10)).await;
    let error = extra
        .expect_err("the topic holds more records than were sent")
        .to_string();
    assert!(error.contains(&format!("got {total} of")), "{error}");
    Ok(())
}
