//! Pure mapping between records and MongoDB documents, and the reversible encoding of JSON
//! values that BSON (or FerretDB) cannot hold as they are.
//!
//! Invariant: for every record that [`check`] accepts, `record_from_document(document(r))`
//! gives back `r` exactly (property-tested below). Nothing is altered silently: a value that
//! cannot be stored as plain BSON is stored in one of these documented, reversible forms,
//! and the read API reverses them:
//!
//! * **Keys** of user objects (`event.payload`, unknown `event` keys, `publicMemberSnapshot`,
//!   `instance.context`, `publicMember`, `internalMember`) are escaped when they need it:
//!   `%` -> `%25`, `.` -> `%2E`, NUL -> `%00`, a leading `$` -> `%24`, and the empty key -> `%`.
//!   Keys without those characters are stored unchanged (the common case).
//! * **Values**: a document whose only key is `%num` holds a number BSON cannot hold (an
//!   integer above `i64::MAX`) as its decimal text; a document whose only key is `%json` holds
//!   a value as JSON text: strings with a NUL character, containers nested deeper than
//!   [`MAX_NESTING`], and an explicit JSON `null` in an optional field (to tell it from "absent").
//!   A document whose only key is `%arr` holds an array that is an element of an array
//!   (FerretDB 1.x refuses nested arrays; the same form is written for MongoDB, which would
//!   take them: a FerretDB-only workaround, pinned per server in `tests/tests/mongo_servers.rs`).
//!   No escaped user key can be `%num`, `%json` or `%arr` (an escaped `%` is always followed
//!   by two hex digits), so the markers are unambiguous.
//! * Integers are Int32 when they fit, else Int64; other numbers are doubles; epoch-ms fields
//!   and sequences are Int64.
//!
//! One file: the encoding and its reverse change together; the round-trip tests check both.

use mongodb::bson::{Bson, Document, doc};
use serde_json::{Map, Number, Value};
use xclog_schema::{
    FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, PendingTimeout, PersistedEvent, Record,
};

use crate::sink::SourcePosition;

/// Containers deeper than this (counted inside a user value) are stored as `%json` text.
/// MongoDB refuses documents nested deeper than 100 levels; user values start at most three
/// levels down (`instance.publicMember`, `event.payload`).
pub const MAX_NESTING: usize = 80;

/// Largest document MongoDB stores (16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

const NUM: &str = "%num";
const JSON: &str = "%json";
const ARR: &str = "%arr";

fn needs_escape(key: &str) -> bool {
    key.is_empty() || key.starts_with('$') || key.contains(['%', '.', '\0'])
}

