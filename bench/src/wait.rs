//! `wait`: polls a count (SQL query or Mongo collection) until it reaches a target, with a
//! deadline, and samples the peak RSS of a process meanwhile. The rate it reports is measured
//! from the first poll that saw rows to the poll that saw them all, so process start-up (a
//! JVM's, migrations) is reported apart (`first_s`) instead of diluting the rate.
//!
//! The poll must not load the side it measures: `SELECT count(*)` of a table of a million rows
//! scans it (about half a second on the bench machine), and polled back to back it took most
//! of one of the two cores from the sink. So the gap after a poll is at least
//! [`QUERY_SHARE`] times the query's own time (the poller keeps a core busy at most a tenth of
//! the time), shortened to the time the count is expected to reach the target at the rate seen
//! so far, so that the end is still seen within about one query.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// Options of `xclog-bench wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// PostgreSQL URL to run `--query` on.
    #[arg(long, requires = "query", conflicts_with = "mongo_uri")]
    pg_url: Option<String>,
    /// SQL returning one BIGINT (the count), e.g. `SELECT count(*) FROM fsm_events`.
    #[arg(long)]
    query: Option<String>,
    /// MongoDB URI (with `--db` and `--collection`).
    #[arg(long, requires_all = ["db", "collection"])]
    mongo_uri: Option<String>,
    /// Mongo database.
    #[arg(long)]
    db: Option<String>,
    /// Mongo collection.
    #[arg(long)]
    collection: Option<String>,
    /// Count to wait for.
    #[arg(long)]
    count: i64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Process whose peak RSS (VmHWM) to report.
    #[arg(long)]
    pid: Option<u32>,
    /// Kafka Connect REST address (host:port): fail as soon as a task of it has FAILED.
    #[arg(long)]
    connect_rest: Option<String>,
    /// Once the count is reached, also wait until the offsets the projector stored in the same
    /// store (`xclog_offsets`) add up to this many records, and report the rate to that poll:
    /// a sink whose rows become visible before the rest of their batch is written (the Mongo
    /// sink inserts a batch's events before its `caused` links and snapshots) has finished
    /// only then. The rate of the rows alone is kept as `visible_rate`.
    #[arg(long)]
    done_offsets: Option<i64>,
    /// Milliseconds between polls (at least; see the module documentation).
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
}

/// The gap after a poll is at least this many times the poll's own query time.
const QUERY_SHARE: u32 = 9;

/// The wait before the next poll: `poll`, stretched to [`QUERY_SHARE`] times the query's
/// time, but no longer than the time the count needs to reach `target` at the rate seen since
/// the first rows (`first`: seconds and count then; `now`, `n`: now).
fn next_gap(
    poll: Duration,
    query: Duration,
    first: Option<(f64, i64)>,
    now: f64,
    n: i64,
    target: i64,
) -> Duration {
    let gap = poll.max(query * QUERY_SHARE);
    match first {
        Some((t0, n0)) if now > t0 && n > n0 => {
            let rate = (n - n0) as f64 / (now - t0);
            let eta = Duration::from_secs_f64(((target - n).max(0) as f64 / rate).min(3600.0));
            gap.min(eta.max(poll))
        }
        _ => gap,
    }
}

enum Counter {
    Pg(sqlx::PgConnection, String),
    /// The database (for its `xclog_offsets`) and the collection counted.
    Mongo(mongodb::Database, mongodb::Collection<Document>),
}

impl Counter {
    /// The sum of the offsets stored in the same store (records the projector has finished).
    async fn stored_offsets(&mut self) -> anyhow::Result<i64> {
        match self {
            Counter::Pg(conn, _) => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM xclog_offsets",
            )
            .fetch_one(conn)
            .await?),
            Counter::Mongo(db, _) => {
                let mut cursor = db
                    .collection::<Document>("xclog_offsets")
                    .find(doc! {})
                    .await?;
                let mut sum = 0i64;
                while cursor.advance().await? {
                    let d = cursor.deserialize_current()?;
                    sum += match d.get("nextOffset") {
                        Some(mongodb::bson::Bson::Int64(n)) => *n,
                        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
                        _ => 0,
                    };
                }
                Ok(sum)
            }
        }
    }

    async fn count(&mut self) -> anyhow::Result<i64> {
        match self {
            Counter::Pg(conn, query) => Ok(sqlx::query_scalar::<_, i64>(query.as_str())
                .fetch_one(conn)
                .await?),
            Counter::Mongo(_, collection) => Ok(collection.count_documents(doc! {}).await? as i64),
        }
    }
}

