//! Explicit bounds on what the decoder accepts.
//!
//! Invariant: the same limits apply to both encodings and are checked before (JSON) or while
//! (protobuf) the input is parsed, so a hostile record costs at most `max_record_bytes` of work
//! and never exhausts the stack.

/// Bounds the decoder enforces on every record, in both encodings.
///
/// Depth counts JSON containers from the record's root object (the root is depth 1, `event` is
/// 2, `event.payload` is 3); protobuf records are measured as their JSON equivalent.
/// serde_json's own recursion limit (128) stays as a backstop, so a `max_depth` above 127 is
/// effectively 127.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted record value, in bytes. Default 1 MiB (Kafka's default `message.max.bytes`).
    pub max_record_bytes: usize,
    /// Deepest accepted nesting of JSON objects/arrays. Default 64.
    pub max_depth: usize,
    /// Longest accepted string (ids, names, keys, and strings inside payloads), in bytes of
    /// its encoded form. Default 256 KiB.
    pub max_string_bytes: usize,
    /// Most elements accepted in one array or repeated field. Default 100 000.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 1024 * 1024,
            max_depth: 64,
            max_string_bytes: 256 * 1024,
            max_array_len: 100_000,
        }
    }
}
