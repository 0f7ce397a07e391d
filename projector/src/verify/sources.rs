//! Reading the three sources for `xclog verify`: the topic (decoded as the projector decodes
//! it), PostgreSQL (keyset pages) and MongoDB (a cursor), each up to given offsets, streamed
//! into a [`SideDigest`]; and the events of a few instances for the event-by-event comparison.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use xclog_schema::{Limits, Record};

use super::VerifyError;
use super::digest::{
    Bounds, DetailEvent, EventFacts, SideDigest, SnapshotFacts, SnapshotState, ViewFacts,
    ViewState, within,
};
use crate::read::postgres::PgReader;
use crate::read::{EventStore, Page, StoredEvent};
use crate::sink::mongo::{EVENTS, INSTANCES, MongoSink, SNAPSHOTS, document};
use crate::sink::postgres::PgSink;

/// Rows per PostgreSQL page / documents per MongoDB cursor batch.
const PAGE: u32 = 2000;

/// Which store's content check (`Sink::check`) the topic side applies: records the store's
/// projector dead-letters are not expected in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// PostgreSQL (`sink::postgres`).
    Postgres,
    /// MongoDB (`sink::mongo`).
    Mongo,
}

impl StoreKind {
    fn check(self, record: &Record) -> Result<(), String> {
        match self {
            StoreKind::Postgres => crate::sink::postgres::rows::check(record),
            StoreKind::Mongo => document::check(record),
        }
    }
}

/// Where the topic is.
#[derive(Debug, Clone)]
pub struct TopicSource {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The log topic.
    pub topic: String,
    /// Decoding limits (those of the projector).
    pub limits: Limits,
    /// Longest wait for the topic to make progress while reading it.
    pub idle_timeout: Duration,
    /// TLS, SASL and other librdkafka settings (`xclog_projector::kafka::client_config`).
    pub kafka_settings: Vec<(String, crate::Secret)>,
}

fn kafka_error(what: String) -> impl FnOnce(rdkafka::error::KafkaError) -> VerifyError {
    move |e| VerifyError::Source {
        what,
        source: Box::new(e),
    }
}

impl TopicSource {
    fn consumer(&self) -> Result<BaseConsumer, VerifyError> {
        crate::kafka::client_config(&self.brokers, &self.kafka_settings)
            .set("group.id", format!("xclog-verify-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| VerifyError::Source {
                what: format!("creating a Kafka consumer for {}", self.brokers),
                source: Box::new(xclog_kafka::create_error(&e)),
            })
    }

