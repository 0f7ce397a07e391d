//! Shared helpers of the PostgreSQL projector end-to-end tests: publish records, run a
//! projector (in process or as the `xclog` binary), and compare the store with the topic.

#![allow(dead_code)] // each test file uses a subset

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use xclog_projector::sink::order::InstanceOrder;

use anyhow::{Context as _, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xclog_projector::sink::postgres::PgSink;
use xclog_projector::{CancellationToken, Projector, ProjectorConfig};
use xclog_schema::{
    Encoding, FsmInstance, InstanceSnapshot, InstanceStatus, PersistedEvent, Record,
};
use xclog_tests::{brokers, wait_until};

/// A record as published: where it landed.
#[derive(Debug, Clone)]
pub struct Published {
    pub record: Record,
    pub partition: i32,
    pub offset: i64,
}

pub fn producer() -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating a test producer")
}

/// Publishes records in order (awaiting each batch of acknowledgements), encoded as `encoding`.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    encoding: Encoding,
) -> anyhow::Result<Vec<Published>> {
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(500) {
        let mut pending = Vec::with_capacity(chunk.len());
        for record in chunk {
            let encoded = xclog_schema::encode(record, encoding);
            let mut headers = OwnedHeaders::new();
            for (k, v) in &encoded.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut rec = FutureRecord::to(topic)
                .key(&encoded.key)
                .payload(&encoded.value)
                .headers(headers);
            let fut = loop {
                match producer.send_result(rec) {
                    Ok(f) => break f,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        rec = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e).context("enqueueing"),
                }
            };
            pending.push((record.clone(), fut));
        }
        for (record, fut) in pending {
            let d = fut
                .await
                .context("delivery future dropped")?
                .map_err(|(e, _)| e)
                .context("publishing")?;
            out.push(Published {
                record,
                partition: d.partition,
                offset: d.offset,
            });
        }
    }
    Ok(out)
}

