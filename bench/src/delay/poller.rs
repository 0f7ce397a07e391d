//! The visibility poller: asks the store which of the outstanding events it holds, every
//! poll interval (stretched while its queries are slow, so it does not slow the sink down),
//! and records the instant each answer arrived as the instant those rows became visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use tokio::task::JoinHandle;

use super::{DelayArgs, Tracker, lock};

/// The poller waits at least this many times its recent query duration between the starts of
/// two polls, so it keeps the store busy at most a quarter of the time when many rows are
/// outstanding (a queue that the sink has to work through) instead of slowing the sink down.
const POLL_DUTY_INVERSE: u32 = 4;

/// The time between the starts of two polls: the asked interval, stretched when the recent
/// queries took long (see [`POLL_DUTY_INVERSE`]).
fn poll_gap(every: Duration, recent: Duration) -> Duration {
    every.max(recent * POLL_DUTY_INVERSE)
}

/// The recent query duration: a moving average (weight 1/5 to the last query), so that one
/// slow query does not stretch the next gap on its own.
fn smooth(recent: Duration, took: Duration) -> Duration {
    (recent * 4 + took) / 5
}

/// Query durations and gaps of the poller (counting the polls that asked for something).
#[derive(Debug, Default)]
pub(super) struct PollStats {
    pub(super) polls: u64,
    pub(super) total: Duration,
    pub(super) max: Duration,
    pub(super) gaps: Duration,
    pub(super) max_gap: Duration,
}

/// Where the poller looks for the events.
pub(super) enum Store {
    Pg {
        conn: sqlx::PgConnection,
        sql: String,
        table: String,
    },
    Mongo(mongodb::Collection<mongodb::bson::Document>),
}

impl Store {
    pub(super) async fn connect(args: &DelayArgs) -> anyhow::Result<Self> {
        match (&args.pg_url, &args.mongo_uri, &args.db) {
            (Some(url), None, _) => Self::pg(url, &args.table).await,
            (None, Some(uri), Some(db)) => {
                let client = mongodb::Client::with_uri_str(uri)
                    .await
                    .context("connecting to MongoDB (--mongo-uri)")?;
                Ok(Self::Mongo(
                    client.database(db).collection(&args.collection),
                ))
            }
            _ => bail!("give --pg-url, or --mongo-uri with --db"),
        }
    }

    /// The poller's PostgreSQL connection. Every poll is planned for the array and the table as
    /// they are (`plan_cache_mode = force_custom_plan`): after five polls PostgreSQL may switch
    /// to a generic plan, which it may keep until the table is next analyzed; one made while the
    /// table was small scanned the whole table and searched the array of every outstanding id linearly
    /// for each row (a poll of ~80,000 ids took 12 s, then 120 s, at 7,000 events/s; the sink
    /// had written every row within a second).
    async fn pg(url: &str, table: &str) -> anyhow::Result<Self> {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL (--pg-url)")?;
        sqlx::query("SET plan_cache_mode = force_custom_plan")
            .execute(&mut conn)
            .await
            .context("setting plan_cache_mode on the poller's connection (PostgreSQL 12+)")?;
        Ok(Self::Pg {
            conn,
            sql: format!("SELECT id FROM {table} WHERE id = ANY($1)"),
            table: table.to_owned(),
        })
    }

    /// The store's kind, as the results name it.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Pg { .. } => "postgres",
            Self::Mongo(_) => "mongo",
        }
    }

    /// Where the events are looked for (a table, or `database.collection`).
    pub(super) fn place(&self) -> String {
        match self {
            Self::Pg { table, .. } => table.clone(),
            Self::Mongo(c) => c.namespace().to_string(),
        }
    }

    /// Which of `ids` are stored.
    async fn found(&mut self, ids: &[String]) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Pg { conn, sql, .. } => sqlx::query_scalar(sql.as_str())
                .bind(ids)
                .fetch_all(conn)
                .await
                .with_context(|| format!("polling with `{sql}`")),
            Self::Mongo(collection) => {
                let mut cursor = collection
                    .find(mongodb::bson::doc! {"_id": {"$in": ids}})
                    .projection(mongodb::bson::doc! {"_id": 1})
                    .await
                    .with_context(|| format!("polling {}", collection.name()))?;
                let mut found = Vec::new();
                while cursor
                    .advance()
                    .await
                    .with_context(|| format!("polling {}", collection.name()))?
                {
                    if let Ok(id) = cursor.current().get_str("_id") {
                        found.push(id.to_owned());
                    }
                }
                Ok(found)
            }
        }
    }
}

