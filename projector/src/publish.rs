//! Writing to the log from the projector side: deleting a snapshot is a record on the topic
//! (`xclog-kind: snapshot-deletion`), never a write behind the log's back, so both stores
//! apply it in log order and a rebuild keeps it.
//!
//! Invariant: a record is published as a runtime's producer would publish it (key = instance
//! id, headers `content-type`, `xclog-kind`, `xclog-schema-version`; idempotent producer,
//! `acks=all`), and [`LogPublisher::publish`] returns only once the brokers acknowledged it.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use xclog_schema::{Encoding, Record, SnapshotDeletion};

use crate::config::Secret;

/// Settings of a [`LogPublisher`].
#[derive(Debug, Clone)]
pub struct LogPublisherConfig {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The log topic.
    pub topic: String,
    /// Encoding of the published values (protobuf by default, as the Rust producer writes).
    pub encoding: Encoding,
    /// Longest wait for the brokers' acknowledgement of one record.
    pub delivery_timeout: Duration,
    /// Extra librdkafka settings (security, for example); values are redacted in `Debug`.
    pub kafka_settings: Vec<(String, Secret)>,
}

impl LogPublisherConfig {
    /// Protobuf, a 30 s delivery timeout, no extra settings.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            encoding: Encoding::Protobuf,
            delivery_timeout: Duration::from_secs(30),
            kafka_settings: Vec::new(),
        }
    }
}

/// Errors of [`LogPublisher`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The producer could not be created (bad Kafka settings): fix the configuration.
    #[error("cannot create the Kafka producer; check the Kafka settings")]
    Client(#[source] Box<rdkafka::error::KafkaError>),
    /// The brokers did not acknowledge the record in time, or refused it: retry (the producer
    /// is idempotent; a retried deletion that was written twice deletes the same snapshot).
    #[error("the record for instance {instance_id:?} was not acknowledged by topic {topic:?}")]
    Delivery {
        /// The record's instance.
        instance_id: String,
        /// The topic.
        topic: String,
        /// Kafka's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// Where the brokers stored a published record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// Its partition (the one of the instance's key).
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// The record as published.
    pub record: Record,
}

/// Publishes records to the log topic. Cheap to clone (shares the producer).
#[derive(Clone)]
pub struct LogPublisher {
    producer: FutureProducer,
    config: LogPublisherConfig,
}

impl std::fmt::Debug for LogPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPublisher")
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

impl LogPublisher {
    /// Creates the producer (idempotent, `acks=all`); connects on first use.
    ///
    /// # Errors
    /// [`PublishError::Client`] when librdkafka refuses the settings.
    pub fn new(config: LogPublisherConfig) -> Result<Self, PublishError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.brokers);
        for (k, v) in &config.kafka_settings {
            c.set(k, v.expose());
        }
        let producer: FutureProducer = c
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .create()
            .map_err(|e| PublishError::Client(Box::new(e)))?;
        Ok(Self { producer, config })
    }

    /// Deletes the stored snapshot of `instance_id` in every store by publishing a snapshot
    /// deletion, timed now. `sequence` is the sequence of the instance's last event, when the
    /// caller numbers records (`None` otherwise).
    ///
    /// # Errors
    /// [`PublishError::Delivery`] when the brokers did not acknowledge it.
    pub async fn delete_snapshot(
        &self,
        instance_id: &str,
        sequence: Option<u64>,
    ) -> Result<Published, PublishError> {
        let deletion = SnapshotDeletion {
            instance_id: instance_id.to_owned(),
            snapshot_deleted_at: now_ms(),
            sequence,
        };
        self.publish(&Record::SnapshotDeletion(deletion)).await
    }

    /// Publishes one record, keyed by its instance id, and waits for the acknowledgement.
    ///
    /// # Errors
    /// [`PublishError::Delivery`] when the brokers did not acknowledge it.
    pub async fn publish(&self, record: &Record) -> Result<Published, PublishError> {
        let encoded = xclog_schema::encode(record, self.config.encoding);
        let mut headers = OwnedHeaders::new_with_capacity(encoded.headers.len());
        for (k, v) in &encoded.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let topic = self.config.topic.as_str();
        let delivered = self
            .producer
            .send(
                FutureRecord::to(topic)
                    .key(&encoded.key)
                    .payload(&encoded.value)
                    .headers(headers),
                self.config.delivery_timeout,
            )
            .await;
        match delivered {
            Ok(delivery) => Ok(Published {
                topic: topic.to_owned(),
                partition: delivery.partition,
                offset: delivery.offset,
                record: record.clone(),
            }),
            Err((source, _)) => Err(PublishError::Delivery {
                instance_id: record.instance_id().to_owned(),
                topic: topic.to_owned(),
                source: Box::new(source),
            }),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
