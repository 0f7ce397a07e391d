//! The MongoDB sink: the xcomponent-ai document shape (`events`, `snapshots`), the instance
//! view (`instances`) and the stored offsets (`xclog_offsets`), without multi-document
//! transactions (FerretDB has none, and many MongoDB deployments are not replica sets).
//!
//! Exactly-once *effect* comes from idempotent steps, run in this order for every batch:
//!
//! 1. **Fence check**: the stored offsets of the batch's partitions must equal the offsets the
//!    batch started from, else nothing is written ([`SinkError::Fenced`]).
//! 2. **Events**: unordered `insert` by `_id` = event id; duplicate-key errors (code 11000)
//!    mean "already stored" and are the only errors ignored. The first stored copy of an id
//!    wins; a later copy with the same id (a producer retry) is not written.
//! 3. **Causality**: for every stored event of the batch (replays included), `$addToSet` its id
//!    into `caused` of each parent named in `causedBy`; and for every event of the batch,
//!    `$addToSet` into its own `caused` the children already stored (`find({causedBy: {$in}})`).
//!    Each step follows its own acknowledged insert, so a parent and a child written at once
//!    by two workers always meet (docs/DESIGN.md, "MongoDB"). No two writers of one sink
//!    update one parent at once ([`CausedClaims`]: FerretDB 1.24 would lose one of two
//!    concurrent updates of a document).
//! 4. **Instance view**: per instance and partition, only events above the offset folded last
//!    are counted, and the fields shown are those of the latest event in the instance order
//!    ([`InstanceOrder`], valid across partitions), with a compare-and-set on what was read
//!    ([`instances`]); a lost race is [`SinkError::Transient`] (the batch is retried and the
//!    fold recomputed).
//! 5. **Snapshots**: first, one `delete` of the stored snapshots (matched by `instance.id`) of
//!    the instances the batch has a snapshot deletion for; then, of each instance, the newest
//!    snapshot after its last deletion in the batch ([`crate::sink::snapshot_plan`]) as an
//!    upsert (`$set` of every field) whose filter only matches an older stored snapshot
//!    (by [`InstanceOrder`]: sequence, `snapshotAt`, partition, offset); a duplicate-key error means the stored
//!    one is as new or newer. Then the instance view takes the status of the stored snapshot.
//! 6. **Offsets**: advanced last, only after every write above was acknowledged, each with a
//!    compare-and-set on the offset the batch started from (a mismatch is
//!    [`SinkError::Fenced`]).
//!
//! While `xclog rebuild` swaps a rebuilt store in, the offset documents carry [`SWAP_LOCK`]:
//! loading them is a transient error (the batch waits and retries) and the compare-and-set
//! requires the lock to be absent, so no batch commits across the swap.
//!
//! A crash anywhere leaves the offsets where they were; the replay repeats steps 2-5, each of
//! which changes nothing the second time. Writes are bulk commands (one round trip per step,
//! chunked under the 16 MiB message limit), never one document at a time.

pub mod document;
mod instances;
pub mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use xclog_schema::{InstanceSnapshot, PersistedEvent, Record};

use crate::config::Secret;
use crate::sink::order::{self, InstanceOrder};
use crate::sink::{Sink, SinkError, SinkRecord, SourcePosition, WriteBatch, WriteOutcome};

/// Collection of event documents.
pub const EVENTS: &str = "events";
/// Collection of snapshot documents.
pub const SNAPSHOTS: &str = "snapshots";
/// Collection of the instance view.
pub const INSTANCES: &str = "instances";
/// Collection of the projector's stored offsets.
pub const OFFSETS: &str = "xclog_offsets";
/// The collections a store consists of, in the order a rebuild swaps them in (the order the
/// sink writes them in a batch: events, snapshots, instance view; offsets last).
pub const STORE_COLLECTIONS: [&str; 3] = [EVENTS, SNAPSHOTS, INSTANCES];
/// Field of a stored offset document set while `xclog rebuild` swaps a rebuilt store in: a
/// projector neither loads nor advances a locked offset (docs/DESIGN.md, section 8).
pub const SWAP_LOCK: &str = "rebuildSwap";

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Instance ids per `delete` statement of snapshot deletions.
const DELETE_CHUNK: usize = 1000;
/// Statements per bulk command are also cut at this many bytes (MongoDB takes 16 MiB + 16 KiB).
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Settings of the MongoDB sink.
#[derive(Debug, Clone)]
pub struct MongoSinkConfig {
    /// Connection string (`mongodb://user:password@host:27017/`); redacted in `Debug`.
    pub uri: Secret,
    /// Database (default `xcomponent`, as in xcomponent-ai).
    pub database: String,
    /// Name of this projection: offsets are stored per projection.
    pub projection: String,
    /// How long to look for a usable server before an operation fails (as a transient error).
    pub server_selection_timeout: Duration,
    /// Ask for `w: "majority"` acknowledgement on every write (use it on replica sets, so an
    /// acknowledged batch survives a failover; a standalone server treats it as `w: 1`).
    pub majority_writes: bool,
    /// How long one command of a batch may wait for the server's reply before it fails as a
    /// transient error (the batch is then retried; every step of it is idempotent).
    pub command_timeout: Duration,
}

