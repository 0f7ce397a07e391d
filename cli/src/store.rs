//! The store the read subcommands (`events`, `trace`, `snapshot`) read from: one read API,
//! two backends, chosen with `--target`.

use xclog_projector::read::mongo::MongoReader;
use xclog_projector::read::postgres::PgReader;
use xclog_projector::read::{
    EventPage, EventStore, Page, ReadError, SnapshotPage, SnapshotStore, StoredEvent,
};
use xclog_schema::InstanceSnapshot;

/// A reader over PostgreSQL or MongoDB.
#[derive(Debug)]
pub enum Store {
    /// `--target postgres`.
    Postgres(PgReader),
    /// `--target mongo`.
    Mongo(MongoReader),
}

impl super::DbArgs {
    /// Connects to the store `--target` names.
    pub async fn store(&self) -> anyhow::Result<Store> {
        Ok(match self.target {
            super::Target::Postgres => Store::Postgres(PgReader::new(self.connect().await?)),
            super::Target::Mongo => Store::Mongo(MongoReader::new(self.connect_mongo().await?)),
        })
    }
}

macro_rules! both {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            Store::Postgres($r) => $call.await,
            Store::Mongo($r) => $call.await,
        }
    };
}

impl EventStore for Store {
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, ReadError> {
        both!(self, r => r.event(id))
    }
    async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<StoredEvent>, ReadError> {
        both!(self, r => r.events_by_ids(ids))
    }
    async fn events_of_instance(&self, id: &str, page: &Page) -> Result<EventPage, ReadError> {
        both!(self, r => r.events_of_instance(id, page))
    }
    async fn events_in_time_range(
        &self,
        from_ms: i64,
        to_ms: i64,
        page: &Page,
    ) -> Result<EventPage, ReadError> {
        both!(self, r => r.events_in_time_range(from_ms, to_ms, page))
    }
    async fn list_events(&self, page: &Page) -> Result<EventPage, ReadError> {
        both!(self, r => r.list_events(page))
    }
    async fn events_caused_by(&self, id: &str) -> Result<Vec<StoredEvent>, ReadError> {
        both!(self, r => r.events_caused_by(id))
    }
    async fn effect_ids(&self, ids: &[String]) -> Result<Vec<(String, String)>, ReadError> {
        both!(self, r => r.effect_ids(ids))
    }
}

impl SnapshotStore for Store {
    async fn snapshot(&self, id: &str) -> Result<Option<InstanceSnapshot>, ReadError> {
        both!(self, r => r.snapshot(id))
    }
    async fn list_snapshots(&self, page: &Page) -> Result<SnapshotPage, ReadError> {
        both!(self, r => r.list_snapshots(page))
    }
}
