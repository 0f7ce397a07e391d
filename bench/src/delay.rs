//! `delay`: the end-to-end delay of a sink, "publish acknowledged -> row visible", while events
//! arrive at a steady rate.
//!
//! It publishes fresh events of the workload generator (`xclog_workload`, with a seed
//! of its own so every id is new to the store) at `--rate` events/s for `--seconds`, in one of
//! two forms:
//! - `xclog`: the records `xclog produce` writes (events and the snapshots that fall due,
//!   protobuf, keyed by instance id), through the xclog producer, for `xclog project`;
//! - `jdbc`: the JDBC peer's JSON-with-schema records of the same events (the form `prepare`
//!   writes), events only;
//! - `mongo`: the Mongo peer's JSON documents of the same events (the form `prepare` writes,
//!   keyed by event id), events only.
//!
//! The store is PostgreSQL (`--pg-url`, rows of `--table` by `id`) or MongoDB (`--mongo-uri`
//! with `--db`, documents of `--collection` by `_id`, the event id for our projector and the
//! peer alike).
//!
//! Pacing: event n is due n / rate seconds after the start; a send more than 100 ms behind
//! that schedule restarts the schedule from now instead of bursting to catch up (counted in
//! `schedule_resets`). Tokio's timer has a 1 ms granularity, so above 1,000 events/s the
//! events of one millisecond leave together.
//!
//! The acknowledgement instant of an event is when its delivery future resolves (a task per
//! record awaits it). Meanwhile a poller runs `SELECT id FROM <table> WHERE id = ANY($1)`
//! (MongoDB: `find({_id: {$in: [...]}})`, `_id` only; PostgreSQL plans each poll for the
//! array and the table as they are, `plan_cache_mode = force_custom_plan`) every `--poll-ms`
//! with every sent event not seen yet (stretched to 4 times the recent mean
//! query duration when that is longer, so the poller keeps the store busy at most about a
//! quarter of the time), and takes the instant the answer arrived as the instant those rows became
//! visible: a delay is overstated by at most one poll gap plus one query (`poll_gap_*_ms`,
//! `poll_query_*_ms`). Delay = visible - acknowledged; a row seen before its acknowledgement
//! was processed counts as 0 (counted in `seen_before_ack`). `p50_first_half_ms` and
//! `p50_second_half_ms` (events in publishing order) show whether the sink kept up.
//!
//! Before the measurement one warm-up event must become visible, so the sink's start-up and
//! group join are not counted as delay. After publishing it waits at most `--timeout-s` for
//! the remaining acknowledgements and rows; an event that was not acknowledged or never became
//! visible fails the run (nonzero exit, with the count and the first ids).

mod poller;
mod publisher;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use xclog_producer::DEFAULT_SNAPSHOT_INTERVAL;
use xclog_schema::Record;
use xclog_workload::{Workload, WorkloadConfig};

use poller::{PollStats, Store, poll_visibility, poller_failure};
use publisher::{Ack, PUBLISH_LINGER, Publisher};

/// How far behind its schedule a send may fall before the schedule restarts from now.
const MAX_LAG_S: f64 = 0.1;

/// The form of the published records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The xclog records `xclog project` reads (through the xclog producer).
    Xclog,
    /// The JDBC peer's JSON-with-schema records (events only).
    Jdbc,
    /// The Mongo peer's JSON documents (events only).
    Mongo,
}