/// Default of [`MongoSinkConfig::command_timeout`]: far above what one chunk of a batch takes
/// (FerretDB on 2 cores: a few seconds), far below "for ever".
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl MongoSinkConfig {
    /// Defaults: database `xcomponent`, 5 s server selection, majority writes, a 60 s command
    /// timeout.
    pub fn new(uri: Secret, projection: impl Into<String>) -> Self {
        Self {
            uri,
            database: "xcomponent".to_owned(),
            projection: projection.into(),
            server_selection_timeout: Duration::from_secs(5),
            majority_writes: true,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// Writes batches into MongoDB (or FerretDB). Cheap to clone (shares the client).
#[derive(Debug, Clone)]
pub struct MongoSink {
    db: Database,
    /// Prefix of every collection name (empty for the live store; `xclog_rebuild_` for the
    /// shadow of a rebuild).
    prefix: String,
    projection: String,
    write_concern: Option<Document>,
    command_timeout: Duration,
    /// The parents whose `caused` a writer is updating, shared by every clone (the writers of
    /// one projector): FerretDB 1.24 applies an update as read, modify, write of the whole
    /// document without a lock, so two writers adding children to one parent at once would
    /// lose one addition (docs/DESIGN.md, "Causality with several workers"). A FerretDB-only
    /// workaround: MongoDB updates one document atomically, and there the claims only make
    /// two writers of one parent take turns.
    caused_claims: Arc<CausedClaims>,
    /// Instances being folded into the instance view by a writer of this sink.
    instance_claims: Arc<CausedClaims>,
}

/// Parents claimed by the writers of one sink for their `caused` statements: a writer
/// claims the parents no other writer holds, sends their statements, and releases them;
/// parents held by another writer wait for the next round. Nothing is held while waiting, so
/// two writers cannot deadlock, and a writer stuck on a stalled server releases its claim
/// when its command times out (the claim is dropped with the batch's future).
#[derive(Debug, Default)]
pub(crate) struct CausedClaims {
    held: std::sync::Mutex<BTreeSet<String>>,
    released: tokio::sync::Notify,
}

impl CausedClaims {
    /// Moves out of `wanted` the parents no other writer holds (at least one: waits for a
    /// release if all are held) and holds them until the returned claim is dropped.
    pub(crate) async fn claim(self: &Arc<Self>, wanted: &mut BTreeSet<String>) -> Claim {
        let parents = crate::wait::take_when(&self.held, &self.released, |held| {
            let free: Vec<String> = wanted
                .iter()
                .filter(|p| !held.contains(*p))
                .cloned()
                .collect();
            if free.is_empty() && !wanted.is_empty() {
                tracing::trace!(
                    wanted = wanted.len(),
                    "every parent wanted is claimed by another writer; waiting"
                );
                return None;
            }
            for p in &free {
                wanted.remove(p);
                held.insert(p.clone());
            }
            Some(free)
        })
        .await;
        Claim {
            claims: Arc::clone(self),
            parents,
        }
    }
}

/// Parents held by one writer (see [`CausedClaims`]); released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Arc<CausedClaims>,
    parents: Vec<String>,
}

impl Claim {
    pub(crate) fn parents(&self) -> &[String] {
        &self.parents
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|e| e.into_inner());
        for p in &self.parents {
            held.remove(p);
        }
        drop(held);
        self.claims.released.notify_waiters();
    }
}

impl MongoSink {
    /// Parses the connection string and creates the client; connects lazily, so a server that
    /// is down at start is retried like any transient failure.
    pub async fn connect(config: &MongoSinkConfig) -> Result<Self, SinkError> {
        let mut options = ClientOptions::parse(config.uri.expose())
            .await
            .map_err(|e| SinkError::Fatal {
                context: "parsing the MongoDB connection string",
                source: Box::new(e),
            })?;
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.connect_timeout = Some(config.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "xclog".to_owned());
        let client = Client::with_options(options).map_err(|e| SinkError::Fatal {
            context: "creating the MongoDB client",
            source: Box::new(e),
        })?;
        Ok(Self::from_database(
            client.database(&config.database),
            &config.projection,
            config.majority_writes,
        )
        .with_command_timeout(config.command_timeout))
    }

    /// Wraps a database handle (tests, tools).
    pub fn from_database(db: Database, projection: &str, majority_writes: bool) -> Self {
        Self {
            db,
            prefix: String::new(),
            projection: projection.to_owned(),
            write_concern: majority_writes.then(|| doc! { "w": "majority" }),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            caused_claims: Arc::default(),
            instance_claims: Arc::default(),
        }
    }

    /// The same sink with another [`MongoSinkConfig::command_timeout`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Runs one command of the write path, bounded by the command timeout: a server that
    /// accepted the command and never answers (a stalled FerretDB, a frozen host) fails the
    /// batch as a transient error instead of holding its writer for ever. Dropping the
    /// operation closes its connection, so a late reply is never read as another's.
    async fn bounded<T>(
        &self,
        ctx: &'static str,
        op: impl std::future::Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.command_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Transient {
                context: ctx,
                source: format!(
                    "no reply from the server within {} ms (the command timeout)",
                    self.command_timeout.as_millis()
                )
                .into(),
            }),
        }
    }

    /// The same sink writing collections named `<prefix><name>` (`xclog_rebuild_events`, ...).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The database, for readers that share the client.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The full name of one of the store's collections (`EVENTS`, ...) for this sink.
    pub fn collection_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates the collections' indexes (idempotent: same names, same keys). The `events`
    /// indexes are those of xcomponent-ai (`instanceId`, `componentName`, `machineName`,
    /// `persistedAt`, `causedBy`) plus two for ordered, paged reads; `snapshots` has the
    /// unique `instance.id` index.
    pub async fn ensure_indexes(&self) -> Result<(), SinkError> {
        self.create_indexes(true, true).await
    }

    /// Creates only the indexes the write path queries (`causedBy`) or relies on (the unique
    /// `instance.id`); a rebuild writes the bulk with these and adds the others at the end
    /// with [`MongoSink::ensure_read_indexes`].
    pub async fn ensure_write_indexes(&self) -> Result<(), SinkError> {
        self.create_indexes(true, false).await
    }

    /// Creates the indexes only readers use (idempotent).
    pub async fn ensure_read_indexes(&self) -> Result<(), SinkError> {
        self.create_indexes(false, true).await
    }

    async fn create_indexes(&self, write: bool, read: bool) -> Result<(), SinkError> {
        let ctx = "creating indexes";
        for (collection, index, for_writes) in index_specs() {
            if !(for_writes && write || !for_writes && read) {
                continue;
            }
            // One index per command: FerretDB 1.24 drops the connection when a single
            // `createIndexes` names several indexes that all exist already. A FerretDB-only
            // workaround; MongoDB takes either form (one round trip per index, at startup).
            self.db
                .run_command(
                    doc! {"createIndexes": self.collection_name(collection), "indexes": [index]},
                )
                .await
                .map_err(|e| classify(e, ctx))?;
        }
        Ok(())
    }

    fn with_write_concern(&self, mut command: Document) -> Document {
        if let Some(wc) = &self.write_concern {
            command.insert("writeConcern", wc.clone());
        }
        command
    }

    fn offset_id(&self, topic: &str, partition: i32) -> String {
        offset_id(&self.projection, topic, partition)
    }

    /// Runs one write command (with the write concern, bounded by the command timeout) and
    /// checks that the write concern was satisfied.
    async fn run_write(&self, command: Document, ctx: &'static str) -> Result<Document, SinkError> {
        let command = self.with_write_concern(command);
        let reply = self
            .bounded(ctx, async {
                self.db
                    .run_command(command)
                    .await
                    .map_err(|e| classify(e, ctx))
            })
            .await?;
        check_write_concern(&reply, ctx)?;
        Ok(reply)
    }

    /// Runs `update` statements in chunks (unordered); returns, per statement, the error code
    /// if it failed, and the number of documents matched or upserted.
    async fn update(
        &self,
        collection: &str,
        statements: Vec<Document>,
        ctx: &'static str,
    ) -> Result<(u64, Vec<(usize, i32, String)>), SinkError> {
        let mut n = 0u64;
        let mut errors = Vec::new();
        for (base, chunk) in chunks(statements) {
            let len = chunk.len();
            let reply = self
                .run_write(
                    doc! {
                        "update": self.collection_name(collection),
                        "updates": chunk,
                        "ordered": false,
                    },
                    ctx,
                )
                .await?;
            n += reply.get("n").and_then(as_u64).unwrap_or(0);
            for (i, code, message) in write_errors(&reply) {
                if i < len {
                    errors.push((base + i, code, message));
                }
            }
        }
        Ok((n, errors))
    }

    /// Inserts documents (unordered); returns the indexes that were already stored.
    async fn insert(
        &self,
        collection: &str,
        documents: Vec<Document>,
        ctx: &'static str,
        what: impl Fn(usize) -> String,
    ) -> Result<BTreeSet<usize>, SinkError> {
        let mut duplicates = BTreeSet::new();
        for (base, chunk) in chunks(documents) {
            let len = chunk.len();
            let reply = self
                .run_write(
                    doc! {
                        "insert": self.collection_name(collection),
                        "documents": chunk,
                        "ordered": false,
                    },
                    ctx,
                )
                .await?;
            let mut chunk_duplicates = 0;
            for (i, code, message) in write_errors(&reply) {
                if code == DUPLICATE_KEY {
                    duplicates.insert(base + i);
                    chunk_duplicates += 1;
                } else {
                    return Err(classify_code(
                        code,
                        format!("{}: code {code}: {message}", what(base + i)),
                        ctx,
                    ));
                }
            }
            // Every document is either inserted or reported; a reply that accounts for fewer
            // (a server cut short, e.g. while shutting down) must not let the offsets move.
            let inserted = reply.get("n").and_then(as_u64).unwrap_or(0) as usize;
            if inserted + chunk_duplicates < len {
                return Err(SinkError::Transient {
                    context: ctx,
                    source: format!(
                        "the server acknowledged {inserted} inserts and {chunk_duplicates} \
                         duplicates of {len} documents"
                    )
                    .into(),
                });
            }
        }
        Ok(duplicates)
    }

    async fn find_all(
        &self,
        collection: &str,
        filter: Document,
        projection: Document,
        ctx: &'static str,
    ) -> Result<Vec<Document>, SinkError> {
        let name = self.collection_name(collection);
        self.bounded(
            ctx,
            find_all(&self.db, &name, filter, Some(projection), ctx),
        )
        .await
    }

    async fn check_fence(&self, batch: &WriteBatch) -> Result<(), SinkError> {
        let partitions: Vec<i32> = batch.offsets.iter().map(|o| o.partition).collect();
        let stored = self.load_offsets(&batch.topic, &partitions).await?;
        for o in &batch.offsets {
            let now = stored.get(&o.partition).copied();
            if now != o.expected {
                return Err(SinkError::Fenced {
                    partition: o.partition,
                    expected: o.expected,
                    stored: now,
                });
            }
        }
        Ok(())
    }

    async fn advance_offsets(&self, batch: &WriteBatch) -> Result<(), SinkError> {
        let ctx = "advancing stored offsets";
        let mut offsets = batch.offsets.clone();
        offsets.sort_by_key(|o| o.partition);
        for o in &offsets {
            let id = self.offset_id(&batch.topic, o.partition);
            let moved = match o.expected {
                Some(expected) => {
                    let (n, errors) = self
                        .update(
                            OFFSETS,
                            vec![by_id(
                                doc! {"_id": &id, "nextOffset": expected, SWAP_LOCK: {"$exists": false}},
                                doc! {"$set": {"nextOffset": o.next}},
                                false,
                            )],
                            ctx,
                        )
                        .await?;
                    first_error(errors, ctx)?;
                    n == 1
                }
                None => {
                    let dup = self
                        .insert(
                            OFFSETS,
                            vec![doc! {
                                "_id": &id,
                                "projection": &self.projection,
                                "topic": &batch.topic,
                                "partition": o.partition,
                                "nextOffset": o.next,
                            }],
                            ctx,
                            |_| format!("offset of partition {}", o.partition),
                        )
                        .await?;
                    dup.is_empty()
                }
            };
            if !moved {
                let stored = self
                    .load_offsets(&batch.topic, &[o.partition])
                    .await?
                    .get(&o.partition)
                    .copied();
                return Err(SinkError::Fenced {
                    partition: o.partition,
                    expected: o.expected,
                    stored,
                });
            }
        }
        Ok(())
    }

    /// Steps 2-4 of the module docs. Returns the number of events newly inserted.
    async fn write_events(
        &self,
        events: &[(&PersistedEvent, &SourcePosition)],
    ) -> Result<u64, SinkError> {
        if events.is_empty() {
            return Ok(0);
        }
        let ctx = "writing events";
        // A parent written in this batch is inserted with its children of this batch already
        // in `caused`: no update statement for those links (on FerretDB 1.24 every update
        // statement scans the collection, so this is most of the batch's time).
        let prefilled = children_in_batch(events);
        let docs: Vec<Document> = events
            .iter()
            .map(|(e, s)| {
                let mut d = document::event_document(e, s);
                if let Some(children) = prefilled.get(e.id.as_str()) {
                    d.insert("caused", children.iter().copied().collect::<Vec<&str>>());
                }
                d
            })
            .collect();
        let duplicates = self
            .insert(EVENTS, docs, ctx, |i| {
                format!("event {:?}", events.get(i).map_or("?", |e| e.0.id.as_str()))
            })
            .await?;
        let inserted = (events.len() - duplicates.len()) as u64;

        // Which records are the stored copy of their id: every inserted one, and the
        // duplicates whose stored document came from this very position (a replay).
        let dup_ids: Vec<&str> = duplicates
            .iter()
            .map(|&i| events[i].0.id.as_str())
            .collect();
        // Of each duplicate: where its stored copy came from, and the parents it names.
        let mut stored_source: HashMap<String, Option<SourcePosition>> = HashMap::new();
        let mut stored_parents: HashMap<String, BTreeSet<String>> = HashMap::new();
        if !dup_ids.is_empty() {
            for d in self
                .find_all(
                    EVENTS,
                    doc! {"_id": {"$in": &dup_ids}},
                    doc! {"source": 1, "causedBy": 1},
                    ctx,
                )
                .await?
            {
                if let Ok(id) = d.get_str("_id") {
                    stored_source.insert(id.to_owned(), document::source_from_document(&d));
                    let parents = d.get_array("causedBy").into_iter().flatten();
                    stored_parents.insert(
                        id.to_owned(),
                        parents
                            .filter_map(Bson::as_str)
                            .map(str::to_owned)
                            .collect(),
                    );
                }
            }
        }
        let stored: Vec<(&PersistedEvent, &SourcePosition)> = events
            .iter()
            .enumerate()
            .filter(|(i, (e, s))| {
                !duplicates.contains(i)
                    || stored_source.get(&e.id).and_then(Option::as_ref) == Some(*s)
            })
            .map(|(_, x)| *x)
            .collect();

        // Causality: parents learn about children of this batch, and events of this batch
        // learn about children stored before them.
        let mut caused: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (e, _) in &stored {
            for p in &e.caused_by {
                caused.entry(p.clone()).or_default().insert(e.id.clone());
            }
        }
        let ids: Vec<&str> = events.iter().map(|(e, _)| e.id.as_str()).collect();
        let id_set: BTreeSet<&str> = ids.iter().copied().collect();
        for child in self
            .find_all(
                EVENTS,
                doc! {"causedBy": {"$in": &ids}},
                doc! {"causedBy": 1},
                ctx,
            )
            .await?
        {
            let Ok(child_id) = child.get_str("_id") else {
                continue;
            };
            if let Ok(parents) = child.get_array("causedBy") {
                for p in parents.iter().filter_map(Bson::as_str) {
                    if id_set.contains(p) {
                        caused
                            .entry(p.to_owned())
                            .or_default()
                            .insert(child_id.to_owned());
                    }
                }
            }
        }
        // A copy of an id that is not the stored one (a duplicate id from another position)
        // may sit in a parent's `caused`: prefilled when that parent was inserted with this
        // batch, or with an earlier attempt at a batch holding both (a replay may be cut
        // otherwise, or stop between the insert and this step). Its link is removed from every
        // parent it names that the stored copy does not name.
        let stored_ids: BTreeSet<&str> = stored.iter().map(|(e, _)| e.id.as_str()).collect();
        let mut pulls: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (e, _) in events
            .iter()
            .filter(|(e, _)| !stored_ids.contains(e.id.as_str()))
        {
            let named = stored_parents.get(&e.id);
            for p in &e.caused_by {
                if !named.is_some_and(|parents| parents.contains(p)) {
                    pulls.entry(p.clone()).or_default().push(e.id.as_str());
                }
            }
        }
        // Links written with a parent this batch inserted need no statement, unless removed
        // above.
        for (i, (e, _)) in events.iter().enumerate() {
            if duplicates.contains(&i) {
                continue;
            }
            let (Some(children), Some(set)) = (prefilled.get(e.id.as_str()), caused.get_mut(&e.id))
            else {
                continue;
            };
            let pulled = pulls.get(&e.id);
            set.retain(|c| {
                !children.contains(c.as_str())
                    || pulled.is_some_and(|wrong| wrong.contains(&c.as_str()))
            });
        }
        caused.retain(|_, children| !children.is_empty());
        // No two writers of this sink update one parent's `caused` at once (see
        // `CausedClaims`): each round sends the statements of the parents no other writer
        // holds, then releases them. The inserts and the find above stay concurrent.
        let mut wanted: BTreeSet<String> = pulls.keys().chain(caused.keys()).cloned().collect();
        while !wanted.is_empty() {
            let claim = self.caused_claims.claim(&mut wanted).await;
            let (mut removals, mut additions) = (Vec::new(), Vec::new());
            for p in claim.parents() {
                if let Some(wrong) = pulls.get(p) {
                    removals.push(by_id(
                        doc! {"_id": p},
                        doc! {"$pullAll": {"caused": wrong}},
                        false,
                    ));
                }
                if let Some(children) = caused.get(p) {
                    let children: Vec<&String> = children.iter().collect();
                    additions.push(by_id(
                        doc! {"_id": p},
                        doc! {"$addToSet": {"caused": {"$each": children}}},
                        false,
                    ));
                }
            }
            // Removals, then additions (the two never name the same child of one parent: an
            // addition comes from a stored copy that names the parent).
            for statements in [removals, additions] {
                if !statements.is_empty() {
                    let (_, errors) = self.update(EVENTS, statements, ctx).await?;
                    first_error(errors, ctx)?;
                }
            }
        }

        self.fold_instances(&stored).await?;
        Ok(inserted)
    }

    /// Step 4: fold stored events into the instance view, once each: per instance and
    /// partition, only events above the offset folded last (`foldedOffsets`); the fields shown
    /// are those of the event latest in the instance order ([`InstanceOrder`]).
    async fn fold_instances(
        &self,
        stored: &[(&PersistedEvent, &SourcePosition)],
    ) -> Result<(), SinkError> {
        if stored.is_empty() {
            return Ok(());
        }
        let mut by_instance: BTreeMap<&str, Vec<(&PersistedEvent, &SourcePosition)>> =
            BTreeMap::new();
        for x in stored {
            by_instance
                .entry(x.0.instance_id.as_str())
                .or_default()
                .push(*x);
        }
        // An instance spread over partitions (keyless records) can be folded by two writers of
        // this sink at once: they take turns, as for `caused` (FerretDB 1.24 would lose one of
        // two concurrent updates of a document). Keyed instances never meet here.
        let mut wanted: BTreeSet<String> = by_instance.keys().map(|k| (*k).to_owned()).collect();
        while !wanted.is_empty() {
            let claim = self.instance_claims.claim(&mut wanted).await;
            let round: BTreeMap<&str, &[(&PersistedEvent, &SourcePosition)]> = claim
                .parents()
                .iter()
                .filter_map(|id| by_instance.get_key_value(id.as_str()))
                .map(|(k, v)| (*k, v.as_slice()))
                .collect();
            self.fold_round(&round).await?;
        }
        Ok(())
    }

    async fn fold_round(
        &self,
        by_instance: &BTreeMap<&str, &[(&PersistedEvent, &SourcePosition)]>,
    ) -> Result<(), SinkError> {
        let ctx = "updating the instance view";
        let ids: Vec<&str> = by_instance.keys().copied().collect();
        let stored: HashMap<String, Document> = self
            .find_all(
                INSTANCES,
                doc! {"_id": {"$in": &ids}},
                doc! {
                    "foldedOffsets": 1, "lastEventOffset": 1, "lastEventId": 1,
                    "lastEventSequence": 1, "lastEventPersistedAt": 1, "lastEventPartition": 1,
                },
                ctx,
            )
            .await?
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect();
        let mut statements = Vec::new();
        for (instance, list) in by_instance {
            if let Some(statement) =
                instances::fold_statement(instance, stored.get(*instance), list)
            {
                statements.push(statement);
            }
        }
        let expected = statements.len() as u64;
        let (n, errors) = self.update(INSTANCES, statements, ctx).await?;
        if let Some((_, code, message)) = errors.iter().find(|e| e.1 != DUPLICATE_KEY) {
            return Err(classify_code(*code, message.clone(), ctx));
        }
        if n != expected || !errors.is_empty() {
            return Err(SinkError::Transient {
                context: ctx,
                source: "another writer folded events into an instance concurrently".into(),
            });
        }
        Ok(())
    }

    /// Step 5a: removes the stored snapshot of every instance the batch deletes it for (before
    /// the snapshots that follow the deletion in the log are written, in step 5b). Deleting
    /// what is already gone changes nothing, so a replay leaves the same result.
    async fn delete_snapshots(&self, instance_ids: &[&str]) -> Result<u64, SinkError> {
        if instance_ids.is_empty() {
            return Ok(0);
        }
        let ctx = "deleting snapshots";
        for chunk in instance_ids.chunks(DELETE_CHUNK) {
            let reply = self
                .run_write(
                    doc! {
                        "delete": self.collection_name(SNAPSHOTS),
                        "deletes": [{"q": {"instance.id": {"$in": chunk}}, "limit": 0}],
                        "ordered": true,
                    },
                    ctx,
                )
                .await?;
            first_error(write_errors(&reply), ctx)?;
        }
        Ok(instance_ids.len() as u64)
    }

    /// Step 5b: newer-only snapshot upserts, then the instance status from the stored snapshot.
    async fn write_snapshots(
        &self,
        snapshots: &[(&InstanceSnapshot, &SourcePosition)],
    ) -> Result<u64, SinkError> {
        if snapshots.is_empty() {
            return Ok(0);
        }
        let ctx = "writing snapshots";
        let ids: Vec<&str> = snapshots
            .iter()
            .map(|(s, _)| s.instance.id.as_str())
            .collect();
        // Decided per instance from what is stored, so that no statement fails but on a
        // concurrent write: an upsert that meets a stored newer snapshot fails with a duplicate
        // key, and FerretDB 1.24 ends an unordered command at its first failed statement,
        // silently skipping the statements after it (a replayed batch then never stored the
        // rest, or left an older snapshot in place). A FerretDB-only workaround: MongoDB goes
        // on past a failed statement; tests/tests/mongo_servers.rs pins both behaviours.
        // The same read gives the stored instance fields, for the instance view below when
        // the stored snapshot stays.
        let versions: HashMap<String, Document> = self
            .find_all(
                SNAPSHOTS,
                doc! {"_id": {"$in": &ids}},
                doc! {
                    "sequence": 1, "snapshotAt": 1, "source.partition": 1, "source.offset": 1,
                    "instance.status": 1, "instance.machineName": 1, "instance.currentState": 1,
                },
                ctx,
            )
            .await?
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect();
        let mut inserts = Vec::new();
        let mut updates = Vec::new();
        // Per instance, the `instance` fields of the snapshot stored once this step is done.
        let mut stored: Vec<(&str, Document)> = Vec::with_capacity(snapshots.len());
        for (s, source) in snapshots {
            let id = s.instance.id.as_str();
            match versions.get(id) {
                None => {
                    let document = document::snapshot_document(s, source);
                    stored.push((id, instance_fields(&document)));
                    inserts.push(document);
                }
                Some(old)
                    if stored_snapshot_is_older(old, InstanceOrder::of_snapshot(s, source)) =>
                {
                    // `$set` of every field rather than a replacement document, because a
                    // replacement cannot be `multi` (see [`by_id`]); the snapshot document
                    // always holds the same fields, so this replaces the stored one entirely.
                    let mut fields = document::snapshot_document(s, source);
                    fields.remove("_id");
                    stored.push((id, instance_fields(&fields)));
                    updates.push(by_id(
                        older_snapshot_filter(id, InstanceOrder::of_snapshot(s, source)),
                        doc! {"$set": fields},
                        false,
                    ));
                }
                // The same or a newer snapshot is stored.
                Some(old) => stored.push((id, instance_fields(old))),
            }
        }
        let mut applied = 0u64;
        // Both counts are checked: an insert or update the server skipped (a command cut short)
        // is a transient error, so every instance of the batch has its snapshot stored below.
        if !inserts.is_empty() {
            let len = inserts.len();
            let duplicates = self
                .insert(SNAPSHOTS, inserts, ctx, |i| {
                    format!("snapshot of instance {:?}", snapshots[i].0.instance.id)
                })
                .await?;
            if !duplicates.is_empty() {
                return Err(SinkError::Transient {
                    context: ctx,
                    source: format!(
                        "{} snapshots were stored by another writer since they were read",
                        duplicates.len()
                    )
                    .into(),
                });
            }
            applied += len as u64;
        }
        if !updates.is_empty() {
            let expected = updates.len() as u64;
            let (n, errors) = self.update(SNAPSHOTS, updates, ctx).await?;
            first_error(errors, ctx)?;
            if n != expected {
                return Err(SinkError::Transient {
                    context: ctx,
                    source: format!(
                        "{} of {expected} stored snapshots changed since they were read",
                        expected.saturating_sub(n)
                    )
                    .into(),
                });
            }
            applied += n;
        }

        let statements: Vec<Document> = stored
            .iter()
            .filter_map(|(id, i)| {
                Some(by_id(
                    doc! {"_id": id},
                    doc! {
                        "$set": {"status": i.get_str("status").ok()?},
                        "$setOnInsert": {
                            "instanceId": id,
                            "machineName": i.get_str("machineName").ok()?,
                            "componentName": "",
                            "currentState": i.get_str("currentState").ok()?,
                            "eventCount": 0i64,
                        },
                    },
                    true,
                ))
            })
            .collect();
        let (_, errors) = self.update(INSTANCES, statements, ctx).await?;
        if !errors.is_empty() {
            // A concurrent upsert of the same instance (a zombie): retry the batch.
            let (_, code, message) = &errors[0];
            return Err(match classify_code(*code, message.clone(), ctx) {
                SinkError::Rejected { .. } if *code == DUPLICATE_KEY => SinkError::Transient {
                    context: ctx,
                    source: message.clone().into(),
                },
                other => other,
            });
        }
        Ok(applied)
    }
}

