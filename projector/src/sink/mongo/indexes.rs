//! The store's indexes: those the write path needs, created before the first batch, and those
//! only readers use, which a rebuild adds after the bulk.

use mongodb::bson::{Document, doc};

use super::classify::classify;
use super::{EVENTS, INSTANCES, MongoSink, SNAPSHOTS};
use crate::sink::SinkError;

impl MongoSink {
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
