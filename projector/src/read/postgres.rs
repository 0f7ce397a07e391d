//! PostgreSQL implementation of the read API over the projected tables.

use serde_json::Value;
use sqlx::PgPool;
use xclog_schema::{FsmEvent, FsmInstance, InstanceSnapshot, InstanceStatus, PersistedEvent};

use super::cursor::{log_cursor, page_of, parse_log_cursor, parse_time_cursor, time_cursor};
use super::{EventPage, EventStore, Page, ReadError, SnapshotPage, SnapshotStore, StoredEvent};
use crate::sink::SourcePosition;

/// Reads the tables written by [`crate::sink::postgres::PgSink`] (and Schema A rows written
/// before the log).
#[derive(Debug, Clone)]
pub struct PgReader {
    pool: PgPool,
}

impl PgReader {
    /// Reads through `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const EVENT_COLUMNS: &str = "id, instance_id, machine_name, component_name, event_type, \
    event_payload, state_before, state_after, persisted_at, caused_by, caused, \
    source_component_name, target_component_name, sequence, event_timestamp, event_extra, \
    public_member_snapshot, source_topic, source_partition, source_offset";

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: String,
    instance_id: String,
    machine_name: String,
    component_name: String,
    event_type: String,
    event_payload: Value,
    state_before: String,
    state_after: String,
    persisted_at: i64,
    caused_by: Option<Vec<String>>,
    caused: Option<Vec<String>>,
    source_component_name: Option<String>,
    target_component_name: Option<String>,
    sequence: Option<i64>,
    event_timestamp: Option<i64>,
    event_extra: Option<Value>,
    public_member_snapshot: Option<Value>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        let extra = match r.event_extra {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let source = match (r.source_topic, r.source_partition, r.source_offset) {
            (Some(topic), Some(partition), Some(offset)) => Some(SourcePosition {
                topic,
                partition,
                offset,
            }),
            _ => None,
        };
        StoredEvent {
            event: PersistedEvent {
                id: r.id,
                instance_id: r.instance_id,
                machine_name: r.machine_name,
                component_name: r.component_name,
                event: FsmEvent {
                    event_type: r.event_type,
                    payload: r.event_payload,
                    timestamp: r.event_timestamp,
                    extra,
                },
                state_before: r.state_before,
                state_after: r.state_after,
                persisted_at: r.persisted_at,
                caused_by: r.caused_by.unwrap_or_default(),
                caused: r.caused.unwrap_or_default(),
                source_component_name: r.source_component_name,
                target_component_name: r.target_component_name,
                public_member_snapshot: r.public_member_snapshot,
                sequence: r.sequence.and_then(|s| u64::try_from(s).ok()),
            },
            source,
        }
    }
}

fn store(e: sqlx::Error) -> ReadError {
    ReadError::Store(Box::new(e))
}