/// The instance view's fields (`status`, `machineName`, `currentState`) of the `instance`
/// sub-document of a snapshot document; those it lacks are left out.
fn instance_fields(snapshot: &Document) -> Document {
    let mut fields = Document::new();
    if let Ok(instance) = snapshot.get_document("instance") {
        for key in ["status", "machineName", "currentState"] {
            if let Some(value) = instance.get(key) {
                fields.insert(key, value.clone());
            }
        }
    }
    fields
}

/// The order key of a stored snapshot document. A document not written by this sink may lack
/// fields: an absent sequence ranks below every present one (as everywhere), an absent time
/// below every time and an absent log position below every position, as in the PostgreSQL
/// sink's `COALESCE`s.
fn stored_snapshot_order(stored: &Document) -> InstanceOrder {
    let int = |b: Option<&Bson>| b.and_then(document::as_i64);
    let source = stored.get_document("source").ok();
    let position = |key: &str| int(source.and_then(|s| s.get(key)));
    InstanceOrder {
        sequence: int(stored.get("sequence")).unwrap_or(order::NO_SEQUENCE),
        at: int(stored.get("snapshotAt")).unwrap_or(i64::MIN),
        partition: position("partition")
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(-1),
        offset: position("offset").unwrap_or(-1),
    }
}

