//! xclog projector: consumes the xclog topic and materializes it into a store. The `xclog`
//! binary (crate `xclog-cli`) runs it as a daemon (`xclog project`) and serves the read API's
//! commands.
//!
//! What flows where:
//!
//! ```text
//! Kafka topic --(consumer thread: poll, decode, check, batch)--> bounded queue
//!     --(writer task: dead letters first, then Sink::write = rows + offsets in one commit)-->
//!     PostgreSQL (sink::postgres) | MongoDB (sink::mongo)
//! ```
//!
//! * [`sink`]: the [`sink::Sink`] trait every target implements, and the PostgreSQL and
//!   MongoDB sinks.
//! * [`batch`]: pure batching logic; offsets chain from batch to batch so the sink can fence.
//! * `consumer`, `rebalance`, `lanes`, `writer`: the target-independent pipeline. The consumer
//!   thread polls, checks and batches; its rebalance callback seeks to stored offsets; the lanes
//!   hand batches to the writer tasks (pause instead of buffering), which retry, dead-letter and
//!   commit; everything drains on shutdown.
//! * [`read`]: the read API ([`read::EventStore`], [`read::SnapshotStore`]) over PostgreSQL
//!   and MongoDB; cross-component traces.
//! * [`rebuild`]: rebuilding a store from the topic beside the live one, then the swap.
//! * [`verify`]: `xclog verify`, the comparison of the topic and the stores.
//! * [`time`]: epoch milliseconds as ISO-8601 UTC and back, for people.
//! * [`kafka`]: the one place every Kafka client's settings (brokers, TLS, SASL) come from;
//!   the clients connect through `xclog_kafka`, the plumbing the producer library uses too.
//! * [`metrics`], `http`: `/healthz`, `/readyz`, `/metrics`.
//!
//! The design and its invariants are in `docs/DESIGN.md`; operating it in `docs/OPERATIONS.md`.

pub mod batch;
pub mod config;
pub mod metrics;
pub mod read;
pub mod rebuild;
pub mod sink;
pub mod time;
pub mod verify;

pub use config::{ConfigError, ProjectorConfig, Secret};
pub use sink::{ErrorClass, Sink, SinkError};

mod consumer;
pub mod dead_letter;
mod http;
pub mod kafka;
mod kafka_record;
mod lanes;
mod projector;
mod rebalance;
mod wait;
mod watermarks;
mod writer;

pub use projector::{Projector, ProjectorError};
/// The shutdown token `Projector::run` takes (re-exported so callers need no extra crate).
pub use tokio_util::sync::CancellationToken;
