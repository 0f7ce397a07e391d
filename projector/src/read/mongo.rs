//! MongoDB implementation of the read API over the collections written by
//! [`crate::sink::mongo::MongoSink`]. Documents are decoded with
//! [`crate::sink::mongo::document`], which reverses the storage encoding of awkward payloads,
//! so readers get exactly the records that were published.
//!
//! Orders and cursors are those of the PostgreSQL reader: an instance's events in log order
//! (`source.offset`, then `persistedAt`, then id), listings and ranges by (`persistedAt`, id).

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::FindOptions;
use mongodb::{Collection, Database};
use xclog_schema::InstanceSnapshot;

use super::cursor::{log_cursor, page_of, parse_log_cursor, parse_time_cursor, time_cursor};
use super::{EventPage, EventStore, Page, ReadError, SnapshotPage, SnapshotStore, StoredEvent};
use crate::sink::mongo::{EVENTS, SNAPSHOTS, document};

/// Reads the `events` and `snapshots` collections of one database.
#[derive(Debug, Clone)]
pub struct MongoReader {
    db: Database,
}

impl MongoReader {
    /// Reads from `db` (for example `client.database("xcomponent")`).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database it reads.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn events(&self) -> Collection<Document> {
        self.db.collection(EVENTS)
    }

    async fn find(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Document>, ReadError> {
        let options = FindOptions::builder().sort(sort).limit(limit).build();
        let mut cursor = self
            .db
            .collection::<Document>(collection)
            .find(filter)
            .with_options(options)
            .await
            .map_err(store)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(store)? {
            out.push(cursor.deserialize_current().map_err(store)?);
        }
        Ok(out)
    }

    async fn find_events(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        self.find(EVENTS, filter, sort, limit)
            .await?
            .iter()
            .map(stored_event)
            .collect()
    }
}

fn store(e: mongodb::error::Error) -> ReadError {
    ReadError::Store(Box::new(e))
}

fn id_of(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Decodes an event document (reversing the payload encoding).
pub fn stored_event(d: &Document) -> Result<StoredEvent, ReadError> {
    let mut event = document::event_from_document(d).map_err(|reason| ReadError::Corrupt {
        id: id_of(d),
        reason,
    })?;
    // `caused` is a set maintained with `$addToSet`; sorted, it reads the same whatever order
    // the children arrived in (UUIDv7 ids sort by creation time).
    event.caused.sort();
    Ok(StoredEvent {
        event,
        source: document::source_from_document(d),
    })
}

/// Keyset condition "after (persistedAt, _id)".
fn after_time(at: i64, id: &str) -> Document {
    doc! {"$or": [
        {"persistedAt": {"$gt": at}},
        {"persistedAt": at, "_id": {"$gt": id}},
    ]}
}

impl EventStore for MongoReader {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, ReadError> {
        let found = self
            .events()
            .find_one(doc! {"_id": id})
            .await
            .map_err(store)?;
        found.as_ref().map(stored_event).transpose()
    }

    async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<StoredEvent>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.find_events(
            doc! {"_id": {"$in": ids}},
            doc! {"persistedAt": 1, "_id": 1},
            None,
        )
        .await
    }

    async fn events_of_instance(
        &self,
        instance_id: &str,
        page: &Page,
    ) -> Result<EventPage, ReadError> {
        let limit = page.clamped_limit();
        let mut filter = doc! {"instanceId": instance_id};
        if let Some(c) = &page.after {
            let (offset, at, id) = parse_log_cursor(c)?;
            filter.insert(
                "$or",
                vec![
                    doc! {"source.offset": {"$gt": offset}},
                    doc! {"source.offset": offset, "persistedAt": {"$gt": at}},
                    doc! {"source.offset": offset, "persistedAt": at, "_id": {"$gt": id}},
                ],
            );
        }
        let events = self
            .find_events(
                filter,
                doc! {"source.offset": 1, "persistedAt": 1, "_id": 1},
                Some(limit + 1),
            )
            .await?;
        Ok(page_of(events, limit, log_cursor))
    }

    async fn events_in_time_range(
        &self,
        from_ms: i64,
        to_ms: i64,
        page: &Page,
    ) -> Result<EventPage, ReadError> {
        let limit = page.clamped_limit();
        let mut clauses = vec![doc! {"persistedAt": {"$gte": from_ms, "$lte": to_ms}}];
        if let Some(c) = &page.after {
            let (at, id) = parse_time_cursor(c)?;
            clauses.push(after_time(at, &id));
        }
        let events = self
            .find_events(
                doc! {"$and": clauses},
                doc! {"persistedAt": 1, "_id": 1},
                Some(limit + 1),
            )
            .await?;
        Ok(page_of(events, limit, time_cursor))
    }

    async fn list_events(&self, page: &Page) -> Result<EventPage, ReadError> {
        self.events_in_time_range(i64::MIN, i64::MAX, page).await
    }

    async fn events_caused_by(&self, id: &str) -> Result<Vec<StoredEvent>, ReadError> {
        self.find_events(
            doc! {"causedBy": id},
            doc! {"persistedAt": 1, "_id": 1},
            Some(i64::from(super::MAX_PAGE)),
        )
        .await
    }

    async fn effect_ids(&self, ids: &[String]) -> Result<Vec<(String, String)>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let options = FindOptions::builder()
            .sort(doc! {"persistedAt": 1, "_id": 1})
            .projection(doc! {"causedBy": 1, "persistedAt": 1})
            .build();
        let mut cursor = self
            .events()
            .find(doc! {"causedBy": {"$in": ids}})
            .with_options(options)
            .await
            .map_err(store)?;
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        while cursor.advance().await.map_err(store)? {
            let d: Document = cursor.deserialize_current().map_err(store)?;
            let child = id_of(&d);
            if let Ok(parents) = d.get_array("causedBy") {
                for p in parents.iter().filter_map(Bson::as_str) {
                    if wanted.contains(p) {
                        out.push((p.to_owned(), child.clone()));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn snapshot_of(d: &Document) -> Result<InstanceSnapshot, ReadError> {
    document::snapshot_from_document(d).map_err(|reason| ReadError::Corrupt {
        id: id_of(d),
        reason,
    })
}

impl SnapshotStore for MongoReader {
    async fn snapshot(&self, instance_id: &str) -> Result<Option<InstanceSnapshot>, ReadError> {
        let found = self
            .db
            .collection::<Document>(SNAPSHOTS)
            .find_one(doc! {"instance.id": instance_id})
            .await
            .map_err(store)?;
        found.as_ref().map(snapshot_of).transpose()
    }

    async fn list_snapshots(&self, page: &Page) -> Result<SnapshotPage, ReadError> {
        let limit = page.clamped_limit();
        let filter = match &page.after {
            Some(after) => doc! {"instance.id": {"$gt": after}},
            None => doc! {},
        };
        let docs = self
            .find(SNAPSHOTS, filter, doc! {"instance.id": 1}, Some(limit + 1))
            .await?;
        let mut snapshots = docs
            .iter()
            .map(snapshot_of)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if snapshots.len() as i64 > limit {
            snapshots.truncate(limit as usize);
            snapshots.last().map(|s| s.instance.id.clone())
        } else {
            None
        };
        Ok(SnapshotPage { snapshots, next })
    }
}