/// Whether the stored snapshot document `stored` is older than `key` in the instance order:
/// exactly the documents that [`older_snapshot_filter`] matches, so an update decided by this
/// matches unless the stored document changed in between.
fn stored_snapshot_is_older(stored: &Document, key: InstanceOrder) -> bool {
    stored_snapshot_order(stored) < key
}

/// The filter that matches the stored snapshot of instance `id` only if it is older than `key`
/// in the instance order (sequence, `snapshotAt`, partition, offset), the rule of the
/// PostgreSQL sink, with the absent fields of [`stored_snapshot_order`].
fn older_snapshot_filter(id: &str, key: InstanceOrder) -> Document {
    let sequence = if key.sequence == order::NO_SEQUENCE {
        Bson::Null
    } else {
        Bson::Int64(key.sequence)
    };
    // `field` below `value`, or absent (ranks below every value).
    let below = |field: &str, value: Bson| {
        doc! {"$or": [{field: {"$lt": value}}, {field: {"$exists": false}}]}
    };
    let with = |mut d: Document, equal: &[(&str, Bson)]| {
        for (k, v) in equal {
            d.insert(*k, v.clone());
        }
        d
    };
    let mut alternatives = vec![
        with(
            below("snapshotAt", key.at.into()),
            &[("sequence", sequence.clone())],
        ),
        with(
            below("source.partition", key.partition.into()),
            &[
                ("sequence", sequence.clone()),
                ("snapshotAt", key.at.into()),
            ],
        ),
        with(
            below("source.offset", key.offset.into()),
            &[
                ("sequence", sequence.clone()),
                ("snapshotAt", key.at.into()),
                ("source.partition", key.partition.into()),
            ],
        ),
    ];
    if key.sequence != order::NO_SEQUENCE {
        alternatives.push(doc! {"sequence": {"$lt": key.sequence}});
        alternatives.push(doc! {"sequence": Bson::Null});
    }
    doc! {"_id": id, "$or": alternatives}
}

