//! The fault soak: a bounded run against the local stack that publishes continuously while it
//! SIGKILLs `xclog project` processes (1 to 3 members in one consumer group per store) and
//! restarts Kafka, PostgreSQL and FerretDB, then checks that nothing was lost or doubled.
//!
//! One topic feeds both stores: a PostgreSQL projector group and a MongoDB projector group,
//! each in its own fresh database. Per store, a kill loop keeps a random number of members
//! running and kills one at a time, either at a random moment or in the middle of a batch:
//! for PostgreSQL right after the member's transaction is seen open in `pg_stat_activity`
//! (each member connects with its own `application_name`), for MongoDB while the member's
//! writer holds a batch (its `xclog_projector::writer` trace lines say when it takes one and
//! releases it). Meanwhile each service is restarted in turn ([`crate::services::restart`]:
//! `scripts/stack.sh restart SERVICE` on the native stack, the container on containers).
//!
//! At the end publishing stops, every acknowledged record is awaited, the surviving members
//! catch up (`xclog status --wait`) and stop on SIGTERM, and the soak compares the event ids
//! acknowledged by Kafka with the ids in each store (count, distinct count, both set
//! differences) and runs `xclog verify --sources topic,postgres,mongo`.
//!
//! Everything is bounded in count and time, and talks to 127.0.0.1 only (the stack's
//! addresses, [`crate::brokers`], [`crate::database_url`], [`crate::mongodb_uri`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use mongodb::bson::{Document, doc};
use xclog_producer::{Producer, ProducerConfig};
use xclog_schema::Record;
use xclog_workload::{Workload, WorkloadConfig};

use crate::{
    Rng, Service, TestMongo, TestPg, TestTopic, brokers, run_to_end, services, unique_suffix,
};

/// Consumer group session timeout of the soak's members: the broker's minimum
/// (`group.min.session.timeout.ms`, 6 s), so a killed member's partitions move on quickly.
const SESSION_TIMEOUT_MS: u64 = 6_000;

/// What a soak run does. [`SoakConfig::full`] is `make soak`; [`SoakConfig::short`] the
/// version `make test` runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// SIGKILLs per store (PostgreSQL projector and MongoDB projector).
    pub kills_per_store: u64,
    /// Kafka broker restarts.
    pub kafka_restarts: u64,
    /// PostgreSQL restarts.
    pub postgres_restarts: u64,
    /// FerretDB restarts.
    pub ferretdb_restarts: u64,
    /// Pause between two service restarts (the first comes after one pause).
    pub restart_interval: Duration,
    /// Records (events and snapshots) published per second, for the whole run.
    pub records_per_sec: u64,
    /// Most members of one store's consumer group alive at once (1 to this).
    pub max_members: u64,
    /// Partitions of the soak's topic.
    pub partitions: i32,
    /// Longest time a member lives before it is killed at a random moment.
    pub max_life: Duration,
    /// Bound of the kill-and-restart phase: the soak fails if its kills and restarts are not
    /// done by then.
    pub max_duration: Duration,
    /// Bound of the final catch-up of each store.
    pub catch_up: Duration,
    /// Seed of the kill schedule and the workload (a fresh one per run when `None`).
    pub seed: Option<u64>,
    /// The `xclog` binary the members run.
    pub xclog: PathBuf,
}

impl SoakConfig {
    /// The full run of `make soak`: 100 kills per store, 3 restarts of each service.
    pub fn full(xclog: PathBuf) -> Self {
        Self {
            kills_per_store: 100,
            kafka_restarts: 3,
            postgres_restarts: 3,
            ferretdb_restarts: 3,
            restart_interval: Duration::from_secs(40),
            records_per_sec: 15,
            max_members: 3,
            partitions: 6,
            max_life: Duration::from_secs(6),
            max_duration: Duration::from_secs(40 * 60),
            catch_up: Duration::from_secs(10 * 60),
            seed: None,
            xclog,
        }
    }

    /// The short run of `make test`: one restart of each service, at least 10 kills per store.
    pub fn short(xclog: PathBuf) -> Self {
        Self {
            kills_per_store: 10,
            kafka_restarts: 1,
            postgres_restarts: 1,
            ferretdb_restarts: 1,
            restart_interval: Duration::from_secs(15),
            max_duration: Duration::from_secs(4 * 60),
            catch_up: Duration::from_secs(4 * 60),
            ..Self::full(xclog)
        }
    }
}

