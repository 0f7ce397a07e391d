//! `xclog rebuild`: rebuilds a store from the topic into a shadow (a PostgreSQL schema, or
//! prefixed MongoDB collections) while the live projector keeps serving, then swaps (see
//! `xclog_projector::rebuild`). The summary, progress and the rebuild's own projector are
//! shared by both targets; the MongoDB flow is in `rebuild_mongo.rs`.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use xclog_projector::rebuild::stage::{StageSink, StageState};
use xclog_projector::rebuild::{self, PgRebuild, SwapOutcome};
use xclog_projector::sink::postgres::PgSink;
use xclog_projector::{CancellationToken, Projector, Sink};

/// Options of `xclog rebuild` (plus every option of `xclog project`, which describe the live
/// projection being rebuilt: topic, group, projection, database).
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Schema the live store is in (what readers and the live projector use).
    #[arg(long, env = "XCLOG_PG_SCHEMA", default_value = "public")]
    pub schema: String,
    /// Schema the rebuild writes before the swap (MongoDB: the prefix of the shadow's
    /// collections, `xclog_rebuild_events`, ...); an interrupted rebuild resumes from it.
    #[arg(long, env = "XCLOG_REBUILD_SCHEMA", default_value = "xclog_rebuild")]
    pub shadow_schema: String,
    /// Keep the previous store after the swap, in a schema named `xclog_old_<UTC time>`
    /// (MongoDB: collections `xclog_old_<UTC time>_events`, ...).
    #[arg(long)]
    pub keep_old: bool,
    /// Say what would be done (partitions, offsets, records to read) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How a new shadow's bulk (the topic up to its end at start) is written: `staged` (binary
    /// `COPY` into staging tables, then the store derived set-wise; needs room for a second
    /// copy of the history until then) or `batches` (through the live sink, batch by batch;
    /// slower). A resumed rebuild goes on the way it started.
    #[arg(long, env = "XCLOG_REBUILD_BULK", default_value = "staged", value_parser = ["staged", "batches"])]
    pub bulk: String,
    /// Progress display: `auto` (a bar on a terminal, log lines otherwise), `bar` or `log`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "log"])]
    pub progress: String,
    #[command(flatten)]
    pub project: super::project::ProjectArgs,
}

/// Low and high watermarks of every partition of `topic`; errors say what to check.
pub(super) fn watermarks(
    brokers: &str,
    settings: &[(String, xclog_projector::Secret)],
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    // The error states its cause; the hint follows it.
    xclog_projector::kafka::watermarks(brokers, settings, topic, Duration::from_secs(10))
        .map_err(|error| anyhow::anyhow!("{error}; {}", super::kafka_hint(brokers, topic)))
}

