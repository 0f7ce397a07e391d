//! The JSON encoding: a bounded pre-scan, a serde_json parse, and a hand-written conversion
//! into the typed model that knows the logical path of every field.
//!
//! Invariant: no input reaches serde_json before [`scan`] has checked its depth, string
//! lengths and array lengths against the [`Limits`], and every error carries a path that
//! [`find_span`] can turn back into a byte range of the input.

use std::ops::Range;

use serde_json::{Map, Value};

use crate::error::DecodeErrorKind;
use crate::limits::Limits;
use crate::model::{
    FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, PendingTimeout, PersistedEvent,
    Record, RecordKind, SnapshotDeletion,
};
use crate::path::{FieldError, Path, Seg};

/// Containers serde_json nests before its recursion limit (128) stops it.
const SERDE_MAX_DEPTH: usize = 127;

/// What a scan is for.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Only enforce the limits.
    Check,
    /// Also report the byte range of the value at this path.
    Find(&'a [Seg]),
    /// Report the path of the value being read at this byte offset.
    PathAt(usize),
}

struct Frame {
    is_obj: bool,
    count: usize,
    key: Option<Range<usize>>,
    expect_key: bool,
    value_start: usize,
}

#[derive(Default)]
struct Outcome {
    span: Option<Range<usize>>,
    path_at: Option<Path>,
}

/// Checks `input` against `limits` without building anything. `base_depth` is the depth of
/// the container `input` sits in (0 for a whole record); errors carry `prefix` + the path
/// inside `input`, with a range relative to `input`.
pub(crate) fn check_limits(
    input: &[u8],
    base_depth: usize,
    limits: &Limits,
    prefix: &Path,
) -> Result<(), FieldError> {
    scan(input, base_depth, limits, prefix, Mode::Check).map(|_| ())
}

/// Byte range of the value at `target` in `input` (which already passed [`check_limits`]).
pub(crate) fn find_span(input: &[u8], target: &[Seg]) -> Option<Range<usize>> {
    if target.is_empty() {
        return Some(0..input.len());
    }
    scan(input, 0, &unbounded(), &Path::root(), Mode::Find(target))
        .ok()
        .and_then(|o| o.span)
}

fn path_at(input: &[u8], offset: usize, prefix: &Path) -> Path {
    scan(input, 0, &unbounded(), prefix, Mode::PathAt(offset))
        .ok()
        .and_then(|o| o.path_at)
        .unwrap_or_else(|| prefix.clone())
}

fn unbounded() -> Limits {
    Limits {
        max_record_bytes: usize::MAX,
        max_depth: usize::MAX,
        max_string_bytes: usize::MAX,
        max_array_len: usize::MAX,
    }
}

fn path_of(input: &[u8], prefix: &Path, frames: &[Frame]) -> Path {
    let mut p = prefix.clone();
    for f in frames {
        if f.is_obj {
            if let Some(k) = &f.key {
                let bytes = input.get(k.clone()).unwrap_or_default();
                p.0.push(Seg::Key(String::from_utf8_lossy(bytes).into_owned()));
            }
        } else if f.count > 0 {
            p.0.push(Seg::Index(f.count - 1));
        }
    }
    p
}

fn frames_match(input: &[u8], frames: &[Frame], target: &[Seg]) -> bool {
    frames.len() == target.len()
        && frames.iter().zip(target).all(|(f, seg)| match seg {
            Seg::Key(k) => {
                f.is_obj
                    && f.key
                        .as_ref()
                        .and_then(|r| input.get(r.clone()))
                        .is_some_and(|b| b == k.as_bytes())
            }
            Seg::Index(n) => !f.is_obj && f.count == n + 1,
        })
}

fn limit_error(path: Path, expected: String, found: String, range: Range<usize>) -> FieldError {
    FieldError {
        kind: DecodeErrorKind::LimitExceeded,
        path,
        expected,
        found,
        inner: Some(range),
        base: None,
    }
}

