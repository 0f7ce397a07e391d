//! The hand-written record types every crate codes against.
//!
//! Invariant: the serde shape of these types is the xclog JSON encoding, field for field
//! compatible with xcomponent-ai's `JSON.stringify(persistedEvent)` / `JSON.stringify(snapshot)`
//! (camelCase names, absent optional fields omitted).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The event that caused a transition (xcomponent-ai `FSMEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsmEvent {
    /// Event name, e.g. `SUBMIT` or `INSTANCE_CREATED` (JSON `type`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event data; a JSON object on the wire.
    #[serde(default = "empty_object", deserialize_with = "null_as_empty_object")]
    pub payload: Value,
    /// Epoch milliseconds chosen by the sender; `None` when the sender set none
    /// (xcomponent-ai's `sendToSelf` and dashboard triggers omit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Any other keys of the event object, kept verbatim (e.g. `_sourceComponent`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One state transition of one instance (xcomponent-ai `PersistedEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedEvent {
    /// Event id: a UUIDv7 from xclog producers, an opaque string from other runtimes.
    pub id: String,
    /// The instance this event belongs to; also the Kafka key.
    pub instance_id: String,
    /// State machine name.
    pub machine_name: String,
    /// Component whose runtime persisted the event.
    pub component_name: String,
    /// The event as received.
    pub event: FsmEvent,
    /// State before the transition; `""` for creation events.
    pub state_before: String,
    /// State after the transition.
    pub state_after: String,
    /// Epoch milliseconds when the runtime persisted the event.
    pub persisted_at: i64,
    /// Ids of the events that caused this one (absent or `null` on the wire reads as empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub caused_by: Vec<String>,
    /// Ids of the events this one caused (absent or `null` on the wire reads as empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub caused: Vec<String>,
    /// Component that sent the event across components, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_component_name: Option<String>,
    /// Target component, if any (never set by xcomponent-ai itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_component_name: Option<String>,
    /// Copy of the business data after the transition. JSON `null` reads as `None`, and
    /// `Some(Value::Null)` is written as absent.
    #[serde(default, skip_serializing_if = "is_none_or_null")]
    pub public_member_snapshot: Option<Value>,
    /// Per-instance sequence number, strictly increasing per instance; `None` for runtimes
    /// that do not number their records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// Lifecycle status of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// The instance is running (`"active"`).
    Active,
    /// The instance reached a final state (`"completed"`).
    Completed,
    /// The instance reached an error state (`"error"`).
    Error,
}

impl InstanceStatus {
    /// The wire spelling: `active`, `completed` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "active",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Error => "error",
        }
    }
}

/// The state of one instance (xcomponent-ai `FSMInstance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsmInstance {
    /// Instance id; also the Kafka key.
    pub id: String,
    /// State machine name.
    pub machine_name: String,
    /// Current state.
    pub current_state: String,
    /// Business data for machines without a public member type (`{}` otherwise).
    pub context: Value,
    /// Business data for machines with a public member type. JSON `null` reads as `None`, and
    /// `Some(Value::Null)` is written as absent.
    #[serde(default, skip_serializing_if = "is_none_or_null")]
    pub public_member: Option<Value>,
    /// Internal data. JSON `null` reads as `None`, and `Some(Value::Null)` is written as absent.
    #[serde(default, skip_serializing_if = "is_none_or_null")]
    pub internal_member: Option<Value>,
    /// Epoch milliseconds of creation.
    pub created_at: i64,
    /// Epoch milliseconds of the last transition.
    pub updated_at: i64,
    /// Lifecycle status.
    pub status: InstanceStatus,
    /// Whether this is an entry-point instance (never disposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_entry_point: Option<bool>,
    /// Parent instance for children created by inter-machine transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_instance_id: Option<String>,
    /// Parent machine for children created by inter-machine transitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_machine_name: Option<String>,
}

/// A timeout that was pending when a snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTimeout {
    /// The state the timeout belongs to.
    pub state_key: String,
    /// The event the timeout fires.
    pub event_type: String,
    /// Milliseconds left when the snapshot was taken.
    pub remaining_ms: i64,
}

/// A snapshot of one instance (xcomponent-ai `InstanceSnapshot`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSnapshot {
    /// The instance state.
    pub instance: FsmInstance,
    /// Epoch milliseconds when the snapshot was built.
    pub snapshot_at: i64,
    /// Id of the last event applied; `""` when the runtime had no event sourcing.
    pub last_event_id: String,
    /// Pending timeouts; `None` when the runtime did not record them (xcomponent-ai never does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeouts: Option<Vec<PendingTimeout>>,
    /// Per-instance sequence number of the last event included, if the runtime numbers records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// The deletion of an instance's stored snapshot. Projectors apply it in log order: the
/// snapshot is gone until a later snapshot of the same instance brings one back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDeletion {
    /// The instance whose snapshot is deleted; also the Kafka key.
    pub instance_id: String,
    /// Epoch milliseconds when the snapshot was deleted.
    pub snapshot_deleted_at: i64,
    /// Per-instance sequence number of the instance's last event when the snapshot was
    /// deleted, if the runtime numbers records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// One record on the log: an event, a snapshot, or a snapshot deletion of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    /// A state transition.
    Event(PersistedEvent),
    /// A snapshot of an instance.
    Snapshot(InstanceSnapshot),
    /// The deletion of an instance's snapshot.
    SnapshotDeletion(SnapshotDeletion),
}

/// Which of the three record kinds a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// A [`PersistedEvent`] (header value `event`).
    Event,
    /// An [`InstanceSnapshot`] (header value `snapshot`).
    Snapshot,
    /// A [`SnapshotDeletion`] (header value `snapshot-deletion`).
    SnapshotDeletion,
}

impl RecordKind {
    /// The value of the `xclog-kind` header: `event`, `snapshot` or `snapshot-deletion`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event => "event",
            RecordKind::Snapshot => "snapshot",
            RecordKind::SnapshotDeletion => "snapshot-deletion",
        }
    }
}

impl Record {
    /// The instance this record belongs to (the Kafka key).
    pub fn instance_id(&self) -> &str {
        match self {
            Record::Event(e) => &e.instance_id,
            Record::Snapshot(s) => &s.instance.id,
            Record::SnapshotDeletion(d) => &d.instance_id,
        }
    }

    /// Event, snapshot or snapshot deletion.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Event(_) => RecordKind::Event,
            Record::Snapshot(_) => RecordKind::Snapshot,
            Record::SnapshotDeletion(_) => RecordKind::SnapshotDeletion,
        }
    }

    /// The per-instance sequence number, if the producing runtime set one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            Record::Event(e) => e.sequence,
            Record::Snapshot(s) => s.sequence,
            Record::SnapshotDeletion(d) => d.sequence,
        }
    }
}

impl From<PersistedEvent> for Record {
    fn from(e: PersistedEvent) -> Self {
        Record::Event(e)
    }
}

impl From<InstanceSnapshot> for Record {
    fn from(s: InstanceSnapshot) -> Self {
        Record::Snapshot(s)
    }
}

impl From<SnapshotDeletion> for Record {
    fn from(d: SnapshotDeletion) -> Self {
        Record::SnapshotDeletion(d)
    }
}

fn is_none_or_null(v: &Option<Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_as_empty_object<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.unwrap_or_else(empty_object))
}