    /// The partitions of the topic (fails when the brokers do not answer or the topic does not
    /// exist).
    pub async fn partitions(&self) -> Result<Vec<i32>, VerifyError> {
        let this = self.clone();
        blocking(move || {
            let (_, metadata) = crate::kafka::connect(
                &this.brokers,
                &this.kafka_settings,
                Some(&this.topic),
                Duration::from_secs(10),
            )
            .map_err(|e| VerifyError::Source {
                what: format!(
                    "reading the metadata of topic {:?} from {}",
                    this.topic, this.brokers
                ),
                source: Box::new(e),
            })?;
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == this.topic)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| {
                    VerifyError::Invalid(format!(
                        "topic {:?} does not exist on {}",
                        this.topic, this.brokers
                    ))
                })?;
            let mut out: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
            out.sort_unstable();
            Ok(out)
        })
        .await
    }

    /// Reads every partition from its first offset up to `bounds` (exclusive) and hands each
    /// record (decoded, or the decode error) to `f`, in log order per partition.
    pub async fn scan<S, F>(&self, bounds: &Bounds, state: S, mut f: F) -> Result<S, VerifyError>
    where
        S: Send + 'static,
        F: FnMut(&mut S, i32, i64, Result<Record, String>) + Send + 'static,
    {
        let this = self.clone();
        let bounds = bounds.clone();
        blocking(move || {
            let mut state = state;
            let consumer = this.consumer()?;
            let mut list = TopicPartitionList::new();
            let mut pending: HashMap<i32, i64> = HashMap::new();
            for (p, next) in &bounds {
                if *next <= 0 {
                    continue;
                }
                let (low, _high) = consumer
                    .fetch_watermarks(&this.topic, *p, Duration::from_secs(10))
                    .map_err(kafka_error(format!(
                        "reading the offsets of {} partition {p}",
                        this.topic
                    )))?;
                if low > 0 {
                    return Err(VerifyError::Invalid(format!(
                        "topic {} partition {p} starts at offset {low} (retention deleted offsets \
                         0..{low}), but the store holds records up to offset {}: the topic cannot \
                         be compared",
                        this.topic,
                        next - 1
                    )));
                }
                list.add_partition_offset(&this.topic, *p, Offset::Beginning)
                    .map_err(kafka_error(format!("assigning partition {p}")))?;
                pending.insert(*p, *next);
            }
            if pending.is_empty() {
                return Ok(state);
            }
            consumer
                .assign(&list)
                .map_err(kafka_error(format!("assigning {}", this.topic)))?;
            let mut last_progress = Instant::now();
            while !pending.is_empty() {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        last_progress = Instant::now();
                        let (p, offset) = (m.partition(), m.offset());
                        let Some(next) = pending.get(&p).copied() else {
                            continue;
                        };
                        if offset < next {
                            let decoded = crate::kafka_record::ReadRecord::from_message(&m)
                                .decode(&this.limits);
                            if let Err(e) = &decoded
                                && e.is_unsupported_version()
                            {
                                // The projector stops before such a record; so does verify.
                                return Err(VerifyError::Invalid(format!(
                                    "topic {} partition {p} offset {offset}: {e}; upgrade \
                                     xclog to verify this topic",
                                    this.topic
                                )));
                            }
                            let decoded = decoded.map(|d| d.record).map_err(|e| e.to_string());
                            f(&mut state, p, offset, decoded);
                        }
                        if offset + 1 >= next {
                            pending.remove(&p);
                        }
                    }
                    Some(Err(e)) => {
                        return Err(VerifyError::Source {
                            what: format!("reading topic {}", this.topic),
                            source: Box::new(e),
                        });
                    }
                    None => {
                        // Transaction markers are never delivered: go by the position.
                        if let Ok(positions) = consumer.position() {
                            for e in positions.elements() {
                                if let Offset::Offset(at) = e.offset()
                                    && pending.get(&e.partition()).is_some_and(|n| at >= *n)
                                {
                                    pending.remove(&e.partition());
                                }
                            }
                        }
                        if last_progress.elapsed() > this.idle_timeout {
                            let mut left: Vec<_> = pending.iter().collect();
                            left.sort();
                            return Err(VerifyError::Invalid(format!(
                                "topic {} returned nothing for {:?} while partitions (partition, \
                                 end offset) {left:?} were not read to the end",
                                this.topic, this.idle_timeout
                            )));
                        }
                    }
                }
            }
            Ok(state)
        })
        .await
    }

    /// The digest of the topic up to `bounds`, without the records `store`'s projector
    /// dead-letters.
    pub async fn digest(
        &self,
        bounds: &Bounds,
        store: StoreKind,
    ) -> Result<SideDigest, VerifyError> {
        let mut digest = self
            .scan(
                bounds,
                SideDigest::new(),
                move |d, p, offset, record| match record.and_then(|r| store.check(&r).map(|()| r)) {
                    Err(_) => d.counts.dead_letters += 1,
                    Ok(Record::Event(e)) => {
                        d.add_event(&facts(&e, p, offset), &e.caused_by, &[]);
                    }
                    Ok(Record::Snapshot(s)) => d.add_topic_snapshot(snapshot_facts(&s, p, offset)),
                    Ok(Record::SnapshotDeletion(x)) => {
                        d.add_topic_snapshot_deletion(&x.instance_id)
                    }
                },
            )
            .await?;
        digest.finish();
        Ok(digest)
    }

    /// The events of `instances` in log order, with their `caused` sets (children in `digest`).
    pub async fn details(
        &self,
        bounds: &Bounds,
        store: StoreKind,
        instances: &BTreeSet<String>,
        digest: Arc<SideDigest>,
    ) -> Result<HashMap<String, Vec<DetailEvent>>, VerifyError> {
        #[derive(Default)]
        struct Acc {
            events: HashMap<String, Vec<DetailEvent>>,
            seen: HashSet<String>,
            links: BTreeSet<(String, String)>,
        }
        let wanted = instances.clone();
        let d = digest.clone();
        let acc = self
            .scan(bounds, Acc::default(), move |acc, p, offset, record| {
                let Ok(Record::Event(e)) = record.and_then(|r| store.check(&r).map(|()| r)) else {
                    return;
                };
                if wanted.contains(&e.instance_id) && acc.seen.insert(e.id.clone()) {
                    acc.events
                        .entry(e.instance_id.clone())
                        .or_default()
                        .push(DetailEvent {
                            facts: facts(&e, p, offset),
                            caused: BTreeSet::new(),
                        });
                }
                if d.contains_event(&e.id) {
                    for parent in &e.caused_by {
                        if d.instance_of(parent).is_some_and(|i| wanted.contains(i)) {
                            acc.links.insert((parent.clone(), e.id.clone()));
                        }
                    }
                }
            })
            .await?;
        let mut events = acc.events;
        let mut children: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (parent, child) in acc.links {
            children.entry(parent).or_default().insert(child);
        }
        for list in events.values_mut() {
            for e in list {
                e.caused = children.remove(&e.facts.id).unwrap_or_default();
            }
        }
        Ok(events)
    }
}