fn scan(
    input: &[u8],
    base_depth: usize,
    limits: &Limits,
    prefix: &Path,
    mode: Mode<'_>,
) -> Result<Outcome, FieldError> {
    let n = input.len();
    let mut i = 0;
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Outcome::default();
    // serde_json refuses more than 127 nested containers below the value it parses.
    let max_depth = limits
        .max_depth
        .min(base_depth.saturating_add(SERDE_MAX_DEPTH));

    // Called when a value starts at `start` inside the current top frame.
    let begin_value = |stack: &mut Vec<Frame>, start: usize| -> Result<(), FieldError> {
        let len = stack.len();
        if let Some(top) = stack.last_mut() {
            top.value_start = start;
            if !top.is_obj {
                top.count += 1;
                if top.count > limits.max_array_len {
                    let count = top.count;
                    let path = path_of(input, prefix, &stack[..len - 1]);
                    return Err(limit_error(
                        path,
                        format!("an array of at most {} elements", limits.max_array_len),
                        format!("at least {count} elements"),
                        start..start,
                    ));
                }
            }
        }
        Ok(())
    };
    let end_value = |stack: &[Frame], end: usize, out: &mut Outcome| {
        if let Mode::Find(target) = mode
            && let Some(top) = stack.last()
            && frames_match(input, stack, target)
        {
            out.span = Some(top.value_start..end);
        }
    };

    while i < n {
        if let Mode::PathAt(offset) = mode
            && i >= offset
        {
            out.path_at = Some(path_of(input, prefix, &stack));
            return Ok(out);
        }
        match input[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => i += 1,
            b',' => {
                if let Some(top) = stack.last_mut()
                    && top.is_obj
                {
                    top.expect_key = true;
                    top.key = None;
                }
                i += 1;
            }
            b @ (b'{' | b'[') => {
                begin_value(&mut stack, i)?;
                let depth = base_depth + stack.len() + 1;
                if depth > max_depth {
                    return Err(limit_error(
                        path_of(input, prefix, &stack),
                        format!("at most {max_depth} levels of nesting"),
                        format!("level {depth}"),
                        i..i + 1,
                    ));
                }
                stack.push(Frame {
                    is_obj: b == b'{',
                    count: 0,
                    key: None,
                    expect_key: b == b'{',
                    value_start: i,
                });
                i += 1;
            }
            b'}' | b']' => {
                if stack.pop().is_none() {
                    break;
                }
                i += 1;
                end_value(&stack, i, &mut out);
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < n {
                    match input[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let end = (i + 1).min(n);
                i = end;
                let len = end.saturating_sub(start + 2);
                let is_key = stack.last().is_some_and(|f| f.is_obj && f.expect_key);
                if is_key {
                    if len > limits.max_string_bytes {
                        return Err(limit_error(
                            path_of(input, prefix, &stack),
                            format!("object keys of at most {} bytes", limits.max_string_bytes),
                            format!("a key of {len} bytes"),
                            start..end,
                        ));
                    }
                    if let Some(top) = stack.last_mut() {
                        let key_end = end.saturating_sub(1).max(start + 1).min(n);
                        top.key = Some((start + 1).min(n)..key_end);
                        top.expect_key = false;
                    }
                } else {
                    begin_value(&mut stack, start)?;
                    if len > limits.max_string_bytes {
                        return Err(limit_error(
                            path_of(input, prefix, &stack),
                            format!("a string of at most {} bytes", limits.max_string_bytes),
                            format!("a string of {len} bytes"),
                            start..end,
                        ));
                    }
                    end_value(&stack, end, &mut out);
                }
            }
            _ => {
                let start = i;
                while i < n
                    && !matches!(
                        input[i],
                        b',' | b']'
                            | b'}'
                            | b' '
                            | b'\t'
                            | b'\n'
                            | b'\r'
                            | b':'
                            | b'"'
                            | b'{'
                            | b'['
                    )
                {
                    i += 1;
                }
                begin_value(&mut stack, start)?;
                end_value(&stack, i, &mut out);
            }
        }
    }
    if let Mode::PathAt(_) = mode {
        out.path_at = Some(path_of(input, prefix, &stack));
    }
    Ok(out)
}

/// Parses JSON text that passed [`check_limits`]; a syntax error becomes a [`FieldError`] at
/// `prefix` + the path being read, with the range of the offending byte relative to `input`.
pub(crate) fn parse(input: &[u8], prefix: &Path) -> Result<Value, FieldError> {
    serde_json::from_slice::<Value>(input).map_err(|e| syntax_error(input, prefix, &e))
}

fn syntax_error(input: &[u8], prefix: &Path, e: &serde_json::Error) -> FieldError {
    let n = input.len();
    let range = if e.is_eof() {
        n..n
    } else {
        // serde_json reports 1-based lines and the column as bytes since the line start.
        let mut line_start = 0;
        let mut line = 1;
        while line < e.line() {
            match input[line_start..].iter().position(|&b| b == b'\n') {
                Some(p) => line_start += p + 1,
                None => break,
            }
            line += 1;
        }
        let offset = (line_start + e.column()).min(n);
        offset.saturating_sub(1)..offset
    };
    let message = e.to_string();
    let message = match message.rsplit_once(" at line ") {
        Some((m, _)) => m.to_owned(),
        None => message,
    };
    FieldError {
        kind: DecodeErrorKind::Malformed,
        path: path_at(input, range.start, prefix),
        expected: "valid JSON text".to_owned(),
        found: message,
        inner: Some(range),
        base: None,
    }
}

/// Parses embedded JSON text (a protobuf `*_json` field) under the same limits.
pub(crate) fn parse_embedded(
    input: &[u8],
    base_depth: usize,
    limits: &Limits,
    path: &Path,
) -> Result<Value, FieldError> {
    let relative = |e: FieldError| FieldError {
        base: Some(path.clone()),
        ..e
    };
    check_limits(input, base_depth, limits, path).map_err(relative)?;
    parse(input, path).map_err(relative)
}

/// A short, deterministic description of a JSON value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.is_empty() => "an empty string".to_owned(),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) if a.len() == 1 => "an array of 1 element".to_owned(),
        Value::Array(a) => format!("an array of {} elements", a.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

const ABSENT: &str = "nothing (the field is absent)";

/// The known fields of one JSON object, taken out in one pass (unknown keys are returned).
struct Fields<'p> {
    values: Vec<Option<Value>>,
    names: &'static [&'static str],
    path: &'p Path,
}

impl<'p> Fields<'p> {
    fn split(
        map: Map<String, Value>,
        names: &'static [&'static str],
        path: &'p Path,
    ) -> (Self, Map<String, Value>) {
        let mut values = vec![None; names.len()];
        let mut rest = Map::new();
        for (k, v) in map {
            match names.iter().position(|n| *n == k) {
                Some(i) => values[i] = Some(v),
                None => {
                    rest.insert(k, v);
                }
            }
        }
        (
            Fields {
                values,
                names,
                path,
            },
            rest,
        )
    }

    fn take(&mut self, name: &str) -> (Option<Value>, Path) {
        let i = self
            .names
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX);
        let v = self.values.get_mut(i).and_then(Option::take);
        (v, self.path.key(name))
    }

    fn string(&mut self, name: &str, non_empty: bool) -> Result<String, FieldError> {
        let expected = if non_empty {
            "a non-empty string"
        } else {
            "a string"
        };
        match self.take(name) {
            (Some(Value::String(s)), p) => {
                if non_empty && s.is_empty() {
                    Err(FieldError::malformed(p, expected, "an empty string"))
                } else {
                    Ok(s)
                }
            }
            (Some(v), p) => Err(FieldError::malformed(p, expected, describe(&v))),
            (None, p) => Err(FieldError::malformed(p, expected, ABSENT)),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, FieldError> {
        match self.take(name) {
            (None | Some(Value::Null), _) => Ok(None),
            (Some(Value::String(s)), _) => Ok(Some(s)),
            (Some(v), p) => Err(FieldError::malformed(p, "a string or null", describe(&v))),
        }
    }

    fn millis(&mut self, name: &str) -> Result<i64, FieldError> {
        match self.take(name) {
            (Some(v), p) => to_i64(v, p),
            (None, p) => Err(FieldError::malformed(p, INTEGER, ABSENT)),
        }
    }

    fn opt_millis(&mut self, name: &str) -> Result<Option<i64>, FieldError> {
        match self.take(name) {
            (None | Some(Value::Null), _) => Ok(None),
            (Some(v), p) => to_i64(v, p).map(Some),
        }
    }

    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, FieldError> {
        match self.take(name) {
            (None | Some(Value::Null), _) => Ok(None),
            (Some(Value::Number(n)), p) => match n.as_u64() {
                Some(u) => Ok(Some(u)),
                None => Err(FieldError::malformed(
                    p,
                    UNSIGNED,
                    format!("the number {n}"),
                )),
            },
            (Some(v), p) => Err(FieldError::malformed(p, UNSIGNED, describe(&v))),
        }
    }

    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.take(name) {
            (None | Some(Value::Null), _) => Ok(None),
            (Some(Value::Bool(b)), _) => Ok(Some(b)),
            (Some(v), p) => Err(FieldError::malformed(p, "a boolean or null", describe(&v))),
        }
    }

    fn strings(&mut self, name: &str) -> Result<Vec<String>, FieldError> {
        match self.take(name) {
            (None | Some(Value::Null), _) => Ok(Vec::new()),
            (Some(Value::Array(items)), p) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(FieldError::malformed(
                        p.index(i),
                        "a string",
                        describe(&other),
                    )),
                })
                .collect(),
            (Some(v), p) => Err(FieldError::malformed(
                p,
                "an array of strings, null or nothing",
                describe(&v),
            )),
        }
    }

    fn value(&mut self, name: &str) -> Result<Value, FieldError> {
        match self.take(name) {
            (Some(v), _) => Ok(v),
            (None, p) => Err(FieldError::malformed(p, "a JSON value", ABSENT)),
        }
    }

    fn opt_value(&mut self, name: &str) -> Option<Value> {
        match self.take(name) {
            (None | Some(Value::Null), _) => None,
            (Some(v), _) => Some(v),
        }
    }

    fn object(&mut self, name: &str) -> Result<(Map<String, Value>, Path), FieldError> {
        match self.take(name) {
            (Some(Value::Object(m)), p) => Ok((m, p)),
            (Some(v), p) => Err(FieldError::malformed(p, "an object", describe(&v))),
            (None, p) => Err(FieldError::malformed(p, "an object", ABSENT)),
        }
    }
}

