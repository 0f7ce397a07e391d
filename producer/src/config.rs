//! The producer's plain configuration struct and its translation to librdkafka settings.
//!
//! Invariant: whatever the caller sets, the client that [`ProducerConfig::client_config`]
//! describes is idempotent, waits for all in-sync replicas (`acks=all`) and keeps at most
//! five requests in flight per connection, so a retried send never duplicates or reorders
//! the records of one instance. Settings that would weaken this are refused by
//! [`ProducerConfig::validate`], including through the passthrough map.
//! Secrets (TLS key password, SASL password) never appear in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use xclog_schema::Encoding;

use crate::error::Error;

/// librdkafka keys that the producer sets itself to keep its delivery guarantee; the
/// passthrough map may not override them.
const GUARDED_KEYS: &[(&str, &str)] = &[
    ("enable.idempotence", "always true"),
    ("acks", "always all"),
    ("request.required.acks", "always all"),
    (
        "max.in.flight.requests.per.connection",
        "the `max_in_flight` field",
    ),
    ("max.in.flight", "the `max_in_flight` field"),
    ("bootstrap.servers", "the `brokers` field"),
    ("metadata.broker.list", "the `brokers` field"),
    ("client.id", "the `client_id` field"),
    ("linger.ms", "the `linger` field"),
    ("queue.buffering.max.ms", "the `linger` field"),
    ("batch.size", "the `batch_bytes` field"),
    ("compression.type", "the `compression` field"),
    ("compression.codec", "the `compression` field"),
    ("delivery.timeout.ms", "the `delivery_timeout` field"),
    ("message.timeout.ms", "the `delivery_timeout` field"),
    (
        "queue.buffering.max.messages",
        "the `queue_max_messages` field",
    ),
    ("queue.buffering.max.kbytes", "the `queue_max_kbytes` field"),
    ("security.protocol", "the `security` field"),
    ("sasl.mechanism", "the `security.sasl` field"),
    ("sasl.mechanisms", "the `security.sasl` field"),
    ("sasl.username", "the `security.sasl` field"),
    ("sasl.password", "the `security.sasl` field"),
    ("ssl.ca.location", "the `security.tls` field"),
    ("ssl.certificate.location", "the `security.tls` field"),
    ("ssl.key.location", "the `security.tls` field"),
    ("ssl.key.password", "the `security.tls` field"),
    (
        "enable.gapless.guarantee",
        "not needed: idempotence already keeps order",
    ),
    ("transactional.id", "not supported by this producer"),
];

/// The largest `max_in_flight` the idempotent producer accepts while keeping order.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 5;

/// The default `linger`: none. Runtimes await each append before their next transition,
/// and any linger would be added to every one of them (`docs/BENCHMARKS.md`, "Producer").
pub const DEFAULT_LINGER: Duration = Duration::ZERO;

/// Everything the producer needs to connect and publish. Plain data: build it from your
/// own configuration source; the library never reads environment variables.
///
/// Start from [`ProducerConfig::new`] (brokers and topic) and change the fields you need;
/// the defaults are the safe ones.
#[derive(Clone)]
pub struct ProducerConfig {
    /// Comma-separated `host:port` list of bootstrap brokers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// The log topic every event and snapshot goes to.
    pub topic: String,
    /// Client id sent to the brokers (shows up in broker logs and quotas).
    pub client_id: String,
    /// How long the client waits to fill a batch before sending it (`linger.ms`).
    ///
    /// Default 0: a record is sent as soon as the client's sender thread sees it, so an
    /// awaited [`Producer::append`](crate::Producer::append) costs one broker round trip
    /// and nothing more. Batching still happens: what queues while requests are in flight
    /// (up to `max_in_flight`) leaves together in the next request. A publisher that never
    /// awaits one record at a time (only `append_nowait` or `append_all`) gets more records
    /// per request with a few milliseconds; `docs/BENCHMARKS.md`, "Producer", has both.
    pub linger: Duration,
    /// Maximum size of one batch sent to a partition, in bytes (`batch.size`).
    pub batch_bytes: usize,
    /// Compression applied to each batch.
    pub compression: Compression,
    /// Upper bound on the time between handing a record to the client and its
    /// acknowledgement, retries included (`delivery.timeout.ms`). After it the record
    /// fails with [`Error::Delivery`].
    pub delivery_timeout: Duration,
    /// Maximum number of records waiting in the local queue (`queue.buffering.max.messages`).
    pub queue_max_messages: usize,
    /// Maximum size of the local queue in KiB (`queue.buffering.max.kbytes`).
    pub queue_max_kbytes: usize,
    /// How long a publish call waits for room when the local queue is full before it
    /// returns [`Error::QueueFull`]. The call neither fails at once nor grows memory.
    pub queue_full_timeout: Duration,
    /// Maximum unacknowledged requests per broker connection; 1 to 5 (the idempotent
    /// producer keeps order up to 5).
    pub max_in_flight: u32,
    /// Wire encoding of record values. Protobuf by default; JSON for readability.
    pub encoding: Encoding,
    /// TLS and SASL settings.
    pub security: Security,
    /// Any other librdkafka setting, passed as is (for example `socket.keepalive.enable`).
    /// Keys that the fields above own, or that would weaken delivery guarantees, are refused.
    pub passthrough: BTreeMap<String, String>,
}