/// Options of `xclog-bench delay`.
#[derive(Debug, clap::Args)]
pub struct DelayArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to publish to; it must exist and the sink must read it.
    #[arg(long)]
    topic: String,
    /// Form of the records.
    #[arg(long, value_enum)]
    format: Format,
    /// Events per second to publish.
    #[arg(long)]
    rate: f64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// PostgreSQL URL of the sink's store (or `--mongo-uri`).
    #[arg(
        long,
        required_unless_present = "mongo_uri",
        conflicts_with = "mongo_uri"
    )]
    pg_url: Option<String>,
    /// Table whose `id` column holds the event ids (PostgreSQL).
    #[arg(long, default_value = "fsm_events")]
    table: String,
    /// MongoDB URI of the sink's store (with `--db`).
    #[arg(long, requires = "db")]
    mongo_uri: Option<String>,
    /// Mongo database of the sink's store.
    #[arg(long)]
    db: Option<String>,
    /// Mongo collection whose `_id` holds the event ids.
    #[arg(long, default_value = "events")]
    collection: String,
    /// Milliseconds between visibility polls (the resolution of the measurement).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Seconds to wait, once publishing ends, for the last acknowledgements and rows.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Seconds to wait for the warm-up event's row (the sink's start-up, group join).
    #[arg(long, default_value_t = 180)]
    warmup_timeout_s: u64,
    /// Workload seed (default: from the clock; every id must be new to the store).
    #[arg(long)]
    seed: Option<u64>,
    /// Order flows in progress at once (as `xclog produce --instances`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    instances: u64,
    /// Approximate size in bytes of each event's JSON payload (as `xclog produce`).
    #[arg(long, default_value_t = 500)]
    payload_bytes: usize,
    /// The sink's process: fail as soon as it has exited.
    #[arg(long)]
    pid: Option<u32>,
}

/// When each event was acknowledged and first seen in the store.
#[derive(Debug, Default, Clone, Copy)]
struct Timeline {
    /// Its rank in publishing order.
    n: usize,
    acked: Option<Instant>,
    seen: Option<Instant>,
}

/// What the publisher, the acknowledgement tasks and the poller know of the events.
#[derive(Debug, Default)]
struct Tracker {
    events: HashMap<String, Timeline>,
    /// Sent and not seen yet (what the poller asks for).
    unseen: HashSet<String>,
    /// Records (events or snapshots) whose delivery has not resolved yet.
    pending_acks: u64,
    /// Delivery failures, described.
    failures: Vec<String>,
}

impl Tracker {
    fn sent(&mut self, id: &str) {
        let n = self.events.len();
        self.events.insert(
            id.to_owned(),
            Timeline {
                n,
                ..Timeline::default()
            },
        );
        self.unseen.insert(id.to_owned());
    }

    fn acked(&mut self, id: &str, at: Instant) {
        if let Some(t) = self.events.get_mut(id) {
            t.acked.get_or_insert(at);
        }
    }

    fn seen(&mut self, id: &str, at: Instant) {
        if let Some(t) = self.events.get_mut(id) {
            t.seen.get_or_insert(at);
            self.unseen.remove(id);
        }
    }

    fn outstanding(&self) -> Vec<String> {
        self.unseen.iter().cloned().collect()
    }

    fn done(&self) -> bool {
        self.pending_acks == 0 && self.unseen.is_empty()
    }

    /// Forgets the events so far (the warm-up).
    fn clear(&mut self) {
        self.events.clear();
        self.unseen.clear();
    }

    /// The delays in ms of the events both acknowledged and seen, in publishing order, and
    /// how many of them were seen before their acknowledgement (counted as 0).
    fn delays_ms(&self) -> (Vec<f64>, usize) {
        let mut early = 0;
        let mut delays: Vec<(usize, f64)> = self
            .events
            .values()
            .filter_map(|t| match (t.acked, t.seen) {
                (Some(acked), Some(seen)) => {
                    if seen < acked {
                        early += 1;
                    }
                    Some((
                        t.n,
                        seen.saturating_duration_since(acked).as_secs_f64() * 1000.0,
                    ))
                }
                _ => None,
            })
            .collect();
        delays.sort_by_key(|&(n, _)| n);
        (delays.into_iter().map(|(_, d)| d).collect(), early)
    }