/// Peak resident set size of `pid` in KiB (VmHWM), if the process still runs (not a zombie).
pub(crate) fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        return None;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The status of the worker's connectors if one of their tasks is FAILED (`None` while the
/// worker is not answering yet, or all is well).
fn failed_connect_task(rest: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(rest).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /connectors?expand=status HTTP/1.0\r\nHost: {rest}\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.contains("\"FAILED\"")
        .then(|| body.split("\r\n\r\n").nth(1).unwrap_or(&body).to_owned())
}

/// Runs the wait; returns `{"count","first_s","first_count","done_s","rate","peak_rss_kb"}`.
pub async fn run(args: WaitArgs) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut counter = if let (Some(url), Some(query)) = (&args.pg_url, &args.query) {
        let conn = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        Counter::Pg(conn, query.clone())
    } else if let (Some(uri), Some(db), Some(coll)) = (&args.mongo_uri, &args.db, &args.collection)
    {
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .context("connecting to MongoDB")?;
        let db = client.database(db);
        let coll = db.collection(coll);
        Counter::Mongo(db, coll)
    } else {
        bail!("give --pg-url with --query, or --mongo-uri with --db and --collection");
    };
    let deadline = started + Duration::from_secs(args.timeout_s);
    let mut first: Option<(f64, i64)> = None;
    let mut peak = 0u64;
    let mut last;
    let (mut polls, mut query_total) = (0u32, Duration::ZERO);
    loop {
        // Not existing yet (table or database being created) counts as zero.
        let asked = Instant::now();
        let n = counter.count().await.unwrap_or(0);
        let query = asked.elapsed();
        polls += 1;
        query_total += query;
        let now = started.elapsed().as_secs_f64();
        if let Some(pid) = args.pid {
            match peak_rss_kb(pid) {
                Some(kb) => peak = peak.max(kb),
                None => bail!(
                    "process {pid} exited before the count reached {}",
                    args.count
                ),
            }
        }
        if let Some(rest) = &args.connect_rest
            && let Some(trace) = failed_connect_task(rest)
        {
            bail!("a Kafka Connect task failed: {trace}");
        }
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        last = n;
        if n >= args.count {
            let (first_s, first_count) = first.unwrap_or((now, n));
            let rate_to = |end: f64| {
                let rate = (n - first_count) as f64 / (end - first_s);
                if rate.is_finite() && end > first_s {
                    json!(rate)
                } else {
                    Value::Null
                }
            };
            let mut out = json!({
                "count": n, "first_s": first_s, "first_count": first_count, "done_s": now,
                "rate": rate_to(now),
                "peak_rss_kb": args.pid.map(|_| peak),
                "polls": polls,
                "poll_query_mean_ms": query_total.as_secs_f64() * 1000.0 / f64::from(polls),
            });
            if let Some(records) = args.done_offsets {
                let finished =
                    finish(&mut counter, records, started, deadline, &args, &mut peak).await?;
                out["visible_rate"] = out["rate"].clone();
                out["rate"] = rate_to(finished);
                out["finished_s"] = json!(finished);
                out["peak_rss_kb"] = json!(args.pid.map(|_| peak));
            }
            return Ok(out);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} s: count is {last}, expected {}",
                args.timeout_s,
                args.count
            );
        }
        let poll = Duration::from_millis(args.poll_ms);
        tokio::time::sleep(next_gap(poll, query, first, now, n, args.count)).await;
    }
}

/// Polls the stored offsets until they add up to `records`; returns the seconds since `started`
/// of the poll that saw it (the gap is the poll interval: the offsets are a handful of rows).
async fn finish(
    counter: &mut Counter,
    records: i64,
    started: Instant,
    deadline: Instant,
    args: &WaitArgs,
    peak: &mut u64,
) -> anyhow::Result<f64> {
    loop {
        let stored = counter.stored_offsets().await.unwrap_or(0);
        if let Some(kb) = args.pid.and_then(peak_rss_kb) {
            *peak = (*peak).max(kb);
        }
        if stored >= records {
            return Ok(started.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} s: the stored offsets add up to {stored} records, expected {records}",
                args.timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_count_stretches_the_gap_and_the_expected_end_shortens_it() {
        let ms = Duration::from_millis;
        // Fast query, no rows yet: the poll interval.
        assert_eq!(next_gap(ms(250), ms(5), None, 1.0, 0, 1000), ms(250));
        // A 600 ms count: 9 times that, while the end is far.
        assert_eq!(
            next_gap(ms(250), ms(600), Some((0.0, 0)), 10.0, 1000, 100_000),
            ms(5400)
        );
        // 1,000 rows/s and 2,000 to go: the poll lands on the expected end (2 s), not later.
        assert_eq!(
            next_gap(ms(250), ms(600), Some((0.0, 0)), 10.0, 10_000, 12_000),
            ms(2000)
        );
        // Almost there: never below the poll interval.
        assert_eq!(
            next_gap(ms(250), ms(600), Some((0.0, 0)), 10.0, 10_000, 10_001),
            ms(250)
        );
    }
}