impl ProducerConfig {
    /// A configuration with safe defaults for the given brokers and topic.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            client_id: "xclog-producer".to_owned(),
            linger: DEFAULT_LINGER,
            batch_bytes: 1_000_000,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            queue_max_messages: 100_000,
            queue_max_kbytes: 1_048_576,
            queue_full_timeout: Duration::from_secs(30),
            max_in_flight: MAX_IN_FLIGHT_LIMIT,
            encoding: Encoding::Protobuf,
            security: Security::default(),
            passthrough: BTreeMap::new(),
        }
    }

    /// Checks every field and cross-field rule, before anything connects.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, problem: String| Err(Error::config(field, problem));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "is empty; give at least one host:port".into());
        }
        for broker in self.brokers.split(',') {
            let broker = broker.trim();
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return bad(
                    "brokers",
                    format!("entry {broker:?} is not host:port (for example 127.0.0.1:9092)"),
                );
            }
        }
        if let Err(problem) = check_topic_name(&self.topic) {
            return bad("topic", problem);
        }
        if self.client_id.trim().is_empty() {
            return bad("client_id", "is empty".into());
        }
        if self.linger > Duration::from_secs(900) {
            return bad(
                "linger",
                format!("{:?} is above the 900 s maximum", self.linger),
            );
        }
        if !(1..=2_147_483_647).contains(&self.batch_bytes) {
            return bad(
                "batch_bytes",
                format!("{} is not in 1..=2147483647", self.batch_bytes),
            );
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return bad(
                "delivery_timeout",
                format!(
                    "{:?} is below 1 s: records would fail before a retry",
                    self.delivery_timeout
                ),
            );
        }
        if self.delivery_timeout.as_millis() > i32::MAX as u128 {
            return bad(
                "delivery_timeout",
                format!("{:?} is too long", self.delivery_timeout),
            );
        }
        if self.delivery_timeout <= self.linger {
            return bad(
                "delivery_timeout",
                format!(
                    "{:?} must be longer than linger ({:?})",
                    self.delivery_timeout, self.linger
                ),
            );
        }
        if !(1..=2_147_483_647).contains(&self.queue_max_messages) {
            return bad(
                "queue_max_messages",
                format!("{} is not in 1..=2147483647", self.queue_max_messages),
            );
        }
        if !(1..=2_147_483_647).contains(&self.queue_max_kbytes) {
            return bad(
                "queue_max_kbytes",
                format!("{} is not in 1..=2147483647", self.queue_max_kbytes),
            );
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return bad(
                "max_in_flight",
                format!(
                    "{} is not in 1..={MAX_IN_FLIGHT_LIMIT}; more would let a retry reorder records",
                    self.max_in_flight
                ),
            );
        }
        self.security.validate()?;
        for key in self.passthrough.keys() {
            if let Some((_, owner)) = GUARDED_KEYS.iter().find(|(guarded, _)| guarded == key) {
                return bad(
                    "passthrough",
                    format!("key {key:?} is set by the producer ({owner}); remove it from the map"),
                );
            }
            if key.trim().is_empty() {
                return bad("passthrough", "has an empty key".into());
            }
        }
        Ok(())
    }

    /// The librdkafka settings this configuration stands for (validated first).
    ///
    /// # Errors
    /// [`Error::Config`] when [`ProducerConfig::validate`] fails.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let mut config = self.connection_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight.to_string(),
            )
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("batch.size", self.batch_bytes.to_string())
            .set("compression.type", self.compression.as_librdkafka())
            .set(
                "delivery.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                self.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                self.queue_max_kbytes.to_string(),
            );
        Ok(config)
    }

    /// Only the connection settings (brokers, client id, security, passthrough), for the
    /// admin client of [`crate::ensure_topic`]. Validated first.
    pub(crate) fn connection_config(&self) -> Result<ClientConfig, Error> {
        self.validate()?;
        let mut config = ClientConfig::new();
        for (key, value) in &self.passthrough {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        self.security.apply(&mut config);
        Ok(config)
    }
}

