//! xclog producer: the library FSM runtimes embed to publish every state transition
//! (a [`PersistedEvent`](xclog_schema::PersistedEvent)) and periodic instance snapshots to
//! the xclog topic, keyed by instance id so each instance keeps its order.
//!
//! What flows where:
//! - [`ProducerConfig`] (plain data, safe defaults: idempotent, `acks=all`, at most 5
//!   requests in flight, no linger so that an awaited append costs one round trip) ->
//!   [`Producer::connect`].
//! - [`Producer::append`] / [`Producer::append_all`] / [`Producer::append_nowait`] /
//!   [`Producer::save_snapshot`] / [`Producer::delete_snapshot`] encode with `xclog_schema` (protobuf by default) and hand
//!   the record to librdkafka; the returned [`Position`] means the brokers acknowledged it.
//! - [`SequenceAssigner`] numbers each instance's events; [`SnapshotPolicy`] decides when
//!   an instance gets a snapshot (every N transitions, always on final/error).
//! - [`ensure_topic`] creates the topic with the settings a log needs (infinite
//!   retention, no compaction) and refuses an existing topic that would lose data.
//! - Every client connects through [`connection`] (the `xclog-kafka` crate, shared with the
//!   projector), which tells brokers that refuse the client's credentials or certificate from
//!   brokers that do not answer.
//!
//! A realistic, reproducible FSM workload to publish (for load tests and benchmarks) is the
//! `xclog-workload` crate.
//!
//! Errors are [`Error`]; [`Error::next_move`] says whether to retry, fix the config, give
//! up on the record, or recreate the producer.

mod config;
mod error;
mod position;
mod producer;
mod sequence;
mod snapshot;
mod topic;

pub use config::{
    Compression, DEFAULT_LINGER, MAX_IN_FLIGHT_LIMIT, ProducerConfig, SaslConfig, SaslMechanism,
    Secret, Security, TlsConfig,
};
pub use error::{Error, NextMove};
pub use position::Position;
pub use producer::{PendingAck, Producer};
pub use sequence::SequenceAssigner;
pub use snapshot::{DEFAULT_SNAPSHOT_INTERVAL, SnapshotPolicy};
pub use topic::{EnsuredTopic, Retention, TopicSpec, ensure_topic};
/// The Kafka client plumbing every client of the producer connects through.
pub use xclog_kafka as connection;
pub use xclog_schema::Encoding;
