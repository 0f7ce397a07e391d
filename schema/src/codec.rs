//! `encode` and `decode`: one Kafka record (key, headers, value) <-> one typed [`Record`].
//!
//! Invariant: `decode(encode(r))` returns `r` for every valid record in both encodings, and
//! `decode` never panics: any input yields a [`Decoded`] or a [`DecodeError`] with a byte range.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, DecodeErrorKind, InputPart};
use crate::limits::Limits;
use crate::model::{Record, RecordKind};
use crate::path::{FieldError, Path, Seg};
use crate::{SCHEMA_VERSION, json, proto};

/// Kafka header names xclog writes and reads.
pub mod headers {
    /// The encoding of the value: `application/x-protobuf` or `application/json`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The record kind: `event`, `snapshot` or `snapshot-deletion`.
    pub const KIND: &str = "xclog-kind";
    /// The schema version the value was written with, as decimal ASCII (`1`).
    pub const SCHEMA_VERSION: &str = "xclog-schema-version";
    /// W3C trace context, passed through when valid.
    pub const TRACEPARENT: &str = "traceparent";
}

/// Content type of the protobuf encoding.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// Content type of the JSON encoding.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// How a record value is serialized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `xclog.v1.Record` protobuf (the default: smaller and faster).
    #[default]
    Protobuf,
    /// camelCase JSON, the shape xcomponent-ai's `JSON.stringify` produces.
    Json,
}

impl Encoding {
    /// The `content-type` header value for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => CONTENT_TYPE_PROTOBUF,
            Encoding::Json => CONTENT_TYPE_JSON,
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;

    /// Parses `protobuf` or `json` (as used in configuration).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "protobuf" | "proto" => Ok(Encoding::Protobuf),
            "json" => Ok(Encoding::Json),
            other => Err(format!(
                "unknown encoding {other:?}: expected \"protobuf\" or \"json\""
            )),
        }
    }
}

/// One record ready to hand to a Kafka producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncodedRecord {
    /// The Kafka key: the instance id, UTF-8.
    pub key: String,
    /// The Kafka value.
    pub value: Vec<u8>,
    /// The Kafka headers: content type, kind, schema version, and `traceparent` if given.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// A successfully decoded record and what the headers said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoded {
    /// The record.
    pub record: Record,
    /// The encoding the value was in.
    pub encoding: Encoding,
    /// The schema version from the header (1 when the header is absent).
    pub schema_version: u32,
    /// The W3C `traceparent` header, if present and valid (invalid ones are ignored, as the
    /// W3C Trace Context spec requires).
    pub traceparent: Option<String>,
}

/// Serializes `record`; key = instance id; headers = content type, kind, schema version.
pub fn encode(record: &Record, encoding: Encoding) -> EncodedRecord {
    encode_with_traceparent(record, encoding, None)
}

/// Like [`encode`], and adds a `traceparent` header when `traceparent` is a valid W3C
/// traceparent (an invalid one is left out rather than propagated; check it first with
/// [`is_valid_traceparent`] if you need to know).
pub fn encode_with_traceparent(
    record: &Record,
    encoding: Encoding,
    traceparent: Option<&str>,
) -> EncodedRecord {
    let value = match encoding {
        Encoding::Protobuf => proto::encode(record),
        // Serializing the model cannot fail: all map keys are strings and numbers finite.
        Encoding::Json => serde_json::to_vec(record).unwrap_or_default(),
    };
    let mut headers = vec![
        (
            headers::CONTENT_TYPE,
            encoding.content_type().as_bytes().to_vec(),
        ),
        (headers::KIND, record.kind().as_str().as_bytes().to_vec()),
        (
            headers::SCHEMA_VERSION,
            SCHEMA_VERSION.to_string().into_bytes(),
        ),
    ];
    if let Some(tp) = traceparent.filter(|tp| is_valid_traceparent(tp)) {
        headers.push((headers::TRACEPARENT, tp.as_bytes().to_vec()));
    }
    EncodedRecord {
        key: record.instance_id().to_owned(),
        value,
        headers,
    }
}

/// Whether `s` is a valid W3C Trace Context `traceparent` (version `00`, or a later version
/// whose first 55 characters have the version-00 layout).
pub fn is_valid_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let zero = |r: Range<usize>| b[r].iter().all(|c| *c == b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    if !hex(0..2) || !hex(3..35) || !hex(36..52) || !hex(53..55) {
        return false;
    }
    if &b[0..2] == b"ff" || zero(3..35) || zero(36..52) {
        return false;
    }
    if &b[0..2] == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || b[55] == b'-'
    }
}

fn header_error(
    name: &str,
    expected: impl Into<String>,
    found: impl Into<String>,
    len: usize,
) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::Malformed,
        name,
        expected,
        found,
        InputPart::Header(name.to_owned()),
        0..len,
    )
}