    /// Describes the events not acknowledged or not seen (for the failure message).
    fn missing(&self) -> String {
        let unacked = self.events.values().filter(|t| t.acked.is_none()).count();
        let mut first: Vec<&String> = self.unseen.iter().collect();
        first.sort();
        first.truncate(5);
        format!(
            "{} of {} events never became visible ({unacked} not acknowledged, {} deliveries \
             unresolved); first unseen ids: {first:?}",
            self.unseen.len(),
            self.events.len(),
            self.pending_acks
        )
    }
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The schedule of the sends: event n at n x interval, restarted from now when a send falls
/// more than `max_lag` behind (so a stall is never followed by a burst). Times are seconds
/// since the start.
#[derive(Debug)]
struct Pacer {
    interval: f64,
    next: f64,
    max_lag: f64,
    resets: u64,
    max_lateness: f64,
}

impl Pacer {
    fn new(rate: f64, max_lag: f64) -> Self {
        Self {
            interval: 1.0 / rate,
            next: 0.0,
            max_lag,
            resets: 0,
            max_lateness: 0.0,
        }
    }

    /// When the next event is due, given the time `now` (a due time before `now` means: send
    /// at once).
    fn next_send(&mut self, now: f64) -> f64 {
        let late = now - self.next;
        self.max_lateness = self.max_lateness.max(late);
        let at = if late > self.max_lag {
            self.resets += 1;
            now
        } else {
            self.next
        };
        self.next = at + self.interval;
        at
    }
}

/// The medians of the first and the second half of delays in publishing order: a second half
/// well above the first means a queue built up, i.e. the sink did not sustain the rate.
fn halves_p50(in_order: &[f64]) -> (Option<f64>, Option<f64>) {
    let (first, second) = in_order.split_at(in_order.len() / 2);
    let median = |half: &[f64]| {
        let mut sorted = half.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, 50.0)
    };
    (median(first), median(second))
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Awaits a record's delivery in a task of its own and records the instant it resolved.
fn watch(tracker: &Arc<Mutex<Tracker>>, id: Option<String>, ack: Ack) {
    let tracker = Arc::clone(tracker);
    tokio::spawn(async move {
        let outcome = ack.await;
        let at = Instant::now();
        let mut t = lock(&tracker);
        t.pending_acks -= 1;
        match (outcome, id) {
            (Ok(()), Some(id)) => t.acked(&id, at),
            (Ok(()), None) => {}
            (Err(error), id) => {
                let what = id.map_or_else(|| "a snapshot".to_owned(), |id| format!("event {id}"));
                t.failures.push(format!("{what}: {error}"));
            }
        }
    });
}

/// Waits until every sent event is acknowledged and seen; `Ok(false)` at the deadline.
async fn wait_done(
    tracker: &Mutex<Tracker>,
    poller: &mut JoinHandle<anyhow::Result<PollStats>>,
    pid: Option<u32>,
    deadline: Instant,
) -> anyhow::Result<bool> {
    loop {
        {
            let t = lock(tracker);
            if let Some(first) = t.failures.first() {
                bail!(
                    "{} records were not delivered; first: {first}",
                    t.failures.len()
                );
            }
            if t.done() {
                return Ok(true);
            }
        }
        if poller.is_finished() {
            return Err(poller_failure(poller).await);
        }
        if let Some(pid) = pid
            && crate::wait::peak_rss_kb(pid).is_none()
        {
            bail!("the sink's process {pid} has exited");
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the measurement; returns the delays (see the module documentation for the fields).
pub async fn run(args: DelayArgs) -> anyhow::Result<Value> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!(
            "--rate must be a positive number of events/s, got {}",
            args.rate
        );
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be positive, got {}", args.seconds);
    }
    if args.table.is_empty()
        || !args
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        bail!(
            "--table must be a plain (optionally schema-qualified) table name, got {:?}",
            args.table
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id())
    });
    let count = (args.rate * args.seconds).ceil().max(1.0) as u64;

    let store = Store::connect(&args).await?;
    let (store_kind, where_) = (store.kind(), store.place());
    let linger = PUBLISH_LINGER;
    let publisher = Publisher::connect(&args).await?;
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut poller = tokio::spawn(poll_visibility(
        store,
        Arc::clone(&tracker),
        Duration::from_millis(args.poll_ms),
        Arc::clone(&stop),
    ));
    let mut workload = Workload::new(WorkloadConfig {
        seed,
        events: count + 1,
        instances: usize::try_from(args.instances).unwrap_or(usize::MAX),
        payload_bytes: args.payload_bytes,
        snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
    });

