//! Every Kafka client of the projector library (the consumer, the dead-letter producer and its
//! admin client, the watermark probe, `verify`'s reader) starts from [`client_config`], so the
//! brokers and the security settings (TLS, SASL, other librdkafka options) reach all of them
//! alike; the caller then sets the keys it owns (group, offsets, idempotence) on top.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{Producer as _, ThreadedProducer};
use xclog_kafka::{ConnectError, WatchedContext};

use crate::config::Secret;

/// The librdkafka configuration every client starts from: the brokers and `settings` (TLS,
/// SASL and other librdkafka keys; values are secrets and never logged).
pub fn client_config(brokers: &str, settings: &[(String, Secret)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in settings {
        config.set(key, value.expose());
    }
    config.set("bootstrap.servers", brokers);
    config
}

/// Connects with `settings` and reads the metadata (of `topic` only, when given), blocking at
/// most `timeout`; the client returned can read watermarks too. A refused password or an
/// untrusted certificate fails at once with [`ConnectError::Refused`], saying what to
/// check; brokers that do not answer fail with [`ConnectError::Unreachable`] after
/// `timeout`.
pub fn connect(
    brokers: &str,
    settings: &[(String, Secret)],
    topic: Option<&str>,
    timeout: Duration,
) -> Result<(ThreadedProducer<WatchedContext>, Metadata), ConnectError> {
    xclog_kafka::connect(&client_config(brokers, settings), brokers, topic, timeout)
}

/// Why [`watermarks`] could not read a topic's offsets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The brokers did not answer or refused the client (the reason says which).
    #[error("reading the metadata of topic {topic} from {brokers}: {source}")]
    Connect {
        /// The topic.
        topic: String,
        /// The brokers asked.
        brokers: String,
        /// Unreachable or refused.
        source: Box<ConnectError>,
    },
    /// The brokers answered and do not have the topic.
    #[error("topic {topic} does not exist on {brokers}")]
    Missing {
        /// The topic.
        topic: String,
        /// The brokers asked.
        brokers: String,
    },
    /// A partition's offsets could not be read.
    #[error("reading the offsets of {topic} partition {partition}: {source}")]
    Offsets {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What librdkafka said.
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// Low and high watermarks of every partition of `topic` (blocking, each query at most
/// `timeout`): where a reader of the whole topic starts and where it ends now.
pub fn watermarks(
    brokers: &str,
    settings: &[(String, Secret)],
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, TopicError> {
    let (client, metadata) =
        connect(brokers, settings, Some(topic), timeout).map_err(|source| TopicError::Connect {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            source: Box::new(source),
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(TopicError::Missing {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        });
    }
    partitions
        .into_iter()
        .map(|partition| {
            client
                .client()
                .fetch_watermarks(topic, partition, timeout)
                .map(|w| (partition, w))
                .map_err(|source| TopicError::Offsets {
                    topic: topic.to_owned(),
                    partition,
                    source: Box::new(source),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_given_win_over_a_setting_of_the_same_key() {
        let settings = vec![
            ("security.protocol".to_owned(), Secret::new("sasl_ssl")),
            (
                "bootstrap.servers".to_owned(),
                Secret::new("elsewhere:9092"),
            ),
        ];
        let config = client_config("127.0.0.1:9094", &settings);
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9094"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
    }
}