/// The one value of header `name` (ASCII case-insensitive); several equal values count as one.
fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Result<Option<&'a [u8]>, DecodeError> {
    let mut found: Option<&'a [u8]> = None;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(name) {
            match found {
                Some(prev) if prev != *v => {
                    return Err(header_error(
                        name,
                        "one value",
                        "several different values",
                        v.len(),
                    ));
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

fn header_text<'a>(name: &str, v: &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(v).map_err(|_| header_error(name, "UTF-8 text", "invalid UTF-8", v.len()))
}

fn short(s: &str) -> String {
    if s.chars().count() <= 40 {
        format!("{s:?}")
    } else {
        format!("a value of {} bytes", s.len())
    }
}

/// The `xclog-schema-version` header: 1 when absent, an error when newer than this build.
fn schema_version_header(headers: &[(&str, &[u8])]) -> Result<u32, DecodeError> {
    Ok(match header(headers, headers::SCHEMA_VERSION)? {
        None => SCHEMA_VERSION,
        Some(v) => {
            let text = header_text(headers::SCHEMA_VERSION, v)?;
            match text.trim().parse::<u32>() {
                Ok(0) => {
                    return Err(header_error(
                        headers::SCHEMA_VERSION,
                        "a version of at least 1",
                        "0",
                        v.len(),
                    ));
                }
                Ok(n) if n > SCHEMA_VERSION => {
                    return Err(DecodeError::new(
                        DecodeErrorKind::UnsupportedVersion,
                        headers::SCHEMA_VERSION,
                        format!(
                            "a schema version up to {SCHEMA_VERSION} (upgrade this consumer to read newer records)"
                        ),
                        format!("version {n}"),
                        InputPart::Header(headers::SCHEMA_VERSION.to_owned()),
                        0..v.len(),
                    ));
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(header_error(
                        headers::SCHEMA_VERSION,
                        "a decimal version number",
                        short(text),
                        v.len(),
                    ));
                }
            }
        }
    })
}

/// The encoding named by `content-type`, or sniffed from the value when there is none.
fn encoding_header(headers: &[(&str, &[u8])], value: &[u8]) -> Result<Encoding, DecodeError> {
    Ok(match header(headers, headers::CONTENT_TYPE)? {
        Some(v) => {
            let text = header_text(headers::CONTENT_TYPE, v)?;
            let mime = text
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match mime.as_str() {
                "application/json" => Encoding::Json,
                "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
                _ => {
                    return Err(header_error(
                        headers::CONTENT_TYPE,
                        "\"application/x-protobuf\" or \"application/json\"",
                        short(text),
                        v.len(),
                    ));
                }
            }
        }
        None => sniff(value),
    })
}

/// The kind announced by `xclog-kind`, if any.
fn kind_header(headers: &[(&str, &[u8])]) -> Result<Option<RecordKind>, DecodeError> {
    Ok(match header(headers, headers::KIND)? {
        None => None,
        Some(v) => match header_text(headers::KIND, v)?.trim() {
            "event" => Some(RecordKind::Event),
            "snapshot" => Some(RecordKind::Snapshot),
            "snapshot-deletion" => Some(RecordKind::SnapshotDeletion),
            other => {
                return Err(header_error(
                    headers::KIND,
                    "\"event\", \"snapshot\" or \"snapshot-deletion\"",
                    short(other),
                    v.len(),
                ));
            }
        },
    })
}

/// A valid `traceparent`, passed through verbatim; an invalid or conflicting one is ignored.
fn traceparent_header(headers: &[(&str, &[u8])]) -> Option<String> {
    match header(headers, headers::TRACEPARENT) {
        Ok(Some(v)) => std::str::from_utf8(v)
            .ok()
            .filter(|s| is_valid_traceparent(s))
            .map(str::to_owned),
        _ => None,
    }
}

/// Decodes one Kafka record into a typed [`Record`].
///
/// * The encoding comes from the `content-type` header; without it, a value that starts with
///   `{` or `[` (after optional whitespace) is JSON, anything else protobuf.
/// * The kind comes from the `xclog-kind` header; for JSON without it, from the shape (an
///   object with `instance` is a snapshot, one with `snapshotDeletedAt` a snapshot deletion,
///   one with `instanceId`/`event` an event). When the header is present the value must agree
///   with it.
/// * The schema version comes from `xclog-schema-version` (1 when absent); a newer version is
///   [`DecodeErrorKind::UnsupportedVersion`].
/// * When `key` is given it must equal the record's instance id.
pub fn decode(
    headers: &[(&str, &[u8])],
    key: Option<&[u8]>,
    value: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let schema_version = schema_version_header(headers)?;
    let encoding = encoding_header(headers, value)?;
    let kind = kind_header(headers)?;
    let traceparent = traceparent_header(headers);

    if value.is_empty() {
        return Err(DecodeError::new(
            DecodeErrorKind::Malformed,
            Path::root().to_string(),
            "a record value",
            "an empty value (a tombstone?)",
            InputPart::Value,
            0..0,
        ));
    }
    if value.len() > limits.max_record_bytes {
        return Err(DecodeError::new(
            DecodeErrorKind::LimitExceeded,
            Path::root().to_string(),
            format!("a record of at most {} bytes", limits.max_record_bytes),
            format!("{} bytes", value.len()),
            InputPart::Value,
            0..value.len(),
        ));
    }

    let record = match encoding {
        Encoding::Json => decode_json(value, kind, limits).map_err(|e| match e {
            Ok(e) => locate(e, value, json::find_span),
            Err(shape) => kind_mismatch(kind, shape),
        })?,
        Encoding::Protobuf => {
            proto::decode(value, limits).map_err(|e| locate(e, value, proto::find_span))?
        }
    };
    if kind.is_some_and(|k| k != record.kind()) {
        return Err(kind_mismatch(kind, record.kind()));
    }
    if let Some(key) = key
        && key != record.instance_id().as_bytes()
    {
        let found = match std::str::from_utf8(key) {
            Ok(k) => short(k),
            Err(_) => "a key that is not UTF-8".to_owned(),
        };
        return Err(DecodeError::new(
            DecodeErrorKind::KeyMismatch,
            "key",
            format!("the record's instance id {}", short(record.instance_id())),
            found,
            InputPart::Key,
            0..key.len(),
        ));
    }
    Ok(Decoded {
        record,
        encoding,
        schema_version,
        traceparent,
    })
}

/// The encoding of a value without a `content-type` header: JSON when it starts with `{` or
/// `[` (after optional JSON whitespace), protobuf otherwise. A protobuf record whose first byte
/// is `\n` (field 1, an event) followed by a length that spans the whole value stays protobuf
/// even if that length byte happens to be `{`.
fn sniff(value: &[u8]) -> Encoding {
    match value.first() {
        Some(b'{' | b'[') => return Encoding::Json,
        Some(b' ' | b'\t' | b'\r' | b'\n') => {}
        _ => return Encoding::Protobuf,
    }
    if value.first() == Some(&b'\n') {
        let mut len: usize = 0;
        for (i, b) in value.iter().skip(1).take(5).enumerate() {
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if len == value.len() - 2 - i {
                    return Encoding::Protobuf;
                }
                break;
            }
        }
    }
    match value
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        Some(b'{' | b'[') => Encoding::Json,
        _ => Encoding::Protobuf,
    }
}

