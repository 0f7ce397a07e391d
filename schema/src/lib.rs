//! # xclog-schema: the wire contract of the xclog event log
//!
//! Every record on an xclog topic is one [`Record`]: a [`PersistedEvent`] (one state
//! transition), an [`InstanceSnapshot`] (the state of one instance) or a [`SnapshotDeletion`]
//! (that instance's stored snapshot is gone), keyed by instance id so that each instance keeps
//! its order. Producers call [`encode`]; projectors call [`decode`].
//!
//! ```text
//! Record --encode(Encoding)--> EncodedRecord { key = instance id, value, headers }
//! (headers, key, value) --decode(&Limits)--> Decoded { record, encoding, schema_version, traceparent }
//!                                       \--> DecodeError { field, expected, found, byte range }
//! ```
//!
//! Two encodings share one topic: protobuf (`proto/xclog/v1/record.proto`, the default) and
//! camelCase JSON compatible with xcomponent-ai's `JSON.stringify(persistedEvent)`. The full
//! contract, for implementers in other languages, is `docs/WIRE-FORMAT.md`.
//!
//! Modules: `model` (hand-written types), `json` and `proto` (the two
//! encodings; generated prost code stays private inside `proto`), `codec` (headers, key,
//! encoding detection), `error`, `limits`.

// Errors are the cold path (built at most once per rejected record); boxing them would only
// add an allocation and noise.
#![allow(clippy::result_large_err)]

mod codec;
mod error;
mod json;
mod limits;
mod model;
mod path;
mod proto;

pub use codec::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, Decoded, EncodedRecord, Encoding, decode, encode,
    encode_with_traceparent, headers, is_valid_traceparent,
};
pub use error::{DecodeError, DecodeErrorKind, InputPart};
pub use limits::Limits;
pub use model::{
    FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, PendingTimeout, PersistedEvent,
    Record, RecordKind, SnapshotDeletion,
};

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A new event id: a UUIDv7 string (time-ordered), e.g. `0190b6d2-6c4e-7b3a-9f1e-2a5c8d9e0f11`.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
