//! Producer throughput next to Kafka's own perf tool, in one invocation, same broker, same
//! record size (600-byte values), same `acks=all` and idempotence.
//!
//! ```text
//! scripts/stack.sh up
//! cargo bench -p xclog-producer --bench throughput
//! ```
//!
//! Environment: `XCLOG_KAFKA_BROKERS` (default `127.0.0.1:9092`), `XCLOG_BENCH_RECORDS`
//! (records per bulk run, default 200000), `XCLOG_KAFKA_LIBS` (the Kafka `libs/` folder;
//! by default the newest `kafka-*/libs` under `~/.cache/xclog` or `/var/tmp/xclog/cache`).
//!
//! Each measurement gets a fresh 3-partition topic (deleted at the end). The Java tool runs
//! first and last; ratios are against the mean of its two runs. `append` (awaited one by
//! one) is latency-bound, so it publishes a hundredth of the records.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use xclog_producer::workload::{Workload, WorkloadConfig};
use xclog_producer::{Producer, ProducerConfig, TopicSpec, ensure_topic};
use xclog_schema::{Encoding, PersistedEvent, Record};

const RECORD_SIZE: usize = 600;
const PARTITIONS: i32 = 3;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone)]
struct Measurement {
    name: String,
    records: usize,
    seconds: f64,
    value_bytes: usize,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.value_bytes as f64 / MIB / self.seconds
    }
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
        Ok(text) => text
            .parse()
            .with_context(|| format!("XCLOG_BENCH_RECORDS={text:?}"))?,
        Err(_) => 200_000,
    };
    let libs = kafka_libs()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut topics = Vec::new();

    eprintln!("generating {records} events with {RECORD_SIZE}-byte protobuf values");
    let events = events_of_size(records, RECORD_SIZE);
    let mean_size = events
        .iter()
        .map(|e| {
            xclog_schema::encode(&Record::Event(e.clone()), Encoding::Protobuf)
                .value
                .len()
        })
        .sum::<usize>()
        / events.len().max(1);
    eprintln!("mean encoded value: {mean_size} bytes");

    let mut results = Vec::new();
    let mut new_topic = |mode: &str| {
        let name = format!("xclog-bench-{mode}-{suffix}");
        topics.push(name.clone());
        name
    };

    let java_first = java_perf(&libs, &brokers, &new_topic("java1"), records).await?;
    let topic = new_topic("ff");
    let fire_and_forget = fire_and_forget(&brokers, &topic, &events).await?;
    let topic = new_topic("all");
    let append_all = append_all(&brokers, &topic, &events, 1_000).await?;
    let topic = new_topic("one");
    let append_awaited = append_one(&brokers, &topic, &events[..records / 100], None).await?;
    let topic = new_topic("one0");
    let append_one_no_linger = append_one(
        &brokers,
        &topic,
        &events[..records / 100],
        Some(Duration::ZERO),
    )
    .await?;
    let java_last = java_perf(&libs, &brokers, &new_topic("java2"), records).await?;
    results.extend([
        java_first.clone(),
        fire_and_forget,
        append_all,
        append_awaited,
        append_one_no_linger,
        java_last.clone(),
    ]);

    let reference = (java_first.per_second() + java_last.per_second()) / 2.0;
    let reference_mib = (java_first.mib_per_second() + java_last.mib_per_second()) / 2.0;
    println!();
    println!("| run | records | events/s | MB/s (values, MiB) | ratio to Java perf tool (mean) |");
    println!("|---|---:|---:|---:|---:|");
    for m in &results {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} |",
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
        let mean = sample
            .iter()
            .map(|e| {
                xclog_schema::encode(&Record::Event(e.clone()), Encoding::Protobuf)
                    .value
                    .len()
            })
            .sum::<usize>()
            / sample.len();
        payload_bytes = (payload_bytes + size).saturating_sub(mean).max(1);
    }
    generate(payload_bytes, count)
}

async fn connect(brokers: &str, topic: &str, linger: Option<Duration>) -> anyhow::Result<Producer> {
    let mut config = ProducerConfig::new(brokers, topic);
    if let Some(linger) = linger {
        config.linger = linger;
    }
    ensure_topic(&config, &TopicSpec::new(topic, PARTITIONS, 1)).await?;
    Ok(Producer::connect(config).await?)
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
    events: &[PersistedEvent],
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, None).await?;
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
        name: "xclog append_nowait (fire-and-forget, awaited at the end)".into(),
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
    })
}

async fn append_all(
    brokers: &str,
    topic: &str,
    events: &[PersistedEvent],
    batch: usize,
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, None).await?;
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        producer.append_all(chunk).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await?;
    Ok(Measurement {
        name: format!("xclog append_all (batches of {batch})"),
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
    })
}

async fn append_one(
    brokers: &str,
    topic: &str,
    events: &[PersistedEvent],
    linger: Option<Duration>,
) -> anyhow::Result<Measurement> {
    let producer = connect(brokers, topic, linger).await?;
    let started = Instant::now();
    for event in events {
        producer.append(event).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    producer.close(Duration::from_secs(30)).await?;
    Ok(Measurement {
        name: match linger {
            None => "xclog append (each awaited before the next; default linger 5 ms)".into(),
            Some(linger) => format!(
                "xclog append (each awaited; linger {} ms)",
                linger.as_millis()
            ),
        },
        records: events.len(),
        seconds,
        value_bytes: value_bytes(events),
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
