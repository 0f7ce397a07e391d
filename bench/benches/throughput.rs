//! The producer's ways of publishing next to Kafka's own perf tool, in one invocation, same
//! broker, same record size (600-byte values), same `acks=all` and idempotence.
//!
//! ```text
//! scripts/stack.sh up
//! cargo bench -p xclog-bench --bench throughput
//! ```
//!
//! Environment: `XCLOG_KAFKA_BROKERS` (default `127.0.0.1:9092`), `XCLOG_BENCH_RECORDS`
//! (records per bulk run, default 200000), `XCLOG_BENCH_LINGERS_MS` (the lingers measured
//! beside the default, comma-separated, default `5`), `XCLOG_KAFKA_LIBS` (the Kafka `libs/`
//! folder; by default the newest `kafka-*/libs` under `~/.cache/xclog` or
//! `/var/tmp/xclog/cache`).
//!
//! Each measurement gets a fresh 3-partition topic (deleted at the end) and a producer that
//! has already published a few warm-up records (connection, producer id and metadata are not
//! timed). The Java tool runs first and last; ratios are against the mean of its two runs.
//! `append` awaited one by one is latency-bound, so it publishes a fiftieth of the records
//! (a five-hundredth when the linger is 1 ms or more); its rows also give the latency of one
//! `append` (p50, p99).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use xclog_producer::{DEFAULT_LINGER, Producer, ProducerConfig, TopicSpec, ensure_topic};
use xclog_schema::{Encoding, PersistedEvent, Record};
use xclog_workload::{Workload, WorkloadConfig};

const RECORD_SIZE: usize = 600;
const PARTITIONS: i32 = 3;
const MIB: f64 = 1024.0 * 1024.0;
/// Records each producer publishes (awaited) before its measurement starts.
const WARM_UP: usize = 30;

#[derive(Debug, Clone)]
struct Measurement {
    name: String,
    records: usize,
    seconds: f64,
    value_bytes: usize,
    /// Latency of each awaited call, for the runs that await one record at a time.
    latencies: Option<Latencies>,
}

#[derive(Debug, Clone, Copy)]
struct Latencies {
    p50: Duration,
    p99: Duration,
}

impl Latencies {
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
        })
    }
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.value_bytes as f64 / MIB / self.seconds
    }
}

/// The linger a run uses: the producer's default, or an explicit one.
#[derive(Debug, Clone, Copy)]
enum Linger {
    Default,
    Set(Duration),
}

impl Linger {
    fn label(self) -> String {
        match self {
            Linger::Default => format!("default linger {}", ms(DEFAULT_LINGER)),
            Linger::Set(linger) => format!("linger {}", ms(linger)),
        }
    }

