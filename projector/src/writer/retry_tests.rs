//! The writer's retry, split and fence logic against an in-process store ([`FakeStore`]) with
//! paused time: backoffs are measured on tokio's clock, exactly, without waiting for them.
//! Dead letters go to an in-process Kafka (librdkafka's mock cluster) and are read back.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex as StdMutex;

use rdkafka::consumer::BaseConsumer;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message as _};
use xclog_schema::Record;

use super::*;
use crate::batch::RawRecord;
use crate::config::ProjectorConfig;
use crate::sink::{OffsetAdvance, SinkRecord, SourcePosition, WriteBatch, WriteOutcome};

const TOPIC: &str = "log";
const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_millis(400);
/// The fake store's command timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most records the consumer would cut into one batch.
const BATCH_MAX: usize = 2500;

/// An in-process store: a write commits its records and offsets together after the fencing
/// check, or fails as scripted (transient failures first, then a refused record, then fatal).
#[derive(Default)]
struct FakeStore {
    state: StdMutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// Stored next offset per partition.
    offsets: HashMap<i32, i64>,
    /// Committed records, as (partition, offset), in commit order.
    rows: Vec<(i32, i64)>,
    /// Every write attempt: when, and the offsets of its records.
    attempts: Vec<(tokio::time::Instant, Vec<i64>)>,
    /// The next this-many writes fail as transient.
    transient: usize,
    /// Records (by offset) the store refuses.
    refused: HashSet<i64>,
    /// Every write fails as fatal.
    fatal: bool,
    /// After a failed write, the assignment changes (the consumer saw a rebalance).
    reassign_on_failure: Option<Arc<Shared>>,
    /// What one record costs the store to write: a write whose records cost the command
    /// timeout or more fails as timed out after the timeout, having stored nothing.
    per_record: Duration,
}

impl FakeStore {
    fn state(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap()
    }

    fn fail(&self, state: &mut StoreState, error: SinkError) -> Result<WriteOutcome, SinkError> {
        if let Some(shared) = &state.reassign_on_failure {
            shared.request_reseek();
        }
        Err(error)
    }
}

impl Sink for FakeStore {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn load_offsets(
        &self,
        _topic: &str,
        _partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        Ok(self.state().offsets.clone())
    }

    fn command_timeout(&self) -> Option<Duration> {
        Some(TIMEOUT)
    }

    async fn write(&self, batch: &WriteBatch) -> Result<WriteOutcome, SinkError> {
        let cost = self.state().per_record * batch.records.len() as u32;
        tokio::time::sleep(cost.min(TIMEOUT)).await;
        let mut s = self.state();
        if cost >= TIMEOUT {
            let offsets = batch.records.iter().map(|r| r.source.offset).collect();
            s.attempts.push((tokio::time::Instant::now(), offsets));
            return self.fail(
                &mut s,
                SinkError::TimedOut {
                    context: "writing",
                    after: TIMEOUT,
                },
            );
        }
        let offsets = batch.records.iter().map(|r| r.source.offset).collect();
        s.attempts.push((tokio::time::Instant::now(), offsets));
        if s.fatal {
            return self.fail(
                &mut s,
                SinkError::Fatal {
                    context: "writing",
                    source: "relation fsm_events does not exist".into(),
                },
            );
        }
        if s.transient > 0 {
            s.transient -= 1;
            return self.fail(
                &mut s,
                SinkError::Transient {
                    context: "writing",
                    source: "connection reset by peer".into(),
                },
            );
        }
        if batch
            .records
            .iter()
            .any(|r| s.refused.contains(&r.source.offset))
        {
            return self.fail(
                &mut s,
                SinkError::Rejected {
                    context: "writing",
                    reason: "value too long for the index".into(),
                },
            );
        }
        for o in &batch.offsets {
            let stored = s.offsets.get(&o.partition).copied();
            if stored != o.expected {
                return self.fail(
                    &mut s,
                    SinkError::Fenced {
                        partition: o.partition,
                        expected: o.expected,
                        stored,
                    },
                );
            }
        }
        for o in &batch.offsets {
            s.offsets.insert(o.partition, o.next);
        }
        let rows: Vec<(i32, i64)> = batch
            .records
            .iter()
            .map(|r| (r.source.partition, r.source.offset))
            .collect();
        s.rows.extend(&rows);
        Ok(WriteOutcome {
            events_inserted: rows.len() as u64,
            ..WriteOutcome::default()
        })
    }
}

/// A writer on `store`, its dead letters going to `kafka`.
struct Harness {
    store: Arc<FakeStore>,
    writer: Writer<FakeStore>,
    kafka: MockCluster<'static, DefaultProducerContext>,
}

