//! Plain configuration structs of the projector library (the binary fills them from flags and
//! `XCLOG_*` variables; the library never reads the environment).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A credential-bearing string (a database URL with a password, a SASL secret). `Debug` and
/// `Display` print it with the password replaced by `***`, so it can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", redact_url(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Query parameters whose value is a credential (compared in lower case, as parts of the
/// name): `password`, PostgreSQL's `sslpassword`, MongoDB's `tlsCertificateKeyFilePassword`
/// and `authMechanismProperties` (which can carry an AWS session token), and the like.
const CREDENTIAL_PARAMETERS: &[&str] = &[
    "password",
    "pass",
    "pwd",
    "secret",
    "token",
    "credential",
    "authmechanismproperties",
];

/// The form of a credential-bearing string that is safe to log: for a URL with a host
/// (`scheme://user:password@host/...`), the URL with its password and every credential query
/// parameter (case-insensitive) replaced by `***`; anything else, a URL the parser refuses
/// included, is replaced entirely (`scheme://***`, or `***` when it has no scheme), since it
/// may be a bare secret or a password the parser split in the wrong place.
pub fn redact_url(value: &str) -> String {
    let scheme = value
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    let Some(scheme) = scheme else {
        return "***".to_owned();
    };
    let whole = || format!("{scheme}://***");
    let Ok(mut url) = url::Url::parse(value) else {
        return whole();
    };
    if !url.has_host() {
        return whole();
    }
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return whole();
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let secret = CREDENTIAL_PARAMETERS
                    .iter()
                    .any(|word| lower.contains(word));
                let value = if secret {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// The defaults of [`ProjectorConfig::new`], which `xclog project` shows and uses: one place
/// for each, so the CLI and the library cannot drift apart. Also the two consumer settings that
/// are fixed rather than configured (`FETCH_QUEUE_BACKOFF_MS`, `HEARTBEAT_INTERVAL_MS`,
/// `GROUP_COMMIT_INTERVAL_MS`),
/// so their reasons sit beside the defaults they bound.
pub mod defaults {
    /// Records per batch (a backlog drains in batches of this size). Each lane holds the batch
    /// being filled, one queued and, while its queue is full, one held back; each of the
    /// [`WRITERS`] one in flight. 2 writers x 2,500 drained faster than 1 x 5,000
    /// (docs/DESIGN.md, "Two writers sharing three lanes").
    pub const BATCH_MAX_RECORDS: usize = 2500;
    /// Record bytes (key, value and headers as read) per batch, in MiB: a batch is cut at this
    /// size even below [`BATCH_MAX_RECORDS`], so the projector's memory is bounded by bytes
    /// whatever the record sizes (records of up to 1 MiB would otherwise hold 2,500 MiB per
    /// batch). 2,500 records of the bench's typical 500 bytes are 1.2 MiB, well below it.
    pub const BATCH_MAX_MIB: usize = 16;
    /// How long the first record of a partial batch waits while the writer is busy, in ms.
    pub const BATCH_MAX_LATENCY_MS: u64 = 200;
    /// How long the first record of a partial batch waits when the writer is idle, in ms.
    pub const BATCH_LINGER_MS: u64 = 5;
    /// Batches cut and queued for the writers, shared out over the lanes (at least one each, so
    /// 3 lanes queue 3). One per lane is enough once the consumer keeps ahead of the writers
    /// (see [`FETCH_QUEUE_BACKOFF_MS`]); a second one only held memory.
    pub const MAX_QUEUED_BATCHES: usize = 1;
    /// Writers, sharing the batches of the assigned partitions' lanes.
    pub const WRITERS: usize = 2;
    /// The most writers a projector accepts.
    pub const WRITERS_MAX: usize = 32;
    /// librdkafka prefetch of the consumer, in KiB.
    pub const FETCH_BUFFER_KBYTES: usize = 4096;
    /// How long librdkafka waits before it fetches again once its prefetch was full
    /// (`fetch.queue.backoff.ms`), in ms. librdkafka's default, 1000 ms, starved the writer:
    /// a 4 MiB prefetch is about one batch, which the consumer decodes in a tenth of that
    /// second, and then it waited for the rest (docs/DESIGN.md, "The consumer's fetch backoff:
    /// 10 ms"). A check of a full prefetch costs no request, so a short wait is free.
    pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;
    /// First backoff after a transient store error, in ms.
    pub const RETRY_BACKOFF_INITIAL_MS: u64 = 100;
    /// Longest backoff between retries of one batch, in ms.
    pub const RETRY_BACKOFF_MAX_MS: u64 = 5000;
    /// Wait for the in-flight batch on revoke or shutdown, in ms.
    pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
    /// Consumer group session timeout (`session.timeout.ms`), in ms: a projector that sends no
    /// heartbeat for this long loses its partitions to the other members. Shorter than the
    /// Java clients' 45 s, so a crashed projector's partitions move on sooner; raise it where
    /// the broker can stall for seconds (docs/OPERATIONS.md).
    pub const SESSION_TIMEOUT_MS: u64 = 10_000;
    /// Heartbeat interval (`heartbeat.interval.ms`), in ms; the session timeout must be at
    /// least three of these.
    pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
    /// How often the group offsets (only for lag tools; the store holds the truth) are
    /// committed to Kafka (`auto.commit.interval.ms`), in ms. Committing after every batch
    /// sent hundreds of `OffsetCommit` requests a second at a steady moderate rate (small
    /// batches), and the broker answers a member's requests in order: the likely reason why
    /// heartbeats went unanswered past the session timeout in the 1,000,000-event bench
    /// (docs/DESIGN.md, "Group offsets committed once a second").
    pub const GROUP_COMMIT_INTERVAL_MS: u64 = 1_000;
    /// `/readyz` lag threshold, in records.
    pub const READY_MAX_LAG: i64 = 1000;
}

/// Settings of the consume/batch/commit pipeline (independent of the target store).
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Kafka bootstrap servers (`host:port,host:port`).
    pub brokers: String,
    /// The log topic to project.
    pub topic: String,
    /// Kafka consumer group; projectors with the same group share the partitions.
    pub group_id: String,
    /// Dead-letter topic (default `<topic>.dlq`).
    pub dead_letter_topic: String,
    /// A batch is cut when it holds this many records...
    pub batch_max_records: usize,
    /// ...or when its records' bytes (key, value, headers) reach this many (a single larger
    /// record still makes a batch of its own)...
    pub batch_max_bytes: usize,
    /// ...or, while its writer is busy and has no batch queued, when its first record has
    /// waited this long...
    pub batch_max_latency: Duration,
    /// ...or, when its writer is idle, when its first record has waited this long. While a
    /// batch waits in the writer's queue a partial batch is not cut: it grows until the queue
    /// empties or it is full, so batches grow when the writer falls behind.
    pub batch_linger: Duration,
    /// Batches cut but not yet written (the bound of the consumer -> writer queues, shared out
    /// over the lanes, at least one each). When a lane's queue is full, the consumer pauses
    /// that lane's partitions instead of buffering.
    pub max_queued_batches: usize,
    /// Writers committing concurrently, each on its own connection. The assigned partitions are
    /// dealt out over [`ProjectorConfig::lanes`] lanes, and a free writer takes the next batch
    /// of any lane no other writer is writing (a lane's batches stay in order); batches of
    /// different lanes are independent transactions.
    pub writers: usize,
    /// librdkafka's prefetch buffer (`queued.max.messages.kbytes`; with a subscribed consumer it
    /// bounds the one consumer queue, whatever the number of partitions), the other bound on
    /// memory.
    pub fetch_buffer_kbytes: usize,
    /// First backoff after a transient store error; doubles up to `retry_backoff_max`.
    pub retry_backoff_initial: Duration,
    /// Longest backoff between retries of one batch.
    pub retry_backoff_max: Duration,
    /// On shutdown or revoke, how long to wait for the in-flight batch before abandoning it.
    pub drain_timeout: Duration,
    /// Consumer group session timeout: no heartbeat for this long and the group coordinator
    /// gives this projector's partitions to the other members.
    pub session_timeout: Duration,
    /// `/readyz` answers 200 once assigned and every assigned partition lags by at most this.
    pub ready_max_lag: i64,
    /// Address of the `/healthz`, `/readyz`, `/metrics` server (`None`: no server). Loopback
    /// unless the operator asks otherwise (a container's probes need `0.0.0.0`); a
    /// non-loopback address is logged as such at start.
    pub http_addr: Option<SocketAddr>,
    /// Decoding limits for records read from the topic.
    pub limits: xclog_schema::Limits,
    /// Extra librdkafka settings (for example security), applied to consumer and producer.
    /// Values are secrets: never logged.
    pub kafka_settings: Vec<(String, Secret)>,
    /// What to do when the next record of a partition is not the one after the stored offset
    /// because records were deleted unread (retention ran past the projector): `false` (the
    /// default) stops that partition with an error naming the missing range; `true` skips the
    /// gap, logs it and counts it in `xclog_projector_offsets_skipped`.
    pub accept_offset_gaps: bool,
}

impl ProjectorConfig {
    /// A configuration with the defaults used by `xclog project`.
    pub fn new(
        brokers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
    ) -> Self {
        let topic = topic.into();
        Self {
            brokers: brokers.into(),
            dead_letter_topic: format!("{topic}.dlq"),
            topic,
            group_id: group_id.into(),
            batch_max_records: defaults::BATCH_MAX_RECORDS,
            batch_max_bytes: defaults::BATCH_MAX_MIB << 20,
            batch_max_latency: Duration::from_millis(defaults::BATCH_MAX_LATENCY_MS),
            batch_linger: Duration::from_millis(defaults::BATCH_LINGER_MS),
            max_queued_batches: defaults::MAX_QUEUED_BATCHES,
            writers: defaults::WRITERS,
            fetch_buffer_kbytes: defaults::FETCH_BUFFER_KBYTES,
            retry_backoff_initial: Duration::from_millis(defaults::RETRY_BACKOFF_INITIAL_MS),
            retry_backoff_max: Duration::from_millis(defaults::RETRY_BACKOFF_MAX_MS),
            drain_timeout: Duration::from_millis(defaults::DRAIN_TIMEOUT_MS),
            session_timeout: Duration::from_millis(defaults::SESSION_TIMEOUT_MS),
            ready_max_lag: defaults::READY_MAX_LAG,
            http_addr: None,
            limits: xclog_schema::Limits::default(),
            kafka_settings: Vec::new(),
            accept_offset_gaps: false,
        }
    }

    /// The lanes the assigned partitions are dealt out over: one more than the writers when
    /// there are several, so that a partition count that does not divide by the writers (3
    /// partitions, 2 writers) still keeps every writer busy: with one lane per writer, one
    /// writer had twice the other's records and the other waited (docs/DESIGN.md, "Two writers
    /// sharing three lanes"). Each lane holds its own batches, so memory grows with the lanes.
    pub fn lanes(&self) -> usize {
        if self.writers > 1 {
            self.writers + 1
        } else {
            1
        }
    }

    /// Cross-field checks, before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if self.brokers.trim().is_empty() {
            return bad("brokers", "is empty; give host:port[,host:port]".into());
        }
        if self.topic.trim().is_empty() {
            return bad("topic", "is empty".into());
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "is empty".into());
        }
        if self.dead_letter_topic == self.topic {
            return bad(
                "dead_letter_topic",
                format!(
                    "equals the source topic {:?}; dead letters would be consumed again",
                    self.topic
                ),
            );
        }
        if self.batch_max_records == 0 {
            return bad("batch_max_records", "must be at least 1".into());
        }
        if self.batch_max_bytes == 0 {
            return bad("batch_max_bytes", "must be at least 1".into());
        }
        if self.batch_max_latency.is_zero() {
            return bad("batch_max_latency", "must be greater than zero".into());
        }
        if self.batch_linger > self.batch_max_latency {
            return bad(
                "batch_linger",
                format!(
                    "is {} ms, more than batch_max_latency ({} ms); the wait for an idle writer \
                     cannot be longer than the wait for a busy one",
                    self.batch_linger.as_millis(),
                    self.batch_max_latency.as_millis()
                ),
            );
        }
        if self.max_queued_batches == 0 {
            return bad("max_queued_batches", "must be at least 1".into());
        }
        if self.writers == 0 || self.writers > defaults::WRITERS_MAX {
            return bad(
                "writers",
                format!(
                    "must be between 1 and {}, is {}",
                    defaults::WRITERS_MAX,
                    self.writers
                ),
            );
        }
        if self.fetch_buffer_kbytes == 0 {
            return bad("fetch_buffer_kbytes", "must be at least 1".into());
        }
        if self.retry_backoff_initial.is_zero()
            || self.retry_backoff_initial > self.retry_backoff_max
        {
            return bad(
                "retry_backoff_initial",
                format!(
                    "must be > 0 ms and at most retry_backoff_max ({} ms), is {} ms",
                    self.retry_backoff_max.as_millis(),
                    self.retry_backoff_initial.as_millis()
                ),
            );
        }
        let session_ms = self.session_timeout.as_millis();
        let session_min = u128::from(3 * defaults::HEARTBEAT_INTERVAL_MS);
        if !(session_min..=3_600_000).contains(&session_ms) {
            return bad(
                "session_timeout",
                format!(
                    "must be between {session_min} ms (three heartbeats) and 3600000 ms, is \
                     {session_ms} ms"
                ),
            );
        }
        if self.ready_max_lag < 0 {
            return bad("ready_max_lag", "must not be negative".into());
        }
        Ok(())
    }
}

