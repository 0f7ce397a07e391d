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
//!
//! Where each step lives: `offsets` (steps 1 and 6), `events` (2 and 3), `instances` (4),
//! `snapshots` (5). Beside them: `commands` runs every command (timeout, write concern,
//! chunks), `classify` decides what an error means, `claims` makes the writers take turns on a
//! document, `indexes` creates the indexes, and [`document`] maps records to documents and
//! back.

mod claims;
mod classify;
mod commands;
pub mod document;
mod events;
mod indexes;
mod instances;
mod offsets;
pub mod server;
mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use xclog_schema::{InstanceSnapshot, PersistedEvent, Record};

use crate::config::Secret;
#[cfg(doc)]
use crate::sink::order::InstanceOrder;
use crate::sink::{Sink, SinkError, SinkRecord, SourcePosition, WriteBatch, WriteOutcome};
use claims::CausedClaims;

pub use classify::classify;
pub(crate) use commands::{by_id, check_write_concern, find_all, write_errors};
pub use offsets::{offset_id, stored_offset};

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
    /// one projector), so two writers never update one parent at once ([`CausedClaims`]).
    caused_claims: Arc<CausedClaims>,
    /// Instances being folded into the instance view by a writer of this sink.
    instance_claims: Arc<CausedClaims>,
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
}

impl Sink for MongoSink {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn command_timeout(&self) -> Option<Duration> {
        Some(self.command_timeout)
    }

    async fn load_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        self.load_stored_offsets(topic, partitions).await
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
