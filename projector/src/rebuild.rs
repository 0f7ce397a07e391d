//! Rebuilding a PostgreSQL store from the topic without downtime.
//!
//! The store lives in a schema (`public` by default). A rebuild projects the topic from its
//! first offset into a *shadow* schema (the same migrations, the same sink, the same
//! exactly-once batches, its own `xclog_offsets`), while the live projector keeps writing the
//! live schema and readers keep reading it. Once the shadow's stored offsets have reached the
//! live ones on every partition, one transaction swaps them:
//!
//! 1. `LOCK` the live `xclog_offsets` (waits for the live projector's batch in flight, then
//!    holds its next one), then the shadow's, and re-check that the shadow is caught up;
//! 2. move the live tables into a dated schema (`xclog_old_<utc>`), the shadow tables into the
//!    live schema, drop the empty shadow schema; commit.
//!
//! A reader sees the old store or the new one, never a mix: the moves take `ACCESS EXCLUSIVE`
//! locks, and the new store holds a longer prefix of the same log (shadow offsets >= live
//! offsets), so no event a reader saw disappears. The live projector's next batch is fenced if
//! the shadow was ahead (its expected offset no longer matches) and it reloads the stored
//! offsets, so it continues from the shadow's position: nothing is missed or written twice.
//!
//! Everything the rebuild knows is in the shadow schema, so an interrupted rebuild (SIGINT,
//! SIGKILL, crash) continues from the shadow's stored offsets on the next run.

pub mod mongo;
pub mod stage;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use crate::config::ProjectorConfig;
use crate::sink::SinkError;
use crate::sink::postgres::{MIGRATOR, classify};

/// The tables a store consists of, moved together by the swap.
pub const STORE_TABLES: &[&str] = &[
    "fsm_events",
    "fsm_snapshots",
    "fsm_causality",
    "fsm_causality_lock",
    "fsm_instances",
    "xclog_offsets",
    "_sqlx_migrations",
];

/// Bookkeeping table (in the shadow schema) of the secondary indexes deferred to the end.
const DEFERRED_INDEXES: &str = "xclog_rebuild_deferred_indexes";

/// Deferred indexes built at once at the end of the bulk. Two halve the time of building them
/// one by one on the 1,000,000-event bench (2 cores: 15.0 s -> 7.6 s; docs/DESIGN.md, "The
/// rebuild builds its indexes two at a time"); each also uses the server's parallel
/// maintenance workers if it has any, and up to `maintenance_work_mem`. The rebuild's own pool
/// has one connection more than this.
const INDEX_BUILDS: usize = 2;

/// Offsets the topic no longer holds on one partition: `from..to` (exclusive) were deleted
/// by retention, but a rebuild starting at `from` needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHistory {
    /// The partition.
    pub partition: i32,
    /// First offset the rebuild needs.
    pub from: i64,
    /// The topic's first offset on that partition (the low watermark).
    pub to: i64,
}

impl fmt::Display for MissingHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {}: offsets {}..{} are no longer in the topic (it now starts at offset {})",
            self.partition,
            self.from,
            self.to - 1,
            self.to
        )
    }
}

/// Partitions where the rebuild would need offsets the topic has deleted. `start` is where
/// the rebuild starts per partition (absent: from the beginning, offset 0); `low` the topic's
/// low watermarks.
pub fn missing_history(
    start: &BTreeMap<i32, i64>,
    low: &BTreeMap<i32, i64>,
) -> Vec<MissingHistory> {
    low.iter()
        .filter_map(|(&partition, &low)| {
            let from = start.get(&partition).copied().unwrap_or(0);
            (low > from).then_some(MissingHistory {
                partition,
                from,
                to: low,
            })
        })
        .collect()
}

/// Whether the shadow holds at least what the live store holds on every partition.
pub fn caught_up(shadow: &BTreeMap<i32, i64>, live: &BTreeMap<i32, i64>) -> bool {
    live.iter()
        .all(|(p, &l)| shadow.get(p).copied().unwrap_or(0) >= l)
}

/// What the shadow must reach before a swap: per partition, the larger of the end of the
/// topic (`high`) and the live store's offset.
pub fn target(high: &BTreeMap<i32, i64>, live: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    high.iter()
        .map(|(&p, &h)| (p, h.max(live.get(&p).copied().unwrap_or(0))))
        .collect()
}

