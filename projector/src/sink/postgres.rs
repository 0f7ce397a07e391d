//! The PostgreSQL sink: Schema A tables plus what a log adds (see `migrations/`).
//!
//! One batch is one transaction, in this order (every lock taken in a fixed order, so two
//! workers never deadlock, and a deadlock PostgreSQL still reports is retried):
//!
//! 1. advance the offset of each partition, conditional on the offset the batch started from
//!    (fencing; sorted by partition);
//! 2. insert events (`ON CONFLICT (id) DO NOTHING`; a parent whose children are in the same
//!    batch comes with their links in `caused`) and fold the new ones into `fsm_instances`;
//! 3. delete the stored snapshots of the instances the batch has a snapshot deletion for, then
//!    upsert snapshots that are newer than the stored one (of each instance, only the newest
//!    after its last deletion in the batch), and their status into `fsm_instances`;
//! 4. lock the `fsm_causality_lock` rows of every event id inserted and every parent named
//!    (sorted by id): a parent and its child written by two workers at once are serialized, and
//!    the one that locks second sees the other's rows and edges, committed;
//! 5. insert causality edges, then recompute `caused` of every affected parent from the edges
//!    (rewriting only the rows whose `caused` differs: not a parent inserted complete in step 2).
//!
//! Steps 1-3 touch only rows of the batch's own partitions and instances, which no other
//! writer of the group holds, so concurrent writers overlap there; only steps 4-5 and the
//! commit are serialized between batches that name the same event ids.
//!
//! All writes are bulk statements over UNNEST-ed arrays, never row by row.

pub(crate) mod rows;

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use xclog_schema::Record;

use crate::config::Secret;
use crate::sink::{Sink, SinkError, WriteBatch, WriteOutcome};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Settings of the PostgreSQL sink.
#[derive(Debug, Clone)]
pub struct PgSinkConfig {
    /// Connection URL (`postgres://user:password@host/db`); redacted in `Debug`.
    pub database_url: Secret,
    /// Name of this projection: offsets are stored per projection, so two projections of one
    /// topic into one database (for example a rebuild) do not share a position.
    pub projection: String,
    /// Maximum connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before the attempt counts as a transient failure.
    pub acquire_timeout: Duration,
}

/// Writes batches into PostgreSQL. Cheap to clone (shares the pool).
#[derive(Debug, Clone)]
pub struct PgSink {
    pool: PgPool,
    projection: String,
}