    fn value(self) -> Duration {
        match self {
            Linger::Default => DEFAULT_LINGER,
            Linger::Set(linger) => linger,
        }
    }
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; no other arguments are used.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let brokers =
        std::env::var("XCLOG_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let records: usize = match std::env::var("XCLOG_BENCH_RECORDS") {
        Ok(text) => text.parse().ok().filter(|n| *n >= 500).with_context(|| {
            format!("XCLOG_BENCH_RECORDS={text:?} is not a whole number of at least 500")
        })?,
        Err(_) => 200_000,
    };
    let lingers: Vec<Linger> = match std::env::var("XCLOG_BENCH_LINGERS_MS") {
        Ok(text) if text.trim().is_empty() => Vec::new(),
        Ok(text) => text
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|ms| (0.0..=1000.0).contains(ms))
                    .map(|ms| Linger::Set(Duration::from_secs_f64(ms / 1000.0)))
                    .with_context(|| {
                        format!(
                            "XCLOG_BENCH_LINGERS_MS={text:?}: {part:?} is not a number of \
                             milliseconds in 0..=1000 (give a comma-separated list, e.g. 0,5)"
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![Linger::Set(Duration::from_millis(5))],
    };
    let libs = kafka_libs()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut topics = Vec::new();

    eprintln!("generating {records} events with {RECORD_SIZE}-byte protobuf values");
    let events = events_of_size(records + WARM_UP, RECORD_SIZE);
    let (warm_up, events) = events.split_at(WARM_UP);
    let mean_size = value_bytes(events) / events.len();
    eprintln!("mean encoded value: {mean_size} bytes");

    let mut new_topic = |mode: &str| {
        let name = format!("xclog-bench-{mode}-{suffix}");
        topics.push(name.clone());
        name
    };
    let all_lingers: Vec<Linger> = std::iter::once(Linger::Default)
        .chain(lingers.iter().copied())
        .collect();

    let mut results = vec![java_perf(&libs, &brokers, &new_topic("java1"), records).await?];
    for (i, linger) in all_lingers.iter().enumerate() {
        let topic = new_topic(&format!("ff{i}"));
        results.push(fire_and_forget(&brokers, &topic, *linger, warm_up, events).await?);
    }
    for (i, linger) in all_lingers.iter().enumerate() {
        let topic = new_topic(&format!("all{i}"));
        results.push(append_all(&brokers, &topic, *linger, warm_up, events, 1_000).await?);
    }
    for (i, linger) in all_lingers.iter().enumerate() {
        let divisor = if linger.value() >= Duration::from_millis(1) {
            500
        } else {
            50
        };
        let topic = new_topic(&format!("one{i}"));
        results.push(
            append_one(
                &brokers,
                &topic,
                *linger,
                warm_up,
                &events[..records / divisor],
            )
            .await?,
        );
    }
    results.push(java_perf(&libs, &brokers, &new_topic("java2"), records).await?);

    let java: Vec<&Measurement> = results.iter().filter(|m| m.name.contains("Java")).collect();
    let reference = java.iter().map(|m| m.per_second()).sum::<f64>() / java.len() as f64;
    let reference_mib = java.iter().map(|m| m.mib_per_second()).sum::<f64>() / java.len() as f64;
    println!();
    println!(
        "| run | records | events/s | MB/s (values, MiB) | ratio to Java perf tool (mean) | \
         p50 per append (ms) | p99 per append (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        let (p50, p99) = m.latencies.map_or((String::new(), String::new()), |l| {
            (
                format!("{:.2}", l.p50.as_secs_f64() * 1000.0),
                format!("{:.2}", l.p99.as_secs_f64() * 1000.0),
            )
        });
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {p50} | {p99} |",
            m.name,
            m.records,
            m.per_second(),
            m.mib_per_second(),
            m.per_second() / reference
        );
    }
    println!(
        "\nJava perf tool mean: {reference:.0} records/s, {reference_mib:.1} MiB/s; \
         xclog records also carry a 36-byte key and ~50 bytes of headers, not counted above."
    );

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    admin.delete_topics(&names, &AdminOptions::new()).await?;
    Ok(())
}

/// Events whose protobuf value is about `size` bytes (the payload padding is tuned).
fn events_of_size(count: usize, size: usize) -> Vec<PersistedEvent> {
    let generate = |payload_bytes: usize, events: usize| -> Vec<PersistedEvent> {
        Workload::new(WorkloadConfig {
            seed: 2026,
            events: events as u64,
            instances: 1_000,
            payload_bytes,
            snapshot_interval: NonZeroU32::MAX,
        })
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
        })
        .collect()
    };
    let mut payload_bytes = size / 2;
    for _ in 0..4 {
        let sample = generate(payload_bytes, count.min(20_000));
        let mean = value_bytes(&sample) / sample.len();
        payload_bytes = (payload_bytes + size).saturating_sub(mean).max(1);
    }
    generate(payload_bytes, count)
}

/// A producer on a fresh topic that has published `warm_up` (awaited, one by one).
async fn connect(
    brokers: &str,
    topic: &str,
    linger: Linger,
    warm_up: &[PersistedEvent],
) -> anyhow::Result<Producer> {
    let mut config = ProducerConfig::new(brokers, topic);
    if let Linger::Set(linger) = linger {
        config.linger = linger;
    }
    ensure_topic(&config, &TopicSpec::new(topic, PARTITIONS, 1)).await?;
    let producer = Producer::connect(config).await?;
    for event in warm_up {
        producer.append(event).await?;
    }
    Ok(producer)
}