/// For every event of the batch that is a parent of others in the batch: those children's ids
/// (sorted, as `$addToSet` into an empty set would leave them in some order; readers sort).
fn children_in_batch<'a>(
    events: &[(&'a PersistedEvent, &SourcePosition)],
) -> HashMap<&'a str, BTreeSet<&'a str>> {
    let ids: BTreeSet<&str> = events.iter().map(|(e, _)| e.id.as_str()).collect();
    let mut out: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (e, _) in events {
        for p in &e.caused_by {
            if let Some(parent) = ids.get(p.as_str()) {
                out.entry(parent).or_default().insert(e.id.as_str());
            }
        }
    }
    out
}

/// One statement of an `update` command: filter `q` (which must name one `_id`), update
/// operators `u`, always with `multi: true`.
///
/// Every filter here names a single `_id`, so it matches at most one document and `multi`
/// changes nothing on MongoDB (an upsert still inserts one document): a FerretDB-only
/// workaround. It matters on FerretDB
/// 1.x (PostgreSQL backend): a statement with `multi: false` stops reading its PostgreSQL
/// cursor after the first match and keeps that cursor, and so one pooled PostgreSQL
/// connection, open until the whole command has run. A command with more matching statements
/// than FerretDB's pool (`pool_max_conns`, 50 by default, 40 in the local stack) then waits
/// forever for a connection that it holds itself, and every other client of that FerretDB
/// waits behind it (docs/DESIGN.md, "MongoDB"). A `multi` statement reads its cursor to the
/// end, which gives the connection back before the next statement starts.
pub(crate) fn by_id(q: Document, u: Document, upsert: bool) -> Document {
    debug_assert!(q.contains_key("_id"), "update filter without _id: {q}");
    let mut statement = doc! {"q": q, "u": u, "multi": true};
    if upsert {
        statement.insert("upsert", true);
    }
    statement
}

/// Every index of the store: (collection, index, whether the write path needs it).
fn index_specs() -> Vec<(&'static str, Document, bool)> {
    vec![
        (
            EVENTS,
            index("instanceId_1", doc! {"instanceId": 1}, false),
            false,
        ),
        (
            EVENTS,
            index("componentName_1", doc! {"componentName": 1}, false),
            false,
        ),
        (
            EVENTS,
            index("machineName_1", doc! {"machineName": 1}, false),
            false,
        ),
        (
            EVENTS,
            index("persistedAt_1", doc! {"persistedAt": 1}, false),
            false,
        ),
        // Queried by every batch (children of the batch's events).
        (
            EVENTS,
            index("causedBy_1", doc! {"causedBy": 1}, false),
            true,
        ),
        (
            EVENTS,
            index(
                "instanceId_1_source.offset_1",
                doc! {"instanceId": 1, "source.offset": 1},
                false,
            ),
            false,
        ),
        (
            EVENTS,
            index(
                "persistedAt_1__id_1",
                doc! {"persistedAt": 1, "_id": 1},
                false,
            ),
            false,
        ),
        (
            SNAPSHOTS,
            index("instance.id_1", doc! {"instance.id": 1}, true),
            true,
        ),
        (
            INSTANCES,
            index(
                "machineName_1_currentState_1",
                doc! {"machineName": 1, "currentState": 1},
                false,
            ),
            false,
        ),
    ]
}

fn index(name: &str, keys: Document, unique: bool) -> Document {
    let mut d = doc! {"key": keys, "name": name};
    if unique {
        d.insert("unique", true);
    }
    d
}

/// Every document of `collection` matching `filter` (with `projection`, if any).
pub(crate) async fn find_all(
    db: &Database,
    collection: &str,
    filter: Document,
    projection: Option<Document>,
    ctx: &'static str,
) -> Result<Vec<Document>, SinkError> {
    let mut cursor = db
        .collection::<Document>(collection)
        .find(filter)
        .with_options(
            mongodb::options::FindOptions::builder()
                .projection(projection)
                .build(),
        )
        .await
        .map_err(|e| classify(e, ctx))?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(|e| classify(e, ctx))? {
        out.push(cursor.deserialize_current().map_err(|e| classify(e, ctx))?);
    }
    Ok(out)
}

/// `_id` of the stored offset document of a projection, topic and partition.
pub fn offset_id(projection: &str, topic: &str, partition: i32) -> String {
    format!("{projection}/{topic}/{partition}")
}

/// `(partition, next offset)` of a stored offset document (`None` if it holds no offset, as a
/// document a rebuild locked before anything was stored).
pub fn stored_offset(d: &Document) -> Option<(i32, i64)> {
    let partition = d.get("partition").and_then(as_u64)?;
    let next = match d.get("nextOffset")? {
        Bson::Int64(o) => *o,
        Bson::Int32(o) => i64::from(*o),
        _ => return None,
    };
    Some((i32::try_from(partition).ok()?, next))
}

fn as_u64(b: &Bson) -> Option<u64> {
    match b {
        Bson::Int32(i) => u64::try_from(*i).ok(),
        Bson::Int64(i) => u64::try_from(*i).ok(),
        Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

/// Splits documents into chunks under [`CHUNK_BYTES`]; each chunk with the index of its first.
fn chunks(documents: Vec<Document>) -> Vec<(usize, Vec<Document>)> {
    let mut out: Vec<(usize, Vec<Document>)> = Vec::new();
    let mut size = 0;
    for (i, d) in documents.into_iter().enumerate() {
        let s = document::document_size(&d);
        match out.last_mut() {
            Some((_, chunk)) if size + s <= CHUNK_BYTES && chunk.len() < 10_000 => {
                size += s;
                chunk.push(d);
            }
            _ => {
                size = s;
                out.push((i, vec![d]));
            }
        }
    }
    out
}

pub(crate) fn write_errors(reply: &Document) -> Vec<(usize, i32, String)> {
    let Ok(list) = reply.get_array("writeErrors") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Bson::as_document)
        .map(|e| {
            let index = e.get("index").and_then(as_u64).unwrap_or(0) as usize;
            let code = match e.get("code") {
                Some(Bson::Int32(c)) => *c,
                Some(Bson::Int64(c)) => i32::try_from(*c).unwrap_or(-1),
                _ => -1,
            };
            let message = e.get_str("errmsg").unwrap_or("").to_owned();
            (index, code, message)
        })
        .collect()
}

pub(crate) fn check_write_concern(reply: &Document, ctx: &'static str) -> Result<(), SinkError> {
    match reply.get_document("writeConcernError") {
        Ok(wce) => Err(SinkError::Transient {
            context: ctx,
            source: format!("write concern not satisfied: {wce}").into(),
        }),
        Err(_) => Ok(()),
    }
}

fn first_error(errors: Vec<(usize, i32, String)>, ctx: &'static str) -> Result<(), SinkError> {
    match errors.into_iter().next() {
        Some((_, code, message)) => Err(classify_code(code, message, ctx)),
        None => Ok(()),
    }
}

impl Sink for MongoSink {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    async fn load_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        let ids: Vec<String> = partitions
            .iter()
            .map(|p| self.offset_id(topic, *p))
            .collect();
        let docs = self
            .find_all(
                OFFSETS,
                doc! {"_id": {"$in": ids}},
                doc! {"partition": 1, "nextOffset": 1, SWAP_LOCK: 1},
                "loading stored offsets",
            )
            .await?;
        if docs.iter().any(|d| d.contains_key(SWAP_LOCK)) {
            // Retried with backoff by the pipeline until the swap has set the new offsets.
            return Err(SinkError::Transient {
                context: "loading stored offsets",
                source: "the offsets are locked while `xclog rebuild` swaps a rebuilt store in"
                    .into(),
            });
        }
        Ok(docs.iter().filter_map(stored_offset).collect())
    }

    async fn write(&self, batch: &WriteBatch) -> Result<WriteOutcome, SinkError> {
        self.check_fence(batch).await?;
        let (events, deleted, snapshots) = split(&batch.records);
        let events_inserted = self.write_events(&events).await?;
        let snapshots_deleted = self.delete_snapshots(&deleted).await?;
        let snapshots_applied = self.write_snapshots(&snapshots).await?;
        self.advance_offsets(batch).await?;
        Ok(WriteOutcome {
            events_inserted,
            snapshots_applied,
            snapshots_deleted,
        })
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        document::check(record)
    }
}

type Split<'a> = (
    Vec<(&'a PersistedEvent, &'a SourcePosition)>,
    Vec<&'a str>,
    Vec<(&'a InstanceSnapshot, &'a SourcePosition)>,
);

