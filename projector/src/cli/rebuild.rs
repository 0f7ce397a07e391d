//! `xclog rebuild`: rebuilds the PostgreSQL store from the topic into a shadow schema while
//! the live projector keeps serving, then swaps atomically (see `xclog_projector::rebuild`).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use xclog_projector::rebuild::{self, PgRebuild, SwapOutcome};
use xclog_projector::sink::postgres::PgSink;
use xclog_projector::{CancellationToken, Projector};

/// Options of `xclog rebuild` (plus every option of `xclog project`, which describe the live
/// projection being rebuilt: topic, group, projection, database).
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub project: super::project::ProjectArgs,
    /// Schema the live store is in (what readers and the live projector use).
    #[arg(long, env = "XCLOG_PG_SCHEMA", default_value = "public")]
    pub schema: String,
    /// Schema the rebuild writes before the swap; an interrupted rebuild resumes from it.
    #[arg(long, env = "XCLOG_REBUILD_SCHEMA", default_value = "xclog_rebuild")]
    pub shadow_schema: String,
    /// Keep the previous store after the swap, in a schema named `xclog_old_<UTC time>`.
    #[arg(long)]
    pub keep_old: bool,
    /// Say what would be done (partitions, offsets, records to read) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress display: `auto` (a bar on a terminal, log lines otherwise), `bar` or `log`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "log"])]
    pub progress: String,
}

/// Low and high watermarks of every partition of `topic`.
pub(crate) fn watermarks(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka client")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of topic {topic} from {brokers}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {topic} does not exist on {brokers}");
    }
    partitions
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|w| (p, w))
                .with_context(|| format!("reading the offsets of {topic} partition {p}"))
        })
        .collect()
}

fn fmt_offsets(m: &BTreeMap<i32, i64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(p, o)| format!("p{p}={o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Progress of the shadow towards its target, shown as a bar or as log lines.
struct Progress {
    bar: bool,
    total: i64,
    started: Instant,
    done_at_start: i64,
    last_log: Instant,
}

impl Progress {
    fn show(&mut self, remaining: i64) {
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

    fn finish(&self) {
        if self.bar {
            eprintln!();
        }
    }
}

/// Runs the rebuild until the swap (exit 0), an interruption (130: run again to continue) or
/// an error.
pub async fn run(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let p = &args.project;
    if p.target != "postgres" {
        bail!(
            "xclog rebuild supports --target postgres; rebuild a MongoDB store by dropping its \
             database and replaying (`xclog project --target mongo` with a new --projection)"
        );
    }
    let url = p
        .database_url
        .as_ref()
        .context("--database-url (DATABASE_URL) is required with --target postgres")?;
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .context("--database-url is not a PostgreSQL URL")?;
    let projection = p.projection.clone().unwrap_or_else(|| p.group.clone());
    let rb = PgRebuild::connect(
        options,
        &args.schema,
        &args.shadow_schema,
        &projection,
        &p.topic,
    )
    .await?;
    rb.check_single_topic().await?;

    let marks = {
        let (brokers, topic) = (p.brokers.clone(), p.topic.clone());
        tokio::task::spawn_blocking(move || watermarks(&brokers, &topic)).await??
    };
    let low: BTreeMap<i32, i64> = marks.iter().map(|(&p, &(l, _))| (p, l)).collect();
    let high: BTreeMap<i32, i64> = marks.iter().map(|(&p, &(_, h))| (p, h)).collect();
    let resuming = rb.shadow_exists().await?;
    let start = if resuming {
        rb.offsets(&args.shadow_schema).await?
    } else {
        BTreeMap::new()
    };
    let missing = rebuild::missing_history(&start, &low);
    if !missing.is_empty() {
        return Err(rebuild::RebuildError::MissingHistory(missing).into());
    }
    let live = rb.offsets(&args.schema).await?;
    // Read at least to the end of the topic as it is now, and at least to the live store.
    let target: BTreeMap<i32, i64> = high
        .iter()
        .map(|(&p, &h)| (p, h.max(live.get(&p).copied().unwrap_or(0))))
        .collect();
    let to_read = rebuild::remaining(&start, &target);
    println!(
        "rebuild of topic {} (projection {projection}) into schema {}",
        p.topic, args.schema
    );
    println!("  topic offsets (low..high): {}", {
        marks
            .iter()
            .map(|(p, (l, h))| format!("p{p}={l}..{h}"))
            .collect::<Vec<_>>()
            .join(" ")
    });
    println!("  live store offsets:        {}", fmt_offsets(&live));
    if resuming {
        println!(
            "  shadow schema {} exists: resuming from {}",
            args.shadow_schema,
            fmt_offsets(&start)
        );
    } else {
        println!(
            "  shadow schema {}: new, reading from the first offset",
            args.shadow_schema
        );
    }
    println!("  records to read:           {to_read} (then the live tail until caught up)");
    println!(
        "  after the swap the previous store is {}",
        if args.keep_old {
            "kept as xclog_old_<UTC time>"
        } else {
            "dropped"
        }
    );
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
    }
    let pool = PgPoolOptions::new()
        .max_connections(p.db_max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(rb.shadow_options());
    let sink = PgSink::from_pool(pool, projection.clone());
    let mut config = p.projector_config()?;
    config.group_id = format!("{}.rebuild", p.group);
    config.http_addr = None;
    // The live projector already dead-lettered the records no store takes; a rebuild meets
    // them again and sends them to a topic of its own rather than doubling the live DLQ.
    if p.dead_letter_topic.is_none() {
        config.dead_letter_topic = format!("{}.rebuild", config.dead_letter_topic);
    }
    config.batch_max_records = config.batch_max_records.max(5000);
    config.batch_max_latency = config.batch_max_latency.max(Duration::from_millis(500));
    config.max_queued_batches = config.max_queued_batches.max(4);
    let projector = Projector::new(config, sink)?;
    let tail = CancellationToken::new();
    let mut task = tokio::spawn(projector.run(tail.clone()));
    let interrupt = super::shutdown_on_signal();

    let bar = match args.progress.as_str() {
        "bar" => true,
        "log" => false,
        _ => std::io::stderr().is_terminal(),
    };
    let mut progress = Progress {
        bar,
        total: rebuild::remaining(&BTreeMap::new(), &target),
        started: Instant::now(),
        done_at_start: rebuild::remaining(&BTreeMap::new(), &target)
            - rebuild::remaining(&start, &target),
        last_log: Instant::now(),
    };
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = interrupt.cancelled() => {
                progress.finish();
                tail.cancel();
                let _ = (&mut task).await;
                let at = rb.offsets(&args.shadow_schema).await?;
                eprintln!(
                    "rebuild interrupted at {}; run it again to continue from there",
                    fmt_offsets(&at)
                );
                return Ok(ExitCode::from(130));
            }
            result = &mut task => {
                progress.finish();
                result??;
                bail!("the rebuild's projector stopped before the swap");
            }
        }
        let shadow = rb.offsets(&args.shadow_schema).await?;
        progress.show(rebuild::remaining(&shadow, &target));
        if !rebuild::caught_up(&shadow, &target) {
            continue;
        }
        if !rb.deferred_indexes().await?.is_empty() {
            progress.finish();
            let t = Instant::now();
            let built = rb.restore_indexes().await?;
            println!(
                "built {built} secondary indexes in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let old = rebuild::old_schema_name(now);
        match rb.try_swap(&old).await {
            Ok(SwapOutcome::Swapped {
                old_schema,
                offsets,
            }) => {
                progress.finish();
                tail.cancel();
                // Its batch in flight fails (the shadow tables moved) and is rolled back.
                let _ = (&mut task).await;
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