/// The two stores a soak projects into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `xclog project --target postgres`.
    Postgres,
    /// `xclog project --target mongo`.
    Mongo,
}

impl Store {
    /// `postgres` or `mongo`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Postgres => "postgres",
            Store::Mongo => "mongo",
        }
    }
}

/// What happened to one store.
#[derive(Debug, Clone, Default)]
pub struct StoreFigures {
    /// SIGKILLs of this store's projector processes.
    pub kills: u64,
    /// Of those, kills in the middle of a batch (PostgreSQL: transaction open; MongoDB: batch
    /// taken by the writer and not released).
    pub kills_mid_batch: u64,
    /// Of those, kills while another member of the group was alive.
    pub kills_with_live_member: u64,
    /// Members started.
    pub members_started: u64,
    /// Members that exited without being killed (their exit statuses are in the soak log).
    pub exited_on_their_own: u64,
    /// Members still alive at the end, each stopped with SIGTERM.
    pub stopped_at_the_end: u64,
    /// Of those, members whose SIGTERM stop did not exit 0.
    pub unclean_stops: u64,
    /// Rows (documents) in the events table (collection).
    pub rows: u64,
    /// Distinct event ids among them.
    pub distinct: u64,
    /// Acknowledged event ids missing from the store.
    pub lost: u64,
    /// Rows beyond one per event id.
    pub duplicated: u64,
    /// Event ids in the store that were never acknowledged.
    pub unexpected: u64,
}

/// The soak's result; [`SoakReport::passed`] says whether it holds.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// The seed of the run (replays its kill schedule and workload).
    pub seed: u64,
    /// Records acknowledged by Kafka (events and snapshots).
    pub published_records: u64,
    /// Distinct event ids acknowledged by Kafka.
    pub published_events: u64,
    /// Deliveries that failed (the record was published again).
    pub failed_deliveries: u64,
    /// Producers replaced after acknowledging nothing for a minute while deliveries failed.
    pub producer_replacements: u64,
    /// PostgreSQL figures.
    pub postgres: StoreFigures,
    /// MongoDB figures.
    pub mongo: StoreFigures,
    /// Restarts done, per service.
    pub restarts: BTreeMap<&'static str, u64>,
    /// Restarts done while members of both stores were alive, per service.
    pub restarts_under_projectors: BTreeMap<&'static str, u64>,
    /// Whether `xclog verify --sources topic,postgres,mongo` agreed (exit 0).
    pub verify_agreed: bool,
    /// Its output.
    pub verify_output: String,
    /// Length of the kill-and-restart phase.
    pub fault_phase: Duration,
    /// Length of the whole run.
    pub elapsed: Duration,
    /// Where the members' logs and the soak's own notes went.
    pub log: PathBuf,
}

impl SoakReport {
    /// Nothing lost, nothing doubled, nothing unexpected, every member stopped cleanly, and
    /// `verify` agreed.
    pub fn passed(&self) -> bool {
        [&self.postgres, &self.mongo].iter().all(|s| {
            s.lost == 0
                && s.duplicated == 0
                && s.unexpected == 0
                && s.unclean_stops == 0
                && s.distinct == self.published_events
        }) && self.verify_agreed
    }

    /// The report as printed by `make soak`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "soak seed {}", self.seed);
        let _ = writeln!(
            out,
            "published: {} records, {} events ({} deliveries failed and published again, {} producers replaced)",
            self.published_records,
            self.published_events,
            self.failed_deliveries,
            self.producer_replacements
        );
        for (name, s) in [("postgres", &self.postgres), ("mongo", &self.mongo)] {
            let _ = writeln!(
                out,
                "{name:<8}: {} events stored ({} distinct), lost {}, duplicated {}, unexpected {}",
                s.rows, s.distinct, s.lost, s.duplicated, s.unexpected
            );
            let _ = writeln!(
                out,
                "{name:<8}: {} kills ({} mid-batch, {} with another member live), {} members started, {} exited on their own, {} stopped by SIGTERM at the end ({} not cleanly)",
                s.kills,
                s.kills_mid_batch,
                s.kills_with_live_member,
                s.members_started,
                s.exited_on_their_own,
                s.stopped_at_the_end,
                s.unclean_stops
            );
        }
        let restarts: Vec<String> = self
            .restarts
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k} {v} ({} under running projectors)",
                    self.restarts_under_projectors.get(k).unwrap_or(&0)
                )
            })
            .collect();
        let _ = writeln!(out, "restarts: {}", restarts.join(", "));
        let _ = writeln!(
            out,
            "verify --sources topic,postgres,mongo: {}",
            if self.verify_agreed {
                "agree"
            } else {
                "DIFFER"
            }
        );
        let _ = writeln!(
            out,
            "fault phase {:.0} s, whole run {:.0} s; log: {}",
            self.fault_phase.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.log.display()
        );
        let _ = writeln!(out, "{}", if self.passed() { "PASSED" } else { "FAILED" });
        out
    }
}

