//! `prepare`: one pass over the log topic that gives each peer the same events in the form
//! it reads. Records keep their partition, so per-instance order is the same for every side.
//! Snapshots are counted but not republished: the peers only write the events table or
//! collection (docs/BENCHMARKS.md says so next to their rows).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Headers as _, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::{Value, json};
use xclog_schema::{Limits, PersistedEvent, Record, decode};

/// Options of `xclog-bench prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The log topic written by `xclog produce`.
    #[arg(long)]
    from: String,
    /// Topic to create and fill with the events as Kafka Connect JSON-with-schema (JDBC peer);
    /// none when absent (a workload for the Mongo sides only).
    #[arg(long)]
    jdbc_topic: Option<String>,
    /// Topic to create and fill with the events as plain JSON documents (Mongo peer); none when
    /// absent (a workload for the PostgreSQL sides only).
    #[arg(long)]
    mongo_topic: Option<String>,
    /// File to write the same documents to, one JSON object per line (Mongo limit).
    #[arg(long, requires = "mongo_topic")]
    docs_file: Option<PathBuf>,
}

/// Counts failed deliveries (the run fails if any).
#[derive(Debug, Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the pass; returns `{"events":..,"snapshots":..,"partitions":..,"seconds":..}`.
pub async fn run(args: PrepareArgs) -> anyhow::Result<Value> {
    let partitions = partition_count(&args.brokers, &args.from)?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let topics: Vec<NewTopic<'_>> = args
        .jdbc_topic
        .iter()
        .chain(&args.mongo_topic)
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    // (librdkafka refuses an empty list; with no form asked for, the pass only counts)
    if !topics.is_empty() {
        for result in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .context("creating the peers' topics")?
        {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
    }
    tokio::task::spawn_blocking(move || copy(&args, partitions)).await?
}

fn partition_count(brokers: &str, topic: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} not in metadata"))?;
    if t.error().is_some() || t.partitions().is_empty() {
        bail!("topic {topic} does not exist (produce it first with `xclog produce`)");
    }
    Ok(t.partitions().len() as i32)
}