async fn blocking<T, F>(f: F) -> Result<T, VerifyError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, VerifyError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VerifyError::Invalid(format!("the topic reader thread failed: {e}")))?
}

fn facts(e: &xclog_schema::PersistedEvent, partition: i32, offset: i64) -> EventFacts {
    EventFacts {
        id: e.id.clone(),
        instance_id: e.instance_id.clone(),
        component: e.component_name.clone(),
        sequence: e.sequence,
        state_before: e.state_before.clone(),
        state_after: e.state_after.clone(),
        persisted_at: e.persisted_at,
        partition,
        offset,
    }
}

fn snapshot_facts(
    s: &xclog_schema::InstanceSnapshot,
    partition: i32,
    offset: i64,
) -> SnapshotFacts {
    SnapshotFacts {
        instance_id: s.instance.id.clone(),
        sequence: s.sequence,
        last_event_id: s.last_event_id.clone(),
        state: s.instance.current_state.clone(),
        snapshot_at: s.snapshot_at,
        partition,
        offset,
    }
}

/// Adds a stored event to a digest if it lies inside `bounds` (else counts it).
fn add_stored(d: &mut SideDigest, e: &StoredEvent, topic: &str, bounds: &Bounds) {
    match &e.source {
        Some(s) if s.topic == topic && within(bounds, s.partition, s.offset) => {
            d.add_event(
                &facts(&e.event, s.partition, s.offset),
                &[],
                &e.event.caused,
            );
        }
        Some(s) if s.topic == topic => d.counts.beyond_offsets += 1,
        _ => d.counts.without_position += 1,
    }
}

/// Sets a stored snapshot on a digest: comparable only when it lies inside `bounds`.
fn set_stored_snapshot(
    d: &mut SideDigest,
    s: Option<SnapshotFacts>,
    instance: &str,
    topic_matches: bool,
    bounds: &Bounds,
) {
    let state = match s {
        Some(f) if topic_matches && within(bounds, f.partition, f.offset) => SnapshotState::Some(f),
        Some(_) if topic_matches => {
            d.counts.beyond_offsets += 1;
            SnapshotState::Unknown
        }
        _ => {
            d.counts.without_position += 1;
            SnapshotState::Unknown
        }
    };
    d.set_store_snapshot(instance, state);
}

/// Stored events of one instance inside `bounds`, in log order; `caused` restricted to the
/// children in `digest` (the same range).
pub async fn store_details<R: EventStore>(
    reader: &R,
    topic: &str,
    instance: &str,
    bounds: &Bounds,
    digest: &SideDigest,
) -> Result<Vec<DetailEvent>, VerifyError> {
    let mut out = Vec::new();
    let mut page = Page::first(PAGE);
    loop {
        let got = reader
            .events_of_instance(instance, &page)
            .await
            .map_err(|e| VerifyError::Source {
                what: format!("reading the events of instance {instance}"),
                source: Box::new(e),
            })?;
        for e in got.events {
            let Some(s) = &e.source else { continue };
            if s.topic != topic || !within(bounds, s.partition, s.offset) {
                continue;
            }
            out.push(DetailEvent {
                facts: facts(&e.event, s.partition, s.offset),
                caused: e
                    .event
                    .caused
                    .iter()
                    .filter(|c| digest.contains_event(c))
                    .cloned()
                    .collect(),
            });
        }
        match got.next {
            Some(next) => page.after = Some(next),
            None => return Ok(out),
        }
    }
}

fn pg_error(what: String) -> impl FnOnce(sqlx::Error) -> VerifyError {
    move |e| VerifyError::Source {
        what,
        source: Box::new(e),
    }
}