impl fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let passthrough: BTreeMap<&str, &str> = self
            .passthrough
            .iter()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let secret = ["password", "secret", "token", "key.pem", "credential"]
                    .iter()
                    .any(|word| lower.contains(word));
                (key.as_str(), if secret { REDACTED } else { value.as_str() })
            })
            .collect();
        f.debug_struct("ProducerConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("linger", &self.linger)
            .field("batch_bytes", &self.batch_bytes)
            .field("compression", &self.compression)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("queue_max_messages", &self.queue_max_messages)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("queue_full_timeout", &self.queue_full_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("encoding", &self.encoding)
            .field("security", &self.security)
            .field("passthrough", &passthrough)
            .finish()
    }
}

/// Checks a Kafka topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "is {} characters long; Kafka allows 249",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid topic name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; topic names use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

const REDACTED: &str = "<redacted>";

/// Batch compression codec. zstd is not compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default: event payloads are small and often already dense).
    #[default]
    None,
    /// gzip: smallest batches, most CPU.
    Gzip,
    /// Snappy: fast, moderate ratio.
    Snappy,
    /// LZ4: fast, good ratio; the usual choice when the network is the bottleneck.
    Lz4,
}

impl Compression {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            other => Err(Error::config(
                "compression",
                format!("{other:?} is not one of none, gzip, snappy, lz4 (zstd is not built in)"),
            )),
        }
    }
}

/// How the client talks to the brokers: plaintext by default, TLS and/or SASL when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// TLS settings; `None` means plaintext.
    pub tls: Option<TlsConfig>,
    /// SASL authentication; `None` means no authentication.
    pub sasl: Option<SaslConfig>,
}

impl Security {
    /// Checks that the TLS files come in pairs and SASL has a username and a password.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(tls) = &self.tls {
            if tls.certificate_location.is_some() != tls.key_location.is_some() {
                return Err(Error::config(
                    "security.tls",
                    "certificate_location and key_location must be set together (client certificate)",
                ));
            }
            if tls.key_password.is_some() && tls.key_location.is_none() {
                return Err(Error::config(
                    "security.tls.key_password",
                    "is set but key_location is not",
                ));
            }
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(Error::config("security.sasl.username", "is empty"));
            }
            if sasl.password.expose().is_empty() {
                return Err(Error::config("security.sasl.password", "is empty"));
            }
        }
        Ok(())
    }

    /// Sets `security.protocol` and the TLS and SASL settings on a librdkafka configuration
    /// (for clients other than the producer's own, such as consumers, that connect the same
    /// way).
    pub fn apply(&self, config: &mut ClientConfig) {
        let protocol = match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_location {
                config.set("ssl.ca.location", ca);
            }
            if let Some(cert) = &tls.certificate_location {
                config.set("ssl.certificate.location", cert);
            }
            if let Some(key) = &tls.key_location {
                config.set("ssl.key.location", key);
            }
            if let Some(password) = &tls.key_password {
                config.set("ssl.key.password", password.expose());
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_librdkafka())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
    }
}

