//! Typed producer errors. Each variant says what happened and what the caller should do
//! next; [`Error::next_move`] gives that decision as a value so retry loops have one place
//! to ask.
//!
//! Invariant: every librdkafka error the producer sees passes through one classifier
//! ([`Error::from_delivery`]), so the same Kafka condition always maps to the same variant.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use xclog_kafka::ConnectError;

use crate::position::Position;

/// What the caller should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextMove {
    /// Publish the same record again (same event id), now or after a pause. Consumers
    /// that deduplicate by event id (the projectors do) see it once.
    Retry,
    /// Change the configuration (producer config, topic settings, ACLs) and start again;
    /// retrying as is will fail the same way.
    FixConfig,
    /// Drop or repair this record; it can never be published as it is.
    GiveUp,
    /// Close this producer and build a new one; it can no longer publish.
    Recreate,
}

/// Errors of the producer library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is wrong. Fix `field` and build the producer again.
    #[error("invalid producer config: `{field}` {problem}")]
    Config {
        /// The config field (or librdkafka key) at fault.
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The brokers could not be reached in time. Check the broker list and the network,
    /// then retry.
    #[error("could not reach Kafka brokers {brokers} within {waited:?}: {source}")]
    Unreachable {
        /// The configured bootstrap brokers.
        brokers: String,
        /// How long the producer waited.
        waited: Duration,
        /// The underlying client error.
        #[source]
        source: KafkaError,
    },

    /// The brokers answered but refused the connection: the SASL credentials or mechanism
    /// are wrong, or the TLS handshake failed (an untrusted or mismatched certificate). Fix
    /// the security settings; retrying as is fails the same way.
    #[error("Kafka brokers {brokers} refused the connection: {reason}")]
    Refused {
        /// The configured bootstrap brokers.
        brokers: String,
        /// What failed and what to check, with librdkafka's own words (never a secret).
        reason: String,
    },

    /// The topic does not exist (automatic creation is off). Create it with
    /// [`crate::ensure_topic`] (or `xclog produce --partitions N`), or fix the topic name.
    #[error(
        "topic {topic:?} does not exist; create it (xclog_producer::ensure_topic or `xclog produce --partitions N`) or fix the topic name"
    )]
    TopicMissing {
        /// The missing topic.
        topic: String,
    },

    /// The existing topic has a setting that would lose data from the log. Change the
    /// topic's configuration or use another topic.
    #[error(
        "topic {topic:?} has {setting}={found}, which would lose data from the log; it needs {required}"
    )]
    TopicUnsafe {
        /// The topic.
        topic: String,
        /// The offending topic setting.
        setting: String,
        /// Its current value.
        found: String,
        /// What the log needs instead.
        required: String,
    },

    /// The cluster refused access (authentication or ACLs). Fix the credentials or ACLs.
    #[error("Kafka refused access to topic {topic:?}: {source}; fix the credentials or ACLs")]
    NotAuthorized {
        /// The topic.
        topic: String,
        /// The underlying client error.
        #[source]
        source: KafkaError,
    },

    /// The local queue stayed full for the whole `queue_full_timeout`: the brokers are
    /// slower than the publishing rate, or unreachable. Nothing was queued; retry later or
    /// slow down.
    #[error(
        "the producer's local queue stayed full for {waited:?}; nothing was queued: slow down or retry later"
    )]
    QueueFull {
        /// How long the call waited for room.
        waited: Duration,
    },

    /// The record is larger than the broker or client accepts. Shrink it (smaller
    /// payload) or raise `message.max.bytes` on both sides; retrying will not help.
    #[error("record for instance {instance_id:?} is too large ({bytes} bytes): {source}")]
    RecordTooLarge {
        /// The record's instance.
        instance_id: String,
        /// The encoded size of the record value.
        bytes: usize,
        /// The underlying client error.
        #[source]
        source: KafkaError,
    },

    /// The record was not acknowledged (timed out or refused by the brokers). It may or
    /// may not have been written; publish it again with the same event id.
    #[error("record for instance {instance_id:?} was not acknowledged: {source}; publish it again")]
    Delivery {
        /// The record's instance.
        instance_id: String,
        /// The underlying client error.
        #[source]
        source: KafkaError,
    },

    /// The idempotent producer hit a fatal error (for example a sequence gap it cannot
    /// repair). Close this producer and build a new one, then publish the records that
    /// were not acknowledged.
    #[error("the Kafka producer hit a fatal error and must be recreated: {reason}")]
    Fatal {
        /// librdkafka's description of the fatal error.
        reason: String,
    },

    /// The producer was closed or dropped before the record was acknowledged. Stop
    /// publishing with it; records not acknowledged may or may not have been written.
    #[error(
        "the producer was closed before the record for instance {instance_id:?} was acknowledged"
    )]
    Closed {
        /// The record's instance.
        instance_id: String,
    },

    /// This record of an [`crate::Producer::append_all`] batch was not sent, because an
    /// earlier record of the batch could not be queued (sending it would have let it
    /// overtake that record). Publish it again after the failed one.
    #[error(
        "record for instance {instance_id:?} was not sent because an earlier record of its batch failed; publish it again"
    )]
    NotSent {
        /// The record's instance.
        instance_id: String,
    },

    /// [`crate::Producer::flush`] or [`crate::Producer::close`] returned with records
    /// still unacknowledged. Call `flush` again, or treat them as not acknowledged (their
    /// handles will say).
    #[error("{pending} records were still unacknowledged after waiting {waited:?}")]
    Unflushed {
        /// Records still queued or in flight.
        pending: usize,
        /// How long the call waited.
        waited: Duration,
    },

    /// Some records of an [`crate::Producer::append_all`] batch were not acknowledged.
    /// The acknowledged ones are durable: do not publish them again. Publish the failed
    /// ones again, in their order.
    #[error("{} of {} records of the batch were not acknowledged; first failure: {}", .failed.len(), .positions.len(), .failed.first().map(|(_, e)| e.to_string()).unwrap_or_default())]
    Batch {
        /// One entry per input record, in input order: where it landed, or `None` if it
        /// was not acknowledged.
        positions: Vec<Option<Position>>,
        /// The failed records' input index and error, in input order.
        failed: Vec<(usize, Error)>,
    },

    /// A topic administration request failed. Read the cause: usually fix the request
    /// (partitions, replication) or the cluster, then retry.
    #[error("topic administration of {topic:?} failed ({operation}): {problem}")]
    Admin {
        /// The topic.
        topic: String,
        /// What was being done (`create`, `describe`).
        operation: &'static str,
        /// What went wrong.
        problem: String,
    },
}