const INTEGER: &str = "an integer (epoch milliseconds)";
const UNSIGNED: &str = "a non-negative integer or null";

fn to_i64(v: Value, p: Path) -> Result<i64, FieldError> {
    match &v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| FieldError::malformed(p, INTEGER, format!("the number {n}"))),
        _ => Err(FieldError::malformed(p, INTEGER, describe(&v))),
    }
}

/// A payload-like value: absent or null reads as `{}`, anything but an object is an error.
pub(crate) fn payload_value(v: Option<Value>, p: Path) -> Result<Value, FieldError> {
    match v {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(v) => Err(FieldError::malformed(
            p,
            "a JSON object or null",
            describe(&v),
        )),
    }
}

const EVENT_FIELDS: &[&str] = &[
    "id",
    "instanceId",
    "machineName",
    "componentName",
    "event",
    "stateBefore",
    "stateAfter",
    "persistedAt",
    "causedBy",
    "caused",
    "sourceComponentName",
    "targetComponentName",
    "publicMemberSnapshot",
    "sequence",
];
const FSM_EVENT_FIELDS: &[&str] = &["type", "payload", "timestamp"];
const SNAPSHOT_FIELDS: &[&str] = &[
    "instance",
    "snapshotAt",
    "lastEventId",
    "pendingTimeouts",
    "sequence",
];
const INSTANCE_FIELDS: &[&str] = &[
    "id",
    "machineName",
    "currentState",
    "context",
    "publicMember",
    "internalMember",
    "createdAt",
    "updatedAt",
    "status",
    "isEntryPoint",
    "parentInstanceId",
    "parentMachineName",
];
const TIMEOUT_FIELDS: &[&str] = &["stateKey", "eventType", "remainingMs"];
const DELETION_FIELDS: &[&str] = &["instanceId", "snapshotDeletedAt", "sequence"];