/// TLS settings (paths to PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA bundle used to verify the brokers; `None` uses the system store.
    pub ca_location: Option<String>,
    /// Client certificate, for mutual TLS.
    pub certificate_location: Option<String>,
    /// Client private key, for mutual TLS.
    pub key_location: Option<String>,
    /// Password of the client private key.
    pub key_password: Option<Secret>,
}

/// SASL authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// Which SASL mechanism to use.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password (redacted in `Debug`).
    pub password: Secret,
}

/// SASL mechanisms supported without extra native libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// PLAIN: user and password in clear; use with TLS.
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A secret string: its `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself; pass it only to the client, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ProducerConfig {
        ProducerConfig::new("127.0.0.1:9092", "xclog.events")
    }

    #[test]
    fn the_default_config_is_valid_and_safe() {
        let config = valid().client_config().expect("default config is valid");
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(
            config.get("max.in.flight.requests.per.connection"),
            Some("5")
        );
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn the_default_linger_is_zero_and_reaches_librdkafka_as_linger_ms_0() {
        let config = valid();
        assert_eq!(config.linger, Duration::ZERO);
        let client = config.client_config().expect("default config is valid");
        assert_eq!(client.get("linger.ms"), Some("0"));
        // librdkafka itself accepts it as given (its own default is 5 ms).
        let producer: rdkafka::producer::BaseProducer = client
            .create()
            .expect("librdkafka accepts the default settings");
        drop(producer);
    }

    #[test]
    fn a_linger_set_in_the_config_reaches_the_client() {
        let mut config = valid();
        config.linger = Duration::from_millis(5);
        let client = config.client_config().unwrap();
        assert_eq!(client.get("linger.ms"), Some("5"));
    }

    #[test]
    fn an_empty_broker_list_is_refused_naming_the_field() {
        let mut config = valid();
        config.brokers = " ".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("brokers"), "{error}");
    }

    #[test]
    fn a_broker_without_a_port_is_refused() {
        let mut config = valid();
        config.brokers = "127.0.0.1:9092,kafka-2".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("\"kafka-2\""), "{error}");
    }

    #[test]
    fn a_topic_name_with_a_slash_is_refused() {
        let mut config = valid();
        config.topic = "fsm/events".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("topic") && error.contains("'/'"), "{error}");
    }

    #[test]
    fn more_than_five_requests_in_flight_are_refused() {
        let mut config = valid();
        config.max_in_flight = 6;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("max_in_flight"), "{error}");
    }

    #[test]
    fn the_passthrough_map_cannot_turn_idempotence_off() {
        let mut config = valid();
        config
            .passthrough
            .insert("enable.idempotence".into(), "false".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("enable.idempotence"), "{error}");
        config.passthrough.clear();
        config.passthrough.insert("acks".into(), "1".into());
        assert!(config.validate().is_err());
    }

    #[test]
    fn passthrough_settings_reach_the_client_config() {
        let mut config = valid();
        config
            .passthrough
            .insert("socket.keepalive.enable".into(), "true".into());
        let client = config.client_config().unwrap();
        assert_eq!(client.get("socket.keepalive.enable"), Some("true"));
    }

    #[test]
    fn a_delivery_timeout_shorter_than_linger_is_refused() {
        let mut config = valid();
        config.linger = Duration::from_secs(10);
        config.delivery_timeout = Duration::from_secs(5);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("delivery_timeout"), "{error}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut config = valid();
        config.security.sasl = Some(SaslConfig {
            mechanism: SaslMechanism::ScramSha512,
            username: "app".into(),
            password: Secret::new("hunter2-sasl"),
        });
        config.security.tls = Some(TlsConfig {
            ca_location: Some("/etc/ca.pem".into()),
            certificate_location: Some("/etc/cert.pem".into()),
            key_location: Some("/etc/key.pem".into()),
            key_password: Some(Secret::new("hunter2-key")),
        });
        config.passthrough.insert(
            "sasl.oauthbearer.client.secret".into(),
            "hunter2-oauth".into(),
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let client = config.client_config().unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.password"), Some("hunter2-sasl"));
    }

    #[test]
    fn compression_names_parse_and_zstd_is_refused_clearly() {
        assert_eq!("LZ4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip);
        let error = "zstd".parse::<Compression>().unwrap_err().to_string();
        assert!(error.contains("zstd"), "{error}");
    }
}