    // Warm-up: the first event must become visible before anything is measured.
    let warmup_started = Instant::now();
    let Some(Record::Event(first)) = workload.next() else {
        bail!("the workload did not start with an event");
    };
    let first = Record::Event(first);
    send(&publisher, &tracker, &first).await?;
    let warmup_deadline = warmup_started + Duration::from_secs(args.warmup_timeout_s);
    if !wait_done(&tracker, &mut poller, args.pid, warmup_deadline).await? {
        bail!(
            "the warm-up event did not become visible in {} within {} s: {}",
            where_,
            args.warmup_timeout_s,
            lock(&tracker).missing()
        );
    }
    let warmup_s = warmup_started.elapsed().as_secs_f64();
    lock(&tracker).clear();

    // The measurement: the remaining `count` events on the schedule.
    let mut pacer = Pacer::new(args.rate, MAX_LAG_S);
    let started = Instant::now();
    let mut sends: Option<(Instant, Instant)> = None;
    let mut sent = 0u64;
    for record in workload {
        if matches!(record, Record::Event(_)) {
            let now = started.elapsed().as_secs_f64();
            let at = pacer.next_send(now);
            if at > now {
                tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
            }
            let now = Instant::now();
            sends = Some(sends.map_or((now, now), |(first, _)| (first, now)));
            sent += 1;
            if poller.is_finished() {
                return Err(poller_failure(&mut poller).await);
            }
        }
        send(&publisher, &tracker, &record).await?;
    }
    let published = Instant::now();
    let drain_deadline = published + Duration::from_secs(args.timeout_s);
    if !wait_done(&tracker, &mut poller, args.pid, drain_deadline).await? {
        bail!(
            "{} within {} s after publishing ended ({}, topic {})",
            lock(&tracker).missing(),
            args.timeout_s,
            where_,
            args.topic
        );
    }
    let drain_s = published.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let stats = match poller.await {
        Ok(result) => result?,
        Err(join) => bail!("the visibility poller panicked: {join}"),
    };
    publisher.close().await?;

    let (in_order, seen_before_ack) = lock(&tracker).delays_ms();
    if in_order.len() as u64 != sent {
        bail!("measured {} delays for {sent} events sent", in_order.len());
    }
    let (p50_first_half, p50_second_half) = halves_p50(&in_order);
    let mut delays = in_order;
    delays.sort_by(f64::total_cmp);
    let rate_achieved = match sends {
        Some((first, last)) if sent > 1 && last > first => {
            Some((sent - 1) as f64 / (last - first).as_secs_f64())
        }
        _ => None,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "format": match args.format {
            Format::Xclog => "xclog",
            Format::Jdbc => "jdbc",
            Format::Mongo => "mongo",
        },
        "topic": args.topic,
        "store": store_kind,
        "table": where_,
        "seed": seed,
        "rate_asked": args.rate,
        "rate_achieved": rate_achieved,
        "seconds": args.seconds,
        "payload_bytes": args.payload_bytes,
        "linger_ms": ms(linger),
        "count": sent,
        "p50_ms": percentile(&delays, 50.0),
        "p99_ms": percentile(&delays, 99.0),
        "max_ms": delays.last(),
        "mean_ms": delays.iter().sum::<f64>() / delays.len().max(1) as f64,
        "p50_first_half_ms": p50_first_half,
        "p50_second_half_ms": p50_second_half,
        "seen_before_ack": seen_before_ack,
        "poll_ms": args.poll_ms,
        // PostgreSQL: each poll planned for the table as it is (see `Store::pg`).
        "poll_plan": (store_kind == "postgres").then_some("custom"),
        "polls": stats.polls,
        "poll_query_mean_ms": ms(stats.total) / stats.polls.max(1) as f64,
        "poll_query_max_ms": ms(stats.max),
        "poll_gap_mean_ms": ms(stats.gaps) / stats.polls.max(1) as f64,
        "poll_gap_max_ms": ms(stats.max_gap),
        "schedule_resets": pacer.resets,
        "max_send_lateness_ms": pacer.max_lateness * 1000.0,
        "warmup_s": warmup_s,
        "drain_s": drain_s,
    }))
}