/// `Err(Ok(_))`: the value is malformed. `Err(Err(kind))`: the value is well-formed but has the
/// shape of `kind`, not of the kind the `xclog-kind` header announced.
fn decode_json(
    value: &[u8],
    kind: Option<RecordKind>,
    limits: &Limits,
) -> Result<Record, Result<FieldError, RecordKind>> {
    json::check_limits(value, 0, limits, &Path::root()).map_err(Ok)?;
    let v = json::parse(value, &Path::root()).map_err(Ok)?;
    // A deletion shares `instanceId` with events, so an object that has it but lacks both
    // `event` and `snapshotDeletedAt` is judged by the header alone: announced as a deletion,
    // it fails on its missing `snapshotDeletedAt` rather than on the kind.
    if let (Some(announced), serde_json::Value::Object(root)) = (kind, &v)
        && let Ok(shape) = json::kind_by_shape(root)
        && shape != announced
        && !(announced == RecordKind::SnapshotDeletion
            && shape == RecordKind::Event
            && !root.contains_key("event"))
    {
        return Err(Err(shape));
    }
    json::record_from_value(v, kind).map_err(Ok)
}

fn kind_mismatch(announced: Option<RecordKind>, actual: RecordKind) -> DecodeError {
    let announced = announced.map_or("", RecordKind::as_str);
    header_error(
        headers::KIND,
        format!("the kind of the value ({})", actual.as_str()),
        format!("{announced:?}"),
        announced.len(),
    )
}

/// Turns a path-only error into one with a byte range: the precise range the parser found
/// (offset by the embedded field's start when relative to one), else the field's own range, or
/// that of the nearest enclosing field present in the input.
fn locate(
    e: FieldError,
    value: &[u8],
    find: fn(&[u8], &[Seg]) -> Option<Range<usize>>,
) -> DecodeError {
    let nearest = |path: &Path| {
        let mut segs = path.0.as_slice();
        loop {
            if let Some(r) = find(value, segs) {
                return r;
            }
            match segs.split_last() {
                Some((_, rest)) => segs = rest,
                None => return 0..value.len(),
            }
        }
    };
    let range = match (&e.inner, &e.base) {
        (Some(r), None) => r.clone(),
        (Some(r), Some(base)) => {
            let outer = nearest(base);
            let start = (outer.start + r.start).min(outer.end);
            let end = (outer.start + r.end).min(outer.end).max(start);
            start..end
        }
        (None, _) => nearest(&e.path),
    };
    DecodeError::new(
        e.kind,
        e.path.to_string(),
        e.expected,
        e.found,
        InputPart::Value,
        range,
    )
}