/// Records the shadow still has to read to reach `target` on every partition.
pub fn remaining(shadow: &BTreeMap<i32, i64>, target: &BTreeMap<i32, i64>) -> i64 {
    target
        .iter()
        .map(|(p, &t)| (t - shadow.get(p).copied().unwrap_or(0)).max(0))
        .sum()
}

/// The configuration of a rebuild's own projector, from the live projection's: its own
/// consumer group `<group>.rebuild` (the live projector keeps its partitions), no ops server,
/// and batches for a backlog (at least `min_batch` records, cut after at least 500 ms whether
/// the writer is busy or idle). The live projector already dead-lettered the records no store
/// takes; the rebuild meets them again and sends them to `<dead-letter topic>.rebuild` rather
/// than doubling the live dead letters, unless `dead_letter_topic_chosen` names the topic.
pub fn shadow_projector_config(
    live: &ProjectorConfig,
    dead_letter_topic_chosen: bool,
    min_batch: usize,
) -> ProjectorConfig {
    let mut config = live.clone();
    config.group_id = format!("{}.rebuild", live.group_id);
    config.http_addr = None;
    if !dead_letter_topic_chosen {
        config.dead_letter_topic = format!("{}.rebuild", live.dead_letter_topic);
    }
    config.batch_max_records = live.batch_max_records.max(min_batch);
    config.batch_max_latency = live
        .batch_max_latency
        .max(std::time::Duration::from_millis(500));
    config.batch_linger = config.batch_max_latency;
    config
}

/// The dated name the previous store gets after a swap: `xclog_old_YYYYMMDD_HHMMSS` (UTC).
pub fn old_schema_name(unix_seconds: u64) -> String {
    let (year, month, day) = crate::time::civil_from_days((unix_seconds / 86_400) as i64);
    let secs = unix_seconds % 86_400;
    format!(
        "xclog_old_{year:04}{month:02}{day:02}_{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Why a rebuild cannot start or swap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// A schema name that is not a plain lower-case identifier.
    #[error(
        "{flag} {name:?} is not a plain schema name (lower-case letters, digits, _; not starting with a digit)"
    )]
    BadSchemaName {
        /// The flag that carried it.
        flag: &'static str,
        /// The name.
        name: String,
    },
    /// The live and shadow schemas are the same.
    #[error("the shadow schema must differ from the live schema (both are {0:?})")]
    SameSchema(String),
    /// The live store also holds other topics or projections, which a rebuild from one topic
    /// would drop.
    #[error(
        "the live store also holds other topics or projections ({0}); a rebuild from one topic \
         would drop their rows: rebuild a store that holds one projection (give each its own \
         database), or check --topic and --projection"
    )]
    OtherTopics(String),
    /// The topic lost history the rebuild needs.
    #[error("the topic no longer holds offsets the rebuild needs:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    MissingHistory(Vec<MissingHistory>),
    /// The swap was asked for while secondary indexes are still deferred.
    #[error("the shadow still lacks {0} secondary indexes; build them before the swap")]
    IndexesPending(usize),
    /// An earlier run left a state this one cannot continue from; says what to do by hand.
    #[error("{0}")]
    Inconsistent(String),
    /// The store failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Checks that `name` is safe to splice into SQL as an identifier.
pub fn check_schema_name(flag: &'static str, name: &str) -> Result<(), RebuildError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(RebuildError::BadSchemaName {
            flag,
            name: name.to_owned(),
        })
    }
}

/// What the swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The shadow is the live store now; the previous one is in `old_schema` (dropped
    /// afterwards unless kept).
    Swapped {
        /// Where the previous store went.
        old_schema: String,
        /// The shadow's offsets at the swap (where the live projection continues).
        offsets: BTreeMap<i32, i64>,
    },
    /// The live store moved ahead meanwhile; the shadow has more to read.
    Behind {
        /// Shadow offsets.
        shadow: BTreeMap<i32, i64>,
        /// Live offsets.
        live: BTreeMap<i32, i64>,
    },
}

/// Whether `schema` has a table named `table`.
pub(crate) async fn table_exists(
    pool: &PgPool,
    schema: &str,
    table: &str,
) -> Result<bool, SinkError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2")
            .bind(schema)
            .bind(table)
            .fetch_optional(pool)
            .await
            .map_err(|e| classify(e, "looking up a table"))?;
    Ok(found.is_some())
}