pub(super) async fn poll_visibility(
    mut store: Store,
    tracker: Arc<Mutex<Tracker>>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<PollStats> {
    let mut stats = PollStats::default();
    let mut next = Instant::now();
    let mut recent = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let asked = Instant::now();
        let ids = lock(&tracker).outstanding();
        if ids.is_empty() {
            next = asked + every;
            continue;
        }
        let found = store.found(&ids).await?;
        let at = Instant::now();
        let took = at - asked;
        stats.polls += 1;
        stats.total += took;
        stats.max = stats.max.max(took);
        recent = smooth(recent, took);
        let gap = poll_gap(every, recent);
        next = asked + gap;
        stats.gaps += gap;
        stats.max_gap = stats.max_gap.max(gap);
        let mut t = lock(&tracker);
        for id in &found {
            t.seen(id, at);
        }
    }
    Ok(stats)
}

/// The poller's error once it has stopped on its own.
pub(super) async fn poller_failure(
    poller: &mut JoinHandle<anyhow::Result<PollStats>>,
) -> anyhow::Error {
    match poller.await {
        Ok(Err(error)) => error.context("the visibility poller failed"),
        Ok(Ok(_)) => anyhow::anyhow!("the visibility poller stopped early"),
        Err(join) => anyhow::anyhow!("the visibility poller panicked: {join}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the stack's PostgreSQL: ten polls of 1,000 ids on an empty table (where a
    /// generic plan would be a sequential scan searching the array linearly for every row),
    /// then the plans PostgreSQL used on the poller's own connection.
    #[tokio::test]
    async fn the_poller_plans_every_poll_for_the_table_as_it_is() -> anyhow::Result<()> {
        let db = xclog_tests::TestPg::create().await?;
        sqlx::query("CREATE TABLE probe (id text PRIMARY KEY)")
            .execute(&db.pool)
            .await?;
        let mut store = Store::pg(&db.url, "probe").await?;
        let ids: Vec<String> = (0..1000).map(|n| format!("id-{n}")).collect();
        for _ in 0..10 {
            assert!(store.found(&ids).await?.is_empty());
        }
        sqlx::query("INSERT INTO probe SELECT 'id-' || n FROM generate_series(0, 9) n")
            .execute(&db.pool)
            .await?;
        assert_eq!(store.found(&ids).await?.len(), 10);
        let Store::Pg { conn, .. } = &mut store else {
            unreachable!("Store::pg makes a PostgreSQL store")
        };
        let (generic, custom): (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
             WHERE statement LIKE '%FROM probe%' AND statement NOT LIKE '%pg_prepared%'",
        )
        .fetch_one(&mut *conn)
        .await?;
        assert_eq!(generic, 0, "a generic plan was used ({custom} custom)");
        assert_eq!(custom, 11);
        Ok(())
    }

    #[test]
    fn the_poller_backs_off_when_its_queries_are_long() {
        let every = Duration::from_millis(10);
        assert_eq!(poll_gap(every, Duration::from_millis(1)), every);
        assert_eq!(
            poll_gap(every, Duration::from_millis(25)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn one_slow_query_moves_the_recent_duration_by_a_fifth() {
        let ms = Duration::from_millis;
        assert_eq!(smooth(ms(10), ms(10)), ms(10));
        assert_eq!(smooth(ms(10), ms(510)), ms(110));
        assert_eq!(smooth(ms(110), ms(10)), ms(90));
    }
}