/// Events of the batch (the first copy of each id), the instances whose stored snapshot is
/// deleted, and the newest snapshot per instance after its last deletion
/// ([`crate::sink::snapshot_plan`]).
fn split(records: &[SinkRecord]) -> Split<'_> {
    let mut events = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in records {
        if let Record::Event(e) = &r.record
            && seen.insert(e.id.as_str())
        {
            events.push((e, &r.source));
        }
    }
    let plan = crate::sink::snapshot_plan(records);
    let snapshots = plan
        .snapshots
        .into_iter()
        .map(|(s, r)| (s, &r.source))
        .collect();
    (events, plan.deleted, snapshots)
}

/// The one place that decides what a MongoDB error means for the pipeline.
///
/// * network, pool, server selection, shutdown, not-primary, interrupted, timeouts, write
///   conflicts, unsatisfied write concern, anything labelled `RetryableWriteError`, and
///   `InternalError` (code 1: FerretDB's answer while its backend is down):
///   [`SinkError::Transient`] (retry the same batch);
/// * the server refuses a document's content (too large, bad field names, validation,
///   duplicate key where one is not expected, BSON it cannot take): [`SinkError::Rejected`];
/// * authentication, authorization, bad arguments, unsupported commands: [`SinkError::Fatal`].
pub fn classify(error: mongodb::error::Error, context: &'static str) -> SinkError {
    use mongodb::error::{ErrorKind, WriteFailure};
    if error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
    {
        return SinkError::Transient {
            context,
            source: Box::new(error),
        };
    }
    let code = match error.kind.as_ref() {
        ErrorKind::Command(c) => Some((c.code, c.message.clone())),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some((w.code, w.message.clone())),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => {
            return SinkError::Transient {
                context,
                source: Box::new(error),
            };
        }
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| (w.code, w.message.clone())),
        _ => None,
    };
    if let Some((code, message)) = code {
        return match code_class(code) {
            CodeClass::Transient => SinkError::Transient {
                context,
                source: Box::new(error),
            },
            CodeClass::Content => SinkError::Rejected {
                context,
                reason: format!("code {code}: {message}"),
            },
            CodeClass::Fatal => SinkError::Fatal {
                context,
                source: Box::new(error),
            },
        };
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::InvalidResponse { .. }
        | ErrorKind::Shutdown
        | ErrorKind::Write(_)
        | ErrorKind::InsertMany(_) => SinkError::Transient {
            context,
            source: Box::new(error),
        },
        ErrorKind::BsonSerialization(_) => SinkError::Rejected {
            context,
            reason: error.to_string(),
        },
        _ => SinkError::Fatal {
            context,
            source: Box::new(error),
        },
    }
}