fn copy(args: &PrepareArgs, partitions: i32) -> anyhow::Result<Value> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "xclog-bench-prepare")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.from, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {}[{p}]", args.from))?;
        if high > low {
            assignment.add_partition_offset(&args.from, p, Offset::Beginning)?;
            remaining.insert(p, high);
        }
    }
    consumer.assign(&assignment)?;

    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create_with_context(Deliveries::default())?;
    let mut docs = match &args.docs_file {
        Some(path) => Some(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let jdbc = JdbcRecords::new();
    let limits = Limits::default();
    let (mut events, mut snapshots) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            bail!("reading {} did not finish in 30 minutes", args.from);
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {}", args.from))?;
        let partition = message.partition();
        if remaining
            .get(&partition)
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            remaining.remove(&partition);
        }
        let headers: Vec<(&str, &[u8])> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let decoded = decode(
            &headers,
            message.key(),
            message.payload().unwrap_or_default(),
            &limits,
        )
        .with_context(|| format!("record at {}[{partition}]@{}", args.from, message.offset()))?;
        let event = match decoded.record {
            Record::Event(event) => event,
            Record::Snapshot(_) | Record::SnapshotDeletion(_) => {
                snapshots += 1;
                continue;
            }
        };
        events += 1;
        if let Some(jdbc_topic) = &args.jdbc_topic {
            let (key, value) = jdbc.key_value(&event)?;
            send(
                &producer,
                BaseRecord::to(jdbc_topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            )?;
        }
        if let Some(mongo_topic) = &args.mongo_topic {
            let doc = mongo_document(&event)?.to_string();
            send(
                &producer,
                BaseRecord::to(mongo_topic)
                    .partition(partition)
                    .key(&event.id)
                    .payload(&doc),
            )?;
            if let Some(docs) = docs.as_mut() {
                docs.write_all(doc.as_bytes())?;
                docs.write_all(b"\n")?;
            }
        }
    }
    if let Some(docs) = docs.as_mut() {
        docs.flush()?;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the peers' topics")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} records were not delivered to the peers' topics");
    }
    Ok(json!({
        "events": events,
        "snapshots": snapshots,
        "partitions": partitions,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

fn send<'a>(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'a, String, String>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((error, _)) => return Err(error).context("queueing a record for a peer topic"),
        }
    }
}

/// Builds the JDBC peer's records: key `{id}` and value the `fsm_events` columns, both as
/// Kafka Connect JSON-with-schema (used by `prepare` and by `delay --format jdbc`).
#[derive(Debug)]
pub(crate) struct JdbcRecords {
    key_schema: Value,
    value_schema: Value,
}

impl JdbcRecords {
    pub(crate) fn new() -> Self {
        Self {
            key_schema: json!({"type": "struct", "name": "fsm_events.Key", "optional": false,
                "fields": [{"field": "id", "type": "string", "optional": false}]}),
            value_schema: jdbc_value_schema(),
        }
    }

    /// The (key, value) JSON strings of one event.
    pub(crate) fn key_value(&self, event: &PersistedEvent) -> anyhow::Result<(String, String)> {
        let key = json!({"schema": self.key_schema, "payload": {"id": event.id}}).to_string();
        let value =
            json!({"schema": self.value_schema, "payload": jdbc_payload(event)?}).to_string();
        Ok((key, value))
    }
}

/// The Kafka Connect schema of one `fsm_events` row (the columns a sink can fill from one
/// event; `caused` is derived from other events, which a per-record sink cannot do).
fn jdbc_value_schema() -> Value {
    let field = |name: &str, ty: &str, optional: bool| json!({"field": name, "type": ty, "optional": optional});
    json!({
        "type": "struct", "name": "fsm_events.Value", "optional": false,
        "fields": [
            field("id", "string", false),
            field("instance_id", "string", false),
            field("machine_name", "string", false),
            field("component_name", "string", false),
            field("event_type", "string", false),
            field("event_payload", "string", false),
            field("state_before", "string", false),
            field("state_after", "string", false),
            field("persisted_at", "int64", false),
            {"field": "caused_by", "type": "array", "optional": true,
             "items": {"type": "string", "optional": false}},
            field("source_component_name", "string", true),
            field("target_component_name", "string", true),
            field("sequence", "int64", true),
            field("event_timestamp", "int64", true),
            field("public_member_snapshot", "string", true),
        ]
    })
}

fn jdbc_payload(e: &PersistedEvent) -> anyhow::Result<Value> {
    Ok(json!({
        "id": e.id,
        "instance_id": e.instance_id,
        "machine_name": e.machine_name,
        "component_name": e.component_name,
        "event_type": e.event.event_type,
        "event_payload": serde_json::to_string(&e.event.payload)?,
        "state_before": e.state_before,
        "state_after": e.state_after,
        "persisted_at": e.persisted_at,
        "caused_by": e.caused_by,
        "source_component_name": e.source_component_name,
        "target_component_name": e.target_component_name,
        "sequence": e.sequence,
        "event_timestamp": e.event.timestamp,
        "public_member_snapshot": e.public_member_snapshot.as_ref().map(Value::to_string),
    }))
}

/// The xcomponent-ai Mongo document of an event: the camelCase `PersistedEvent` with
/// `_id` = event id.
pub(crate) fn mongo_document(e: &PersistedEvent) -> anyhow::Result<Value> {
    let mut doc = serde_json::Map::new();
    doc.insert("_id".to_owned(), Value::String(e.id.clone()));
    match serde_json::to_value(e)? {
        Value::Object(fields) => doc.extend(fields),
        other => bail!("an event serialized to {other}, not an object"),
    }
    Ok(Value::Object(doc))
}