impl Harness {
    fn new() -> Self {
        let kafka = MockCluster::new(1).expect("librdkafka mock cluster");
        kafka
            .create_topic(&format!("{TOPIC}.dlq"), 1, 1)
            .expect("dead-letter topic");
        let config = ProjectorConfig::new(kafka.bootstrap_servers(), TOPIC, "g");
        let store = Arc::new(FakeStore::default());
        let writer = Writer {
            sink: store.clone(),
            shared: Arc::new(Shared::new(1, 1)),
            index: 0,
            dead_letters: DeadLetterProducer::new(&config).expect("dead-letter producer"),
            consumer: None,
            metrics: Metrics::new(),
            backoff_initial: INITIAL,
            backoff_max: MAX,
            shutdown: CancellationToken::new(),
            limit: Arc::new(WriteLimit::new(store.command_timeout(), BATCH_MAX)),
        };
        Harness {
            store,
            writer,
            kafka,
        }
    }

    /// A batch of `offsets` of partition 0, starting from what the store holds.
    fn batch(&self, offsets: std::ops::Range<i64>) -> Batch {
        let expected = self.store.state().offsets.get(&0).copied();
        Batch {
            generation: self.writer.shared.generation(),
            write: WriteBatch {
                topic: TOPIC.to_owned(),
                records: offsets.clone().map(record).collect(),
                offsets: vec![OffsetAdvance {
                    partition: 0,
                    expected,
                    next: offsets.end,
                }],
            },
            raw: offsets
                .map(|o| RawRecord {
                    key: Some(b"instance".to_vec()),
                    value: Some(format!("record {o}").into_bytes()),
                    headers: Vec::new(),
                })
                .collect(),
            dead_letters: Vec::new(),
        }
    }

    /// The dead-letter topic's values, read from the start.
    fn dead_letters(&self, expected: usize) -> Vec<String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka.bootstrap_servers())
            .set("group.id", "dead-letter-reader")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&format!("{TOPIC}.dlq"), 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        // Nothing more than expected arrives.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        out
    }
}