/// A rebuild of one projection of one topic into a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgRebuild {
    pool: PgPool,
    options: PgConnectOptions,
    /// Schema the store is read from (`public`).
    pub live_schema: String,
    /// Schema the rebuild writes.
    pub shadow_schema: String,
    /// Projection name offsets are stored under (the live projector's).
    pub projection: String,
    /// The topic.
    pub topic: String,
}

impl PgRebuild {
    /// Connects (a small pool with the server's default `search_path`).
    pub async fn connect(
        options: PgConnectOptions,
        live_schema: &str,
        shadow_schema: &str,
        projection: &str,
        topic: &str,
    ) -> Result<Self, RebuildError> {
        check_schema_name("--schema", live_schema)?;
        check_schema_name("--shadow-schema", shadow_schema)?;
        if live_schema == shadow_schema {
            return Err(RebuildError::SameSchema(live_schema.to_owned()));
        }
        let pool = PgPoolOptions::new()
            .max_connections(INDEX_BUILDS as u32 + 1)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| classify(e, "connecting to PostgreSQL"))?;
        Ok(Self {
            pool,
            options,
            live_schema: live_schema.to_owned(),
            shadow_schema: shadow_schema.to_owned(),
            projection: projection.to_owned(),
            topic: topic.to_owned(),
        })
    }

    /// Connection options whose sessions see the shadow schema only (for the shadow's sink).
    pub fn shadow_options(&self) -> PgConnectOptions {
        self.options
            .clone()
            .options([("search_path", self.shadow_schema.as_str())])
    }

    async fn table_exists(&self, schema: &str, table: &str) -> Result<bool, RebuildError> {
        Ok(table_exists(&self.pool, schema, table).await?)
    }

    /// Where the shadow's staging stands ([`stage`]).
    pub async fn stage_state(&self) -> Result<stage::StageState, RebuildError> {
        Ok(stage::state(&self.pool, &self.shadow_schema).await?)
    }

    /// Creates the shadow's staging tables, or empties them and its offsets after their rows
    /// were lost ([`stage::StageState::Lost`]).
    pub async fn create_stage(&self) -> Result<(), RebuildError> {
        Ok(stage::create(&self.pool, &self.shadow_schema).await?)
    }

    /// Derives the shadow's store from its staged rows ([`stage::finish`]), on a connection of
    /// its own that does not log its statements as slow: they are meant to take long.
    pub async fn finish_stage(&self) -> Result<u64, RebuildError> {
        let options = self.shadow_options().disable_statement_logging();
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| classify(e, "connecting to the shadow schema"))?;
        let events = stage::finish(&mut conn, &self.shadow_schema).await?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(events)
    }

    /// Whether a shadow from an earlier (interrupted) run exists.
    pub async fn shadow_exists(&self) -> Result<bool, RebuildError> {
        self.table_exists(&self.shadow_schema, "xclog_offsets")
            .await
    }

    /// Stored offsets of this projection and topic in `schema` (empty if it has no store).
    pub async fn offsets(&self, schema: &str) -> Result<BTreeMap<i32, i64>, RebuildError> {
        if !self.table_exists(schema, "xclog_offsets").await? {
            return Ok(BTreeMap::new());
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| classify(e, "reading stored offsets"))?;
        self.read_offsets(&mut conn, schema)
            .await
            .map_err(|e| classify(e, "reading stored offsets").into())
    }

    /// This projection's stored offsets in `schema`, on `conn` (a pool connection or a
    /// transaction).
    async fn read_offsets(
        &self,
        conn: &mut sqlx::PgConnection,
        schema: &str,
    ) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
        let rows: Vec<(i32, i64)> = sqlx::query_as(&format!(
            "SELECT partition, next_offset FROM \"{schema}\".xclog_offsets \
             WHERE projection = $1 AND topic = $2"
        ))
        .bind(&self.projection)
        .bind(&self.topic)
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Refuses a live store that also holds other topics (their rows would be dropped).
    pub async fn check_single_topic(&self) -> Result<(), RebuildError> {
        if !self
            .table_exists(&self.live_schema, "xclog_offsets")
            .await?
        {
            return Ok(());
        }
        let others: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT topic, projection FROM \"{}\".xclog_offsets WHERE topic <> $1 \
             ORDER BY 1, 2",
            self.live_schema
        ))
        .bind(&self.topic)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(e, "reading stored offsets"))?;
        if others.is_empty() {
            Ok(())
        } else {
            Err(RebuildError::OtherTopics(
                others
                    .iter()
                    .map(|(t, p)| format!("topic {t} as projection {p}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        }
    }

    /// Creates the shadow schema and applies the migrations inside it (idempotent).
    pub async fn prepare_shadow(&self) -> Result<(), RebuildError> {
        self.pool
            .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.shadow_schema).as_str())
            .await
            .map_err(|e| classify(e, "creating the shadow schema"))?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.shadow_options())
            .await
            .map_err(|e| classify(e, "connecting to the shadow schema"))?;
        let result = MIGRATOR.run(&pool).await;
        pool.close().await;
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => {
                classify(inner, "migrating the shadow schema")
            }
            other => SinkError::Fatal {
                context: "migrating the shadow schema",
                source: Box::new(other),
            },
        })?;
        Ok(())
    }

    /// Drops the shadow's secondary indexes (those not backing a primary key or a unique
    /// constraint, which the writes need), keeping their definitions in the shadow schema, so
    /// the bulk of the history is written without maintaining them. Returns how many.
    pub async fn defer_indexes(&self) -> Result<usize, RebuildError> {
        let ctx = "deferring the shadow's secondary indexes";
        let err = |e| classify(e, ctx);
        let shadow = &self.shadow_schema;
        let mut tx = self.pool.begin().await.map_err(err)?;
        tx.execute(
            format!(
                "CREATE TABLE IF NOT EXISTS \"{shadow}\".{DEFERRED_INDEXES} \
                 (name TEXT PRIMARY KEY, definition TEXT NOT NULL)"
            )
            .as_str(),
        )
        .await
        .map_err(err)?;
        let tables: Vec<String> = STORE_TABLES.iter().map(|t| (*t).to_owned()).collect();
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT ci.relname::text, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i \
             JOIN pg_class ct ON ct.oid = i.indrelid \
             JOIN pg_class ci ON ci.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = ct.relnamespace \
             WHERE n.nspname = $1 AND ct.relname = ANY($2) \
               AND NOT i.indisprimary AND NOT i.indisunique \
             ORDER BY 1",
        )
        .bind(shadow)
        .bind(&tables)
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        for (name, definition) in &indexes {
            sqlx::query(&format!(
                "INSERT INTO \"{shadow}\".{DEFERRED_INDEXES} (name, definition) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING"
            ))
            .bind(name)
            .bind(definition)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.execute(format!("DROP INDEX \"{shadow}\".\"{name}\"").as_str())
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(indexes.len())
    }

    /// Secondary indexes deferred by [`PgRebuild::defer_indexes`] and not yet rebuilt.
    pub async fn deferred_indexes(&self) -> Result<Vec<(String, String)>, RebuildError> {
        if !self
            .table_exists(&self.shadow_schema, DEFERRED_INDEXES)
            .await?
        {
            return Ok(Vec::new());
        }
        sqlx::query_as(&format!(
            "SELECT name, definition FROM \"{}\".{DEFERRED_INDEXES} ORDER BY name",
            self.shadow_schema
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(e, "reading the deferred indexes").into())
    }

    /// Builds the deferred indexes, each in one transaction with its bookkeeping (so an
    /// interruption never builds one twice nor forgets one), then drops the bookkeeping table.
    /// [`INDEX_BUILDS`] are built at once, the GIN index first (the longest): a build is one
    /// scan of its table and a sort, and two on one table overlap (`CREATE INDEX` takes a
    /// `SHARE` lock, which does not conflict with itself).
    pub async fn restore_indexes(&self) -> Result<usize, RebuildError> {
        let mut pending = self.deferred_indexes().await?;
        pending
            .sort_by_key(|(name, definition)| (!definition.contains(" USING gin "), name.clone()));
        let built = pending.len();
        let queue = std::sync::Mutex::new(VecDeque::from(pending));
        // Each builder takes the next index when it is done. A builder that fails empties the
        // queue, so the others end after the index they are building: dropping one mid-build
        // would leave the server building it (and locking its table) after we are gone.
        let results =
            futures::future::join_all((0..INDEX_BUILDS).map(|_| self.build_indexes_from(&queue)))
                .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        self.pool
            .execute(
                format!(
                    "DROP TABLE IF EXISTS \"{}\".{DEFERRED_INDEXES}",
                    self.shadow_schema
                )
                .as_str(),
            )
            .await
            .map_err(|e| classify(e, "building the shadow's secondary indexes"))?;
        Ok(built)
    }

    /// Builds deferred indexes taken from `queue` one after the other, until it is empty.
    async fn build_indexes_from(
        &self,
        queue: &std::sync::Mutex<VecDeque<(String, String)>>,
    ) -> Result<(), RebuildError> {
        loop {
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some((name, definition)) = next else {
                return Ok(());
            };
            if let Err(e) = self.build_index(&name, &definition).await {
                queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return Err(e);
            }
        }
    }

    /// Builds one deferred index in one transaction with the removal of its bookkeeping row.
    async fn build_index(&self, name: &str, definition: &str) -> Result<(), RebuildError> {
        let err = |e| classify(e, "building the shadow's secondary indexes");
        let mut tx = self.pool.begin().await.map_err(err)?;
        tx.execute(definition).await.map_err(err)?;
        sqlx::query(&format!(
            "DELETE FROM \"{}\".{DEFERRED_INDEXES} WHERE name = $1",
            self.shadow_schema
        ))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    /// Swaps the shadow in if it has caught up with the live store (see the module docs).
    /// `old_schema` receives the previous store.
    pub async fn try_swap(&self, old_schema: &str) -> Result<SwapOutcome, RebuildError> {
        check_schema_name("old schema", old_schema)?;
        let pending = self.deferred_indexes().await?.len();
        if pending > 0 {
            return Err(RebuildError::IndexesPending(pending));
        }
        let ctx = "swapping the rebuilt store in";
        let err = |e| classify(e, ctx);
        let (live_schema, shadow_schema) = (&self.live_schema, &self.shadow_schema);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Never queue forever behind a long reader: give up and try again later.
        tx.execute("SET LOCAL lock_timeout = '10s'")
            .await
            .map_err(err)?;
        let live_has_store = self.table_exists(live_schema, "xclog_offsets").await?;
        // Live first, then shadow: the only order anyone takes both in.
        let locked: &[&str] = if live_has_store {
            &[live_schema, shadow_schema]
        } else {
            &[shadow_schema]
        };
        for schema in locked {
            tx.execute(
                format!("LOCK TABLE \"{schema}\".xclog_offsets IN ACCESS EXCLUSIVE MODE").as_str(),
            )
            .await
            .map_err(err)?;
        }
        let live = if live_has_store {
            self.read_offsets(&mut tx, live_schema).await.map_err(err)?
        } else {
            BTreeMap::new()
        };
        let shadow = self
            .read_offsets(&mut tx, shadow_schema)
            .await
            .map_err(err)?;
        if !caught_up(&shadow, &live) {
            tx.rollback().await.map_err(err)?;
            return Ok(SwapOutcome::Behind { shadow, live });
        }
        tx.execute(format!("CREATE SCHEMA \"{old_schema}\"").as_str())
            .await
            .map_err(err)?;
        for table in STORE_TABLES {
            tx.execute(
                format!("ALTER TABLE IF EXISTS \"{live_schema}\".\"{table}\" SET SCHEMA \"{old_schema}\"")
                    .as_str(),
            )
            .await
            .map_err(err)?;
            tx.execute(
                format!("ALTER TABLE IF EXISTS \"{shadow_schema}\".\"{table}\" SET SCHEMA \"{live_schema}\"")
                    .as_str(),
            )
            .await
            .map_err(err)?;
        }
        // Only leftovers remain in the shadow schema now (the store tables moved).
        tx.execute(format!("DROP SCHEMA \"{shadow_schema}\" CASCADE").as_str())
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(SwapOutcome::Swapped {
            old_schema: old_schema.to_owned(),
            offsets: shadow,
        })
    }

    /// Drops a schema and everything in it (the previous store after a swap, or a shadow).
    pub async fn drop_schema(&self, schema: &str) -> Result<(), RebuildError> {
        check_schema_name("schema", schema)?;
        self.pool
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await
            .map_err(|e| classify(e, "dropping a schema"))?;
        Ok(())
    }

    /// Rows in the shadow's event table (for progress and the summary).
    pub async fn count_events(&self, schema: &str) -> Result<i64, RebuildError> {
        if !self.table_exists(schema, "fsm_events").await? {
            return Ok(0);
        }
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".fsm_events"))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(e, "counting events").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(i32, i64)]) -> BTreeMap<i32, i64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn history_deleted_below_the_start_is_reported_per_partition() {
        let low = map(&[(0, 0), (1, 42), (2, 10)]);
        let start = map(&[(2, 10)]);
        let missing = missing_history(&start, &low);
        assert_eq!(
            missing,
            vec![MissingHistory {
                partition: 1,
                from: 0,
                to: 42
            }]
        );
        assert_eq!(
            missing[0].to_string(),
            "partition 1: offsets 0..41 are no longer in the topic (it now starts at offset 42)"
        );
    }

    #[test]
    fn a_resume_point_past_the_low_watermark_needs_nothing_deleted() {
        assert!(missing_history(&map(&[(0, 50)]), &map(&[(0, 50)])).is_empty());
        assert_eq!(missing_history(&map(&[(0, 49)]), &map(&[(0, 50)])).len(), 1);
    }

    #[test]
    fn caught_up_needs_every_live_partition_reached() {
        assert!(caught_up(&map(&[(0, 5), (1, 7)]), &map(&[(0, 5), (1, 6)])));
        assert!(!caught_up(&map(&[(0, 5)]), &map(&[(0, 5), (1, 1)])));
        assert!(caught_up(&map(&[]), &map(&[])));
        assert!(!caught_up(&map(&[(0, 4)]), &map(&[(0, 5)])));
    }

    #[test]
    fn the_target_is_the_end_of_the_topic_or_the_live_store_if_it_is_further() {
        assert_eq!(
            target(&map(&[(0, 10), (1, 3)]), &map(&[(1, 5), (2, 1)])),
            map(&[(0, 10), (1, 5)])
        );
    }

    #[test]
    fn remaining_counts_records_up_to_the_target() {
        assert_eq!(remaining(&map(&[(0, 5)]), &map(&[(0, 10), (1, 3)])), 8);
        assert_eq!(remaining(&map(&[(0, 12)]), &map(&[(0, 10)])), 0);
    }

    #[test]
    fn the_shadow_projector_has_its_own_group_dead_letters_and_backlog_batches_and_no_ops_server() {
        let mut live = ProjectorConfig::new("127.0.0.1:9092", "t", "g");
        live.http_addr = Some("127.0.0.1:9187".parse().unwrap());
        live.batch_max_records = 100;
        live.batch_max_latency = std::time::Duration::from_millis(200);
        live.batch_linger = std::time::Duration::from_millis(5);
        let shadow = shadow_projector_config(&live, false, 2500);
        assert_eq!(shadow.group_id, "g.rebuild");
        assert_eq!(shadow.dead_letter_topic, "t.dlq.rebuild");
        assert_eq!(shadow.http_addr, None);
        assert_eq!(shadow.batch_max_records, 2500);
        assert_eq!(
            shadow.batch_max_latency,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(shadow.batch_linger, shadow.batch_max_latency);
        assert_eq!(shadow.topic, "t");
        live.dead_letter_topic = "chosen.dlq".to_owned();
        let shadow = shadow_projector_config(&live, true, 0);
        assert_eq!(shadow.dead_letter_topic, "chosen.dlq");
        assert_eq!(
            shadow.batch_max_records, 100,
            "min_batch 0 keeps the live size"
        );
    }

    #[test]
    fn the_old_store_gets_a_dated_name_in_utc() {
        assert_eq!(old_schema_name(0), "xclog_old_19700101_000000");
        // 2026-11-28 07:10:10 UTC
        assert_eq!(old_schema_name(1_795_849_810), "xclog_old_20261128_071010");
        // 2024-02-29 23:59:59 UTC (leap day)
        assert_eq!(old_schema_name(1_709_251_199), "xclog_old_20240229_235959");
        assert!(check_schema_name("old", &old_schema_name(1_795_849_810)).is_ok());
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["public", "xclog_rebuild", "_x1"] {
            assert!(check_schema_name("--schema", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1x", "Public", "a-b", "a\"; drop table x; --", "a.b"] {
            let e = check_schema_name("--schema", bad).unwrap_err();
            assert!(e.to_string().contains("--schema"), "{e}");
        }
    }
}