impl PgSink {
    /// Creates the pool lazily (no connection yet, so a database that is down at start is
    /// retried like any transient failure).
    pub fn connect_lazy(config: &PgSinkConfig) -> Result<Self, SinkError> {
        let options: PgConnectOptions =
            config
                .database_url
                .expose()
                .parse()
                .map_err(|e| SinkError::Fatal {
                    context: "parsing the database URL",
                    source: Box::new(e),
                })?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            projection: config.projection.clone(),
        })
    }

    /// Wraps an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool, projection: impl Into<String>) -> Self {
        Self {
            pool,
            projection: projection.into(),
        }
    }

    /// The pool, for readers that share it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations (idempotent; concurrent callers are serialized by sqlx's lock).
    pub async fn migrate(&self) -> Result<(), SinkError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => classify(inner, "running migrations"),
            other => SinkError::Fatal {
                context: "running migrations",
                source: Box::new(other),
            },
        })
    }

    async fn write_tx(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        batch: &WriteBatch,
    ) -> Result<WriteOutcome, SinkError> {
        let ctx = "writing a batch";
        let err = |e| classify(e, ctx);

        // Plan this batch's statements for the tables as they are now. A store starts empty and
        // grows by thousands of rows a second; after five executions PostgreSQL may keep a
        // generic plan of a prepared statement made while the tables were tiny (a sequential
        // scan of `fsm_events` for the `caused` update) until the next `ANALYZE`. Seen on a
        // fresh store at a steady 7,000 events/s: that update took 1.3 s, then 3 s, growing
        // with the table (docs/DESIGN.md, "Custom plans"). `SET LOCAL`, not a
        // connection option, so that it works through connection poolers (PgBouncer refuses
        // startup options); needs PostgreSQL 12 or later.
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut **tx)
            .await
            .map_err(err)?;

        // 1. Fencing: advance offsets only from the offset the batch started from.
        advance_offsets(tx, &self.projection, batch).await?;

        let (events, snapshots, deleted) = rows::columns(&batch.records);
        let mut outcome = WriteOutcome::default();

        let mut inserted: Vec<String> = Vec::new();
        if events.len() > 0 {
            // 2. Events, and the instance view from the rows actually inserted.
            inserted = sqlx::query_scalar(INSERT_EVENTS)
                .bind(&events.id)
                .bind(&events.instance_id)
                .bind(&events.machine_name)
                .bind(&events.component_name)
                .bind(&events.event_type)
                .bind(&events.event_payload)
                .bind(&events.state_before)
                .bind(&events.state_after)
                .bind(&events.persisted_at)
                .bind(&events.caused_by)
                .bind(&events.source_component_name)
                .bind(&events.target_component_name)
                .bind(&events.sequence)
                .bind(&events.event_timestamp)
                .bind(&events.event_extra)
                .bind(&events.public_member_snapshot)
                .bind(&events.source_topic)
                .bind(&events.source_partition)
                .bind(&events.source_offset)
                .bind(&events.caused)
                .fetch_one(&mut **tx)
                .await
                .map_err(err)?;
            outcome.events_inserted = inserted.len() as u64;
        }

        if !deleted.is_empty() {
            // 3a. Snapshot deletions, before the snapshots that follow them in the log; in
            //     instance id order, as the upsert below locks its rows.
            sqlx::query(
                "DELETE FROM fsm_snapshots WHERE instance_id IN \
                 (SELECT instance_id FROM fsm_snapshots WHERE instance_id = ANY($1) \
                  ORDER BY instance_id FOR UPDATE)",
            )
            .bind(&deleted)
            .execute(&mut **tx)
            .await
            .map_err(err)?;
            outcome.snapshots_deleted = deleted.len() as u64;
        }
        if snapshots.len() > 0 {
            // 3b. Snapshots: only newer ones move the stored row.
            let applied: i64 = sqlx::query_scalar(UPSERT_SNAPSHOTS)
                .bind(&snapshots.instance_id)
                .bind(&snapshots.machine_name)
                .bind(&snapshots.current_state)
                .bind(&snapshots.status)
                .bind(&snapshots.context)
                .bind(&snapshots.public_member)
                .bind(&snapshots.snapshot_at)
                .bind(&snapshots.last_event_id)
                .bind(&snapshots.pending_timeouts)
                .bind(&snapshots.sequence)
                .bind(&snapshots.internal_member)
                .bind(&snapshots.is_entry_point)
                .bind(&snapshots.parent_instance_id)
                .bind(&snapshots.parent_machine_name)
                .bind(&snapshots.instance_created_at)
                .bind(&snapshots.instance_updated_at)
                .bind(&snapshots.source_topic)
                .bind(&snapshots.source_partition)
                .bind(&snapshots.source_offset)
                .fetch_one(&mut **tx)
                .await
                .map_err(err)?;
            outcome.snapshots_applied = u64::try_from(applied).unwrap_or(0);
        }
        if events.len() > 0 {
            // 4. Causality locks, in id order, taken last so that they are held only for
            //    the edges, the `caused` update and the commit: a second writer whose
            //    batch names the same ids waits that long, not for the whole batch.
            let lock_ids = events.causality_ids();
            //    One statement inserts the missing lock rows and locks the existing ones:
            //    `DO UPDATE ... WHERE false` locks every conflicting row and writes none.
            sqlx::query(
                "INSERT INTO fsm_causality_lock AS l (event_id) \
                 SELECT x FROM unnest($1::text[]) AS x ORDER BY x \
                 ON CONFLICT (event_id) DO UPDATE SET event_id = l.event_id WHERE false",
            )
            .bind(&lock_ids)
            .execute(&mut **tx)
            .await
            .map_err(err)?;

            // 5. Edges of the rows this batch inserted (the first copy of an event id wins:
            //    a repeat carrying other parents adds no edge), then `caused` of every affected
            //    id, derived from the edges (an id without edges gets none, even if an event
            //    of the batch that was not inserted named it as its parent).
            sqlx::query(
                "INSERT INTO fsm_causality (parent_id, child_id, child_persisted_at) \
                 SELECT DISTINCT p, u.id, u.pa \
                 FROM unnest($1::text[], $2::jsonb[], $3::bigint[]) AS u(id, cb, pa) \
                 CROSS JOIN LATERAL jsonb_array_elements_text(u.cb) AS p \
                 WHERE u.id = ANY($4) \
                 ORDER BY 1, 2 ON CONFLICT DO NOTHING",
            )
            .bind(&events.id)
            .bind(&events.caused_by)
            .bind(&events.persisted_at)
            .bind(&inserted)
            .execute(&mut **tx)
            .await
            .map_err(err)?;
            sqlx::query(
                "UPDATE fsm_events e SET caused = COALESCE(c.children, '{}') \
                 FROM unnest($1::text[]) AS l(id) \
                 LEFT JOIN (SELECT parent_id, \
                              array_agg(child_id ORDER BY child_persisted_at, child_id) AS children \
                       FROM fsm_causality WHERE parent_id = ANY($1) GROUP BY parent_id) c \
                   ON c.parent_id = l.id \
                 WHERE e.id = l.id AND e.caused IS DISTINCT FROM COALESCE(c.children, '{}')",
            )
            .bind(&lock_ids)
            .execute(&mut **tx)
            .await
            .map_err(err)?;
        }
        Ok(outcome)
    }
}