fn record(offset: i64) -> SinkRecord {
    let event = serde_json::from_value(serde_json::json!({
        "id": format!("e{offset}"),
        "instanceId": "instance",
        "machineName": "Order",
        "componentName": "OrderComponent",
        "event": {"type": "SUBMIT", "payload": {}},
        "stateBefore": "Draft",
        "stateAfter": "Submitted",
        "persistedAt": 1_700_000_000_000_i64 + offset,
    }))
    .expect("an event");
    SinkRecord {
        record: Record::Event(event),
        source: SourcePosition {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset,
        },
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_retry_the_same_batch_with_a_doubling_capped_backoff_until_it_commits() {
    let h = Harness::new();
    h.store.state().transient = 4;
    let started = tokio::time::Instant::now();
    h.writer.commit(h.batch(0..10)).await.expect("commits");

    let s = h.store.state();
    assert_eq!(s.rows, (0..10).map(|o| (0, o)).collect::<Vec<_>>());
    assert_eq!(s.offsets[&0], 10);
    let waits: Vec<Duration> = s.attempts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(
        waits,
        [INITIAL, 2 * INITIAL, MAX, MAX],
        "backoff doubles from the initial value and stops at the maximum"
    );
    assert!(
        s.attempts
            .iter()
            .all(|(_, o)| *o == (0..10).collect::<Vec<_>>()),
        "every retry writes the same whole batch"
    );
    assert_eq!(started.elapsed(), INITIAL + 2 * INITIAL + MAX + MAX);
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_batch_the_store_keeps_refusing_without_skipping_it() {
    let h = Harness::new();
    h.store.state().transient = usize::MAX;
    let shutdown = h.writer.shutdown.clone();
    let stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
    });
    h.writer
        .commit(h.batch(0..5))
        .await
        .expect("abandoned, not failed");
    stop.await.unwrap();

    let s = h.store.state();
    assert!(s.rows.is_empty(), "nothing committed: {:?}", s.rows);
    assert!(!s.offsets.contains_key(&0), "the offset did not move");
    // 100 + 200 + 400 ms, then one attempt every 400 ms up to the stop at 60 s.
    assert_eq!(s.attempts.len(), 3 + (60_000 - 700) / 400 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_an_older_assignment_is_abandoned_instead_of_retried() {
    let h = Harness::new();
    {
        let mut s = h.store.state();
        s.transient = usize::MAX;
        s.reassign_on_failure = Some(h.writer.shared.clone());
    }
    let batch = h.batch(0..5);
    h.writer.commit(batch).await.expect("abandoned");

    let s = h.store.state();
    assert_eq!(
        s.attempts.len(),
        1,
        "no retry once the partition may belong to another member"
    );
    assert!(s.rows.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rejected_record_is_isolated_by_halving_and_dead_lettered_while_its_neighbours_and_offsets_commit()
 {
    let h = Harness::new();
    h.store.state().refused.insert(5);
    h.writer.commit(h.batch(0..8)).await.expect("commits");

    {
        let s = h.store.state();
        assert_eq!(
            s.rows,
            [0, 1, 2, 3, 4, 6, 7].map(|o| (0, o)),
            "every neighbour committed once, in log order"
        );
        assert_eq!(s.offsets[&0], 8, "the offset passes the refused record");
        let attempts: Vec<Vec<i64>> = s.attempts.iter().map(|(_, o)| o.clone()).collect();
        assert_eq!(
            attempts,
            [
                vec![0, 1, 2, 3, 4, 5, 6, 7],
                vec![0, 1, 2, 3],
                vec![4, 5, 6, 7],
                vec![4, 5],
                vec![4],
                vec![5],
                vec![],
                vec![6, 7],
            ],
            "halves until the refused record is alone, then its offset advances in an empty write"
        );
    }
    assert_eq!(h.dead_letters(1), ["record 5"]);
    assert_eq!(
        h.writer
            .metrics
            .dead_lettered
            .get_or_create(&KindLabel { kind: "rejected" })
            .get(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_fenced_batch_is_dropped_and_the_consumer_asked_to_reseek() {
    let h = Harness::new();
    let batch = h.batch(0..5);
    // Another member committed this partition meanwhile.
    h.store.state().offsets.insert(0, 40);
    let generation = h.writer.shared.generation();
    h.writer.commit(batch).await.expect("dropped, not failed");

    let s = h.store.state();
    assert_eq!(s.attempts.len(), 1, "a fenced batch is never retried");
    assert!(s.rows.is_empty());
    assert_eq!(s.offsets[&0], 40, "the other member's offset stands");
    assert_eq!(
        h.writer.shared.generation(),
        generation + 1,
        "the consumer is asked to reload the offsets and seek"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_fails_the_commit_without_a_retry() {
    let h = Harness::new();
    h.store.state().fatal = true;
    let error = h
        .writer
        .commit(h.batch(0..5))
        .await
        .expect_err("a fatal error stops");
    assert_eq!(error.class(), ErrorClass::Fatal);
    let s = h.store.state();
    assert_eq!(s.attempts.len(), 1);
    assert!(s.rows.is_empty());
}

/// Asserts the store holds each of `offsets` exactly once, in order, and the offset after them.
fn rows_in_order(h: &Harness, offsets: std::ops::Range<i64>) {
    let s = h.store.state();
    let mut rows = s.rows.clone();
    rows.dedup();
    assert_eq!(s.rows, rows, "no record is stored twice");
    assert_eq!(s.rows, offsets.clone().map(|o| (0, o)).collect::<Vec<_>>());
    assert_eq!(s.offsets[&0], offsets.end);
}

#[tokio::test(start_paused = true)]
async fn a_batch_the_store_cannot_write_within_the_timeout_is_written_in_halves_and_later_batches_stay_under_the_limit()
 {
    let h = Harness::new();
    // 100 records cost the whole timeout; 50 cost half of it.
    h.store.state().per_record = Duration::from_millis(100);
    h.writer.commit(h.batch(0..400)).await.expect("commits");
    rows_in_order(&h, 0..400);
    let sizes: Vec<usize> = h.store.state().attempts.iter().map(|a| a.1.len()).collect();
    assert_eq!(
        &sizes[..3],
        [400, 200, 100],
        "each timed-out write is tried again in halves"
    );
    assert!(
        sizes[3..].iter().all(|&n| n <= 50),
        "after the timeouts every write is at most 50 records: {sizes:?}"
    );
    assert_eq!(h.writer.limit.records(), Some(50));
    assert!(
        h.writer
            .metrics
            .encode()
            .contains("xclog_projector_write_record_limit 50"),
        "the limit is exported"
    );

    // The next batch goes straight to writes under the limit: no timeout is waited for again.
    let before = h.store.state().attempts.len();
    let started = tokio::time::Instant::now();
    h.writer.commit(h.batch(400..600)).await.expect("commits");
    rows_in_order(&h, 0..600);
    let s = h.store.state();
    let later: Vec<usize> = s.attempts[before..].iter().map(|a| a.1.len()).collect();
    assert_eq!(later, [50, 50, 50, 50]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(20),
        "4 writes of 5 s each"
    );
}

#[tokio::test(start_paused = true)]
async fn once_writes_take_under_half_the_timeout_the_limit_doubles_back_until_batches_are_whole() {
    let h = Harness::new();
    h.store.state().per_record = Duration::from_millis(100);
    h.writer.commit(h.batch(0..400)).await.expect("commits");
    assert_eq!(h.writer.limit.records(), Some(50));
    // 50 records take half of the 10 s timeout: no timeout, and no room to grow.
    h.writer.commit(h.batch(400..450)).await.expect("commits");
    assert_eq!(h.writer.limit.records(), Some(50));

    // The store is fast again: the limit doubles until it no longer binds.
    h.store.state().per_record = Duration::from_micros(10);
    let mut next = 450;
    let mut rounds = 0;
    while h.writer.limit.records().is_some() {
        rounds += 1;
        assert!(rounds < 20, "the limit grows back");
        h.writer
            .commit(h.batch(next..next + 2500))
            .await
            .expect("commits");
        next += 2500;
    }
    rows_in_order(&h, 0..next);
    h.writer
        .commit(h.batch(next..next + 2500))
        .await
        .expect("commits");
    let s = h.store.state();
    assert_eq!(
        s.attempts.last().map(|a| a.1.len()),
        Some(2500),
        "a whole batch in one write"
    );
}