/// Escapes a user object key (see the module docs).
pub fn escape_key(key: &str) -> String {
    if !needs_escape(key) {
        return key.to_owned();
    }
    if key.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.char_indices() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '\0' => out.push_str("%00"),
            '$' if i == 0 => out.push_str("%24"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_key`]; `None` if `key` is not an escaped key.
pub fn unescape_key(key: &str) -> Option<String> {
    if key == "%" {
        return Some(String::new());
    }
    if !key.contains('%') {
        return Some(key.to_owned());
    }
    let mut out = String::with_capacity(key.len());
    let mut rest = key;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2E" => '.',
            "00" => '\0',
            "24" if out.is_empty() => '$',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn wrapped(tag: &str, text: String) -> Bson {
    let mut d = Document::new();
    d.insert(tag, Bson::String(text));
    Bson::Document(d)
}

/// Encodes a user JSON value (see the module docs).
pub fn encode_value(value: &Value) -> Bson {
    encode_at(value, 0)
}

fn encode_at(value: &Value, depth: usize) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::String(s) if s.contains('\0') => wrapped(JSON, value.to_string()),
        Value::String(s) => Bson::String(s.clone()),
        Value::Number(n) => encode_number(n),
        Value::Array(_) | Value::Object(_) if depth >= MAX_NESTING => {
            wrapped(JSON, value.to_string())
        }
        Value::Array(items) => Bson::Array(
            items
                .iter()
                // A nested array costs two levels (its `%arr` wrapper and itself).
                .map(
                    |v| match encode_at(v, depth + 1 + usize::from(v.is_array())) {
                        inner @ Bson::Array(_) => {
                            let mut d = Document::new();
                            d.insert(ARR, inner);
                            Bson::Document(d)
                        }
                        other => other,
                    },
                )
                .collect(),
        ),
        Value::Object(map) => {
            let mut d = Document::new();
            for (k, v) in map {
                d.insert(escape_key(k), encode_at(v, depth + 1));
            }
            Bson::Document(d)
        }
    }
}

fn encode_number(n: &Number) -> Bson {
    if let Some(i) = n.as_i64() {
        match i32::try_from(i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(i),
        }
    } else if n.is_u64() {
        wrapped(NUM, n.to_string())
    } else {
        Bson::Double(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Encodes an optional user value: `None` is `null`, an explicit JSON `null` is `%json`.
pub fn encode_optional(value: &Option<Value>) -> Bson {
    match value {
        None => Bson::Null,
        Some(Value::Null) => wrapped(JSON, "null".to_owned()),
        Some(v) => encode_value(v),
    }
}

/// Why a stored value cannot be decoded.
pub type DecodeResult<T> = Result<T, String>;

/// Reverses [`encode_value`].
pub fn decode_value(bson: &Bson) -> DecodeResult<Value> {
    Ok(match bson {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("double {f} has no JSON form"))?,
        Bson::Array(items) => Value::Array(
            items
                .iter()
                .map(decode_value)
                .collect::<DecodeResult<Vec<_>>>()?,
        ),
        Bson::Document(d) => {
            if d.len() == 1 {
                if let Ok(text) = d.get_str(JSON) {
                    return serde_json::from_str(text)
                        .map_err(|e| format!("bad {JSON} text {text:?}: {e}"));
                }
                if let Ok(inner) = d.get_array(ARR) {
                    return decode_value(&Bson::Array(inner.clone()));
                }
                if let Ok(text) = d.get_str(NUM) {
                    return serde_json::from_str::<Number>(text)
                        .map(Value::Number)
                        .map_err(|e| format!("bad {NUM} text {text:?}: {e}"));
                }
            }
            let mut map = Map::new();
            for (k, v) in d {
                let key = unescape_key(k).ok_or_else(|| format!("key {k:?} is badly escaped"))?;
                map.insert(key, decode_value(v)?);
            }
            Value::Object(map)
        }
        // Written by something else than xclog (e.g. an ObjectId or a date): relaxed extJSON.
        other => other.clone().into_relaxed_extjson(),
    })
}

/// Reverses [`encode_optional`].
pub fn decode_optional(bson: Option<&Bson>) -> DecodeResult<Option<Value>> {
    match bson {
        None | Some(Bson::Null) | Some(Bson::Undefined) => Ok(None),
        Some(b) => decode_value(b).map(Some),
    }
}

fn opt_str(s: &Option<String>) -> Bson {
    s.as_ref().map_or(Bson::Null, |s| Bson::String(s.clone()))
}

fn opt_i64(v: Option<i64>) -> Bson {
    v.map_or(Bson::Null, Bson::Int64)
}

fn seq(v: Option<u64>) -> Bson {
    // `check` refuses sequences above i64::MAX before anything is written.
    v.and_then(|s| i64::try_from(s).ok())
        .map_or(Bson::Null, Bson::Int64)
}

/// The `source` sub-document: where the record came from in the log.
pub fn source_document(source: &SourcePosition) -> Document {
    doc! {
        "topic": source.topic.clone(),
        "partition": source.partition,
        "offset": source.offset,
    }
}

/// The `events` document of an event: the camelCase `PersistedEvent` with `_id` = id,
/// `caused` empty (the sink maintains it), plus `sequence` and `source`.
pub fn event_document(e: &PersistedEvent, source: &SourcePosition) -> Document {
    let mut event = Document::new();
    event.insert("type", e.event.event_type.clone());
    event.insert("payload", encode_value(&e.event.payload));
    event.insert("timestamp", opt_i64(e.event.timestamp));
    for (k, v) in &e.event.extra {
        event.insert(escape_key(k), encode_value(v));
    }
    doc! {
        "_id": e.id.clone(),
        "instanceId": e.instance_id.clone(),
        "machineName": e.machine_name.clone(),
        "componentName": e.component_name.clone(),
        "event": event,
        "stateBefore": e.state_before.clone(),
        "stateAfter": e.state_after.clone(),
        "persistedAt": Bson::Int64(e.persisted_at),
        "causedBy": e.caused_by.clone(),
        "caused": Bson::Array(Vec::new()),
        "sourceComponentName": opt_str(&e.source_component_name),
        "targetComponentName": opt_str(&e.target_component_name),
        "publicMemberSnapshot": encode_optional(&e.public_member_snapshot),
        "sequence": seq(e.sequence),
        "source": source_document(source),
    }
}

/// The `snapshots` document: `{instance, snapshotAt, lastEventId, pendingTimeouts}` with
/// `_id` = instance id, plus `sequence` and `source`.
pub fn snapshot_document(s: &InstanceSnapshot, source: &SourcePosition) -> Document {
    let i = &s.instance;
    let instance = doc! {
        "id": i.id.clone(),
        "machineName": i.machine_name.clone(),
        "currentState": i.current_state.clone(),
        "context": encode_value(&i.context),
        "publicMember": encode_optional(&i.public_member),
        "internalMember": encode_optional(&i.internal_member),
        "createdAt": Bson::Int64(i.created_at),
        "updatedAt": Bson::Int64(i.updated_at),
        "status": i.status.as_str(),
        "isEntryPoint": i.is_entry_point.map_or(Bson::Null, Bson::Boolean),
        "parentInstanceId": opt_str(&i.parent_instance_id),
        "parentMachineName": opt_str(&i.parent_machine_name),
    };
    let pending = match &s.pending_timeouts {
        None => Bson::Null,
        Some(list) => Bson::Array(
            list.iter()
                .map(|t| {
                    Bson::Document(doc! {
                        "stateKey": t.state_key.clone(),
                        "eventType": t.event_type.clone(),
                        "remainingMs": Bson::Int64(t.remaining_ms),
                    })
                })
                .collect(),
        ),
    };
    doc! {
        "_id": i.id.clone(),
        "instance": instance,
        "snapshotAt": Bson::Int64(s.snapshot_at),
        "lastEventId": s.last_event_id.clone(),
        "pendingTimeouts": pending,
        "sequence": seq(s.sequence),
        "source": source_document(source),
    }
}

/// The document a record becomes; `None` for a snapshot deletion, which stores no document
/// (it removes one).
pub fn record_document(record: &Record, source: &SourcePosition) -> Option<Document> {
    match record {
        Record::Event(e) => Some(event_document(e, source)),
        Record::Snapshot(s) => Some(snapshot_document(s, source)),
        Record::SnapshotDeletion(_) => None,
    }
}

fn get_str(d: &Document, key: &str) -> DecodeResult<String> {
    d.get_str(key)
        .map(str::to_owned)
        .map_err(|_| format!("field {key:?} is missing or not a string"))
}

fn get_opt_str(d: &Document, key: &str) -> DecodeResult<Option<String>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field {key:?} is not a string: {other}")),
    }
}

pub(crate) fn as_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int64(i) => Some(*i),
        Bson::Int32(i) => Some(i64::from(*i)),
        // xcomponent-ai's Node driver writes Date.now() as a double.
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

fn get_i64(d: &Document, key: &str) -> DecodeResult<i64> {
    d.get(key)
        .and_then(as_i64)
        .ok_or_else(|| format!("field {key:?} is missing or not an integer"))
}

fn get_opt_i64(d: &Document, key: &str) -> DecodeResult<Option<i64>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(b) => as_i64(b)
            .map(Some)
            .ok_or_else(|| format!("field {key:?} is not an integer")),
    }
}

fn get_seq(d: &Document) -> DecodeResult<Option<u64>> {
    Ok(get_opt_i64(d, "sequence")?.and_then(|s| u64::try_from(s).ok()))
}

fn get_strings(d: &Document, key: &str) -> DecodeResult<Vec<String>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|b| {
                b.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{key} holds a non-string"))
            })
            .collect(),
        Some(other) => Err(format!("field {key:?} is not an array: {other}")),
    }
}

/// Where a stored document came from (absent on documents written by something else).
pub fn source_from_document(d: &Document) -> Option<SourcePosition> {
    let s = d.get_document("source").ok()?;
    Some(SourcePosition {
        topic: s.get_str("topic").ok()?.to_owned(),
        partition: i32::try_from(s.get("partition").and_then(as_i64)?).ok()?,
        offset: s.get("offset").and_then(as_i64)?,
    })
}

/// Reverses [`event_document`] (and reads xcomponent-ai's own documents: `_id` or `id`).
pub fn event_from_document(d: &Document) -> DecodeResult<PersistedEvent> {
    let id = match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        _ => get_str(d, "id")?,
    };
    let ev = d
        .get_document("event")
        .map_err(|_| "field \"event\" is missing or not a document".to_owned())?;
    let mut extra = Map::new();
    for (k, v) in ev {
        if matches!(k.as_str(), "type" | "payload" | "timestamp") {
            continue;
        }
        let key = unescape_key(k).ok_or_else(|| format!("event key {k:?} is badly escaped"))?;
        extra.insert(key, decode_value(v)?);
    }
    Ok(PersistedEvent {
        id,
        instance_id: get_str(d, "instanceId")?,
        machine_name: get_str(d, "machineName")?,
        component_name: get_str(d, "componentName")?,
        event: FsmEvent {
            event_type: get_str(ev, "type")?,
            payload: match ev.get("payload") {
                None => Value::Object(Map::new()),
                Some(p) => decode_value(p)?,
            },
            timestamp: get_opt_i64(ev, "timestamp")?,
            extra,
        },
        state_before: get_str(d, "stateBefore")?,
        state_after: get_str(d, "stateAfter")?,
        persisted_at: get_i64(d, "persistedAt")?,
        caused_by: get_strings(d, "causedBy")?,
        caused: get_strings(d, "caused")?,
        source_component_name: get_opt_str(d, "sourceComponentName")?,
        target_component_name: get_opt_str(d, "targetComponentName")?,
        public_member_snapshot: decode_optional(d.get("publicMemberSnapshot"))?,
        sequence: get_seq(d)?,
    })
}

/// Reverses [`snapshot_document`].
pub fn snapshot_from_document(d: &Document) -> DecodeResult<InstanceSnapshot> {
    let i = d
        .get_document("instance")
        .map_err(|_| "field \"instance\" is missing or not a document".to_owned())?;
    let status = match i.get_str("status") {
        Ok("active") => InstanceStatus::Active,
        Ok("completed") => InstanceStatus::Completed,
        Ok("error") => InstanceStatus::Error,
        other => return Err(format!("instance.status {other:?} is not a known status")),
    };
    let pending_timeouts = match d.get("pendingTimeouts") {
        None | Some(Bson::Null) => None,
        Some(Bson::Array(items)) => Some(
            items
                .iter()
                .map(|t| {
                    let t = t
                        .as_document()
                        .ok_or_else(|| "pendingTimeouts holds a non-document".to_owned())?;
                    Ok(PendingTimeout {
                        state_key: get_str(t, "stateKey")?,
                        event_type: get_str(t, "eventType")?,
                        remaining_ms: get_i64(t, "remainingMs")?,
                    })
                })
                .collect::<DecodeResult<Vec<_>>>()?,
        ),
        Some(other) => return Err(format!("pendingTimeouts is not an array: {other}")),
    };
    Ok(InstanceSnapshot {
        instance: FsmInstance {
            id: get_str(i, "id")?,
            machine_name: get_str(i, "machineName")?,
            current_state: get_str(i, "currentState")?,
            context: match i.get("context") {
                None => Value::Object(Map::new()),
                Some(c) => decode_value(c)?,
            },
            public_member: decode_optional(i.get("publicMember"))?,
            internal_member: decode_optional(i.get("internalMember"))?,
            created_at: get_opt_i64(i, "createdAt")?.unwrap_or(0),
            updated_at: get_opt_i64(i, "updatedAt")?.unwrap_or(0),
            status,
            is_entry_point: match i.get("isEntryPoint") {
                Some(Bson::Boolean(b)) => Some(*b),
                _ => None,
            },
            parent_instance_id: get_opt_str(i, "parentInstanceId")?,
            parent_machine_name: get_opt_str(i, "parentMachineName")?,
        },
        snapshot_at: get_i64(d, "snapshotAt")?,
        last_event_id: get_str(d, "lastEventId").unwrap_or_default(),
        pending_timeouts,
        sequence: get_seq(d)?,
    })
}

/// Size of `d` as BSON, in bytes.
pub fn document_size(d: &Document) -> usize {
    let mut buf = Vec::new();
    match d.to_writer(&mut buf) {
        Ok(()) => buf.len(),
        Err(_) => usize::MAX,
    }
}

/// A cheap upper bound of the BSON size of a JSON value as [`encode_value`] writes it (keys
/// at most triple when escaped, `%json` text at most six times a string).
fn size_bound(value: &Value) -> usize {
    const NODE: usize = 32;
    match value {
        Value::String(s) => NODE + 6 * s.len(),
        Value::Array(items) => NODE + items.iter().map(|v| 12 + size_bound(v)).sum::<usize>(),
        Value::Object(map) => {
            NODE + map
                .iter()
                .map(|(k, v)| 3 * k.len() + 2 + size_bound(v))
                .sum::<usize>()
        }
        _ => NODE,
    }
}

/// Why this store cannot hold the record (it is dead-lettered with this reason), checked
/// before any write.
///
/// * empty ids, and NUL characters in ids, names, states and `causedBy` (they are query keys;
///   FerretDB cannot store NUL in strings, and escaping them would break the shell queries);
/// * sequences above `i64::MAX` (BSON integers are signed 64-bit; sequences are compared);
/// * documents over MongoDB's 16 MiB limit.
///
/// Payload content never fails here: it is encoded losslessly (see the module docs).
pub fn check(record: &Record) -> Result<(), String> {
    crate::sink::check_index_keys(record)?;
    crate::sink::check_required_ids(record)?;
    if let Record::Event(e) = record
        && e.instance_id.is_empty()
    {
        return Err("event instanceId is empty".to_owned());
    }
    crate::sink::each_key_text(record, |field, s, _| {
        if s.contains('\0') {
            Err(format!(
                "{field} contains a NUL character; ids, names and states must be plain text in MongoDB"
            ))
        } else {
            Ok(())
        }
    })?;
    if let Some(s) = crate::sink::record_sequence(record)
        && i64::try_from(s).is_err()
    {
        return Err(format!(
            "sequence {s} exceeds the signed 64-bit integer range of BSON"
        ));
    }
    let bound = match record {
        Record::Event(e) => {
            size_bound(&e.event.payload)
                + e.event
                    .extra
                    .iter()
                    .map(|(k, v)| 3 * k.len() + size_bound(v))
                    .sum::<usize>()
                + e.public_member_snapshot.as_ref().map_or(0, size_bound)
                + 64 * (e.caused_by.len() + 16)
                + e.caused_by.iter().map(String::len).sum::<usize>()
        }
        Record::Snapshot(s) => {
            let i = &s.instance;
            size_bound(&i.context)
                + i.public_member.as_ref().map_or(0, size_bound)
                + i.internal_member.as_ref().map_or(0, size_bound)
                + s.pending_timeouts.as_ref().map_or(0, |p| {
                    p.iter()
                        .map(|t| 96 + t.state_key.len() + t.event_type.len())
                        .sum()
                })
                + 2048
        }
        Record::SnapshotDeletion(_) => return Ok(()),
    };
    // Only documents that might be near the limit pay for an exact measurement.
    if bound + 4096 < MAX_DOCUMENT_BYTES {
        return Ok(());
    }
    let probe = SourcePosition {
        topic: String::new(),
        partition: 0,
        offset: 0,
    };
    let size = record_document(record, &probe).map_or(0, |d| document_size(&d)) + 256;
    if size > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document would be {size} bytes, over MongoDB's limit of {MAX_DOCUMENT_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn source() -> SourcePosition {
        SourcePosition {
            topic: "t".into(),
            partition: 3,
            offset: 42,
        }
    }

    pub(in crate::sink::mongo) fn event(payload: Value) -> PersistedEvent {
        PersistedEvent {
            id: "e1".into(),
            instance_id: "i1".into(),
            machine_name: "Order".into(),
            component_name: "Shop".into(),
            event: FsmEvent {
                event_type: "SUBMIT".into(),
                payload,
                timestamp: Some(7),
                extra: Map::new(),
            },
            state_before: "".into(),
            state_after: "Placed".into(),
            persisted_at: 1_767_225_600_000,
            caused_by: vec!["p1".into()],
            caused: vec![],
            source_component_name: Some("Shop".into()),
            target_component_name: None,
            public_member_snapshot: None,
            sequence: Some(9),
        }
    }

    #[test]
    fn keys_mongodb_refuses_are_escaped_and_come_back() {
        for (raw, stored) in [
            ("$where", "%24where"),
            ("a.b", "a%2Eb"),
            ("50%", "50%25"),
            ("", "%"),
            ("nul\0", "nul%00"),
            ("a$b", "a$b"),
            ("plain", "plain"),
            ("$$.%", "%24$%2E%25"),
        ] {
            assert_eq!(escape_key(raw), stored, "{raw:?}");
            assert_eq!(unescape_key(stored).as_deref(), Some(raw), "{stored:?}");
        }
        assert_eq!(unescape_key("%zz"), None);
        assert_eq!(unescape_key("a%24"), None, "$ is escaped only in front");
    }

    #[test]
    fn awkward_values_are_stored_in_reversible_forms() {
        let payload = json!({
            "$set": {"a.b": 1},
            "big": u64::MAX,
            "nul": "x\u{0}y",
            "small": 5,
            "wide": i64::MIN,
            "f": 1.5,
            "n": null,
            "matrix": [[1, 2], [[3]], []],
        });
        let d = event_document(&event(payload.clone()), &source());
        let stored = d
            .get_document("event")
            .unwrap()
            .get_document("payload")
            .unwrap();
        assert!(stored.contains_key("%24set"));
        assert_eq!(
            stored.get_document("big").unwrap().get_str("%num").unwrap(),
            "18446744073709551615"
        );
        assert!(stored.get_document("nul").unwrap().contains_key("%json"));
        assert_eq!(stored.get("small"), Some(&Bson::Int32(5)));
        assert_eq!(stored.get("wide"), Some(&Bson::Int64(i64::MIN)));
        let back = event_from_document(&d).unwrap();
        assert_eq!(back.event.payload, payload);
    }

    #[test]
    fn nesting_beyond_the_bound_becomes_json_text_and_comes_back() {
        let mut v = json!({"leaf": true});
        for n in 0..(MAX_NESTING + 20) {
            v = if n % 3 == 0 {
                json!([v])
            } else {
                json!({"k": v})
            };
        }
        let b = encode_value(&v);
        fn depth(b: &Bson) -> usize {
            match b {
                Bson::Document(d) => 1 + d.values().map(depth).max().unwrap_or(0),
                Bson::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        assert!(depth(&b) <= MAX_NESTING + 2, "{}", depth(&b));
        assert_eq!(decode_value(&b).unwrap(), v);
    }

    #[test]
    fn an_explicit_null_differs_from_an_absent_optional_value() {
        let mut e = event(json!({}));
        e.public_member_snapshot = Some(Value::Null);
        let back = event_from_document(&event_document(&e, &source())).unwrap();
        assert_eq!(back.public_member_snapshot, Some(Value::Null));
        e.public_member_snapshot = None;
        let back = event_from_document(&event_document(&e, &source())).unwrap();
        assert_eq!(back.public_member_snapshot, None);
    }

    #[test]
    fn check_refuses_what_mongodb_cannot_hold_and_says_why() {
        let mut e = event(json!({}));
        e.sequence = Some(u64::MAX);
        assert!(check(&Record::Event(e)).unwrap_err().contains("sequence"));
        let mut e = event(json!({}));
        e.instance_id = "a\0b".into();
        assert!(check(&Record::Event(e)).unwrap_err().contains("instanceId"));
        let e = event(json!({"blob": "x".repeat(MAX_DOCUMENT_BYTES)}));
        assert!(check(&Record::Event(e)).unwrap_err().contains("16777216"));
        assert!(check(&Record::Event(event(json!({"$x.y": u64::MAX})))).is_ok());
    }

    #[test]
    fn a_snapshot_deletion_stores_no_document_and_is_checked_for_nul_and_sequence() {
        let deletion = |id: &str, sequence: Option<u64>| {
            Record::SnapshotDeletion(xclog_schema::SnapshotDeletion {
                instance_id: id.into(),
                snapshot_deleted_at: 5,
                sequence,
            })
        };
        let source = SourcePosition {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        assert_eq!(record_document(&deletion("i", None), &source), None);
        assert!(check(&deletion("i", Some(3))).is_ok());
        assert!(
            check(&deletion("a\0b", None))
                .unwrap_err()
                .contains("instanceId")
        );
        assert!(
            check(&deletion("i", Some(u64::MAX)))
                .unwrap_err()
                .contains("sequence")
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            "[a-z]{0,4}",
            "[$.%a\\x00]{0,5}",
            Just("%json".to_owned()),
            Just("%num".to_owned()),
            Just("%arr".to_owned()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1.0e12f64..1.0e12).prop_map(Value::from),
            "[a-z\\x00%.$]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_json_value_survives_the_round_trip(v in json_value()) {
            prop_assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }

        #[test]
        fn escaped_keys_never_contain_what_mongodb_refuses(k in "\\PC{0,8}") {
            let e = escape_key(&k);
            prop_assert!(!e.starts_with('$') && !e.contains('.') && !e.contains('\0') && !e.is_empty());
            prop_assert_eq!(unescape_key(&e), Some(k));
        }

        #[test]
        fn events_and_snapshots_survive_the_round_trip(
            payload in json_value(),
            pm in proptest::option::of(json_value()),
            seq in proptest::option::of(0u64..=i64::MAX as u64),
            extra in proptest::collection::vec(("_[a-z$.]{1,4}", json_value()), 0..3),
        ) {
            let mut e = event(json!({"p": payload.clone()}));
            e.public_member_snapshot = pm.clone();
            e.sequence = seq;
            e.event.extra = extra.into_iter().collect();
            let d = event_document(&e, &source());
            let mut back = event_from_document(&d).unwrap();
            back.caused = e.caused.clone();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(source_from_document(&d), Some(source()));

            let s = InstanceSnapshot {
                instance: FsmInstance {
                    id: "i1".into(), machine_name: "M".into(), current_state: "S".into(),
                    context: json!({"c": payload}), public_member: pm.clone(),
                    internal_member: Some(json!({})), created_at: 1, updated_at: 2,
                    status: InstanceStatus::Completed, is_entry_point: Some(true),
                    parent_instance_id: Some("p".into()), parent_machine_name: None,
                },
                snapshot_at: 3,
                last_event_id: "e".into(),
                pending_timeouts: Some(vec![PendingTimeout { state_key: "k".into(), event_type: "T".into(), remaining_ms: -4 }]),
                sequence: seq,
            };
            prop_assert_eq!(snapshot_from_document(&snapshot_document(&s, &source())).unwrap(), s);
        }
    }
}
