//! Why a Kafka client could not be created or could not reach the cluster.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// Why a Kafka client could not be created or could not reach the cluster. Each variant says
/// what to do next. Exhaustive, so that every error type converting from it (the producer's
/// does) handles each case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// librdkafka refused a setting. Fix `field` and create the client again.
    #[error("invalid Kafka client config: `{field}` {problem}")]
    Config {
        /// The librdkafka key at fault (`(client)` when librdkafka does not name one).
        field: String,
        /// What is wrong with it (never a secret's value).
        problem: String,
    },

    /// The brokers could not be reached in time. Check the broker list and the network,
    /// then retry.
    #[error("could not reach Kafka brokers {brokers} within {waited:?}: {source}")]
    Unreachable {
        /// The configured bootstrap brokers.
        brokers: String,
        /// How long the client waited.
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
}
