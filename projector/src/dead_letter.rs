//! The dead-letter topic: records that cannot be materialized go there, as they were read,
//! with headers saying why and where they came from. Delivery is awaited before the batch that
//! skips them commits, so a dead letter is never lost (it may be sent twice after a crash).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use xclog_producer::connection::create_error;

use crate::batch::DeadLetter;
use crate::config::ProjectorConfig;

/// Header: why the record was dead-lettered (human-readable: what was wrong and where).
pub const HEADER_REASON: &str = "xclog-dlq-reason";
/// Header: `decode`, `validation` or `rejected`.
pub const HEADER_ERROR_KIND: &str = "xclog-dlq-error-kind";
/// Header: source topic.
pub const HEADER_SOURCE_TOPIC: &str = "xclog-dlq-source-topic";
/// Header: source partition (decimal).
pub const HEADER_SOURCE_PARTITION: &str = "xclog-dlq-source-partition";
/// Header: source offset (decimal).
pub const HEADER_SOURCE_OFFSET: &str = "xclog-dlq-source-offset";

/// Errors of the dead-letter path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The producer could not be created (bad Kafka settings): fix the configuration.
    #[error("cannot create the dead-letter producer; check the Kafka settings")]
    Client(#[source] xclog_producer::Error),
    /// The dead-letter topic does not exist and could not be created: create it or grant rights.
    #[error("cannot create the dead-letter topic {topic:?}; create it or allow topic creation")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Kafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Shutdown arrived while a dead letter was still being sent: the batch is abandoned.
    #[error("shutdown while sending a dead letter")]
    Cancelled,
}

/// Sends dead letters; retries Kafka errors until delivered or shut down.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
    backoff_max: Duration,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    /// Creates the producer (idempotent, acks=all).
    pub fn new(config: &ProjectorConfig) -> Result<Self, DeadLetterError> {
        let producer: FutureProducer =
            crate::kafka::client_config(&config.brokers, &config.kafka_settings)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("message.timeout.ms", "30000")
                .create()
                .map_err(|e| DeadLetterError::Client(create_error(&e)))?;
        Ok(Self {
            producer,
            topic: config.dead_letter_topic.clone(),
            source_topic: config.topic.clone(),
            backoff_max: config.retry_backoff_max,
        })
    }

    /// Creates the dead-letter topic if it does not exist (as many partitions as the source).
    pub async fn ensure_topic(
        config: &ProjectorConfig,
        partitions: i32,
    ) -> Result<(), DeadLetterError> {
        let admin: AdminClient<DefaultClientContext> =
            crate::kafka::client_config(&config.brokers, &config.kafka_settings)
                .create()
                .map_err(|e| DeadLetterError::Client(create_error(&e)))?;
        let topic = NewTopic::new(
            &config.dead_letter_topic,
            partitions.max(1),
            TopicReplication::Fixed(-1),
        );
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .map_err(|source| DeadLetterError::CreateTopic {
                topic: config.dead_letter_topic.clone(),
                source,
            })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(DeadLetterError::CreateTopic {
                        topic: config.dead_letter_topic.clone(),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends one dead letter and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        dead: &DeadLetter,
        shutdown: &CancellationToken,
    ) -> Result<(), DeadLetterError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(dead.raw.headers.len() + 5);
            for (k, v) in &dead.raw.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let partition = dead.partition.to_string();
            let offset = dead.offset.to_string();
            for (k, v) in [
                (HEADER_REASON, dead.reason.as_str()),
                (HEADER_ERROR_KIND, dead.kind),
                (HEADER_SOURCE_TOPIC, self.source_topic.as_str()),
                (HEADER_SOURCE_PARTITION, partition.as_str()),
                (HEADER_SOURCE_OFFSET, offset.as_str()),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let empty: &[u8] = &[];
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(dead.raw.value.as_deref().unwrap_or(empty))
                .headers(headers);
            if let Some(k) = dead.raw.key.as_deref() {
                record = record.key(k);
            }
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(DeadLetterError::Cancelled),
                r = self.producer.send(record, Duration::from_secs(30)) => r,
            };
            match sent {
                Ok(_) => return Ok(()),
                Err((error, _)) => {
                    tracing::warn!(error = %error, topic = %self.topic, "dead letter not delivered; retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return Err(DeadLetterError::Cancelled),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }
}