/// The soak's log file: the members' stderr lines (prefixed with the member's name) and the
/// soak's own notes (kills, restarts).
#[derive(Clone)]
struct Log(Arc<Mutex<std::fs::File>>);

impl Log {
    fn line(&self, text: &str) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{text}");
    }

    fn note(&self, started: Instant, text: &str) {
        self.line(&format!(
            "[soak +{:.1}s] {text}",
            started.elapsed().as_secs_f64()
        ));
    }
}

/// One `xclog project` process.
struct Member {
    name: String,
    child: Child,
    /// Batches the member's writers hold (taken, not released), from its trace lines.
    in_flight: Arc<AtomicI64>,
}

impl Drop for Member {
    /// A member left behind by a failed run is killed, never orphaned.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What every part of the run shares.
struct Run {
    config: SoakConfig,
    topic: String,
    pg: TestPg,
    mongo: TestMongo,
    pg_group: String,
    mongo_group: String,
    log: Log,
    started: Instant,
    /// Members alive per store (for "restarts under running projectors").
    alive: [AtomicI64; 2],
    /// Set once every restart is done: the kill loops go on killing until then, so kills
    /// also land while a service is down or coming back.
    restarts_done: AtomicBool,
}

impl Run {
    fn group(&self, store: Store) -> &str {
        match store {
            Store::Postgres => &self.pg_group,
            Store::Mongo => &self.mongo_group,
        }
    }

    /// Starts one member of `store`'s group.
    fn spawn(&self, store: Store, n: u64) -> anyhow::Result<Member> {
        let name = format!("xclog-soak-{}-{n}", store.name());
        let mut c = Command::new(&self.config.xclog);
        c.args(["project", "--target", store.name(), "--http-addr", "off"])
            .env("XCLOG_KAFKA_BROKERS", brokers())
            .env("XCLOG_TOPIC", &self.topic)
            .env("XCLOG_GROUP", self.group(store))
            .env("XCLOG_BATCH_MAX_RECORDS", "200")
            .env("XCLOG_BATCH_MAX_LATENCY_MS", "50")
            .env("XCLOG_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match store {
            Store::Postgres => {
                let sep = if self.pg.url.contains('?') { '&' } else { '?' };
                c.env(
                    "DATABASE_URL",
                    format!("{}{sep}application_name={name}", self.pg.url),
                )
                .env("XCLOG_LOG", "warn");
            }
            Store::Mongo => {
                c.env("MONGODB_URI", &self.mongo.uri)
                    .env("XCLOG_MONGODB_DATABASE", &self.mongo.name)
                    .env("XCLOG_LOG", "warn,xclog_projector::writer=trace")
                    .env_remove("DATABASE_URL");
            }
        }
        let mut child = c.spawn().context("spawning xclog project")?;
        let in_flight = Arc::new(AtomicI64::new(0));
        let stderr = child.stderr.take().context("member stderr")?;
        let (log, counter, prefix) = (self.log.clone(), in_flight.clone(), name.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("took a batch of a lane") {
                    counter.fetch_add(1, Ordering::SeqCst);
                } else if line.contains("released the lane") {
                    counter.fetch_sub(1, Ordering::SeqCst);
                } else if !line.contains("TRACE") {
                    log.line(&format!("[{prefix}] {line}"));
                }
            }
        });
        self.log.note(self.started, &format!("started {name}"));
        Ok(Member {
            name,
            child,
            in_flight,
        })
    }

    /// Index of a member caught in the middle of a batch within `within`, if any.
    async fn wait_mid_batch(
        &self,
        store: Store,
        members: &[Member],
        within: Duration,
    ) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match store {
                Store::Postgres => {
                    // A transaction open and past its first write, or between two statements.
                    let open: Result<Vec<String>, _> = sqlx::query_scalar(
                        "SELECT application_name FROM pg_stat_activity \
                         WHERE datname = current_database() AND application_name LIKE 'xclog-soak-%' \
                         AND (state = 'idle in transaction' OR backend_xid IS NOT NULL)",
                    )
                    .fetch_all(&self.pg.pool)
                    .await;
                    if let Ok(open) = open
                        && let Some(i) = members.iter().position(|m| open.contains(&m.name))
                    {
                        return Some(i);
                    }
                }
                Store::Mongo => {
                    if let Some(i) = members
                        .iter()
                        .position(|m| m.in_flight.load(Ordering::SeqCst) > 0)
                    {
                        return Some(i);
                    }
                }
            }
            // A poll step much finer than `wait_until`'s, so a batch this short is still seen.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }
}

