//! Connecting to the brokers, telling a refused connection from an unreachable one.
//!
//! librdkafka retries a failed SASL authentication or TLS handshake for ever and reports it
//! only through its error callback, so a wrong password or an untrusted broker certificate
//! looks like brokers that never answer. [`WatchedContext`] keeps the first such refusal, and
//! [`fetch_metadata`] returns it as [`ConnectError::Refused`] as soon as it is seen instead of
//! waiting out its timeout. Every Kafka client of the producer, the projector and the `xclog`
//! binary uses this context, so the refusal reads the same everywhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};

use crate::error::ConnectError;

/// Routes librdkafka's log lines and errors to `tracing`, and keeps the first authentication
/// or TLS failure it reports (read it through [`WatchedContext::watch`]).
#[derive(Debug, Clone, Default)]
pub struct WatchedContext {
    refusal: RefusalWatch,
}

impl WatchedContext {
    /// A handle on the refusal this context keeps, still readable once the context has moved
    /// into a client.
    pub fn watch(&self) -> RefusalWatch {
        self.refusal.clone()
    }
}

/// The first authentication or TLS failure a [`WatchedContext`] saw.
#[derive(Debug, Clone, Default)]
pub struct RefusalWatch(Arc<Mutex<Option<String>>>);

impl RefusalWatch {
    /// What failed and what to check, if the brokers refused the client.
    pub fn refusal(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn keep(&self, reason: String) {
        let mut refusal = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if refusal.is_none() {
            *refusal = Some(reason);
        }
    }
}

const AUTHENTICATION_HINT: &str =
    "authentication failed: check the SASL mechanism, username and password";
const TLS_HINT: &str = "the TLS handshake failed: the broker's certificate is not signed by a \
     trusted CA (the CA file), does not name the broker's address, or the broker refused the \
     client certificate";

/// What a security failure means, for the error message; `None` for other errors.
fn refusal_hint(error: &KafkaError, reason: &str) -> Option<&'static str> {
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication => Some(AUTHENTICATION_HINT),
        RDKafkaErrorCode::SSL => Some(TLS_HINT),
        _ if reason.contains("SSL handshake failed") => Some(TLS_HINT),
        _ => None,
    }
}

impl ClientContext for WatchedContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(hint) = refusal_hint(&error, reason) {
            self.refusal.keep(format!("{hint} ({reason})"));
        }
        // Transient broker-down errors are retried by the client; report them as warnings.
        tracing::warn!(error = %error, "librdkafka: {reason}");
    }
}

impl ConsumerContext for WatchedContext {}

impl ProducerContext for WatchedContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// How long one metadata request may take before the refusal is looked at again.
const SLICE: Duration = Duration::from_millis(500);

/// Fetches the cluster's metadata (of `topic` only, when given) within `timeout`, blocking.
/// `watch` is the [`WatchedContext::watch`] of the client's context.
///
/// # Errors
/// [`ConnectError::Refused`] as soon as the brokers refused the client's credentials or TLS;
/// [`ConnectError::Unreachable`] when no broker answered within `timeout`.
pub fn fetch_metadata<C: ClientContext>(
    client: &Client<C>,
    watch: &RefusalWatch,
    brokers: &str,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata, ConnectError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.fetch_metadata(topic, left.min(SLICE)) {
            Ok(metadata) => return Ok(metadata),
            Err(source) => {
                if let Some(reason) = watch.refusal() {
                    return Err(ConnectError::Refused {
                        brokers: brokers.to_owned(),
                        reason,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(ConnectError::Unreachable {
                        brokers: brokers.to_owned(),
                        waited: timeout,
                        source,
                    });
                }
            }
        }
    }
}

/// Connects a client that sends nothing (its own thread serves librdkafka's callbacks, so a
/// refusal is seen even though nobody polls it) and reads the metadata (of `topic` only, when
/// given), blocking at most `timeout`. For commands that only read metadata and watermarks,
/// and as the first step of those that then build their own clients: consumers report a
/// refusal only to whoever polls them, admin clients not at all.
///
/// # Errors
/// As [`fetch_metadata`]; [`ConnectError::Config`] when librdkafka refuses `config`.
pub fn connect(
    config: &ClientConfig,
    brokers: &str,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<(ThreadedProducer<WatchedContext>, Metadata), ConnectError> {
    let context = WatchedContext::default();
    let watch = context.watch();
    let client: ThreadedProducer<WatchedContext> = config
        .create_with_context(context)
        .map_err(|error| create_error(&error))?;
    let metadata = fetch_metadata(client.client(), &watch, brokers, topic, timeout)?;
    Ok((client, metadata))
}

/// The error for a client librdkafka would not create: names the setting it refused, never
/// the value of a password or secret.
pub fn create_error(error: &KafkaError) -> ConnectError {
    match error {
        KafkaError::ClientConfig(_, description, key, value) => {
            let lower = key.to_ascii_lowercase();
            let shown = if ["password", "secret", "token", "credential"]
                .iter()
                .any(|word| lower.contains(word))
            {
                "<redacted>"
            } else {
                value.as_str()
            };
            ConnectError::Config {
                field: key.clone(),
                problem: format!("= {shown:?} was refused: {description}"),
            }
        }
        other => ConnectError::Config {
            field: "(client)".to_owned(),
            problem: format!("librdkafka refused the config: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_and_tls_failures_are_kept_with_what_to_check() {
        let context = WatchedContext::default();
        let watch = context.watch();
        context.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9094/bootstrap: Connect to ipv4#127.0.0.1:9094 failed: Connection refused",
        );
        assert_eq!(watch.refusal(), None);
        context.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to \
             invalid credentials with SASL mechanism SCRAM-SHA-512",
        );
        context.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed",
        );
        let refusal = watch.refusal().unwrap();
        assert!(refusal.starts_with("authentication failed"), "{refusal}");
        assert!(refusal.contains("invalid credentials"), "{refusal}");
        let tls = WatchedContext::default();
        tls.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed: certificate verify failed",
        );
        assert!(
            tls.watch()
                .refusal()
                .unwrap()
                .contains("not signed by a trusted CA")
        );
    }

    #[test]
    fn a_refused_secret_setting_is_named_without_its_value() {
        let error = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "bad".into(),
            "sasl.oauthbearer.client.secret".into(),
            "hunter2".into(),
        );
        let text = create_error(&error).to_string();
        assert!(text.contains("sasl.oauthbearer.client.secret"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