/// Step 1 of every batch: advances each partition's stored offset in `xclog_offsets` (of the
/// connection's `search_path`), only from the offset the batch started from, in partition
/// order; [`SinkError::Fenced`] if another writer moved it.
pub(crate) async fn advance_offsets(
    tx: &mut Transaction<'static, Postgres>,
    projection: &str,
    batch: &WriteBatch,
) -> Result<(), SinkError> {
    let err = |e| classify(e, "writing a batch");
    let mut offsets = batch.offsets.clone();
    offsets.sort_by_key(|o| o.partition);
    for o in &offsets {
        let done = match o.expected {
            Some(expected) => sqlx::query(
                "UPDATE xclog_offsets SET next_offset = $4, updated_at = now() \
                 WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
            )
            .bind(projection)
            .bind(&batch.topic)
            .bind(o.partition)
            .bind(o.next)
            .bind(expected)
            .execute(&mut **tx)
            .await
            .map_err(err)?,
            None => sqlx::query(
                "INSERT INTO xclog_offsets (projection, topic, partition, next_offset) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(projection)
            .bind(&batch.topic)
            .bind(o.partition)
            .bind(o.next)
            .execute(&mut **tx)
            .await
            .map_err(err)?,
        };
        if done.rows_affected() != 1 {
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT next_offset FROM xclog_offsets \
                 WHERE projection = $1 AND topic = $2 AND partition = $3",
            )
            .bind(projection)
            .bind(&batch.topic)
            .bind(o.partition)
            .fetch_optional(&mut **tx)
            .await
            .map_err(err)?;
            return Err(SinkError::Fenced {
                partition: o.partition,
                expected: o.expected,
                stored,
            });
        }
    }
    Ok(())
}

/// Stored offsets of `projection` for `partitions` of `topic`.
pub(crate) async fn load_offsets(
    pool: &PgPool,
    projection: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, SinkError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM xclog_offsets \
         WHERE projection = $1 AND topic = $2 AND partition = ANY($3)",
    )
    .bind(projection)
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await
    .map_err(|e| classify(e, "loading stored offsets"))?;
    Ok(rows.into_iter().collect())
}

