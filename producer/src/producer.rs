//! The [`Producer`]: publishes events and snapshots to the log topic, keyed by instance id.
//!
//! Invariants:
//! - Every record is keyed by its instance id, so all records of an instance go to one
//!   partition, in the order the calls enqueued them; the idempotent client (see
//!   [`crate::config`]) keeps that order and writes each record at most once across
//!   retries and broker restarts.
//! - A successful `append`/`publish`/awaited [`PendingAck`] means the record is on all
//!   in-sync replicas (`acks=all`).
//! - Every publish call waits for room in the local queue for at most
//!   `queue_full_timeout`, then fails with [`Error::QueueFull`] without queueing anything.
//!   The local queue is bounded by `queue_max_messages` and `queue_max_kbytes`, so memory
//!   never grows past them.
//! - Dropping a `Producer` without [`Producer::close`] purges what is still queued or in
//!   flight: those records' handles resolve with [`Error::Closed`] (they may or may not
//!   have been written). Call `close` (or `flush`) first to drain.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use xclog_schema::{Encoding, InstanceSnapshot, PersistedEvent, Record, SnapshotDeletion};

use crate::config::ProducerConfig;
use crate::error::Error;
use crate::position::Position;
use xclog_kafka::{WatchedContext, create_error, fetch_metadata};

type Client = FutureProducer<WatchedContext>;