/// Which kind a header-less JSON record is, judged by its shape.
pub(crate) fn kind_by_shape(root: &Map<String, Value>) -> Result<RecordKind, FieldError> {
    if root.contains_key("instance") {
        Ok(RecordKind::Snapshot)
    } else if root.contains_key("snapshotDeletedAt") {
        // Checked before the event rule: a deletion also has `instanceId`.
        Ok(RecordKind::SnapshotDeletion)
    } else if root.contains_key("instanceId") || root.contains_key("event") {
        Ok(RecordKind::Event)
    } else {
        Err(FieldError::malformed(
            Path::root(),
            "an event (an object with `instanceId` and `event`) or a snapshot (an object with `instance`)",
            "an object with neither `instanceId`, `event` nor `instance`",
        ))
    }
}

/// Converts a parsed JSON record of a known kind into the typed model.
pub(crate) fn record_from_value(v: Value, kind: Option<RecordKind>) -> Result<Record, FieldError> {
    let root = match v {
        Value::Object(m) => m,
        other => {
            return Err(FieldError::malformed(
                Path::root(),
                "a JSON object",
                describe(&other),
            ));
        }
    };
    let kind = match kind {
        Some(k) => k,
        None => kind_by_shape(&root)?,
    };
    match kind {
        RecordKind::Event => event_from_map(root).map(Record::Event),
        RecordKind::Snapshot => snapshot_from_map(root).map(Record::Snapshot),
        RecordKind::SnapshotDeletion => deletion_from_map(root).map(Record::SnapshotDeletion),
    }
}