/// Runs a soak and returns its report (an `Err` when the run itself could not be carried out:
/// a restart that failed, a deadline passed).
pub async fn run(config: SoakConfig) -> anyhow::Result<SoakReport> {
    let seed = config
        .seed
        .unwrap_or_else(|| Rng::from_time().below(u64::MAX));
    let started = Instant::now();
    let topic = TestTopic::create(config.partitions).await?;
    let pg = TestPg::create().await?;
    xclog_projector::sink::postgres::PgSink::from_pool(pg.pool.clone(), "migrate")
        .migrate()
        .await
        .context("migrations")?;
    let mongo = TestMongo::create().await?;
    let log_path = std::env::temp_dir().join(format!("xclog-soak-{}.log", unique_suffix()));
    let log = Log(Arc::new(Mutex::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?,
    )));
    let suffix = unique_suffix();
    let run = Arc::new(Run {
        topic: topic.name.clone(),
        pg,
        mongo,
        pg_group: format!("soak-pg-{suffix}"),
        mongo_group: format!("soak-mongo-{suffix}"),
        log,
        started,
        alive: [AtomicI64::new(0), AtomicI64::new(0)],
        restarts_done: AtomicBool::new(false),
        config,
    });
    run.log.note(
        started,
        &format!(
            "seed {seed}, topic {}, pg database {}, mongo database {}",
            run.topic, run.pg.name, run.mongo.name
        ),
    );
    eprintln!(
        "soak: seed {seed}, topic {}, log {}",
        run.topic,
        log_path.display()
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(publish(run.clone(), seed, stop_rx));
    let pg_loop = tokio::spawn(kill_loop(run.clone(), Store::Postgres, seed ^ 0x9e37));
    let mongo_loop = tokio::spawn(kill_loop(run.clone(), Store::Mongo, seed ^ 0x7f4a));
    let restarts = tokio::spawn(restart_services(run.clone()));

    // The fault phase ends when both stores have their kills and every restart is done.
    let deadline = tokio::time::Instant::now() + run.config.max_duration;
    let restarts = tokio::time::timeout_at(deadline, restarts)
        .await
        .context("the restarts did not finish within the soak's bound")???;
    run.restarts_done.store(true, Ordering::SeqCst);
    let (mut pg_state, mut mongo_state) = tokio::time::timeout_at(deadline, async {
        anyhow::Ok((pg_loop.await??, mongo_loop.await??))
    })
    .await
    .context("the kill loops did not reach their kills within the soak's bound")??;
    let fault_phase = started.elapsed();
    let _ = stop_tx.send(true);
    run.log
        .note(started, "fault phase over; stopping publishing");
    let published = tokio::time::timeout(run.config.catch_up, publisher)
        .await
        .context("publishing did not drain within the catch-up bound")???;

    for (store, state) in [
        (Store::Postgres, &mut pg_state),
        (Store::Mongo, &mut mongo_state),
    ] {
        finish(&run, store, state).await?;
    }
    pg_state
        .figures
        .apply_ids(&published.events, stored_pg_ids(&run.pg.pool).await?);
    mongo_state
        .figures
        .apply_ids(&published.events, stored_mongo_ids(&run.mongo).await?);

    let (verify_agreed, verify_output) = verify(&run).await?;
    let report = SoakReport {
        seed,
        published_records: published.records,
        published_events: published.events.len() as u64,
        failed_deliveries: published.failed_deliveries,
        producer_replacements: published.producer_replacements,
        postgres: pg_state.figures,
        mongo: mongo_state.figures,
        restarts: restarts.done,
        restarts_under_projectors: restarts.under_projectors,
        verify_agreed,
        verify_output,
        fault_phase,
        elapsed: started.elapsed(),
        log: log_path,
    };
    run.log.line(&report.to_text());
    run.log.line(&report.verify_output);
    Ok(report)
}

