//! Every Kafka client of the projector library (the consumer, the dead-letter producer and its
//! admin client, the watermark probe, `verify`'s reader) starts from [`client_config`], so the
//! brokers and the security settings (TLS, SASL, other librdkafka options) reach all of them
//! alike; the caller then sets the keys it owns (group, offsets, idempotence) on top.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::metadata::Metadata;
use rdkafka::producer::ThreadedProducer;
use xclog_producer::connection::WatchedContext;

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
/// untrusted certificate fails at once with [`xclog_producer::Error::Refused`], saying what to
/// check; brokers that do not answer fail with [`xclog_producer::Error::Unreachable`] after
/// `timeout`.
pub fn connect(
    brokers: &str,
    settings: &[(String, Secret)],
    topic: Option<&str>,
    timeout: Duration,
) -> Result<(ThreadedProducer<WatchedContext>, Metadata), xclog_producer::Error> {
    xclog_producer::connection::connect(&client_config(brokers, settings), brokers, topic, timeout)
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
