//! The read API over a projected store: the xcomponent-ai `EventStore` / `SnapshotStore`
//! operations, done right.
//!
//! * every listing is paged (a page is at most [`MAX_PAGE`]); cursors are opaque strings;
//! * causality is named by direction: [`EventStore::events_caused_by`] (effects of an event)
//!   and [`EventStore::events_that_caused`] (its causes);
//! * [`trace`] walks both directions from any event, cycle-safe and bounded, and returns the
//!   events in causal order (causes before effects), ties broken by time.
//!
//! Stores implement the primitives ([`EventStore`], [`SnapshotStore`]); the trace algorithm is
//! written once, here, for all of them.

mod cursor;
pub mod mongo;
pub mod postgres;
mod trace;

use std::future::Future;

use serde::{Deserialize, Serialize};
use xclog_schema::{InstanceSnapshot, PersistedEvent};

use crate::sink::SourcePosition;

pub use trace::{Trace, TracedEvent, trace};

/// Largest page any listing returns.
pub const MAX_PAGE: u32 = 10_000;

/// An event as stored, with where it came from in the log (absent for rows written before
/// the log, e.g. migrated xcomponent-ai history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// The event, in the xcomponent-ai `PersistedEvent` shape (with `caused` maintained).
    #[serde(flatten)]
    pub event: PersistedEvent,
    /// Topic, partition and offset it was projected from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePosition>,
}

/// Where a page starts: `after` is the `next` cursor of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Maximum number of items (clamped to [`MAX_PAGE`], at least 1).
    pub limit: u32,
    /// Cursor returned by the previous page (`None`: first page).
    pub after: Option<String>,
}

impl Page {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }

    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE))
    }
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events of this page, in the listing's order.
    pub events: Vec<StoredEvent>,
    /// Cursor of the next page; `None` when this was the last one.
    pub next: Option<String>,
}

/// One page of snapshots, ordered by instance id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// The snapshots of this page.
    pub snapshots: Vec<InstanceSnapshot>,
    /// Cursor of the next page; `None` when this was the last one.
    pub next: Option<String>,
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The store could not answer (connection, timeout): retry later.
    #[error("the store could not answer; retry later")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The cursor was not produced by this listing: start again from the first page.
    #[error("invalid page cursor {cursor:?}: {reason}; start again from the first page")]
    BadCursor {
        /// The cursor given.
        cursor: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A stored row does not map back to the record types (schema drift): check migrations.
    #[error("stored row {id:?} cannot be read back: {reason}; check migrations")]
    Corrupt {
        /// Id of the row.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads events from a projected store.
pub trait EventStore: Send + Sync {
    /// One event by id.
    fn event(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredEvent>, ReadError>> + Send;

    /// Events with these ids (any order; unknown ids are absent).
    fn events_by_ids(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<StoredEvent>, ReadError>> + Send;

    /// Events of one instance in log order (the order the producer published them).
    fn events_of_instance(
        &self,
        instance_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<EventPage, ReadError>> + Send;

    /// Events with `from_ms <= persistedAt <= to_ms` (inclusive, as in xcomponent-ai), by time.
    fn events_in_time_range(
        &self,
        from_ms: i64,
        to_ms: i64,
        page: &Page,
    ) -> impl Future<Output = Result<EventPage, ReadError>> + Send;

    /// All events by time, a page at a time (never unbounded).
    fn list_events(&self, page: &Page)
    -> impl Future<Output = Result<EventPage, ReadError>> + Send;

    /// The effects of an event: events whose `causedBy` names `id`, by time.
    fn events_caused_by(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, ReadError>> + Send;

    /// The causes of an event: the events named in its `causedBy` that are stored, by time.
    fn events_that_caused(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, ReadError>> + Send {
        async move {
            let Some(event) = self.event(id).await? else {
                return Ok(Vec::new());
            };
            self.events_by_ids(&event.event.caused_by).await
        }
    }

    /// Ids of the effects of each of `ids`, as `(cause, effect)` pairs (for traces).
    fn effect_ids(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String)>, ReadError>> + Send;
}

/// Reads snapshots. Deleting one is a record on the log (`xclog_producer::Producer::delete_snapshot`,
/// `xclog snapshot ID --delete`), which the projectors apply to every store in log order.
pub trait SnapshotStore: Send + Sync {
    /// The snapshot of an instance, if any.
    fn snapshot(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<InstanceSnapshot>, ReadError>> + Send;

    /// Snapshots by instance id, a page at a time.
    fn list_snapshots(
        &self,
        page: &Page,
    ) -> impl Future<Output = Result<SnapshotPage, ReadError>> + Send;
}