pub(super) fn fmt_offsets(m: &BTreeMap<i32, i64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(p, o)| format!("p{p}={o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Progress of the shadow towards its target, shown as a bar or as log lines.
pub(super) struct Progress {
    bar: bool,
    total: i64,
    started: Instant,
    done_at_start: i64,
    last_log: Instant,
}

impl Progress {
    /// Progress from `start` towards `target`, displayed as `--progress` says.
    pub(super) fn new(mode: &str, start: &BTreeMap<i32, i64>, target: &BTreeMap<i32, i64>) -> Self {
        let bar = match mode {
            "bar" => true,
            "log" => false,
            _ => std::io::stderr().is_terminal(),
        };
        let total = rebuild::remaining(&BTreeMap::new(), target);
        Self {
            bar,
            total,
            started: Instant::now(),
            done_at_start: total - rebuild::remaining(start, target),
            last_log: Instant::now(),
        }
    }

    pub(super) fn show(&mut self, remaining: i64) {
        let done = (self.total - remaining).max(0);
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (done - self.done_at_start).max(0) as f64 / elapsed;
        let eta = if rate > 0.0 {
            format!("{:.0}s", remaining as f64 / rate)
        } else {
            "?".to_owned()
        };
        let pct = if self.total > 0 {
            done as f64 * 100.0 / self.total as f64
        } else {
            100.0
        };
        if self.bar {
            let width = 30usize;
            let filled = ((pct / 100.0) * width as f64) as usize;
            eprint!(
                "\rrebuild [{}{}] {pct:5.1}%  {done}/{} records  {rate:.0}/s  ETA {eta}   ",
                "#".repeat(filled.min(width)),
                "-".repeat(width - filled.min(width)),
                self.total
            );
            let _ = std::io::stderr().flush();
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            tracing::info!(
                done,
                total = self.total,
                rate = format!("{rate:.0}/s"),
                eta,
                "rebuild progress"
            );
        }
    }

    pub(super) fn finish(&self) {
        if self.bar {
            eprintln!();
        }
    }
}

/// What a rebuild will read, printed before anything changes (and all a dry run does).
pub(super) struct Plan {
    /// Low and high watermarks of the topic, per partition.
    pub marks: BTreeMap<i32, (i64, i64)>,
    /// Where the shadow must get to before the swap (see [`rebuild::target`]).
    pub target: BTreeMap<i32, i64>,
}

impl Plan {
    /// Reads the watermarks, refuses if retention deleted offsets the shadow needs from
    /// `start`, and prints the summary. `store` names the live store, `shadow` the shadow
    /// (`schema xclog_rebuild`), `old` the dated name of the previous store.
    pub(super) async fn make(
        p: &super::project::ProjectArgs,
        store: &str,
        shadow: &str,
        live: &BTreeMap<i32, i64>,
        start: Option<&BTreeMap<i32, i64>>,
        keep_old: &str,
    ) -> anyhow::Result<Self> {
        let marks = {
            let log = &p.stream.log;
            let (brokers, settings, topic) = (
                log.brokers.clone(),
                log.kafka.settings()?,
                log.topic.clone(),
            );
            tokio::task::spawn_blocking(move || watermarks(&brokers, &settings, &topic)).await??
        };
        let low: BTreeMap<i32, i64> = marks.iter().map(|(&p, &(l, _))| (p, l)).collect();
        let high: BTreeMap<i32, i64> = marks.iter().map(|(&p, &(_, h))| (p, h)).collect();
        let empty = BTreeMap::new();
        let from = start.unwrap_or(&empty);
        let missing = rebuild::missing_history(from, &low);
        if !missing.is_empty() {
            return Err(rebuild::RebuildError::MissingHistory(missing).into());
        }
        // Read at least to the end of the topic as it is now, and at least to the live store.
        let target = rebuild::target(&high, live);
        println!(
            "rebuild of topic {} (projection {}) into {store}",
            p.stream.log.topic,
            p.stream.projection()
        );
        println!("  topic offsets (low..high): {}", {
            marks
                .iter()
                .map(|(p, (l, h))| format!("p{p}={l}..{h}"))
                .collect::<Vec<_>>()
                .join(" ")
        });
        println!("  live store offsets:        {}", fmt_offsets(live));
        match start {
            Some(start) => println!("  {shadow} exists: resuming from {}", fmt_offsets(start)),
            None => println!("  {shadow}: new, reading from the first offset"),
        }
        println!(
            "  records to read:           {} (then the live tail until caught up)",
            rebuild::remaining(from, &target)
        );
        println!("  after the swap the previous store is {keep_old}");
        Ok(Self { marks, target })
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> Vec<i32> {
        self.marks.keys().copied().collect()
    }
}

/// The rebuild's own projector, the progress display, and Ctrl-C, polled twice a second.
pub(super) struct ShadowRun {
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), xclog_projector::ProjectorError>>>,
    interrupt: CancellationToken,
    tick: tokio::time::Interval,
    /// The progress display.
    pub progress: Progress,
}

/// Why [`ShadowRun::next`] returned.
pub(super) enum Wake {
    /// Half a second passed: look at the shadow's offsets.
    Tick,
    /// SIGINT/SIGTERM: the projector is stopped; exit 130 after saying where it stopped.
    Interrupted,
}

impl ShadowRun {
    /// Starts the rebuild's own projector into `sink`: the live projection's settings, but
    /// group `<group>.rebuild`, dead letters to `<topic>.dlq.rebuild`, no HTTP server, batches
    /// of at least `min_batch` records.
    pub(super) fn start<S: Sink>(
        p: &super::project::ProjectArgs,
        sink: S,
        min_batch: usize,
        progress: Progress,
    ) -> anyhow::Result<Self> {
        let config = rebuild::shadow_projector_config(
            &p.projector_config()?,
            p.dead_letter_topic.is_some(),
            min_batch,
        );
        let projector = Projector::new(config, sink)?;
        let token = CancellationToken::new();
        let task = tokio::spawn(projector.run(token.clone()));
        Ok(Self {
            token,
            task: Some(task),
            interrupt: super::shutdown_on_signal(),
            tick: tokio::time::interval(Duration::from_millis(500)),
            progress,
        })
    }

    /// Waits for the next tick or an interruption; an error if the projector stopped.
    pub(super) async fn next(&mut self) -> anyhow::Result<Wake> {
        let Some(task) = self.task.as_mut() else {
            bail!("the rebuild's projector is stopped");
        };
        tokio::select! {
            _ = self.tick.tick() => Ok(Wake::Tick),
            _ = self.interrupt.cancelled() => {
                self.stop().await;
                Ok(Wake::Interrupted)
            }
            result = task => {
                self.task = None;
                self.progress.finish();
                result??;
                bail!("the rebuild's projector stopped before the swap");
            }
        }
    }

    /// Stops the projector and waits for it (its batch in flight ends or is abandoned).
    pub(super) async fn stop(&mut self) {
        self.progress.finish();
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Exit after an interruption, saying where the shadow stopped.
pub(super) fn interrupted_at(at: &BTreeMap<i32, i64>) -> ExitCode {
    eprintln!(
        "rebuild interrupted at {}; run it again to continue from there",
        fmt_offsets(at)
    );
    ExitCode::from(130)
}

/// Seconds since the Unix epoch (for the old store's dated name).
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// How `--keep-old` is described in the summary.
pub(super) fn keep_old_text(keep_old: bool, suffix: &str) -> String {
    if keep_old {
        format!("kept as xclog_old_<UTC time>{suffix}")
    } else {
        "dropped".to_owned()
    }
}

/// Shows the shadow's progress until its stored offsets reach `target`; `Err` with the exit
/// code after an interruption (the projector is stopped).
async fn read_to(
    run: &mut ShadowRun,
    rb: &PgRebuild,
    target: &BTreeMap<i32, i64>,
) -> anyhow::Result<Result<(), ExitCode>> {
    loop {
        if let Wake::Interrupted = run.next().await? {
            return Ok(Err(interrupted_at(&rb.offsets(&rb.shadow_schema).await?)));
        }
        let shadow = rb.offsets(&rb.shadow_schema).await?;
        run.progress.show(rebuild::remaining(&shadow, target));
        if rebuild::caught_up(&shadow, target) {
            return Ok(Ok(()));
        }
    }
}

/// Runs the PostgreSQL rebuild until the swap (exit 0), an interruption (130: run again to
/// continue) or an error.
pub async fn run(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let p = &args.project;
    let options: PgConnectOptions = p
        .db
        .store
        .database_url()?
        .expose()
        .parse()
        .context("--database-url (DATABASE_URL) is not a PostgreSQL URL like postgres://user:password@127.0.0.1:5432/xclog")?;
    let projection = p.stream.projection();
    let rb = PgRebuild::connect(
        options,
        &args.schema,
        &args.shadow_schema,
        &projection,
        &p.stream.log.topic,
    )
    .await
    .with_context(|| {
        format!(
            "connecting to PostgreSQL at {}; check --database-url (DATABASE_URL) and that the \
             server runs (`scripts/stack.sh status` for the local stack)",
            p.db.store
                .database_url
                .as_ref()
                .map_or_else(String::new, ToString::to_string)
        )
    })?;
    rb.check_single_topic().await?;

    let resuming = rb.shadow_exists().await?;
    let mut staging = if resuming {
        rb.stage_state().await?
    } else {
        StageState::Absent
    };
    if staging == StageState::Lost {
        println!(
            "the staged rows of the interrupted rebuild were lost (PostgreSQL restarted after a \
             crash, which empties staging tables): staging starts over from the first offset"
        );
        if !args.dry_run {
            rb.create_stage().await?;
        }
        staging = StageState::Intact;
    }
    let start = if resuming {
        Some(rb.offsets(&args.shadow_schema).await?)
    } else {
        None
    };
    let live = rb.offsets(&args.schema).await?;
    let plan = Plan::make(
        p,
        &format!("schema {}", args.schema),
        &format!("shadow schema {}", args.shadow_schema),
        &live,
        start.as_ref(),
        &keep_old_text(args.keep_old, ""),
    )
    .await?;
    let target = plan.target;
    let start = start.unwrap_or_default();
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }

    rb.prepare_shadow().await?;
    if !resuming {
        // Written without its secondary indexes; they are built once, before the swap.
        let deferred = rb.defer_indexes().await?;
        tracing::info!(
            deferred,
            "secondary indexes deferred to the end of the bulk"
        );
        if args.bulk == "staged" {
            rb.create_stage().await?;
            staging = StageState::Intact;
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(p.db_max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(rb.shadow_options());
    let began = Instant::now();
    let mut start = start;
    if staging == StageState::Intact {
        // The bulk: staged batch by batch, then derived set-wise (`rebuild::stage`).
        let sink = StageSink::new(pool.clone(), projection.clone());
        let mut run = ShadowRun::start(
            p,
            sink,
            xclog_projector::config::defaults::BATCH_MAX_RECORDS,
            Progress::new(&args.progress, &start, &target),
        )?;
        if let Err(code) = read_to(&mut run, &rb, &target).await? {
            return Ok(code);
        }
        run.stop().await;
        let t = Instant::now();
        let events = rb.finish_stage().await?;
        println!(
            "derived the store from the staged records in {:.1}s ({events} events)",
            t.elapsed().as_secs_f64()
        );
        start = rb.offsets(&args.shadow_schema).await?;
    }
    // The rest of the topic, through the live sink, until caught up with the live store.
    let sink = PgSink::from_pool(pool, projection.clone());
    let mut run = ShadowRun::start(
        p,
        sink,
        xclog_projector::config::defaults::BATCH_MAX_RECORDS,
        Progress::new(&args.progress, &start, &target),
    )?;
    loop {
        if let Err(code) = read_to(&mut run, &rb, &target).await? {
            return Ok(code);
        }
        if !rb.deferred_indexes().await?.is_empty() {
            run.progress.finish();
            let t = Instant::now();
            let built = rb.restore_indexes().await?;
            println!(
                "built {built} secondary indexes in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        let old = rebuild::old_schema_name(unix_now());
        match rb.try_swap(&old).await {
            Ok(SwapOutcome::Swapped {
                old_schema,
                offsets,
            }) => {
                // Its batch in flight fails (the shadow tables moved) and is rolled back.
                run.stop().await;
                let events = rb.count_events(&args.schema).await?;
                if args.keep_old {
                    println!("previous store kept in schema {old_schema}");
                } else {
                    rb.drop_schema(&old_schema).await?;
                }
                println!(
                    "swapped: schema {} now holds the rebuilt store ({events} events, offsets {}) \
                     after {:.1}s; the live projector continues from these offsets",
                    args.schema,
                    fmt_offsets(&offsets),
                    began.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(SwapOutcome::Behind { shadow, live }) => {
                tracing::debug!(shadow = %fmt_offsets(&shadow), live = %fmt_offsets(&live), "live store moved ahead; reading on before the swap");
            }
            Err(error) => {
                tracing::warn!(error = %error, "swap attempt failed; retrying");
            }
        }
    }
}
