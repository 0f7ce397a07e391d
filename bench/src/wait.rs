//! `wait`: polls a count (SQL query or Mongo collection) until it reaches a target, with a
//! deadline, and samples the peak RSS of a process meanwhile. The rate it reports is measured
//! from the first poll that saw rows to the poll that saw them all, so process start-up (a
//! JVM's, migrations) is reported apart (`first_s`) instead of diluting the rate.

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
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
}

enum Counter {
    Pg(sqlx::PgConnection, String),
    Mongo(mongodb::Collection<Document>),
}

impl Counter {
    async fn count(&mut self) -> anyhow::Result<i64> {
        match self {
            Counter::Pg(conn, query) => Ok(sqlx::query_scalar::<_, i64>(query.as_str())
                .fetch_one(conn)
                .await?),
            Counter::Mongo(collection) => Ok(collection.count_documents(doc! {}).await? as i64),
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
        Counter::Mongo(client.database(db).collection(coll))
    } else {
        bail!("give --pg-url with --query, or --mongo-uri with --db and --collection");
    };
    let deadline = started + Duration::from_secs(args.timeout_s);
    let mut first: Option<(f64, i64)> = None;
    let mut peak = 0u64;
    let mut last;
    loop {
        // Not existing yet (table or database being created) counts as zero.
        let n = counter.count().await.unwrap_or(0);
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
            let span = now - first_s;
            let rate = if span > 0.0 {
                (n - first_count) as f64 / span
            } else {
                f64::NAN
            };
            return Ok(json!({
                "count": n, "first_s": first_s, "first_count": first_count, "done_s": now,
                "rate": if rate.is_finite() { json!(rate) } else { Value::Null },
                "peak_rss_kb": args.pid.map(|_| peak),
            }));
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} s: count is {last}, expected {}",
                args.timeout_s,
                args.count
            );
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}