impl StoreFigures {
    fn apply_ids(&mut self, published: &HashSet<String>, stored: Vec<String>) {
        self.rows = stored.len() as u64;
        let distinct: HashSet<String> = stored.into_iter().collect();
        self.distinct = distinct.len() as u64;
        self.duplicated = self.rows - self.distinct;
        self.lost = published.difference(&distinct).count() as u64;
        self.unexpected = distinct.difference(published).count() as u64;
    }
}

/// A store's kill loop: its members and what it did.
struct KillState {
    members: Vec<Member>,
    figures: StoreFigures,
}

/// Keeps 1 to `max_members` members of `store`'s group alive and kills one at a time, until
/// `kills_per_store` kills and every service restart are done; then returns the survivors (at least one) for the final catch-up.
async fn kill_loop(run: Arc<Run>, store: Store, seed: u64) -> anyhow::Result<KillState> {
    let mut rng = Rng::seeded(seed);
    let mut state = KillState {
        members: Vec::new(),
        figures: StoreFigures::default(),
    };
    let slot = &run.alive[store as usize];
    while state.figures.kills < run.config.kills_per_store
        || !run.restarts_done.load(Ordering::SeqCst)
    {
        reap(&run, store, &mut state);
        let want = 1 + rng.below(run.config.max_members) as usize;
        while state.members.len() < want {
            state.figures.members_started += 1;
            state
                .members
                .push(run.spawn(store, state.figures.members_started)?);
        }
        slot.store(state.members.len() as i64, Ordering::SeqCst);
        // Two kills in three wait for a member caught mid-batch; the others (and those that
        // see no batch in time) come at a random moment of a member's life.
        let max_life_ms = run.config.max_life.as_millis() as u64;
        let life = Duration::from_millis(200 + rng.below(max_life_ms.saturating_sub(200)));
        let mid = if rng.below(3) < 2 {
            run.wait_mid_batch(store, &state.members, life).await
        } else {
            // A random life on purpose: the kill moment is what varies, not a state to await.
            tokio::time::sleep(life).await;
            None
        };
        reap(&run, store, &mut state);
        if state.members.is_empty() {
            continue;
        }
        let victim = mid
            .filter(|&i| i < state.members.len())
            .unwrap_or_else(|| rng.below(state.members.len() as u64) as usize);
        let mut member = state.members.remove(victim);
        let others_live = state.members.len() as u64;
        member.child.kill().context("SIGKILL")?;
        let _ = member.child.wait();
        state.figures.kills += 1;
        if mid.is_some() {
            state.figures.kills_mid_batch += 1;
        }
        if others_live > 0 {
            state.figures.kills_with_live_member += 1;
        }
        run.log.note(
            run.started,
            &format!(
                "kill {} of {}: {}{}, {others_live} other members alive",
                state.figures.kills,
                store.name(),
                member.name,
                if mid.is_some() { " mid-batch" } else { "" }
            ),
        );
        slot.store(state.members.len() as i64, Ordering::SeqCst);
    }
    reap(&run, store, &mut state);
    if state.members.is_empty() {
        state.figures.members_started += 1;
        state
            .members
            .push(run.spawn(store, state.figures.members_started)?);
    }
    slot.store(state.members.len() as i64, Ordering::SeqCst);
    Ok(state)
}

/// Removes members that exited without being killed (noted in the log with their status).
fn reap(run: &Run, store: Store, state: &mut KillState) {
    state.members.retain_mut(|m| match m.child.try_wait() {
        Ok(Some(status)) => {
            state.figures.exited_on_their_own += 1;
            run.log.note(
                run.started,
                &format!("{} ({}) exited on its own: {status}", m.name, store.name()),
            );
            false
        }
        _ => true,
    });
}

