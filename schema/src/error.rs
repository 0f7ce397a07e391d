//! Why a record could not be decoded, and where.
//!
//! Invariant: every [`DecodeError`] names the field (a logical path such as `event.type`,
//! `instance.status`, `causedBy[1]`, or a header name), what was expected, what was found, and
//! the byte range of the offending part of the input, so an operator can find the bad bytes
//! in a dead-letter record without a debugger.

use std::fmt;
use std::ops::Range;

/// What kind of failure this is, and therefore what the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The bytes are not a valid record (syntax, type or required-field error).
    /// Next move: dead-letter the record; retrying will fail the same way.
    Malformed,
    /// The record is larger, deeper or longer than the configured [`crate::Limits`].
    /// Next move: dead-letter it, or raise the limit if the record is legitimate.
    LimitExceeded,
    /// The record was written with a newer schema version than this build understands.
    /// Next move: stop and upgrade the consumer; do not dead-letter (the record is valid).
    UnsupportedVersion,
    /// The Kafka key is not the record's instance id, so per-instance ordering is broken.
    /// Next move: dead-letter the record and fix the producer.
    KeyMismatch,
}

impl DecodeErrorKind {
    fn label(self) -> &'static str {
        match self {
            DecodeErrorKind::Malformed => "malformed",
            DecodeErrorKind::LimitExceeded => "limit exceeded",
            DecodeErrorKind::UnsupportedVersion => "unsupported version",
            DecodeErrorKind::KeyMismatch => "key mismatch",
        }
    }
}

/// Which part of the Kafka record the byte range points into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputPart {
    /// The record value (the payload bytes).
    Value,
    /// The record key.
    Key,
    /// The value of the named header.
    Header(String),
}

impl fmt::Display for InputPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputPart::Value => f.write_str("value"),
            InputPart::Key => f.write_str("key"),
            InputPart::Header(name) => write!(f, "header `{name}`"),
        }
    }
}

/// A record that could not be decoded: which field, what was expected, what was found, and
/// which bytes of which part of the input.
///
/// Displays as
/// `malformed: event.type: expected a string, found a number (value bytes 120..123)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    field: String,
    expected: String,
    found: String,
    part: InputPart,
    range: Range<usize>,
}

impl DecodeError {
    pub(crate) fn new(
        kind: DecodeErrorKind,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
        part: InputPart,
        range: Range<usize>,
    ) -> Self {
        DecodeError {
            kind,
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
            part,
            range,
        }
    }

    /// The failure class; tells the caller what to do next.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The logical field path (`event.type`, `instance.createdAt`, `causedBy[0]`), the header
    /// name, `key`, or `(record)` for the value as a whole.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What the decoder expected at that place.
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// What it found instead.
    pub fn found(&self) -> &str {
        &self.found
    }

    /// Which part of the Kafka record [`DecodeError::range`] points into.
    pub fn part(&self) -> &InputPart {
        &self.part
    }

    /// Byte range (half-open) of the offending bytes within [`DecodeError::part`].
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: expected {}, found {} ({} bytes {}..{})",
            self.kind.label(),
            self.field,
            self.expected,
            self.found,
            self.part,
            self.range.start,
            self.range.end
        )
    }
}

impl std::error::Error for DecodeError {}