/// [`classify`] for a server error code read from a bulk reply's `writeErrors`.
fn classify_code(code: i32, message: String, context: &'static str) -> SinkError {
    let class = match code_class(code) {
        // FerretDB answers InternalError both while its PostgreSQL backend is unreachable and
        // for a PostgreSQL error it does not translate (FerretDB-only; MongoDB's rare
        // InternalError is retried like any other transient one); the latter quotes the SQLSTATE, and a
        // data-class one (22 data exception, 23 integrity, 54 program limit such as an index
        // entry too large) is the record's content, not an outage: retrying would never end.
        CodeClass::Transient if code == 1 && names_content_sqlstate(&message) => CodeClass::Content,
        class => class,
    };
    match class {
        CodeClass::Transient => SinkError::Transient {
            context,
            source: format!("code {code}: {message}").into(),
        },
        CodeClass::Content => SinkError::Rejected {
            context,
            reason: format!("code {code}: {message}"),
        },
        CodeClass::Fatal => SinkError::Fatal {
            context,
            source: format!("code {code}: {message}").into(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeClass {
    Transient,
    Content,
    Fatal,
}

/// Whether a server message quotes a PostgreSQL SQLSTATE of class 22, 23 or 54.
fn names_content_sqlstate(message: &str) -> bool {
    message.match_indices("SQLSTATE ").any(|(at, m)| {
        let code = &message[at + m.len()..];
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

fn code_class(code: i32) -> CodeClass {
    match code {
        // HostUnreachable, HostNotFound, LockTimeout, LockBusy, MaxTimeMSExpired,
        // WriteConcernFailed, NetworkTimeout, ShutdownInProgress, WriteConflict,
        // ConflictingOperationInProgress, ReadConcernMajorityNotAvailableYet,
        // PrimarySteppedDown, NetworkInterfaceExceededTimeLimit, ExceededTimeLimit,
        // SocketException, NotWritablePrimary, InterruptedAtShutdown, Interrupted,
        // InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
        // StaleConfig, CursorKilled, ...
        // InternalError: what FerretDB answers while its PostgreSQL backend is unreachable.
        1 | 6 | 7 | 24 | 46 | 50 | 64 | 89 | 91 | 112 | 117 | 134 | 189 | 202 | 262 | 9001
        | 10107 | 11600 | 11601 | 11602 | 13435 | 13436 | 13388 | 237 => CodeClass::Transient,
        // BadValue, Overflow, InvalidLength, InvalidBSON, DollarPrefixedFieldName,
        // EmptyFieldName, DottedFieldName, DocumentValidationFailure, BSONObjectTooLarge,
        // DuplicateKey, KeyTooLong, document too large, too deeply nested, ...
        2 | 15 | 16 | 22 | 52 | 55 | 56 | 57 | 121 | 10334 | 11000 | 17280 | 17419 | 17420
        | 15983 => CodeClass::Content,
        _ => CodeClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::ErrorClass;
    use serde_json::json;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_internal_error_quoting_a_data_class_sqlstate_is_the_records_content_else_transient() {
        let too_long = "ERROR: index row size 3016 exceeds btree version 4 maximum 2704 for \
                        index \"events_x\" (SQLSTATE 54000)";
        assert_eq!(
            classify_code(1, too_long.into(), "t").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify_code(1, "invalid byte sequence (SQLSTATE 22021)".into(), "t").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify_code(
                1,
                "failed to connect to `host=127.0.0.1` (SQLSTATE 08006)".into(),
                "t"
            )
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_code(1, "connection refused".into(), "t").class(),
            ErrorClass::Transient
        );
    }

    #[tokio::test]
    async fn a_parent_held_by_one_writer_waits_for_its_release_and_the_others_go_ahead() {
        let claims = Arc::new(CausedClaims::default());
        let mut a_wants = set(&["p1", "p2"]);
        let a = claims.claim(&mut a_wants).await;
        assert_eq!(a.parents(), ["p1", "p2"]);
        assert!(a_wants.is_empty());

        // The free parent is claimed at once; the held one stays wanted.
        let mut b_wants = set(&["p2", "p3"]);
        let b = claims.claim(&mut b_wants).await;
        assert_eq!(b.parents(), ["p3"]);
        assert_eq!(b_wants, set(&["p2"]));

        // p2 is held by a: the next round waits, and ends when a releases it.
        let waiting = tokio::spawn({
            let claims = Arc::clone(&claims);
            async move {
                let mut wants = b_wants;
                let c = claims.claim(&mut wants).await;
                c.parents().to_vec()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "claimed a parent another writer holds"
        );
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a release wakes the waiting writer")
            .unwrap();
        assert_eq!(got, ["p2"]);
        // Released claims can be taken again; b still holds p3.
        let mut again = set(&["p1", "p3"]);
        assert_eq!(claims.claim(&mut again).await.parents(), ["p1"]);
        assert_eq!(again, set(&["p3"]));
        drop(b);
        assert_eq!(claims.claim(&mut again).await.parents(), ["p3"]);
    }

    #[test]
    fn server_codes_are_classified_by_what_the_pipeline_must_do() {
        for code in [
            1, 6, 7, 89, 91, 189, 10107, 11600, 11602, 13435, 112, 262, 9001,
        ] {
            assert_eq!(code_class(code), CodeClass::Transient, "{code}");
        }
        for code in [2, 52, 56, 57, 121, 10334, 11000, 17419] {
            assert_eq!(code_class(code), CodeClass::Content, "{code}");
        }
        for code in [13, 18, 26, 59, 238, 0] {
            assert_eq!(code_class(code), CodeClass::Fatal, "{code}");
        }
        assert_eq!(
            classify_code(10334, "too big".into(), "t").class(),
            ErrorClass::Rejected
        );
    }

    #[test]
    fn children_in_batch_names_each_parent_of_the_batch_with_its_children_of_the_batch() {
        let ev = |id: &str, parents: &[&str]| PersistedEvent {
            id: id.to_owned(),
            caused_by: parents.iter().map(|p| (*p).to_owned()).collect(),
            ..document::tests::event(json!({}))
        };
        let events = [
            ev("p", &[]),
            ev("c1", &["p"]),
            ev("c2", &["p", "elsewhere"]),
            ev("g", &["c1"]),
            ev("orphan", &["stored-before"]),
        ];
        let src = SourcePosition {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        let batch: Vec<(&PersistedEvent, &SourcePosition)> =
            events.iter().map(|e| (e, &src)).collect();
        let got = children_in_batch(&batch);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got["p"], BTreeSet::from(["c1", "c2"]));
        assert_eq!(got["c1"], BTreeSet::from(["g"]));
    }

    #[test]
    fn the_snapshot_filter_compares_sequence_first_then_time_then_position() {
        let key = InstanceOrder::new(Some(3), 5, 1, 9);
        let f = older_snapshot_filter("i", key);
        assert_eq!(f.get_str("_id").unwrap(), "i");
        let or = f.get_array("$or").unwrap();
        assert_eq!(or.len(), 5);
        assert_eq!(
            or[3].as_document().unwrap(),
            &doc! {"sequence": {"$lt": 3i64}}
        );
        let last_tie = or[2].as_document().unwrap();
        assert_eq!(last_tie.get_i64("sequence").ok(), Some(3));
        assert_eq!(last_tie.get_i64("snapshotAt").ok(), Some(5));
        assert_eq!(last_tie.get_i32("source.partition").ok(), Some(1));
        let f = older_snapshot_filter("i", InstanceOrder::new(None, 5, 1, 9));
        let or = f.get_array("$or").unwrap();
        assert_eq!(or.len(), 3);
        assert_eq!(
            or[0].as_document().unwrap().get("sequence"),
            Some(&Bson::Null)
        );
    }

    #[test]
    fn a_stored_snapshot_is_older_by_sequence_then_time_then_partition_then_offset() {
        let stored = |seq: Option<i64>, at: i64, partition: i32, offset: i64| {
            doc! {
                "_id": "i",
                "sequence": seq.map_or(Bson::Null, Bson::Int64),
                "snapshotAt": at,
                "source": {"topic": "t", "partition": partition, "offset": offset},
            }
        };
        let key = |seq: Option<u64>, at: i64, p: i32, o: i64| InstanceOrder::new(seq, at, p, o);
        // Sequences first, whatever the time.
        assert!(stored_snapshot_is_older(
            &stored(Some(2), 9, 0, 9),
            key(Some(3), 1, 0, 1)
        ));
        assert!(!stored_snapshot_is_older(
            &stored(Some(4), 1, 0, 1),
            key(Some(3), 9, 0, 9)
        ));
        // An absent sequence ranks below every present one.
        assert!(stored_snapshot_is_older(
            &stored(None, 9, 0, 9),
            key(Some(0), 1, 0, 1)
        ));
        assert!(!stored_snapshot_is_older(
            &stored(Some(0), 1, 0, 1),
            key(None, 9, 0, 9)
        ));
        // Same sequence: time, then partition, then offset.
        assert!(stored_snapshot_is_older(
            &stored(None, 4, 2, 9),
            key(None, 5, 0, 0)
        ));
        assert!(stored_snapshot_is_older(
            &stored(None, 5, 0, 9),
            key(None, 5, 1, 0)
        ));
        assert!(!stored_snapshot_is_older(
            &stored(None, 5, 2, 0),
            key(None, 5, 1, 9)
        ));
        assert!(stored_snapshot_is_older(
            &stored(Some(3), 5, 1, 8),
            key(Some(3), 5, 1, 9)
        ));
        assert!(!stored_snapshot_is_older(
            &stored(Some(3), 5, 1, 9),
            key(Some(3), 5, 1, 9)
        ));
        // Fields a document not written by this sink lacks rank below every value.
        assert!(stored_snapshot_is_older(
            &doc! {"_id": "i", "snapshotAt": 5i64},
            key(None, 5, 0, 0)
        ));
        assert!(stored_snapshot_is_older(
            &doc! {"_id": "i"},
            key(None, 5, 0, 0)
        ));
        assert!(!stored_snapshot_is_older(
            &doc! {"_id": "i", "snapshotAt": 6i64},
            key(None, 5, 0, 0)
        ));
    }

    #[test]
    fn chunks_keep_every_document_in_order_with_its_index() {
        let docs: Vec<Document> = (0..25).map(|i| doc! {"i": i}).collect();
        let out = chunks(docs);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.len(), 25);
        let big = "x".repeat(3 * 1024 * 1024);
        let docs: Vec<Document> = (0..5).map(|i| doc! {"i": i, "b": &big}).collect();
        let out = chunks(docs);
        assert_eq!(out.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 2, 4]);
    }
}