/// Lets the survivors catch up with the topic's end, then stops them with SIGTERM.
async fn finish(run: &Run, store: Store, state: &mut KillState) -> anyhow::Result<()> {
    let mut status = Command::new(&run.config.xclog);
    status
        .args(["status", "--target", store.name()])
        .args(["--topic", &run.topic, "--group", run.group(store)])
        .args(["--wait", &run.config.catch_up.as_secs().to_string()])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("DATABASE_URL", &run.pg.url)
        .env("MONGODB_URI", &run.mongo.uri)
        .env("XCLOG_MONGODB_DATABASE", &run.mongo.name);
    let (caught_up, out, err) =
        run_to_end(run.config.catch_up + Duration::from_secs(60), status).await?;
    run.log.note(
        run.started,
        &format!("{} status:\n{out}{err}", store.name()),
    );
    for m in &mut state.members {
        let _ = Command::new("kill").arg(m.child.id().to_string()).status();
    }
    for m in &mut state.members {
        let status = m.child.wait()?;
        state.figures.stopped_at_the_end += 1;
        if !status.success() {
            state.figures.unclean_stops += 1;
            run.log
                .note(run.started, &format!("{} stopped with {status}", m.name));
        }
    }
    ensure!(
        caught_up,
        "the {} store did not catch up with the topic within {:?}:\n{out}{err}",
        store.name(),
        run.config.catch_up
    );
    Ok(())
}

/// What the publisher got acknowledged, and what it took.
struct Published {
    records: u64,
    events: HashSet<String>,
    /// Deliveries that failed (each record published again).
    failed_deliveries: u64,
    /// Producers replaced because they had acknowledged nothing for [`PRODUCER_STUCK_AFTER`].
    producer_replacements: u64,
}

/// A producer that has failed deliveries and acknowledged nothing for this long is replaced by
/// a new one, as an application's health check would, and counted in the report. librdkafka
/// 2.12 can keep a partition's leader unknown for good after the single KRaft broker restarts
/// (its log says "new leader-1 not found in cache"; confluentinc/librdkafka#5430): that
/// producer then times out every record while other clients work.
const PRODUCER_STUCK_AFTER: Duration = Duration::from_secs(60);