/// Stored offsets of a projection, for `partitions` (0 where nothing is stored), read with the
/// sink's own `load_offsets`.
async fn stored_offsets<S: crate::sink::Sink>(
    sink: S,
    store: &str,
    projection: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Bounds, VerifyError> {
    let stored = sink
        .load_offsets(topic, partitions)
        .await
        .map_err(|e| VerifyError::Source {
            what: format!("reading the stored offsets of projection {projection:?} in {store}"),
            source: Box::new(e),
        })?;
    Ok(partitions
        .iter()
        .map(|p| (*p, stored.get(p).copied().unwrap_or(0)))
        .collect())
}

/// Stored offsets of a PostgreSQL projection, for `partitions` (0 where nothing is stored).
pub async fn pg_offsets(
    reader: &PgReader,
    projection: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Bounds, VerifyError> {
    let sink = PgSink::from_pool(reader.pool().clone(), projection);
    stored_offsets(sink, "PostgreSQL", projection, topic, partitions).await
}

/// Stored offsets of a MongoDB projection, for `partitions` (0 where nothing is stored).
pub async fn mongo_offsets(
    db: &Database,
    projection: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Bounds, VerifyError> {
    let sink = MongoSink::from_database(db.clone(), projection, false);
    stored_offsets(sink, "MongoDB", projection, topic, partitions).await
}

/// The digest of the PostgreSQL store up to `bounds`.
pub async fn pg_digest(
    reader: &PgReader,
    topic: &str,
    bounds: &Bounds,
) -> Result<SideDigest, VerifyError> {
    let mut d = SideDigest::new();
    // Views first: the digest then needs no view of its own from the events.
    type ViewRow = (String, Option<String>, String, Option<i32>, Option<i64>);
    each_row_by_instance(
        reader.pool(),
        "SELECT instance_id, last_event_id, current_state, last_event_partition, \
         last_event_offset FROM fsm_instances",
        "reading fsm_instances from PostgreSQL",
        |(id, last, state, partition, offset): &ViewRow| {
            let view = stored_view(last.as_deref(), state, *partition, *offset, bounds);
            d.set_store_view(id, view);
            id
        },
    )
    .await?;
    let mut after: Option<(String, i64, String)> = None;
    loop {
        let page = reader
            .events_in_instance_order(
                topic,
                after
                    .as_ref()
                    .map(|(i, o, id)| (i.as_str(), *o, id.as_str())),
                PAGE,
            )
            .await
            .map_err(|e| VerifyError::Source {
                what: "reading fsm_events from PostgreSQL".to_owned(),
                source: Box::new(e),
            })?;
        for e in &page {
            add_stored(&mut d, e, topic, bounds);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => {
                let offset = last.source.as_ref().map_or(i64::MIN, |s| s.offset);
                after = Some((
                    last.event.instance_id.clone(),
                    offset,
                    last.event.id.clone(),
                ));
            }
            _ => break,
        }
    }
    let (elsewhere,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM fsm_events WHERE source_topic IS DISTINCT FROM $1 OR source_offset IS NULL",
    )
    .bind(topic)
    .fetch_one(reader.pool())
    .await
    .map_err(pg_error("counting fsm_events rows without a log position".to_owned()))?;
    d.counts.without_position += elsewhere as u64;

    type Row = (
        String,
        Option<i64>,
        String,
        String,
        i64,
        Option<String>,
        Option<i32>,
        Option<i64>,
    );
    each_row_by_instance(
        reader.pool(),
        "SELECT instance_id, sequence, last_event_id, current_state, snapshot_at, \
         source_topic, source_partition, source_offset FROM fsm_snapshots",
        "reading fsm_snapshots from PostgreSQL",
        |(id, seq, last, state, at, src_topic, partition, offset): &Row| {
            let facts = match (partition, offset) {
                (Some(p), Some(o)) => Some(SnapshotFacts {
                    instance_id: id.clone(),
                    sequence: seq.and_then(|s| u64::try_from(s).ok()),
                    last_event_id: last.clone(),
                    state: state.clone(),
                    snapshot_at: *at,
                    partition: *p,
                    offset: *o,
                }),
                _ => None,
            };
            let topic_matches = src_topic.as_deref() == Some(topic);
            set_stored_snapshot(&mut d, facts, id, topic_matches, bounds);
            id
        },
    )
    .await?;
    d.finish();
    Ok(d)
}

/// Reads every row of `select` (whose first column is `instance_id`) in pages ordered by
/// instance id and hands each to `f`, which returns the row's instance id.
async fn each_row_by_instance<R>(
    pool: &sqlx::PgPool,
    select: &str,
    what: &str,
    mut f: impl FnMut(&R) -> &String,
) -> Result<(), VerifyError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let query = format!("{select} WHERE instance_id > $1 ORDER BY instance_id LIMIT $2");
    let mut after = String::new();
    loop {
        let rows: Vec<R> = sqlx::query_as(&query)
            .bind(&after)
            .bind(i64::from(PAGE))
            .fetch_all(pool)
            .await
            .map_err(pg_error(what.to_owned()))?;
        let mut last = None;
        for row in &rows {
            last = Some(f(row));
        }
        match last {
            Some(id) if rows.len() == PAGE as usize => after = id.clone(),
            _ => return Ok(()),
        }
    }
}

/// The instance view a store holds, comparable when its last event lies inside `bounds`.
fn stored_view(
    last_event_id: Option<&str>,
    state: &str,
    partition: Option<i32>,
    offset: Option<i64>,
    bounds: &Bounds,
) -> ViewState {
    match (last_event_id, partition, offset) {
        (None, _, _) => ViewState::None,
        (Some(id), Some(p), Some(o)) if within(bounds, p, o) => ViewState::Some(ViewFacts {
            last_event_id: id.to_owned(),
            state: state.to_owned(),
        }),
        _ => ViewState::Unknown,
    }
}

fn mongo_error(what: String) -> impl FnOnce(mongodb::error::Error) -> VerifyError {
    move |e| VerifyError::Source {
        what,
        source: Box::new(e),
    }
}

/// Streams every document of `collection` matching `filter` (in `sort` order) to `f`.
async fn each_document(
    db: &Database,
    collection: &str,
    filter: Document,
    sort: Document,
    mut f: impl FnMut(Document) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    let what = format!("reading the {collection} collection from MongoDB");
    let mut cursor = db
        .collection::<Document>(collection)
        .find(filter)
        .sort(sort)
        .batch_size(PAGE)
        .await
        .map_err(mongo_error(what.clone()))?;
    while cursor.advance().await.map_err(mongo_error(what.clone()))? {
        f(cursor
            .deserialize_current()
            .map_err(mongo_error(what.clone()))?)?;
    }
    Ok(())
}

/// The digest of the MongoDB store up to `bounds`.
pub async fn mongo_digest(
    db: &Database,
    topic: &str,
    bounds: &Bounds,
) -> Result<SideDigest, VerifyError> {
    let mut d = SideDigest::new();
    // Views first, as in `pg_digest`.
    each_document(db, INSTANCES, doc! {}, doc! {"_id": 1}, |raw| {
        let Ok(id) = raw.get_str("_id") else {
            return Ok(());
        };
        let int = |key: &str| raw.get(key).and_then(document::as_i64);
        let view = stored_view(
            raw.get_str("lastEventId").ok(),
            raw.get_str("currentState").unwrap_or_default(),
            int("lastEventPartition").and_then(|p| i32::try_from(p).ok()),
            int("lastEventOffset"),
            bounds,
        );
        d.set_store_view(id, view);
        Ok(())
    })
    .await?;
    each_document(
        db,
        EVENTS,
        doc! {"source.topic": topic},
        doc! {"instanceId": 1, "source.offset": 1, "_id": 1},
        |raw| {
            let e = crate::read::mongo::stored_event(&raw).map_err(|e| VerifyError::Source {
                what: "decoding an event document".to_owned(),
                source: Box::new(e),
            })?;
            add_stored(&mut d, &e, topic, bounds);
            Ok(())
        },
    )
    .await?;
    let elsewhere = db
        .collection::<Document>(EVENTS)
        .count_documents(doc! {"source.topic": {"$ne": topic}})
        .await
        .map_err(mongo_error(
            "counting events without a log position".to_owned(),
        ))?;
    d.counts.without_position += elsewhere;
    each_document(db, SNAPSHOTS, doc! {}, doc! {"_id": 1}, |raw| {
        let s = document::snapshot_from_document(&raw).map_err(|reason| {
            VerifyError::Invalid(format!(
                "snapshot document {:?} cannot be read back: {reason}",
                raw.get("_id").map(Bson::to_string)
            ))
        })?;
        let source = document::source_from_document(&raw);
        let topic_matches = source.as_ref().is_some_and(|s| s.topic == topic);
        let facts = source.map(|src| snapshot_facts(&s, src.partition, src.offset));
        set_stored_snapshot(&mut d, facts, &s.instance.id, topic_matches, bounds);
        Ok(())
    })
    .await?;
    d.finish();
    Ok(d)
}