/// A configuration value that cannot work, with the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} {reason}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it and what would be right.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_debug_or_display() {
        let s = Secret::new("postgres://xclog:hunter2@127.0.0.1:5432/xclog");
        assert_eq!(format!("{s}"), "postgres://xclog:***@127.0.0.1:5432/xclog");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(Secret::new("hunter2").to_string(), "***");
    }

    #[test]
    fn awkward_urls_are_redacted_down_to_what_is_safe() {
        // (URL, what is shown); the password is always some form of "hunter2".
        let table = [
            (
                "postgres://xclog:hunter2@127.0.0.1:5432/xclog",
                "postgres://xclog:***@127.0.0.1:5432/xclog",
            ),
            // A `/` in the password ends the authority early: the parser refuses the rest.
            (
                "postgres://xclog:hun/ter2@127.0.0.1/xclog",
                "postgres://***",
            ),
            (
                "postgres://xclog:hun@ter2@127.0.0.1/xclog",
                "postgres://xclog:***@127.0.0.1/xclog",
            ),
            (
                "postgres://xclog:hun:ter2@127.0.0.1/xclog",
                "postgres://xclog:***@127.0.0.1/xclog",
            ),
            (
                "postgres://xclog:hun%2Fter2@127.0.0.1/xclog",
                "postgres://xclog:***@127.0.0.1/xclog",
            ),
            (
                "postgres://127.0.0.1/xclog?user=xclog&PASSWORD=hunter2&sslmode=verify-full",
                "postgres://127.0.0.1/xclog?user=xclog&PASSWORD=***&sslmode=verify-full",
            ),
            (
                "postgres://xclog@127.0.0.1/xclog?sslpassword=hunter2&sslrootcert=%2Fca.pem",
                "postgres://xclog@127.0.0.1/xclog?sslpassword=***&sslrootcert=%2Fca.pem",
            ),
            (
                "mongodb://app:hunter2@127.0.0.1:27017/?tls=true&tlsCertificateKeyFilePassword=hunter2",
                "mongodb://app:***@127.0.0.1:27017/?tls=true&tlsCertificateKeyFilePassword=***",
            ),
            (
                "mongodb://127.0.0.1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:hunter2",
                "mongodb://127.0.0.1/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
            ),
            // No password: unchanged.
            (
                "postgres://xclog@127.0.0.1:5432/xclog",
                "postgres://xclog@127.0.0.1:5432/xclog",
            ),
            ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
            // Several hosts: the parser refuses them, so nothing but the scheme is shown.
            (
                "mongodb://app:hunter2@h1:27017,h2:27017/?replicaSet=rs",
                "mongodb://***",
            ),
            // Not a URL with a host: a bare secret, or a scheme followed by anything.
            ("hunter2", "***"),
            ("sasl:hunter2", "***"),
            ("postgres://:hunter2@/xclog", "postgres://***"),
        ];
        for (url, shown) in table {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains("hunter2"), "{url} -> {redacted}");
            assert!(!redacted.contains("ter2"), "{url} -> {redacted}");
        }
    }

    #[test]
    fn validate_names_the_field_that_is_wrong() {
        let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
        assert!(c.validate().is_ok());
        c.batch_max_records = 0;
        assert_eq!(c.validate().unwrap_err().field, "batch_max_records");
        let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
        c.dead_letter_topic = "log".into();
        assert_eq!(c.validate().unwrap_err().field, "dead_letter_topic");
        let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
        c.http_addr = Some("0.0.0.0:9000".parse().unwrap());
        assert!(
            c.validate().is_ok(),
            "an explicit non-loopback ops address is allowed"
        );
        for writers in [0, defaults::WRITERS_MAX + 1] {
            let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
            c.writers = writers;
            assert_eq!(c.validate().unwrap_err().field, "writers");
        }
        for ms in [2_999, 3_600_001] {
            let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
            c.session_timeout = Duration::from_millis(ms);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, "session_timeout");
            assert!(e.reason.contains(&format!("is {ms} ms")), "{}", e.reason);
        }
        let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
        c.session_timeout = Duration::from_secs(45);
        assert!(c.validate().is_ok());
        let mut c = ProjectorConfig::new("127.0.0.1:9092", "log", "g");
        c.batch_linger = c.batch_max_latency;
        assert!(c.validate().is_ok());
        c.batch_linger += Duration::from_millis(1);
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "batch_linger");
        assert!(
            e.reason.contains("batch_max_latency (200 ms)"),
            "{}",
            e.reason
        );
    }
}
