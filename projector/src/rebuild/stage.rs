//! The rebuild's bulk, loaded set-wise (`xclog rebuild`; `--bulk batches` writes it through
//! the live sink instead).
//!
//! Projecting a whole topic batch by batch repeats, for every batch, work a store built in one
//! go does once: each parent's `caused` is written with its row, then rewritten when a child
//! arrives in a later batch; the instance view is upserted per batch; every row is checked
//! against the event id index. A rebuild knows the whole history before anyone reads the
//! shadow, so it loads it in two steps instead (docs/DESIGN.md, section 8, has the figures):
//!
//! 1. **Stage.** The rebuild's projector writes each batch with one binary `COPY` into staging
//!    tables of the shadow schema (`xclog_stage_events`, `xclog_stage_snapshots`, no index),
//!    in one transaction with the shadow's stored offsets: the same exactly-once batches,
//!    fencing and dead letters as the live sink ([`StageSink`]).
//! 2. **Finish.** Once the shadow holds the topic up to the rebuild's target, one transaction
//!    derives the store from the staged rows with set-based statements ([`finish`]): the
//!    causality edges, the events with their complete `caused`, the newest snapshot per
//!    instance after its last deletion, the instance view; then drops the staging tables.
//!    The secondary indexes are built afterwards, once, as before.
//!
//! The rest of the topic (what arrived meanwhile) goes through the live sink into the finished
//! shadow until it has caught up, then the swap.
//!
//! The staging tables are `UNLOGGED`: they cost no WAL, and PostgreSQL empties them if it
//! crashes. A crash would then leave the shadow's offsets ahead of its staged rows, so a
//! marker row lives in an unlogged table of its own ([`STAGE_MARKER`]): emptied with them, it
//! tells the next run that the staged rows are gone, and the staging starts over
//! ([`StageState::Lost`]). An interrupted rebuild (SIGINT, SIGKILL) keeps them and continues.
//!
//! What the set-based statements derive is what the live sink would have written batch by
//! batch: the first copy of an event id wins (in partition, offset order), `caused` lists the
//! children by (persisted at, id), a snapshot counts only if newer in the instance order
//! (`sink/order.rs`) than the ones since the instance's last deletion. One difference: an
//! instance known only from snapshots (no event) shows the state of its newest snapshot, where
//! the live sink keeps the state of the snapshot that created its row, which depends on where
//! batches were cut.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection as _, Executor as _};
use xclog_schema::Record;

use super::table_exists;
use crate::sink::postgres::{advance_offsets, classify, load_offsets, rows};
use crate::sink::{Sink, SinkError, SinkRecord, WriteBatch, WriteOutcome};

/// Staged event records, one row per record (duplicates included).
pub const STAGE_EVENTS: &str = "xclog_stage_events";
/// Staged snapshot records and snapshot deletions, reduced per batch.
pub const STAGE_SNAPSHOTS: &str = "xclog_stage_snapshots";
/// One row while the staged rows are intact (an unlogged table a crash empties with them).
pub const STAGE_MARKER: &str = "xclog_stage_marker";

/// The staging tables and the marker, in `schema`. The event columns are those of
/// `fsm_events` with the same types and `NOT NULL`s, so `COPY` refuses what the live sink's
/// insert would refuse, in the batch that carries it.
fn create_statements(schema: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS \"{schema}\".{STAGE_EVENTS} (\
             id TEXT NOT NULL, instance_id TEXT NOT NULL, machine_name TEXT NOT NULL, \
             component_name TEXT NOT NULL, event_type TEXT NOT NULL, event_payload JSONB NOT NULL, \
             state_before TEXT NOT NULL, state_after TEXT NOT NULL, persisted_at BIGINT NOT NULL, \
             caused_by TEXT[] NOT NULL, source_component_name TEXT, target_component_name TEXT, \
             sequence BIGINT, event_timestamp BIGINT, event_extra JSONB, \
             public_member_snapshot JSONB, source_topic TEXT NOT NULL, \
             source_partition INTEGER NOT NULL, source_offset BIGINT NOT NULL)"
        ),
        // A deletion row has `deleted` true and only the instance id and position.
        format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS \"{schema}\".{STAGE_SNAPSHOTS} (\
             instance_id TEXT NOT NULL, deleted BOOLEAN NOT NULL, machine_name TEXT, \
             current_state TEXT, status TEXT, context JSONB, public_member JSONB, \
             snapshot_at BIGINT, last_event_id TEXT, pending_timeouts JSONB, sequence BIGINT, \
             internal_member JSONB, is_entry_point BOOLEAN, parent_instance_id TEXT, \
             parent_machine_name TEXT, instance_created_at BIGINT, instance_updated_at BIGINT, \
             source_topic TEXT NOT NULL, source_partition INTEGER NOT NULL, \
             source_offset BIGINT NOT NULL, \
             CHECK (deleted OR (machine_name IS NOT NULL AND current_state IS NOT NULL \
                    AND status IS NOT NULL AND context IS NOT NULL AND snapshot_at IS NOT NULL \
                    AND last_event_id IS NOT NULL)))"
        ),
        format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS \"{schema}\".{STAGE_MARKER} \
             (intact BOOLEAN PRIMARY KEY)"
        ),
        format!("INSERT INTO \"{schema}\".{STAGE_MARKER} VALUES (true) ON CONFLICT DO NOTHING"),
    ]
}