impl PgReader {
    /// Events projected from `topic`, ordered by instance then log order, a page at a time
    /// after the keyset `(instance_id, source_offset, id)` of the previous page's last event
    /// (used by `xclog verify` to stream a whole store with bounded memory).
    pub async fn events_in_instance_order(
        &self,
        topic: &str,
        after: Option<(&str, i64, &str)>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let (instance, offset, id) = after.unwrap_or(("", i64::MIN, ""));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM fsm_events \
             WHERE source_topic = $1 AND source_offset IS NOT NULL \
             AND (instance_id, source_offset, id) > ($2, $3, $4) \
             ORDER BY instance_id, source_offset, id LIMIT $5"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(topic)
            .bind(instance)
            .bind(offset)
            .bind(id)
            .bind(i64::from(limit.clamp(1, super::MAX_PAGE)))
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    /// The pool this reader reads through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl EventStore for PgReader {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, ReadError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM fsm_events WHERE id = $1");
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store)?;
        Ok(row.map(StoredEvent::from))
    }

    async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<StoredEvent>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM fsm_events WHERE id = ANY($1) ORDER BY persisted_at, id"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    async fn events_of_instance(
        &self,
        instance_id: &str,
        page: &Page,
    ) -> Result<EventPage, ReadError> {
        let limit = page.clamped_limit();
        let (offset, at, id) = match &page.after {
            Some(c) => parse_log_cursor(c)?,
            None => (i64::MIN, i64::MIN, String::new()),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM fsm_events WHERE instance_id = $1 \
             AND (COALESCE(source_offset, -1), persisted_at, id) > ($2, $3, $4) \
             ORDER BY COALESCE(source_offset, -1), persisted_at, id LIMIT $5"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(instance_id)
            .bind(offset)
            .bind(at)
            .bind(id)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(page_of(
            rows.into_iter().map(StoredEvent::from).collect(),
            limit,
            log_cursor,
        ))
    }

    async fn events_in_time_range(
        &self,
        from_ms: i64,
        to_ms: i64,
        page: &Page,
    ) -> Result<EventPage, ReadError> {
        let limit = page.clamped_limit();
        let (at, id) = match &page.after {
            Some(c) => parse_time_cursor(c)?,
            None => (i64::MIN, String::new()),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM fsm_events \
             WHERE persisted_at >= $1 AND persisted_at <= $2 AND (persisted_at, id) > ($3, $4) \
             ORDER BY persisted_at, id LIMIT $5"
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(from_ms)
            .bind(to_ms)
            .bind(at)
            .bind(id)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(page_of(
            rows.into_iter().map(StoredEvent::from).collect(),
            limit,
            time_cursor,
        ))
    }

    async fn list_events(&self, page: &Page) -> Result<EventPage, ReadError> {
        self.events_in_time_range(i64::MIN, i64::MAX, page).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<StoredEvent>, ReadError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM fsm_events WHERE $1 = ANY(caused_by) \
             ORDER BY persisted_at, id LIMIT {}",
            super::MAX_PAGE
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    async fn effect_ids(&self, ids: &[String]) -> Result<Vec<(String, String)>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "SELECT parent_id, child_id FROM fsm_causality WHERE parent_id = ANY($1) \
             ORDER BY child_persisted_at, child_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(store)
    }
}

const SNAPSHOT_COLUMNS: &str = "instance_id, machine_name, current_state, status, context, \
    public_member, snapshot_at, last_event_id, pending_timeouts, sequence, internal_member, \
    is_entry_point, parent_instance_id, parent_machine_name, instance_created_at, \
    instance_updated_at";

#[derive(Debug, sqlx::FromRow)]
struct SnapshotRow {
    instance_id: String,
    machine_name: String,
    current_state: String,
    status: String,
    context: Value,
    public_member: Option<Value>,
    snapshot_at: i64,
    last_event_id: String,
    pending_timeouts: Option<Value>,
    sequence: Option<i64>,
    internal_member: Option<Value>,
    is_entry_point: Option<bool>,
    parent_instance_id: Option<String>,
    parent_machine_name: Option<String>,
    instance_created_at: Option<i64>,
    instance_updated_at: Option<i64>,
}

impl TryFrom<SnapshotRow> for InstanceSnapshot {
    type Error = ReadError;

    fn try_from(r: SnapshotRow) -> Result<Self, ReadError> {
        let corrupt = |reason: String| ReadError::Corrupt {
            id: r.instance_id.clone(),
            reason,
        };
        let status = match r.status.as_str() {
            "active" => InstanceStatus::Active,
            "completed" => InstanceStatus::Completed,
            "error" => InstanceStatus::Error,
            other => return Err(corrupt(format!("unknown status {other:?}"))),
        };
        let pending_timeouts = match r.pending_timeouts {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v).map_err(|e| corrupt(format!("pending_timeouts: {e}")))?,
            ),
        };
        Ok(InstanceSnapshot {
            instance: FsmInstance {
                id: r.instance_id.clone(),
                machine_name: r.machine_name,
                current_state: r.current_state,
                context: r.context,
                public_member: r.public_member,
                internal_member: r.internal_member,
                // Schema A rows from before the log have no instance times (spec gap 8).
                created_at: r.instance_created_at.unwrap_or(0),
                updated_at: r.instance_updated_at.unwrap_or(0),
                status,
                is_entry_point: r.is_entry_point,
                parent_instance_id: r.parent_instance_id,
                parent_machine_name: r.parent_machine_name,
            },
            snapshot_at: r.snapshot_at,
            last_event_id: r.last_event_id,
            pending_timeouts,
            sequence: r.sequence.and_then(|s| u64::try_from(s).ok()),
        })
    }
}

impl SnapshotStore for PgReader {
    async fn snapshot(&self, instance_id: &str) -> Result<Option<InstanceSnapshot>, ReadError> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM fsm_snapshots WHERE instance_id = $1");
        let row: Option<SnapshotRow> = sqlx::query_as(&sql)
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store)?;
        row.map(InstanceSnapshot::try_from).transpose()
    }

    async fn list_snapshots(&self, page: &Page) -> Result<SnapshotPage, ReadError> {
        let limit = page.clamped_limit();
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM fsm_snapshots WHERE instance_id > $1 \
             ORDER BY instance_id LIMIT $2"
        );
        let rows: Vec<SnapshotRow> = sqlx::query_as(&sql)
            .bind(page.after.clone().unwrap_or_default())
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        let mut snapshots = rows
            .into_iter()
            .map(InstanceSnapshot::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if snapshots.len() as i64 > limit {
            snapshots.truncate(limit as usize);
            snapshots.last().map(|s| s.instance.id.clone())
        } else {
            None
        };
        Ok(SnapshotPage { snapshots, next })
    }
}