const INSERT_EVENTS: &str = r#"
WITH ins AS (
    INSERT INTO fsm_events (id, instance_id, machine_name, component_name, event_type, event_payload,
        state_before, state_after, persisted_at, caused_by, caused, source_component_name,
        target_component_name, sequence, event_timestamp, event_extra, public_member_snapshot,
        source_topic, source_partition, source_offset)
    SELECT u.id, u.instance_id, u.machine_name, u.component_name, u.event_type, u.event_payload,
        u.state_before, u.state_after, u.persisted_at,
        ARRAY(SELECT jsonb_array_elements_text(u.caused_by)),
        CASE WHEN u.caused IS NULL THEN '{}'::text[]
             ELSE ARRAY(SELECT jsonb_array_elements_text(u.caused)) END,
        u.source_component_name, u.target_component_name, u.sequence, u.event_timestamp,
        u.event_extra, u.public_member_snapshot, u.source_topic, u.source_partition, u.source_offset
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                $7::text[], $8::text[], $9::bigint[], $10::jsonb[], $11::text[], $12::text[],
                $13::bigint[], $14::bigint[], $15::jsonb[], $16::jsonb[], $17::text[],
                $18::integer[], $19::bigint[], $20::jsonb[])
        AS u(id, instance_id, machine_name, component_name, event_type, event_payload,
             state_before, state_after, persisted_at, caused_by, source_component_name,
             target_component_name, sequence, event_timestamp, event_extra,
             public_member_snapshot, source_topic, source_partition, source_offset, caused)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, instance_id, machine_name, component_name, state_after, persisted_at, sequence,
        source_partition, source_offset
), latest AS (
    -- Per instance, the inserted event latest in the instance order (sink/order.rs).
    SELECT DISTINCT ON (instance_id) instance_id, machine_name, component_name, state_after, id,
           sequence, persisted_at, source_partition, source_offset
    FROM ins
    ORDER BY instance_id, COALESCE(sequence, -1) DESC, persisted_at DESC, source_partition DESC,
             source_offset DESC
), agg AS (
    SELECT l.*, a.n, a.first_at, a.last_at
    FROM latest l
    JOIN (SELECT instance_id, count(*) AS n, min(persisted_at) AS first_at,
                 max(persisted_at) AS last_at
          FROM ins GROUP BY instance_id) a USING (instance_id)
), inst AS (
    INSERT INTO fsm_instances AS f (instance_id, machine_name, component_name, current_state,
        event_count, first_event_at, last_event_at, last_event_id, last_event_sequence,
        last_event_persisted_at, last_event_partition, last_event_offset)
    SELECT instance_id, machine_name, component_name, state_after, n, first_at, last_at, id,
           sequence, persisted_at, source_partition, source_offset
    FROM agg ORDER BY instance_id
    ON CONFLICT (instance_id) DO UPDATE SET
        event_count = f.event_count + EXCLUDED.event_count,
        first_event_at = LEAST(f.first_event_at, EXCLUDED.first_event_at),
        last_event_at = GREATEST(f.last_event_at, EXCLUDED.last_event_at),
        -- The fields of whichever is later in the instance order: the stored last event or the
        -- batch's (a row from a snapshot alone has no last event and takes the batch's).
        (machine_name, component_name, current_state, last_event_id, last_event_sequence,
         last_event_persisted_at, last_event_partition, last_event_offset) = (
            SELECT v.machine_name, v.component_name, v.current_state, v.id, v.seq, v.at, v.p, v.o
            FROM (VALUES
                (EXCLUDED.machine_name, EXCLUDED.component_name, EXCLUDED.current_state,
                 EXCLUDED.last_event_id, EXCLUDED.last_event_sequence,
                 EXCLUDED.last_event_persisted_at, EXCLUDED.last_event_partition,
                 EXCLUDED.last_event_offset, true),
                (f.machine_name, f.component_name, f.current_state, f.last_event_id,
                 f.last_event_sequence, f.last_event_persisted_at, f.last_event_partition,
                 f.last_event_offset, f.last_event_id IS NOT NULL))
                AS v(machine_name, component_name, current_state, id, seq, at, p, o, has_event)
            ORDER BY v.has_event DESC, COALESCE(v.seq, -1) DESC,
                     COALESCE(v.at, -9223372036854775808) DESC, COALESCE(v.p, -1) DESC,
                     COALESCE(v.o, -1) DESC
            LIMIT 1)
    RETURNING 1
)
SELECT COALESCE(array_agg(id), '{}') FROM ins
"#;

const UPSERT_SNAPSHOTS: &str = r#"
WITH up AS (
    INSERT INTO fsm_snapshots AS s (instance_id, machine_name, current_state, status, context,
        public_member, snapshot_at, last_event_id, pending_timeouts, sequence, internal_member,
        is_entry_point, parent_instance_id, parent_machine_name, instance_created_at,
        instance_updated_at, source_topic, source_partition, source_offset)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                         $7::bigint[], $8::text[], $9::jsonb[], $10::bigint[], $11::jsonb[],
                         $12::boolean[], $13::text[], $14::text[], $15::bigint[], $16::bigint[],
                         $17::text[], $18::integer[], $19::bigint[])
    ON CONFLICT (instance_id) DO UPDATE SET
        machine_name = EXCLUDED.machine_name, current_state = EXCLUDED.current_state,
        status = EXCLUDED.status, context = EXCLUDED.context,
        public_member = EXCLUDED.public_member, snapshot_at = EXCLUDED.snapshot_at,
        last_event_id = EXCLUDED.last_event_id, pending_timeouts = EXCLUDED.pending_timeouts,
        sequence = EXCLUDED.sequence, internal_member = EXCLUDED.internal_member,
        is_entry_point = EXCLUDED.is_entry_point,
        parent_instance_id = EXCLUDED.parent_instance_id,
        parent_machine_name = EXCLUDED.parent_machine_name,
        instance_created_at = EXCLUDED.instance_created_at,
        instance_updated_at = EXCLUDED.instance_updated_at,
        source_topic = EXCLUDED.source_topic, source_partition = EXCLUDED.source_partition,
        source_offset = EXCLUDED.source_offset, updated_at = CURRENT_TIMESTAMP
    -- Only forward in the instance order (sink/order.rs).
    WHERE (COALESCE(EXCLUDED.sequence, -1), EXCLUDED.snapshot_at, EXCLUDED.source_partition,
           EXCLUDED.source_offset)
        > (COALESCE(s.sequence, -1), s.snapshot_at, COALESCE(s.source_partition, -1),
           COALESCE(s.source_offset, -1))
    RETURNING instance_id, machine_name, current_state, status
), inst AS (
    INSERT INTO fsm_instances AS f (instance_id, machine_name, component_name, current_state, status)
    SELECT instance_id, machine_name, '', current_state, status FROM up ORDER BY instance_id
    ON CONFLICT (instance_id) DO UPDATE SET status = EXCLUDED.status
    RETURNING 1
)
SELECT count(*) FROM up
"#;