/// Where a shadow's staging stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    /// No staging tables: the shadow is written by the live sink (its bulk is finished, or
    /// it was started without staging).
    Absent,
    /// Staging tables with their marker: staging continues from the shadow's offsets.
    Intact,
    /// Staging tables without their marker: PostgreSQL restarted after a crash and emptied
    /// them; the shadow's offsets no longer describe staged rows.
    Lost,
}

/// Whether `schema` has staging tables, and whether their rows are intact.
pub async fn state(pool: &PgPool, schema: &str) -> Result<StageState, SinkError> {
    if !table_exists(pool, schema, STAGE_EVENTS).await? {
        return Ok(StageState::Absent);
    }
    if !table_exists(pool, schema, STAGE_MARKER).await? {
        return Ok(StageState::Lost);
    }
    let marked: Option<bool> =
        sqlx::query_scalar(&format!("SELECT intact FROM \"{schema}\".{STAGE_MARKER}"))
            .fetch_optional(pool)
            .await
            .map_err(|e| classify(e, "reading the staging marker"))?;
    Ok(if marked == Some(true) {
        StageState::Intact
    } else {
        StageState::Lost
    })
}

/// Creates the staging tables and their marker in `schema` (a fresh shadow), or, after
/// [`StageState::Lost`], empties them and the shadow's offsets so that staging starts over.
pub async fn create(pool: &PgPool, schema: &str) -> Result<(), SinkError> {
    let err = |e| classify(e, "creating the staging tables");
    let mut tx = pool.begin().await.map_err(err)?;
    for statement in create_statements(schema) {
        tx.execute(statement.as_str()).await.map_err(err)?;
    }
    tx.execute(
        format!("TRUNCATE \"{schema}\".{STAGE_EVENTS}, \"{schema}\".{STAGE_SNAPSHOTS}").as_str(),
    )
    .await
    .map_err(err)?;
    tx.execute(format!("DELETE FROM \"{schema}\".xclog_offsets").as_str())
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(())
}

/// Writes batches into the staging tables of the shadow its pool's `search_path` names.
#[derive(Debug, Clone)]
pub struct StageSink {
    pool: PgPool,
    projection: String,
}

impl StageSink {
    /// A sink on `pool`, whose sessions must see the shadow schema only.
    pub fn new(pool: PgPool, projection: impl Into<String>) -> Self {
        Self {
            pool,
            projection: projection.into(),
        }
    }
}

impl Sink for StageSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn load_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        load_offsets(&self.pool, &self.projection, topic, partitions).await
    }

    async fn write(&self, batch: &WriteBatch) -> Result<WriteOutcome, SinkError> {
        let ctx = "staging a batch";
        let err = |e| classify(e, ctx);
        let (events, snapshots) = encode(&batch.records);
        let mut tx = self.pool.begin().await.map_err(err)?;
        advance_offsets(&mut tx, &self.projection, batch).await?;
        let mut outcome = WriteOutcome::default();
        if let Some((rows, data)) = events {
            copy_in(&mut tx, STAGE_EVENTS, data).await.map_err(err)?;
            outcome.events_inserted = rows;
        }
        if let Some((rows, data)) = snapshots {
            copy_in(&mut tx, STAGE_SNAPSHOTS, data).await.map_err(err)?;
            outcome.snapshots_applied = rows;
        }
        tx.commit().await.map_err(err)?;
        Ok(outcome)
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        rows::check(record)
    }
}