/// Live traffic: publishes `records` as JSON, `chunk` at a time with `pause` between chunks,
/// until they are all out or `stop` is set; returns what was published.
pub fn publish_until_stopped(
    producer: &FutureProducer,
    topic: &str,
    records: Vec<Record>,
    chunk: usize,
    pause: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<Published>>> {
    let (producer, topic) = (producer.clone(), topic.to_owned());
    tokio::spawn(async move {
        let mut out = Vec::new();
        for part in records.chunks(chunk) {
            out.extend(publish(&producer, &topic, part, Encoding::Json).await?);
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        anyhow::Ok(out)
    })
}

/// Publishes raw bytes (poison records) with a key.
pub async fn publish_raw(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> anyhow::Result<(i32, i64)> {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let d = producer
        .send(
            FutureRecord::to(topic).key(key).payload(value).headers(h),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((d.partition, d.offset))
}

/// The realistic workload of the load generator.
pub fn workload(events: u64, instances: usize, seed: u64) -> Vec<Record> {
    let config = xclog_workload::WorkloadConfig {
        seed,
        events,
        instances,
        payload_bytes: 128,
        ..Default::default()
    };
    xclog_workload::Workload::new(config).collect()
}

/// Projector settings for tests: small batches so runs cross many batch boundaries.
pub fn config(topic: &str, group: &str) -> ProjectorConfig {
    let mut c = ProjectorConfig::new(brokers(), topic, group);
    c.batch_max_records = 250;
    c.batch_max_latency = Duration::from_millis(50);
    c.retry_backoff_initial = Duration::from_millis(50);
    c.retry_backoff_max = Duration::from_millis(1000);
    c.drain_timeout = Duration::from_secs(10);
    c
}

/// A projector running in this process.
pub struct InProcess {
    pub token: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), xclog_projector::ProjectorError>>,
}

impl InProcess {
    /// Cancels and waits for it to stop cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("projector did not stop within 60 s")???;
        Ok(())
    }
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    PgSink::from_pool(pool.clone(), "migrate")
        .migrate()
        .await
        .context("migrations")
}

pub async fn start_in_process(config: ProjectorConfig, db_url: &str) -> anyhow::Result<InProcess> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(db_url)?;
    let sink = PgSink::from_pool(pool, config.group_id.clone());
    sink.migrate().await?;
    let projector = Projector::new(config, sink)?;
    let token = CancellationToken::new();
    let task = tokio::spawn(projector.run(token.clone()));
    Ok(InProcess { token, task })
}

/// End offsets (high watermarks) of every partition of `topic`.
pub fn end_offsets(topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// Waits until the stored offsets of `projection` reach the end of every partition.
pub async fn wait_caught_up(
    pool: &PgPool,
    topic: &str,
    projection: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let ends = end_offsets(topic, partitions)?;
    let want: BTreeMap<i32, i64> = ends.into_iter().filter(|(_, h)| *h > 0).collect();
    wait_until(timeout, "stored offsets to reach the end of the topic", || {
        let pool = pool.clone();
        let want = want.clone();
        let topic = topic.to_owned();
        let projection = projection.to_owned();
        async move {
            let rows: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT partition, next_offset FROM xclog_offsets WHERE projection = $1 AND topic = $2",
            )
            .bind(&projection)
            .bind(&topic)
            .fetch_all(&pool)
            .await?;
            let got: BTreeMap<i32, i64> = rows.into_iter().collect();
            if got == want {
                Ok(Some(()))
            } else {
                bail!("stored {got:?}, want {want:?}")
            }
        }
    })
    .await
}

/// Checks the store against the published records, row for row: every event exactly once with
/// its columns, `caused` complete (the inverse of every `caused_by`), the newest snapshot per
/// instance, and the instance view's event counts.
pub async fn assert_store_equals(pool: &PgPool, published: &[Published]) -> anyhow::Result<()> {
    let mut events: BTreeMap<String, &PersistedEvent> = BTreeMap::new();
    let mut newest: HashMap<String, (&InstanceSnapshot, InstanceOrder)> = HashMap::new();
    for p in published {
        match &p.record {
            Record::Event(e) => {
                events.entry(e.id.clone()).or_insert(e);
            }
            Record::Snapshot(s) => {
                let key = InstanceOrder::new(s.sequence, s.snapshot_at, p.partition, p.offset);
                if newest.get(&s.instance.id).is_none_or(|(_, old)| key > *old) {
                    newest.insert(s.instance.id.clone(), (s, key));
                }
            }
            Record::SnapshotDeletion(d) => {
                newest.remove(&d.instance_id);
            }
        }
    }

    type Row = (
        String,
        String,
        String,
        String,
        String,
        serde_json::Value,
        String,
        String,
        i64,
        Vec<String>,
        Vec<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, instance_id, machine_name, component_name, event_type, event_payload, \
         state_before, state_after, persisted_at, COALESCE(caused_by, '{}'), COALESCE(caused, '{}'), sequence \
         FROM fsm_events ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let stored_ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let want_ids: Vec<&str> = events.keys().map(String::as_str).collect();
    if stored_ids != want_ids {
        let stored: std::collections::BTreeSet<&str> = stored_ids.iter().copied().collect();
        let missing: Vec<_> = want_ids
            .iter()
            .filter(|i| !stored.contains(*i))
            .take(5)
            .collect();
        bail!(
            "fsm_events has {} rows, topic has {} distinct events; first missing: {missing:?}",
            stored_ids.len(),
            want_ids.len()
        );
    }
    // Expected `caused`: children ordered by (persisted_at, id).
    let mut children: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for e in events.values() {
        let mut parents: Vec<&str> = e.caused_by.iter().map(String::as_str).collect();
        parents.sort();
        parents.dedup();
        for p in parents {
            children
                .entry(p)
                .or_default()
                .push((e.persisted_at, e.id.as_str()));
        }
    }
    for r in &rows {
        let e = events[&r.0];
        ensure!(
            r.1 == e.instance_id && r.2 == e.machine_name && r.3 == e.component_name,
            "row {} identity columns differ",
            r.0
        );
        ensure!(
            r.4 == e.event.event_type && r.5 == e.event.payload,
            "row {} event differs",
            r.0
        );
        ensure!(
            r.6 == e.state_before && r.7 == e.state_after && r.8 == e.persisted_at,
            "row {} states/time differ",
            r.0
        );
        ensure!(
            r.9 == e.caused_by,
            "row {} caused_by {:?} != {:?}",
            r.0,
            r.9,
            e.caused_by
        );
        ensure!(
            r.11 == e.sequence.map(|s| s as i64),
            "row {} sequence differs",
            r.0
        );
        let mut want: Vec<(i64, &str)> = children.get(r.0.as_str()).cloned().unwrap_or_default();
        want.sort();
        let want: Vec<&str> = want.into_iter().map(|(_, id)| id).collect();
        ensure!(
            r.10 == want,
            "row {} caused {:?}, want {:?}",
            r.0,
            r.10,
            want
        );
    }

    let snaps: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT instance_id, current_state, sequence, snapshot_at FROM fsm_snapshots",
    )
    .fetch_all(pool)
    .await?;
    ensure!(
        snaps.len() == newest.len(),
        "fsm_snapshots has {} rows, want {}",
        snaps.len(),
        newest.len()
    );
    for (id, state, seq, at) in snaps {
        let (s, _) = newest
            .get(&id)
            .with_context(|| format!("unexpected snapshot {id}"))?;
        ensure!(
            state == s.instance.current_state
                && seq == s.sequence.map(|q| q as i64)
                && at == s.snapshot_at,
            "snapshot {id} is not the newest published one"
        );
    }

    let mut counts: HashMap<&str, i64> = HashMap::new();
    for e in events.values() {
        *counts.entry(e.instance_id.as_str()).or_default() += 1;
    }
    let view: Vec<(String, i64)> =
        sqlx::query_as("SELECT instance_id, event_count FROM fsm_instances WHERE event_count > 0")
            .fetch_all(pool)
            .await?;
    ensure!(
        view.len() == counts.len(),
        "fsm_instances has {} instances with events, want {}",
        view.len(),
        counts.len()
    );
    for (id, n) in view {
        ensure!(
            counts.get(id.as_str()) == Some(&n),
            "fsm_instances.event_count of {id} is {n}, want {:?}",
            counts.get(id.as_str())
        );
    }
    Ok(())
}

#[allow(unused_imports)] // each test file uses a subset
pub use xclog_tests::xclog_binary;

/// Starts `xclog project` as a child process against `topic` and `db_url`.
pub fn spawn_binary(
    bin: &std::path::Path,
    topic: &str,
    group: &str,
    db_url: &str,
) -> anyhow::Result<std::process::Child> {
    std::process::Command::new(bin)
        .args(["project", "--target", "postgres", "--http-addr", "off"])
        .env("XCLOG_KAFKA_BROKERS", brokers())
        .env("XCLOG_TOPIC", topic)
        .env("XCLOG_GROUP", group)
        .env("DATABASE_URL", db_url)
        .env("XCLOG_BATCH_MAX_RECORDS", "200")
        .env("XCLOG_BATCH_MAX_LATENCY_MS", "50")
        .env(
            "XCLOG_LOG",
            std::env::var("XCLOG_TEST_PROJECTOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("spawning xclog project")
}

/// Events in the store's `fsm_events` table (0 while the database does not answer).
pub async fn stored_events(pool: &PgPool) -> u64 {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM fsm_events")
        .fetch_one(pool)
        .await
        .map_or(0, |n| n.max(0) as u64)
}

/// A run of `xclog project` killed with SIGKILL at random points, for either store: `records`
/// are published in chunks of `chunk_len`, one chunk (as protobuf) into each of `kills` lives
/// of the projector, the rest (as JSON) before a last life that catches up and is stopped with
/// SIGTERM.
pub struct SigkillRun<'a> {
    pub topic: &'a str,
    pub records: Vec<Record>,
    pub chunk_len: usize,
    pub kills: usize,
    /// Deadline of each wait for progress.
    pub catch_up: Duration,
}

impl SigkillRun<'_> {
    /// Runs the lives, with the store's parts: `spawn` starts `xclog project` against the
    /// store, `stored_events` counts the events it holds, and `caught_up` waits until the
    /// projector's stored offsets reach the end of the topic. Returns what was published.
    pub async fn run(
        self,
        spawn: impl Fn() -> anyhow::Result<std::process::Child>,
        stored_events: impl AsyncFn() -> u64,
        caught_up: impl AsyncFnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Published>> {
        let producer = producer()?;
        let chunks: Vec<&[Record]> = self.records.chunks(self.chunk_len).collect();
        let stored_events = &stored_events;
        let mut published = Vec::new();
        let mut rng = Rng::from_time();
        for round in 0..self.kills {
            // Publish while the projector works, so kills land mid-batch and mid-commit.
            let mut child = spawn()?;
            if let Some(chunk) = chunks.get(round) {
                published.extend(publish(&producer, self.topic, chunk, Encoding::Protobuf).await?);
            }
            let before = stored_events().await;
            // Wait for progress (so each life stores something), then kill at a random moment.
            wait_until(
                self.catch_up,
                "the projector to store something",
                || async move { Ok((stored_events().await > before).then_some(())) },
            )
            .await?;
            // The kill point is drawn at random on purpose: there is no state to wait for.
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            child.kill()?; // SIGKILL
            child.wait()?;
        }
        for chunk in chunks.iter().skip(self.kills) {
            published.extend(publish(&producer, self.topic, chunk, Encoding::Json).await?);
        }
        let mut child = spawn()?;
        let caught_up = caught_up().await;
        // SIGTERM: graceful stop.
        let _ = std::process::Command::new("kill")
            .arg(child.id().to_string())
            .status();
        let status = child.wait()?;
        caught_up?;
        assert!(
            status.success(),
            "xclog project exited with {status} after SIGTERM"
        );
        Ok(published)
    }
}

#[allow(unused_imports)] // each test file uses a subset
pub use xclog_tests::{Rng, event};

/// A snapshot record of `instance` in `state` at `at`.
pub fn snapshot(instance: &str, at: i64, seq: Option<u64>, state: &str) -> Record {
    Record::Snapshot(InstanceSnapshot {
        instance: FsmInstance {
            id: instance.into(),
            machine_name: "Order".into(),
            current_state: state.into(),
            context: json!({"k": state}),
            public_member: None,
            internal_member: None,
            created_at: 1,
            updated_at: at,
            status: InstanceStatus::Active,
            is_entry_point: None,
            parent_instance_id: None,
            parent_machine_name: None,
        },
        snapshot_at: at,
        last_event_id: String::new(),
        pending_timeouts: None,
        sequence: seq,
    })
}

/// A plain HTTP GET of the projector's ops server: the status and the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}