/// Sends one record, tracking it (an event from just before it is handed to the client, so
/// a row seen before its acknowledgement still counts).
async fn send(
    publisher: &Publisher,
    tracker: &Arc<Mutex<Tracker>>,
    record: &Record,
) -> anyhow::Result<()> {
    let id = match record {
        Record::Event(event) => {
            lock(tracker).sent(&event.id);
            Some(event.id.clone())
        }
        Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
    };
    if let Some(ack) = publisher.send(record).await? {
        lock(tracker).pending_acks += 1;
        watch(tracker, id, ack);
    } else if let Some(id) = id {
        bail!("event {id} was not published");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10.0));
        assert_eq!(percentile(&ten, 50.0), Some(5.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_halves_are_split_in_publishing_order() {
        let in_order = [5.0, 1.0, 3.0, 40.0, 20.0, 30.0, 10.0];
        assert_eq!(halves_p50(&in_order), (Some(3.0), Some(20.0)));
        assert_eq!(halves_p50(&[7.0]), (None, Some(7.0)));
        assert_eq!(halves_p50(&[]), (None, None));
    }

    #[test]
    fn an_event_on_time_goes_on_the_schedule() {
        let mut pacer = Pacer::new(10.0, MAX_LAG_S);
        let due: Vec<f64> = (0..4).map(|_| pacer.next_send(0.0)).collect();
        for (n, at) in due.iter().enumerate() {
            assert!((at - n as f64 * 0.1).abs() < 1e-9, "{due:?}");
        }
        assert_eq!(pacer.resets, 0);
    }

    #[test]
    fn a_small_delay_is_caught_up_on_the_same_schedule() {
        let mut pacer = Pacer::new(10.0, MAX_LAG_S);
        assert_eq!(pacer.next_send(0.0), 0.0);
        // 50 ms late for the event due at 0.1: it goes at once, the next stays due at 0.2.
        let at = pacer.next_send(0.15);
        assert!((at - 0.1).abs() < 1e-9);
        assert!((pacer.next_send(0.15) - 0.2).abs() < 1e-9);
        assert_eq!(pacer.resets, 0);
        assert!((pacer.max_lateness - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_stall_restarts_the_schedule_instead_of_bursting() {
        let mut pacer = Pacer::new(100.0, MAX_LAG_S);
        assert_eq!(pacer.next_send(0.0), 0.0);
        // Stalled for 5 s: the owed 500 events are not sent in a burst.
        assert_eq!(pacer.next_send(5.0), 5.0);
        assert!((pacer.next_send(5.0) - 5.01).abs() < 1e-9);
        assert!((pacer.next_send(5.0) - 5.02).abs() < 1e-9);
        assert_eq!(pacer.resets, 1);
    }

    #[test]
    fn a_row_seen_before_its_acknowledgement_counts_as_zero() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        tracker.sent("a");
        tracker.sent("b");
        tracker.sent("c");
        tracker.acked("a", t0);
        tracker.seen("a", t0 + Duration::from_millis(30));
        tracker.seen("b", t0);
        tracker.acked("b", t0 + Duration::from_millis(5));
        assert_eq!(tracker.outstanding(), vec!["c".to_owned()]);
        let (delays, early) = tracker.delays_ms();
        assert_eq!(early, 1);
        assert_eq!(delays.len(), 2);
        // In publishing order: a, then b.
        assert!((delays[0] - 30.0).abs() < 1e-6);
        assert_eq!(delays[1], 0.0);
        assert!(
            tracker
                .missing()
                .starts_with("1 of 3 events never became visible (1 not")
        );
    }

    #[test]
    fn the_first_sighting_counts_and_unknown_ids_are_ignored() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        tracker.sent("a");
        tracker.acked("a", t0);
        tracker.seen("a", t0 + Duration::from_millis(10));
        tracker.seen("a", t0 + Duration::from_millis(50));
        tracker.seen("warm-up", t0);
        let (delays, _) = tracker.delays_ms();
        assert_eq!(delays.len(), 1);
        assert!((delays[0] - 10.0).abs() < 1e-6);
        assert!(tracker.done());
    }
}