fn deletion_from_map(root: Map<String, Value>) -> Result<SnapshotDeletion, FieldError> {
    let path = Path::root();
    let (mut f, _unknown) = Fields::split(root, DELETION_FIELDS, &path);
    Ok(SnapshotDeletion {
        instance_id: f.string("instanceId", true)?,
        snapshot_deleted_at: f.millis("snapshotDeletedAt")?,
        sequence: f.opt_u64("sequence")?,
    })
}

fn event_from_map(root: Map<String, Value>) -> Result<PersistedEvent, FieldError> {
    let path = Path::root();
    let (mut f, _unknown) = Fields::split(root, EVENT_FIELDS, &path);
    let id = f.string("id", true)?;
    let instance_id = f.string("instanceId", true)?;
    let machine_name = f.string("machineName", true)?;
    let component_name = f.string("componentName", false)?;
    let (event_map, event_path) = f.object("event")?;
    let event = fsm_event_from_map(event_map, &event_path)?;
    Ok(PersistedEvent {
        id,
        instance_id,
        machine_name,
        component_name,
        event,
        state_before: f.string("stateBefore", false)?,
        state_after: f.string("stateAfter", false)?,
        persisted_at: f.millis("persistedAt")?,
        caused_by: f.strings("causedBy")?,
        caused: f.strings("caused")?,
        source_component_name: f.opt_string("sourceComponentName")?,
        target_component_name: f.opt_string("targetComponentName")?,
        public_member_snapshot: f.opt_value("publicMemberSnapshot"),
        sequence: f.opt_u64("sequence")?,
    })
}

