//! xclog kafka: the Kafka client plumbing both the producer library and the projector use, so
//! that every client connects, logs and fails alike without either of them depending on the
//! other.
//!
//! - [`WatchedContext`]: the client context of every xclog Kafka client. It routes
//!   librdkafka's log lines and errors to `tracing` and keeps the first authentication or TLS
//!   failure (read through its [`RefusalWatch`]).
//! - [`fetch_metadata`] and [`connect`]: reading the cluster's metadata, failing at once with
//!   [`ConnectError::Refused`] when the brokers refused the credentials or certificate, and
//!   with [`ConnectError::Unreachable`] when no broker answered in time.
//! - [`create_error`]: the [`ConnectError::Config`] for a client librdkafka would not create,
//!   naming the setting it refused and never a secret's value.

mod connection;
mod error;

pub use connection::{RefusalWatch, WatchedContext, connect, create_error, fetch_metadata};
pub use error::ConnectError;