/// Sends `data` (binary `COPY` data) into `table` of the transaction's `search_path`.
async fn copy_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &str,
    data: Vec<u8>,
) -> Result<u64, sqlx::Error> {
    let mut copy = tx
        .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
        .await?;
    copy.send(data).await?;
    copy.finish().await
}

/// `COPY ... (FORMAT binary)` data: a header, tuples of length-prefixed fields in network byte
/// order, a trailer (PostgreSQL's "COPY" reference, "Binary Format").
struct CopyData {
    buf: Vec<u8>,
    rows: u64,
}

/// Rows of one `COPY`, and their data.
type Copied = (u64, Vec<u8>);

/// `text`'s type oid, which a binary array names for its elements.
const TEXT_OID: u32 = 25;

impl CopyData {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, rows: 0 }
    }

    fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(b);
    }

    fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_be_bytes());
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }

    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_be_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.bytes(&[u8::from(v)]);
    }

    fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            Some(v) => self.bool(v),
            None => self.null(),
        }
    }

    /// `jsonb`: a format version byte (1), then the JSON text.
    fn jsonb<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.push(1);
        // Serializing a `serde_json::Value` or a map of them into a Vec cannot fail.
        serde_json::to_writer(&mut self.buf, v).expect("JSON into memory");
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn opt_jsonb<T: serde::Serialize + ?Sized>(&mut self, v: Option<&T>) {
        match v {
            Some(v) => self.jsonb(v),
            None => self.null(),
        }
    }

    /// A one-dimensional `text[]` (an empty one has no dimension).
    fn text_array(&mut self, items: &[String]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        let ndim: i32 = if items.is_empty() { 0 } else { 1 };
        self.buf.extend_from_slice(&ndim.to_be_bytes());
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // no NULL element
        self.buf.extend_from_slice(&TEXT_OID.to_be_bytes());
        if ndim == 1 {
            self.buf
                .extend_from_slice(&(items.len() as i32).to_be_bytes());
            self.buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for item in items {
                self.text(item);
            }
        }
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The finished data and its row count, or `None` without rows.
    fn finish(mut self) -> Option<Copied> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        (self.rows > 0).then_some((self.rows, self.buf))
    }
}

/// The `COPY` data of a batch: every event record; per instance, its last deletion in the
/// batch and the newest snapshot after it (the rest cannot count, [`crate::sink::snapshot_plan`]).
fn encode(records: &[SinkRecord]) -> (Option<Copied>, Option<Copied>) {
    let mut events = CopyData::new();
    for r in records {
        if let Record::Event(e) = &r.record {
            events.row(19);
            events.text(&e.id);
            events.text(&e.instance_id);
            events.text(&e.machine_name);
            events.text(&e.component_name);
            events.text(&e.event.event_type);
            events.jsonb(&e.event.payload);
            events.text(&e.state_before);
            events.text(&e.state_after);
            events.i64(e.persisted_at);
            events.text_array(&e.caused_by);
            events.opt_text(e.source_component_name.as_deref());
            events.opt_text(e.target_component_name.as_deref());
            events.opt_i64(e.sequence.and_then(|s| i64::try_from(s).ok()));
            events.opt_i64(e.event.timestamp);
            events.opt_jsonb((!e.event.extra.is_empty()).then_some(&e.event.extra));
            events.opt_jsonb(e.public_member_snapshot.as_ref());
            events.text(&r.source.topic);
            events.i32(r.source.partition);
            events.i64(r.source.offset);
        }
    }

    let mut snapshots = CopyData::new();
    let mut last_deletion: BTreeMap<&str, &SinkRecord> = BTreeMap::new();
    for r in records {
        if let Record::SnapshotDeletion(d) = &r.record {
            last_deletion.insert(&d.instance_id, r);
        }
    }
    for (instance_id, r) in last_deletion {
        snapshots.row(20);
        snapshots.text(instance_id);
        snapshots.bool(true);
        for _ in 0..15 {
            snapshots.null();
        }
        snapshots.text(&r.source.topic);
        snapshots.i32(r.source.partition);
        snapshots.i64(r.source.offset);
    }
    for (s, r) in crate::sink::snapshot_plan(records).snapshots {
        let i = &s.instance;
        snapshots.row(20);
        snapshots.text(&i.id);
        snapshots.bool(false);
        snapshots.text(&i.machine_name);
        snapshots.text(&i.current_state);
        snapshots.text(i.status.as_str());
        snapshots.jsonb(&i.context);
        snapshots.opt_jsonb(i.public_member.as_ref());
        snapshots.i64(s.snapshot_at);
        snapshots.text(&s.last_event_id);
        snapshots.opt_jsonb(s.pending_timeouts.as_ref());
        snapshots.opt_i64(s.sequence.and_then(|q| i64::try_from(q).ok()));
        snapshots.opt_jsonb(i.internal_member.as_ref());
        snapshots.opt_bool(i.is_entry_point);
        snapshots.opt_text(i.parent_instance_id.as_deref());
        snapshots.opt_text(i.parent_machine_name.as_deref());
        snapshots.i64(i.created_at);
        snapshots.i64(i.updated_at);
        snapshots.text(&r.source.topic);
        snapshots.i32(r.source.partition);
        snapshots.i64(r.source.offset);
    }
    (events.finish(), snapshots.finish())
}