impl Sink for PgSink {
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| classify(e, "starting a transaction"))?;
        // Dropping `tx` on error rolls the whole batch back, offsets included.
        let outcome = self.write_tx(&mut tx, batch).await?;
        tx.commit()
            .await
            .map_err(|e| classify(e, "committing a batch"))?;
        Ok(outcome)
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        rows::check(record)
    }
}

/// The one place that decides what a PostgreSQL error means for the pipeline.
///
/// * connection-level failures, shutdowns, serialization failures, deadlocks, lock and
///   resource exhaustion: [`SinkError::Transient`] (retry the same batch);
/// * data exceptions (class 22), integrity violations (class 23) and program limits (class
///   54: an index entry or a value too large): the content of a record is refused,
///   [`SinkError::Rejected`] (isolate and dead-letter it);
/// * everything else (undefined table or column, permissions, bad configuration):
///   [`SinkError::Fatal`].
pub fn classify(error: sqlx::Error, context: &'static str) -> SinkError {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match sqlstate_class(&code) {
                SqlStateClass::Transient => SinkError::Transient {
                    context,
                    source: Box::new(error),
                },
                SqlStateClass::Content => SinkError::Rejected {
                    context,
                    reason: format!("SQLSTATE {code}: {}", db.message()),
                },
                SqlStateClass::Fatal => SinkError::Fatal {
                    context,
                    source: Box::new(error),
                },
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => SinkError::Transient {
            context,
            source: Box::new(error),
        },
        _ => SinkError::Fatal {
            context,
            source: Box::new(error),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqlStateClass {
    Transient,
    Content,
    Fatal,
}

fn sqlstate_class(code: &str) -> SqlStateClass {
    match code {
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled
        "40001" | "40P01" | "55P03" | "57014" => SqlStateClass::Transient,
        // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped(no: fatal)
        "57P01" | "57P02" | "57P03" => SqlStateClass::Transient,
        _ => match code.get(..2) {
            // connection exceptions, insufficient resources, system errors, transaction rollback
            Some("08") | Some("53") | Some("58") | Some("40") => SqlStateClass::Transient,
            // data exceptions, integrity violations, and program limits (an index entry or a
            // value too large): the content of a record; splitting finds it
            Some("22") | Some("23") | Some("54") => SqlStateClass::Content,
            _ => SqlStateClass::Fatal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_what_the_pipeline_must_do() {
        for code in [
            "40001", "40P01", "08006", "08003", "57P01", "57P03", "53300", "55P03",
        ] {
            assert_eq!(sqlstate_class(code), SqlStateClass::Transient, "{code}");
        }
        for code in ["22P02", "22021", "23502", "23514", "22003", "54000"] {
            assert_eq!(sqlstate_class(code), SqlStateClass::Content, "{code}");
        }
        for code in ["42P01", "42703", "42501", "3D000", ""] {
            assert_eq!(sqlstate_class(code), SqlStateClass::Fatal, "{code}");
        }
    }

    #[test]
    fn io_errors_and_pool_timeouts_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(
            classify(io, "t").class(),
            crate::sink::ErrorClass::Transient
        );
        assert_eq!(
            classify(sqlx::Error::PoolTimedOut, "t").class(),
            crate::sink::ErrorClass::Transient
        );
        assert_eq!(
            classify(sqlx::Error::RowNotFound, "t").class(),
            crate::sink::ErrorClass::Fatal
        );
    }
}