/// Converts the `event` object; keys other than `type`, `payload` and `timestamp` are kept in
/// `extra`, in their original order.
pub(crate) fn fsm_event_from_map(
    map: Map<String, Value>,
    path: &Path,
) -> Result<FsmEvent, FieldError> {
    let (mut f, extra) = Fields::split(map, FSM_EVENT_FIELDS, path);
    let event_type = f.string("type", true)?;
    let (payload, payload_path) = f.take("payload");
    Ok(FsmEvent {
        event_type,
        payload: payload_value(payload, payload_path)?,
        timestamp: f.opt_millis("timestamp")?,
        extra,
    })
}

fn snapshot_from_map(root: Map<String, Value>) -> Result<InstanceSnapshot, FieldError> {
    let path = Path::root();
    let (mut f, _unknown) = Fields::split(root, SNAPSHOT_FIELDS, &path);
    let (instance_map, instance_path) = f.object("instance")?;
    let instance = instance_from_map(instance_map, &instance_path)?;
    let snapshot_at = f.millis("snapshotAt")?;
    let last_event_id = f.string("lastEventId", false)?;
    let pending_timeouts = match f.take("pendingTimeouts") {
        (None | Some(Value::Null), _) => None,
        (Some(Value::Array(items)), p) => Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| timeout_from_value(v, p.index(i)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        (Some(v), p) => {
            return Err(FieldError::malformed(
                p,
                "an array of pending timeouts or null",
                describe(&v),
            ));
        }
    };
    Ok(InstanceSnapshot {
        instance,
        snapshot_at,
        last_event_id,
        pending_timeouts,
        sequence: f.opt_u64("sequence")?,
    })
}

fn instance_from_map(map: Map<String, Value>, path: &Path) -> Result<FsmInstance, FieldError> {
    let (mut f, _unknown) = Fields::split(map, INSTANCE_FIELDS, path);
    let id = f.string("id", true)?;
    let machine_name = f.string("machineName", true)?;
    let current_state = f.string("currentState", false)?;
    let context = f.value("context")?;
    let public_member = f.opt_value("publicMember");
    let internal_member = f.opt_value("internalMember");
    let created_at = f.millis("createdAt")?;
    let updated_at = f.millis("updatedAt")?;
    let status = match f.take("status") {
        (Some(Value::String(s)), p) => match s.as_str() {
            "active" => InstanceStatus::Active,
            "completed" => InstanceStatus::Completed,
            "error" => InstanceStatus::Error,
            _ => {
                return Err(FieldError::malformed(
                    p,
                    STATUS,
                    describe(&Value::String(s)),
                ));
            }
        },
        (Some(v), p) => return Err(FieldError::malformed(p, STATUS, describe(&v))),
        (None, p) => return Err(FieldError::malformed(p, STATUS, ABSENT)),
    };
    Ok(FsmInstance {
        id,
        machine_name,
        current_state,
        context,
        public_member,
        internal_member,
        created_at,
        updated_at,
        status,
        is_entry_point: f.opt_bool("isEntryPoint")?,
        parent_instance_id: f.opt_string("parentInstanceId")?,
        parent_machine_name: f.opt_string("parentMachineName")?,
    })
}

const STATUS: &str = "one of \"active\", \"completed\", \"error\"";

fn timeout_from_value(v: Value, path: Path) -> Result<PendingTimeout, FieldError> {
    let map = match v {
        Value::Object(m) => m,
        other => return Err(FieldError::malformed(path, "an object", describe(&other))),
    };
    let (mut f, _unknown) = Fields::split(map, TIMEOUT_FIELDS, &path);
    Ok(PendingTimeout {
        state_key: f.string("stateKey", false)?,
        event_type: f.string("eventType", false)?,
        remaining_ms: match f.take("remainingMs") {
            (Some(v), p) => to_i64(v, p).map_err(|e| FieldError {
                expected: "an integer (milliseconds)".to_owned(),
                ..e
            })?,
            (None, p) => {
                return Err(FieldError::malformed(
                    p,
                    "an integer (milliseconds)",
                    ABSENT,
                ));
            }
        },
    })
}