/// How long each step of [`finish`] took, for its log line.
struct Steps {
    last: Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            took: Vec::new(),
        }
    }

    fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.took.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.took.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step} {:.2}s", took.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Derives the store from the staged rows and drops the staging tables, in one transaction
/// on `conn` (whose `search_path` is the shadow schema, whose store tables are empty but for
/// the offsets). Returns the events written.
pub async fn finish(conn: &mut PgConnection, schema: &str) -> Result<u64, SinkError> {
    let err = |e| classify(e, "deriving the rebuilt store from the staged rows");
    let mut tx = conn.begin().await.map_err(err)?;
    let mut steps = Steps::new();
    // Sorts and hashes of the whole history: more memory than a batch needs.
    tx.execute("SET LOCAL work_mem = '256MB'")
        .await
        .map_err(err)?;
    steps.done("settings");
    // Event ids staged more than once (a producer retry, a republished range): rare, so the
    // first-copy rule is applied to them alone.
    let repeated = tx
        .execute(
            "CREATE TEMP TABLE xclog_stage_repeated ON COMMIT DROP AS \
             SELECT id FROM xclog_stage_events GROUP BY id HAVING count(*) > 1",
        )
        .await
        .map_err(err)?
        .rows_affected();
    let winners = if repeated == 0 {
        "SELECT * FROM xclog_stage_events".to_owned()
    } else {
        tx.execute(
            "CREATE TEMP TABLE xclog_stage_losers ON COMMIT DROP AS \
             SELECT ctid AS row FROM (SELECT s.ctid, row_number() OVER (PARTITION BY s.id \
                 ORDER BY s.source_partition, s.source_offset) AS n \
               FROM xclog_stage_events s JOIN xclog_stage_repeated r USING (id)) x \
             WHERE n > 1",
        )
        .await
        .map_err(err)?;
        "SELECT s.* FROM xclog_stage_events s \
         WHERE NOT EXISTS (SELECT 1 FROM xclog_stage_losers l WHERE l.row = s.ctid)"
            .to_owned()
    };

    steps.done("repeated ids");
    // Edges of the events that count, in key order.
    tx.execute(
        format!(
            "INSERT INTO fsm_causality (parent_id, child_id, child_persisted_at) \
             SELECT DISTINCT p, w.id, w.persisted_at \
             FROM ({winners}) w CROSS JOIN LATERAL unnest(w.caused_by) AS p \
             ORDER BY 1, 2"
        )
        .as_str(),
    )
    .await
    .map_err(err)?;
    steps.done("edges");
    // Events, each with its children: `caused` is written once, complete. Their pages are
    // filled (the room migration 0003 leaves is for that rewrite, which these rows never
    // get); the table's own setting is put back for the pages the live sink writes later.
    let fillfactor: String = sqlx::query_scalar(
        "SELECT COALESCE((SELECT option_value FROM pg_options_to_table(reloptions) \
                          WHERE option_name = 'fillfactor'), '100') \
         FROM pg_class WHERE oid = 'fsm_events'::regclass",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(err)?;
    let fillfactor: u8 = fillfactor.parse().unwrap_or(100);
    tx.execute("ALTER TABLE fsm_events SET (fillfactor = 100)")
        .await
        .map_err(err)?;
    let events = tx
        .execute(
            format!(
                "INSERT INTO fsm_events (id, instance_id, machine_name, component_name, \
                   event_type, event_payload, state_before, state_after, persisted_at, caused_by, \
                   caused, source_component_name, target_component_name, sequence, \
                   event_timestamp, event_extra, public_member_snapshot, source_topic, \
                   source_partition, source_offset) \
                 SELECT w.id, w.instance_id, w.machine_name, w.component_name, w.event_type, \
                   w.event_payload, w.state_before, w.state_after, w.persisted_at, w.caused_by, \
                   COALESCE(c.children, '{{}}'), w.source_component_name, \
                   w.target_component_name, w.sequence, w.event_timestamp, w.event_extra, \
                   w.public_member_snapshot, w.source_topic, w.source_partition, w.source_offset \
                 FROM ({winners}) w \
                 LEFT JOIN (SELECT parent_id, \
                              array_agg(child_id ORDER BY child_persisted_at, child_id) AS children \
                            FROM fsm_causality GROUP BY parent_id) c ON c.parent_id = w.id"
            )
            .as_str(),
        )
        .await
        .map_err(err)?
        .rows_affected();

    tx.execute(format!("ALTER TABLE fsm_events SET (fillfactor = {fillfactor})").as_str())
        .await
        .map_err(err)?;
    steps.done("events");
    // Per instance, the snapshot that counts: the newest in the instance order within the
    // last stretch (between deletions) that has one. Stored only if no deletion follows it.
    tx.execute(
        "CREATE TEMP TABLE xclog_stage_newest ON COMMIT DROP AS \
         SELECT DISTINCT ON (instance_id) *, stretch = deletions AS stored \
         FROM (SELECT s.*, \
                 count(*) FILTER (WHERE deleted) OVER (PARTITION BY instance_id \
                   ORDER BY source_partition, source_offset) AS stretch, \
                 count(*) FILTER (WHERE deleted) OVER (PARTITION BY instance_id) AS deletions \
               FROM xclog_stage_snapshots s) x \
         WHERE NOT deleted \
         ORDER BY instance_id, stretch DESC, COALESCE(sequence, -1) DESC, snapshot_at DESC, \
                  source_partition DESC, source_offset DESC",
    )
    .await
    .map_err(err)?;
    tx.execute(
        "INSERT INTO fsm_snapshots (instance_id, machine_name, current_state, status, context, \
           public_member, snapshot_at, last_event_id, pending_timeouts, sequence, \
           internal_member, is_entry_point, parent_instance_id, parent_machine_name, \
           instance_created_at, instance_updated_at, source_topic, source_partition, \
           source_offset) \
         SELECT instance_id, machine_name, current_state, status, context, public_member, \
           snapshot_at, last_event_id, pending_timeouts, sequence, internal_member, \
           is_entry_point, parent_instance_id, parent_machine_name, instance_created_at, \
           instance_updated_at, source_topic, source_partition, source_offset \
         FROM xclog_stage_newest WHERE stored ORDER BY instance_id",
    )
    .await
    .map_err(err)?;
    steps.done("snapshots");
    // The instance view: the fields of each instance's latest event in the instance order,
    // its count and time range, and the status of the snapshot that counts.
    tx.execute(
        "INSERT INTO fsm_instances (instance_id, machine_name, component_name, \
           current_state, status, event_count, first_event_at, last_event_at, last_event_id, \
           last_event_sequence, last_event_persisted_at, last_event_partition, \
           last_event_offset) \
         SELECT COALESCE(e.instance_id, n.instance_id), COALESCE(e.machine_name, n.machine_name), \
           COALESCE(e.component_name, ''), COALESCE(e.state_after, n.current_state), \
           COALESCE(n.status, 'active'), COALESCE(e.n, 0), e.first_at, e.last_at, e.id, \
           e.sequence, e.persisted_at, e.source_partition, e.source_offset \
         FROM (SELECT DISTINCT ON (instance_id) instance_id, machine_name, component_name, \
                 state_after, id, sequence, persisted_at, source_partition, source_offset, \
                 count(*) OVER i AS n, min(persisted_at) OVER i AS first_at, \
                 max(persisted_at) OVER i AS last_at \
               FROM fsm_events WINDOW i AS (PARTITION BY instance_id) \
               ORDER BY instance_id, COALESCE(sequence, -1) DESC, persisted_at DESC, \
                        source_partition DESC, source_offset DESC) e \
         FULL JOIN xclog_stage_newest n ON n.instance_id = e.instance_id \
         ORDER BY 1",
    )
    .await
    .map_err(err)?;
    steps.done("instances");
    tx.execute(
        format!(
            "DROP TABLE \"{schema}\".{STAGE_EVENTS}, \"{schema}\".{STAGE_SNAPSHOTS}, \
             \"{schema}\".{STAGE_MARKER}"
        )
        .as_str(),
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    steps.done("commit");
    tracing::info!(steps = %steps, "derived the rebuilt store from the staged rows");
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourcePosition;
    use xclog_schema::{FsmEvent, PersistedEvent};

    fn event(id: &str, caused_by: &[&str]) -> SinkRecord {
        SinkRecord {
            record: Record::Event(PersistedEvent {
                id: id.to_owned(),
                instance_id: "i1".to_owned(),
                machine_name: "M".to_owned(),
                component_name: "C".to_owned(),
                event: FsmEvent {
                    event_type: "go".to_owned(),
                    payload: serde_json::json!({"n": 1}),
                    timestamp: None,
                    extra: serde_json::Map::new(),
                },
                state_before: "a".to_owned(),
                state_after: "b".to_owned(),
                persisted_at: 7,
                caused_by: caused_by.iter().map(|s| (*s).to_owned()).collect(),
                caused: Vec::new(),
                source_component_name: None,
                target_component_name: None,
                public_member_snapshot: None,
                sequence: None,
            }),
            source: SourcePosition {
                topic: "t".to_owned(),
                partition: 2,
                offset: 9,
            },
        }
    }

    /// Reads the fields of one binary COPY tuple starting at `at`: `None` for NULL.
    fn fields(buf: &[u8], mut at: usize) -> (Vec<Option<Vec<u8>>>, usize) {
        let n = i16::from_be_bytes([buf[at], buf[at + 1]]);
        at += 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(buf[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        (out, at)
    }

    #[test]
    fn an_event_becomes_one_binary_copy_tuple_with_the_header_and_trailer_postgres_expects() {
        let (events, snapshots) = encode(&[event("e2", &["e1", "e0"])]);
        assert!(snapshots.is_none(), "no snapshot record, no snapshot data");
        let (rows, buf) = events.expect("one event");
        assert_eq!(rows, 1);
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&buf[11..19], &[0u8; 8]);
        let (f, end) = fields(&buf, 19);
        assert_eq!(f.len(), 19);
        assert_eq!(f[0].as_deref(), Some(&b"e2"[..]));
        // jsonb: version 1, then the text
        assert_eq!(f[5].as_deref(), Some(&b"\x01{\"n\":1}"[..]));
        assert_eq!(f[8].as_deref(), Some(&7i64.to_be_bytes()[..]));
        // text[]: 1 dimension, no NULLs, text elements, 2 of them from 1
        let arr = f[9].clone().unwrap();
        assert_eq!(&arr[..4], &1i32.to_be_bytes());
        assert_eq!(&arr[8..12], &25u32.to_be_bytes());
        assert_eq!(&arr[12..20], &[0, 0, 0, 2, 0, 0, 0, 1]);
        assert_eq!(&arr[20..], b"\0\0\0\x02e1\0\0\0\x02e0");
        assert_eq!(f[10], None, "no source component");
        assert_eq!(f[14], None, "no extra fields");
        assert_eq!(f[17].as_deref(), Some(&2i32.to_be_bytes()[..]));
        assert_eq!(f[18].as_deref(), Some(&9i64.to_be_bytes()[..]));
        assert_eq!(&buf[end..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn an_event_without_parents_has_an_empty_array_without_a_dimension() {
        let (events, _) = encode(&[event("e1", &[])]);
        let (_, buf) = events.unwrap();
        let (f, _) = fields(&buf, 19);
        let arr = f[9].clone().unwrap();
        assert_eq!(arr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]);
    }

    #[test]
    fn a_batch_without_records_stages_nothing() {
        let (events, snapshots) = encode(&[]);
        assert!(events.is_none() && snapshots.is_none());
    }
}
