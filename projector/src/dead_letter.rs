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
use xclog_kafka::create_error;

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
/// Header, only on a dead letter too large for the dead-letter topic: what was cut (the value
/// is its first [`TRUNCATED_VALUE_BYTES`] bytes, the original key and headers are left out);
/// the original stays in the source topic at the source partition and offset.
pub const HEADER_TRUNCATED: &str = "xclog-dlq-truncated";
/// Bytes of the value a truncated dead letter keeps.
pub const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;
/// Longest reason header; longer reasons are cut (a reason quotes at most a short excerpt).
const REASON_MAX_BYTES: usize = 4096;
/// Room for the `xclog-dlq-*` headers on top of the record as read.
const HEADER_ROOM_BYTES: usize = 16 * 1024;

/// Errors of the dead-letter path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The producer could not be created (bad Kafka settings): fix the configuration.
    #[error("cannot create the dead-letter producer; check the Kafka settings")]
    Client(#[source] xclog_kafka::ConnectError),
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
    /// Kafka refused the dead letter for a reason retrying cannot change (authorization, the
    /// topic does not exist, a policy): the projector stops rather than loop.
    #[error(
        "the dead-letter topic {topic:?} refuses the record from partition {partition} offset \
         {offset}, and retrying cannot change that: {source}; {hint}"
    )]
    Refused {
        /// The dead-letter topic.
        topic: String,
        /// Source partition.
        partition: i32,
        /// Source offset.
        offset: i64,
        /// What to do about it.
        hint: &'static str,
        /// Kafka's error (boxed: it would make every result of the dead-letter path large).
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// How a failed dead-letter send is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Broker down, leader moving, timeout: retry with backoff.
    Transient,
    /// The record is too large for the producer or the topic: send it truncated.
    TooLarge,
    /// Retrying cannot help: stop, with this hint.
    Permanent(&'static str),
}

fn classify(error: &rdkafka::error::KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            Failure::TooLarge
        }
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed,
        ) => Failure::Permanent("grant this projector's principal Write on the dead-letter topic"),
        Some(C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownTopicId) => {
            Failure::Permanent(
                "the topic was deleted or never created; restart the projector (it creates the \
                 dead-letter topic at start) or create it",
            )
        }
        Some(
            C::PolicyViolation
            | C::InvalidRecord
            | C::InvalidMessage
            | C::InvalidTopic
            | C::InvalidArgument
            | C::UnsupportedForMessageFormat
            | C::InvalidRequiredAcks,
        ) => Failure::Permanent("check the dead-letter topic's configuration and the broker log"),
        _ => Failure::Transient,
    }
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
                // Room for any record the decoder accepts, with the dead-letter headers on top.
                .set(
                    "message.max.bytes",
                    (config.limits.max_record_bytes + HEADER_ROOM_BYTES)
                        .max(1_000_000)
                        .to_string(),
                )
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

    /// Sends one dead letter and waits for the broker's acknowledgement. Transient errors are
    /// retried until shutdown; a record too large for the topic is sent truncated
    /// ([`HEADER_TRUNCATED`]); an error retrying cannot change is returned.
    pub async fn send(
        &self,
        dead: &DeadLetter,
        shutdown: &CancellationToken,
    ) -> Result<(), DeadLetterError> {
        let mut backoff = Duration::from_millis(100);
        let mut truncated = false;
        loop {
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(DeadLetterError::Cancelled),
                r = self.producer.send(self.record(dead, truncated), Duration::from_secs(30)) => r,
            };
            let Err((error, _)) = sent else {
                return Ok(());
            };
            let refused = |hint: &'static str, source| DeadLetterError::Refused {
                topic: self.topic.clone(),
                partition: dead.partition,
                offset: dead.offset,
                hint,
                source: Box::new(source),
            };
            match classify(&error) {
                Failure::TooLarge if !truncated => {
                    tracing::warn!(
                        error = %error,
                        topic = %self.topic,
                        partition = dead.partition,
                        offset = dead.offset,
                        "dead letter too large for the dead-letter topic; sending it truncated"
                    );
                    truncated = true;
                    continue;
                }
                Failure::TooLarge => {
                    return Err(refused(
                        "even truncated it is too large: raise the topic's max.message.bytes",
                        error,
                    ));
                }
                Failure::Permanent(hint) => return Err(refused(hint, error)),
                Failure::Transient => {
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

    /// The dead letter as a Kafka record: the record as read plus the `xclog-dlq-*` headers,
    /// or, `truncated`, only the first [`TRUNCATED_VALUE_BYTES`] of its value and the headers.
    fn record<'a>(&'a self, dead: &'a DeadLetter, truncated: bool) -> FutureRecord<'a, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(dead.raw.headers.len() + 6);
        let value = dead.raw.value.as_deref().unwrap_or(&[]);
        let mut payload = value;
        if truncated {
            payload = &value[..value.len().min(TRUNCATED_VALUE_BYTES)];
            let what = format!(
                "value cut from {} to {} bytes; key ({} bytes) and {} headers left out; the \
                 original is in the source topic at the source partition and offset",
                value.len(),
                payload.len(),
                dead.raw.key.as_ref().map_or(0, Vec::len),
                dead.raw.headers.len()
            );
            headers = headers.insert(Header {
                key: HEADER_TRUNCATED,
                value: Some(what.as_bytes()),
            });
        } else {
            for (k, v) in &dead.raw.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
        }
        let partition = dead.partition.to_string();
        let offset = dead.offset.to_string();
        for (k, v) in [
            (HEADER_REASON, cut(&dead.reason, REASON_MAX_BYTES)),
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
        let mut record = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if !truncated && let Some(k) = dead.raw.key.as_deref() {
            record = record.key(k);
        }
        record
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;

    #[test]
    fn size_errors_truncate_authorization_and_missing_topics_stop_and_the_rest_is_retried() {
        let produce = KafkaError::MessageProduction;
        assert_eq!(
            classify(&produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            Failure::TooLarge
        );
        assert!(matches!(
            classify(&produce(RDKafkaErrorCode::TopicAuthorizationFailed)),
            Failure::Permanent(_)
        ));
        assert!(matches!(
            classify(&produce(RDKafkaErrorCode::UnknownTopicOrPartition)),
            Failure::Permanent(_)
        ));
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::QueueFull,
        ] {
            assert_eq!(
                classify(&produce(transient)),
                Failure::Transient,
                "{transient:?}"
            );
        }
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(3000);
        let c = cut(&reason, REASON_MAX_BYTES);
        assert!(c.len() <= REASON_MAX_BYTES && c.len() >= REASON_MAX_BYTES - 1);
        assert!(reason.starts_with(c));
        assert_eq!(cut("short", REASON_MAX_BYTES), "short");
    }
}