fn value_bytes(events: &[PersistedEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            xclog_schema::encode(&Record::Event(e.clone()), Encoding::Protobuf)
                .value
                .len()
        })
        .sum()
}

async fn fire_and_forget(
    brokers: &str,
    topic: &str,
    linger: Linger,
    warm_up: &[PersistedEvent],
    events: &[PersistedEvent],
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, linger, warm_up).await?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        acks.push(producer.append_nowait(event).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await?;
    Ok(Measurement {
        name: format!(
            "xclog append_nowait (fire-and-forget, awaited at the end; {})",
            linger.label()
        ),
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
        latencies: None,
    })
}

async fn append_all(
    brokers: &str,
    topic: &str,
    linger: Linger,
    warm_up: &[PersistedEvent],
    events: &[PersistedEvent],
    batch: usize,
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, linger, warm_up).await?;
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        producer.append_all(chunk).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await?;
    Ok(Measurement {
        name: format!("xclog append_all (batches of {batch}; {})", linger.label()),
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
        latencies: None,
    })
}

async fn append_one(
    brokers: &str,
    topic: &str,
    linger: Linger,
    warm_up: &[PersistedEvent],
    events: &[PersistedEvent],
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, linger, warm_up).await?;
    let mut latencies = Vec::with_capacity(events.len());
    let started = Instant::now();
    for event in events {
        let sent = Instant::now();
        producer.append(event).await?;
        latencies.push(sent.elapsed());
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await?;
    Ok(Measurement {
        name: format!(
            "xclog append (each awaited before the next; {})",
            linger.label()
        ),
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
        latencies: Latencies::of(latencies),
    })
}

/// Runs `org.apache.kafka.tools.ProducerPerformance` and parses its summary line.
async fn java_perf(
    libs: &std::path::Path,
    brokers: &str,
    topic: &str,
    records: usize,
) -> anyhow::Result<Measurement> {
    let config = ProducerConfig::new(brokers, topic);
    ensure_topic(&config, &TopicSpec::new(topic, PARTITIONS, 1)).await?;
    let classpath = format!("{}/*", libs.display());
    let output = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(&classpath)
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", topic, "--num-records", &records.to_string()])
        .args([
            "--record-size",
            &RECORD_SIZE.to_string(),
            "--throughput",
            "-1",
        ])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={brokers}"))
        .args(["acks=all", "enable.idempotence=true"])
        .output()
        .await
        .context("running java (is a JRE installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "ProducerPerformance failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Summary: "200000 records sent, 123456.8 records/sec (70.64 MB/sec), ..."
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("avg latency"))
        .with_context(|| format!("no summary line in:\n{stdout}"))?;
    let per_second: f64 = summary
        .split(", ")
        .nth(1)
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot parse {summary:?}"))?;
    eprintln!("java: {summary}");
    Ok(Measurement {
        name: "Kafka ProducerPerformance (Java)".into(),
        records,
        seconds: records as f64 / per_second,
        value_bytes: records * RECORD_SIZE,
        latencies: None,
    })
}

fn kafka_libs() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("XCLOG_KAFKA_LIBS") {
        return Ok(PathBuf::from(path));
    }
    let mut roots = Vec::new();
    if let Ok(home) = std::env::var("HOME") {
        roots.push(PathBuf::from(home).join(".cache/xclog"));
    }
    roots.push(PathBuf::from("/var/tmp/xclog/cache"));
    let mut found: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kafka-"))
                && path.join("libs").is_dir()
        })
        .map(|path| path.join("libs"))
        .collect();
    found.sort();
    found
        .pop()
        .context("no Kafka libs found: run scripts/stack.sh up or set XCLOG_KAFKA_LIBS")
}