/// A client that could not be created or connected: the same case of the producer's errors,
/// with the same message and [`Error::next_move`].
impl From<ConnectError> for Error {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Config { field, problem } => Error::Config { field, problem },
            ConnectError::Unreachable {
                brokers,
                waited,
                source,
            } => Error::Unreachable {
                brokers,
                waited,
                source,
            },
            ConnectError::Refused { brokers, reason } => Error::Refused { brokers, reason },
        }
    }
}

impl Error {
    pub(crate) fn config(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// What the caller should do about this error.
    pub fn next_move(&self) -> NextMove {
        match self {
            Error::Config { .. }
            | Error::TopicMissing { .. }
            | Error::TopicUnsafe { .. }
            | Error::NotAuthorized { .. }
            | Error::Refused { .. } => NextMove::FixConfig,
            Error::Unreachable { .. }
            | Error::QueueFull { .. }
            | Error::Delivery { .. }
            | Error::Batch { .. }
            | Error::NotSent { .. }
            | Error::Unflushed { .. }
            | Error::Admin { .. } => NextMove::Retry,
            Error::RecordTooLarge { .. } => NextMove::GiveUp,
            Error::Fatal { .. } | Error::Closed { .. } => NextMove::Recreate,
        }
    }

    /// True when publishing the same record again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.next_move() == NextMove::Retry
    }

    /// Classifies a librdkafka error about one record (enqueue or delivery report).
    pub(crate) fn from_delivery(
        error: KafkaError,
        topic: &str,
        instance_id: &str,
        bytes: usize,
    ) -> Self {
        let code = match &error {
            KafkaError::MessageProduction(code) => Some(*code),
            _ => error.rdkafka_error_code(),
        };
        let instance_id = instance_id.to_owned();
        match code {
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
                Error::RecordTooLarge {
                    instance_id,
                    bytes,
                    source: error,
                }
            }
            Some(
                RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopicId,
            ) => Error::TopicMissing {
                topic: topic.to_owned(),
            },
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication,
            ) => Error::NotAuthorized {
                topic: topic.to_owned(),
                source: error,
            },
            Some(RDKafkaErrorCode::Fatal) => Error::Fatal {
                reason: error.to_string(),
            },
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {
                Error::Closed { instance_id }
            }
            _ => Error::Delivery {
                instance_id,
                source: error,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_record_is_retriable() {
        let error = Error::from_delivery(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            "t",
            "i-1",
            10,
        );
        assert!(matches!(error, Error::Delivery { .. }));
        assert_eq!(error.next_move(), NextMove::Retry);
    }

    #[test]
    fn an_oversized_record_is_given_up() {
        let error = Error::from_delivery(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            "t",
            "i-1",
            10_000_000,
        );
        assert_eq!(error.next_move(), NextMove::GiveUp);
        assert!(error.to_string().contains("10000000 bytes"), "{error}");
    }

    #[test]
    fn an_unknown_topic_asks_for_the_topic_to_be_created() {
        let error = Error::from_delivery(
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
            "orders",
            "i-1",
            10,
        );
        assert_eq!(error.next_move(), NextMove::FixConfig);
        assert!(
            error.to_string().contains("\"orders\" does not exist"),
            "{error}"
        );
    }

    #[test]
    fn a_fatal_idempotence_error_asks_for_a_new_producer() {
        let error = Error::from_delivery(
            KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
            "t",
            "i-1",
            10,
        );
        assert_eq!(error.next_move(), NextMove::Recreate);
    }
}