async fn connect_producer(run: &Run) -> anyhow::Result<Producer> {
    let mut last = None;
    for _ in 0..60 {
        match Producer::connect(ProducerConfig::new(brokers(), &run.topic)).await {
            Ok(p) => return Ok(p),
            Err(error) => {
                last = Some(error);
                // The pause between connection attempts; the attempt itself is the condition.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempt")))
    .context("connecting the soak's producer")
}

/// Publishes the workload at `records_per_sec` until `stop`, then waits until every record is
/// acknowledged. A record whose delivery fails is published again (events are idempotent by
/// id in both stores), so every record the workload produced up to the stop is in the topic.
async fn publish(
    run: Arc<Run>,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Published> {
    let mut producer = connect_producer(&run).await?;
    // Replaced producers are kept (not dropped) until the end: dropping one blocks while it
    // purges, and their pending acknowledgements still resolve.
    let mut replaced = Vec::new();
    let mut last_ack = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let bound = run.config.max_duration.as_secs() * run.config.records_per_sec;
    let mut workload = Workload::new(WorkloadConfig {
        seed,
        events: bound,
        instances: 30,
        payload_bytes: 128,
        ..Default::default()
    });
    let mut retry: VecDeque<Record> = VecDeque::new();
    let mut pending = FuturesUnordered::new();
    let mut out = Published {
        records: 0,
        events: HashSet::new(),
        failed_deliveries: 0,
        producer_replacements: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut budget = 0.0_f64;
    loop {
        let stopping = *stop.borrow();
        if stopping && pending.is_empty() && retry.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((record, acked)) = pending.next(), if !pending.is_empty() => {
                let record: Record = record;
                match acked {
                    Ok(_) => {
                        out.records += 1;
                        last_ack = Instant::now();
                        failing_since = None;
                        if let Record::Event(e) = &record {
                            out.events.insert(e.id.clone());
                        }
                    }
                    Err(error) => {
                        out.failed_deliveries += 1;
                        if out.failed_deliveries <= 20 || out.failed_deliveries.is_multiple_of(1000) {
                            run.log.note(run.started, &format!("delivery {} failed, publishing again: {error}", out.failed_deliveries));
                        }
                        retry.push_back(record);
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= PRODUCER_STUCK_AFTER && last_ack.elapsed() >= PRODUCER_STUCK_AFTER {
                            run.log.note(run.started, &format!(
                                "the producer acknowledged nothing for {:.0} s while its deliveries failed; replacing it",
                                last_ack.elapsed().as_secs_f64()
                            ));
                            replaced.push(std::mem::replace(&mut producer, connect_producer(&run).await?));
                            out.producer_replacements += 1;
                            failing_since = None;
                            last_ack = Instant::now();
                        }
                    }
                }
            }
            _ = tick.tick() => {
                budget += run.config.records_per_sec as f64 / 10.0;
                while budget >= 1.0 || (stopping && !retry.is_empty()) {
                    let record = match retry.pop_front() {
                        Some(r) => r,
                        None if stopping => break,
                        None => match workload.next() {
                            Some(r) => r,
                            None => break,
                        },
                    };
                    match producer.publish_nowait(&record, None).await {
                        Ok(ack) => {
                            budget -= 1.0;
                            pending.push(async move { (record, ack.await) });
                        }
                        Err(error) => {
                            run.log.note(run.started, &format!("enqueue failed, trying again: {error}"));
                            retry.push_front(record);
                            break;
                        }
                    }
                }
                budget = budget.min(run.config.records_per_sec as f64);
            }
        }
    }
    run.log.note(
        run.started,
        &format!(
            "published {} records ({} events), {} deliveries failed and were published again, {} producers replaced",
            out.records,
            out.events.len(),
            out.failed_deliveries,
            out.producer_replacements
        ),
    );
    drop(replaced);
    Ok(out)
}

/// Services restarted, per service, and those restarted while both stores had members.
struct Restarts {
    done: BTreeMap<&'static str, u64>,
    under_projectors: BTreeMap<&'static str, u64>,
}

/// Restarts Kafka, PostgreSQL and FerretDB in turn, one every `restart_interval`, until each
/// has had its count.
async fn restart_services(run: Arc<Run>) -> anyhow::Result<Restarts> {
    let wanted = [
        ("kafka", Service::Kafka, run.config.kafka_restarts),
        ("postgres", Service::Postgres, run.config.postgres_restarts),
        ("ferretdb", Service::Mongo, run.config.ferretdb_restarts),
    ];
    let mut out = Restarts {
        done: wanted.iter().map(|(s, _, _)| (*s, 0)).collect(),
        under_projectors: wanted.iter().map(|(s, _, _)| (*s, 0)).collect(),
    };
    let rounds = wanted.iter().map(|(_, _, n)| *n).max().unwrap_or(0);
    for round in 0..rounds {
        for (service, which, n) in wanted {
            if round >= n {
                continue;
            }
            // The configured pace of the restarts, not a wait for any state.
            tokio::time::sleep(run.config.restart_interval).await;
            let under = run.alive.iter().all(|a| a.load(Ordering::SeqCst) > 0);
            run.log.note(run.started, &format!("restarting {service}"));
            let t = Instant::now();
            tokio::time::timeout(Duration::from_secs(300), services::restart(which))
                .await
                .with_context(|| format!("restarting {service} took more than 300 s"))??;
            run.log.note(
                run.started,
                &format!("restarted {service} in {:.1} s", t.elapsed().as_secs_f64()),
            );
            *out.done.entry(service).or_default() += 1;
            if under {
                *out.under_projectors.entry(service).or_default() += 1;
            }
        }
    }
    Ok(out)
}

async fn stored_pg_ids(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM fsm_events")
        .fetch_all(pool)
        .await
        .context("reading the PostgreSQL event ids")
}

async fn stored_mongo_ids(mongo: &TestMongo) -> anyhow::Result<Vec<String>> {
    let mut cursor = mongo
        .database()
        .collection::<Document>("events")
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .await
        .context("reading the MongoDB event ids")?;
    let mut out = Vec::new();
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        out.push(d.get_str("_id").context("event _id")?.to_owned());
    }
    Ok(out)
}

/// Runs `xclog verify --sources topic,postgres,mongo` on the soak's topic and stores.
async fn verify(run: &Run) -> anyhow::Result<(bool, String)> {
    let mut c = Command::new(&run.config.xclog);
    c.args(["verify", "--sources", "topic,postgres,mongo"])
        .args(["--topic", &run.topic, "--group", &run.pg_group])
        .args(["--mongo-projection", &run.mongo_group])
        .args(["--mongodb-database", &run.mongo.name])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("DATABASE_URL", &run.pg.url)
        .env("MONGODB_URI", &run.mongo.uri);
    let (ok, out, err) = run_to_end(Duration::from_secs(600), c).await?;
    Ok((ok, format!("{out}{err}")))
}