/// Publishes [`PersistedEvent`]s and [`InstanceSnapshot`]s to one topic.
///
/// Cheap to share: wrap it in an `Arc` or pass `&Producer` to tasks; every method takes
/// `&self` except [`Producer::close`].
///
/// Dropping it without [`Producer::close`] purges records still queued or in flight: their
/// [`PendingAck`]s resolve with [`Error::Closed`] and they may or may not have been written.
pub struct Producer {
    client: Client,
    topic: String,
    brokers: String,
    encoding: Encoding,
    queue_full_timeout: Duration,
    partitions: usize,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.topic)
            .field("brokers", &self.brokers)
            .field("encoding", &self.encoding)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// How long [`Producer::connect`] waits for the topic's metadata.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Producer {
    /// Validates `config`, connects, and checks that the topic exists (waiting at most
    /// 10 s for the brokers).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config, [`Error::Unreachable`] when no broker answers,
    /// [`Error::TopicMissing`] when the topic does not exist, [`Error::NotAuthorized`]
    /// when access is refused.
    pub async fn connect(config: ProducerConfig) -> Result<Self, Error> {
        let client_config = config.client_config()?;
        let context = WatchedContext::default();
        let watch = context.watch();
        let client: Client = client_config
            .create_with_context(context)
            .map_err(|error| create_error(&error))?;
        let probe = client.clone();
        let topic = config.topic.clone();
        let brokers = config.brokers.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            fetch_metadata(
                probe.client(),
                &watch,
                &brokers,
                Some(&topic),
                CONNECT_TIMEOUT,
            )
        })
        .await
        .map_err(|join| Error::Fatal {
            reason: format!("metadata task failed: {join}"),
        })??;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .ok_or_else(|| Error::TopicMissing {
                topic: config.topic.clone(),
            })?;
        match found.error() {
            None => {}
            Some(
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                | RDKafkaRespErr::RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
            ) => {
                return Err(Error::TopicMissing {
                    topic: config.topic.clone(),
                });
            }
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                return Err(Error::NotAuthorized {
                    topic: config.topic.clone(),
                    source: KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed),
                });
            }
            Some(other) => {
                return Err(Error::Unreachable {
                    brokers: config.brokers.clone(),
                    waited: CONNECT_TIMEOUT,
                    source: KafkaError::MetadataFetch(other.into()),
                });
            }
        }
        if found.partitions().is_empty() {
            return Err(Error::TopicMissing {
                topic: config.topic.clone(),
            });
        }
        tracing::debug!(
            topic = %config.topic,
            partitions = found.partitions().len(),
            "producer connected"
        );
        Ok(Self {
            partitions: found.partitions().len(),
            client,
            topic: config.topic,
            brokers: config.brokers,
            encoding: config.encoding,
            queue_full_timeout: config.queue_full_timeout,
        })
    }

    /// The topic this producer publishes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partition count seen at connect time.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The encoding of record values.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Records queued or in flight, not yet acknowledged or failed.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.client.in_flight_count()).unwrap_or(0)
    }

    /// Publishes one event and waits for the brokers' acknowledgement.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::next_move`] says whether to retry.
    pub async fn append(&self, event: &PersistedEvent) -> Result<Position, Error> {
        self.publish(&Record::Event(event.clone())).await
    }

    /// Publishes a batch and waits until every record's fate is known.
    ///
    /// "Together" means: the records are enqueued in order, so each instance's records keep
    /// their order, and the call returns once, after all of them are acknowledged or
    /// failed. It returns `Ok` with the positions in input order only when every record was
    /// acknowledged, each exactly once. It is not atomic (Kafka offers that only with
    /// transactions): on failure it returns [`Error::Batch`], whose `positions` tell which
    /// records are durable (do not publish those again) and whose `failed` list the rest
    /// (publish those again, in order). When enqueueing fails part-way (queue full past the
    /// timeout), the later records are not sent at all, so they cannot overtake the failed
    /// one; they are listed in `failed` as [`Error::NotSent`].
    ///
    /// # Errors
    /// [`Error::Batch`] as described (never another variant).
    pub async fn append_all(&self, events: &[PersistedEvent]) -> Result<Vec<Position>, Error> {
        let mut pending = Vec::with_capacity(events.len());
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if !failed.is_empty() {
                failed.push((
                    index,
                    Error::NotSent {
                        instance_id: event.instance_id.clone(),
                    },
                ));
                continue;
            }
            match self.enqueue(&Record::Event(event.clone()), None).await {
                Ok(ack) => pending.push((index, ack)),
                Err(error) => failed.push((index, error)),
            }
        }
        let mut positions = vec![None; events.len()];
        let mut ack_failures = Vec::new();
        for (index, ack) in pending {
            match ack.await {
                Ok(position) => positions[index] = Some(position),
                Err(error) => ack_failures.push((index, error)),
            }
        }
        if failed.is_empty() && ack_failures.is_empty() {
            return Ok(positions.into_iter().flatten().collect());
        }
        ack_failures.append(&mut failed);
        ack_failures.sort_by_key(|(index, _)| *index);
        Err(Error::Batch {
            positions,
            failed: ack_failures,
        })
    }

    /// Fire-and-forget: enqueues one event and returns at once with a handle that resolves
    /// to its acknowledgement. Await the handle later (or drop it: the record is still
    /// sent, you just do not learn the outcome). Waits only when the local queue is full,
    /// at most `queue_full_timeout`.
    ///
    /// # Errors
    /// [`Error::QueueFull`], [`Error::RecordTooLarge`] or [`Error::Fatal`] when the record
    /// could not be queued.
    pub async fn append_nowait(&self, event: &PersistedEvent) -> Result<PendingAck, Error> {
        self.enqueue(&Record::Event(event.clone()), None).await
    }

    /// Publishes a snapshot on the same topic and key as its instance's events, and waits
    /// for the acknowledgement.
    ///
    /// # Errors
    /// As [`Producer::append`].
    pub async fn save_snapshot(&self, snapshot: &InstanceSnapshot) -> Result<Position, Error> {
        self.publish(&Record::Snapshot(snapshot.clone())).await
    }

    /// Deletes the stored snapshot of an instance by publishing a snapshot deletion on the
    /// same topic and key as its events and snapshots (deleted now, without a `sequence`), and
    /// waits for the acknowledgement. The projectors apply it in log order: the snapshot is
    /// gone from every store, and stays gone after a rebuild, until a later snapshot. To set
    /// `sequence` (the instance's last event), [`Producer::publish`] a
    /// [`Record::SnapshotDeletion`] instead.
    ///
    /// # Errors
    /// As [`Producer::append`].
    pub async fn delete_snapshot(&self, instance_id: &str) -> Result<Position, Error> {
        self.publish(&Record::SnapshotDeletion(SnapshotDeletion {
            instance_id: instance_id.to_owned(),
            snapshot_deleted_at: now_ms(),
            sequence: None,
        }))
        .await
    }

    /// Publishes any record (event, snapshot or snapshot deletion) and waits for the
    /// acknowledgement.
    ///
    /// # Errors
    /// As [`Producer::append`].
    pub async fn publish(&self, record: &Record) -> Result<Position, Error> {
        self.enqueue(record, None).await?.await
    }

    /// Fire-and-forget for any record, optionally carrying a W3C `traceparent` header.
    ///
    /// # Errors
    /// As [`Producer::append_nowait`].
    pub async fn publish_nowait(
        &self,
        record: &Record,
        traceparent: Option<&str>,
    ) -> Result<PendingAck, Error> {
        self.enqueue(record, traceparent).await
    }

    /// Waits until everything queued so far is acknowledged or failed (their handles
    /// resolve), for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Unflushed`] when records are still pending after `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let client = self.client.clone();
        let result = tokio::task::spawn_blocking(move || client.flush(timeout))
            .await
            .map_err(|join| Error::Fatal {
                reason: format!("flush task failed: {join}"),
            })?;
        match result {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::Unflushed {
                pending: self.in_flight(),
                waited: timeout,
            }),
        }
    }

    /// Drains (as [`Producer::flush`]) and releases the client. Records still pending
    /// after `timeout` are purged: their handles resolve with [`Error::Closed`].
    ///
    /// # Errors
    /// [`Error::Unflushed`] when records were still pending after `timeout`.
    pub async fn close(self, timeout: Duration) -> Result<(), Error> {
        let flushed = self.flush(timeout).await;
        // Dropping the last client handle stops its polling thread; do it off the runtime.
        let client = self.client;
        let _ = tokio::task::spawn_blocking(move || drop(client)).await;
        flushed
    }

    async fn enqueue(
        &self,
        record: &Record,
        traceparent: Option<&str>,
    ) -> Result<PendingAck, Error> {
        let encoded = xclog_schema::encode_with_traceparent(record, self.encoding, traceparent);
        let headers = encoded.headers.iter().fold(
            OwnedHeaders::new_with_capacity(encoded.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        );
        let bytes = encoded.value.len();
        let mut future_record = FutureRecord::to(&self.topic)
            .key(&encoded.key)
            .payload(&encoded.value)
            .headers(headers);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            match self.client.send_result(future_record) {
                Ok(delivery) => {
                    return Ok(PendingAck {
                        delivery,
                        topic: self.topic.clone(),
                        instance_id: encoded.key,
                        bytes,
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let waited = started.elapsed();
                    if waited >= self.queue_full_timeout {
                        return Err(Error::QueueFull { waited });
                    }
                    future_record = back;
                    tokio::time::sleep(backoff.min(self.queue_full_timeout - waited)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
                Err((error, _)) => {
                    if let Some((_, reason)) = self.client.client().fatal_error() {
                        return Err(Error::Fatal { reason });
                    }
                    return Err(Error::from_delivery(
                        error,
                        &self.topic,
                        &encoded.key,
                        bytes,
                    ));
                }
            }
        }
    }
}

/// The acknowledgement of one enqueued record; a future resolving to where it landed.
///
/// Dropping it does not cancel the send.
#[must_use = "await the handle to learn whether the record was acknowledged"]
pub struct PendingAck {
    delivery: DeliveryFuture,
    topic: String,
    instance_id: String,
    bytes: usize,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck")
            .field("topic", &self.topic)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl PendingAck {
    /// The instance id (key) of the record this handle tracks.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Size in bytes of the encoded record value.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn resolve(&self, outcome: Result<OwnedDeliveryResult, impl Sized>) -> Result<Position, Error> {
        match outcome {
            Ok(Ok(delivery)) => Ok(Position {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((error, _message))) => Err(Error::from_delivery(
                error,
                &self.topic,
                &self.instance_id,
                self.bytes,
            )),
            Err(_canceled) => Err(Error::Closed {
                instance_id: self.instance_id.clone(),
            }),
        }
    }
}

impl Future for PendingAck {
    type Output = Result<Position, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.delivery).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(outcome) => Poll::Ready(self.resolve(outcome)),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
