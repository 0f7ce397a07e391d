//! Rebuilding a MongoDB (or FerretDB) store from the topic while the live projector serves.
//!
//! The shadow is a second set of collections in the *same database*, named with a prefix
//! (`xclog_rebuild_events`, `xclog_rebuild_snapshots`, `xclog_rebuild_instances`,
//! `xclog_rebuild_xclog_offsets`), written by the same [`MongoSink`] (same idempotent steps,
//! its own stored offsets). The same database because FerretDB 1.24 renames only within one
//! database (no cross-database rename, no `dropTarget`), and with `_`, not `.`: its
//! rename refuses collection names with a dot. Both are FerretDB-only workarounds: MongoDB
//! renames across databases and takes dotted names, and the same layout works there
//! (`tests/tests/mongo_servers.rs` pins each server's behaviour).
//!
//! The swap, in this order (docs/DESIGN.md, section 8):
//!
//! 1. **Lock** the live offsets: every live offset document of the projection (one per topic
//!    partition, created if absent) gets a [`SWAP_LOCK`] field. A live projector neither loads
//!    a locked offset (its next batch waits, retrying) nor advances one (its compare-and-set
//!    requires the field to be absent), so from here the live offsets are frozen, and a batch
//!    that was already writing can no longer commit.
//! 2. **Catch up under the lock**: the shadow must reach the frozen live offsets *and* the end
//!    of the topic as it was when the lock was taken. The second bound matters because Mongo
//!    writes are visible before their batch's offsets move: the live store may show events of
//!    a batch in flight beyond its stored offsets, never beyond the end of the topic.
//! 3. Stop the shadow's projector (its writes name shadow collections).
//! 4. **Rename**, collection by collection (events, snapshots, instances: the order a batch
//!    writes them): the live one to `xclog_old_<utc>_<name>`, then the shadow one to the live
//!    name. Between the two renames a reader finds the collection missing (the *window*, one
//!    rename command long). A batch that was in flight when the lock was taken may write into
//!    the missing name and so re-create it; the rename in then fails with "target exists", and
//!    that collection (holding only records the shadow has too) is dropped and the rename
//!    retried.
//! 5. **Offsets**: each locked live offset document gets the shadow's offset and loses its lock
//!    in one update; the live projector's next batch is fenced (its expected offset differs)
//!    or, if the shadow stopped exactly where the live store was, simply continues.
//! 6. Drop the old collections (unless kept) and the shadow's offsets.
//!
//! Every step is idempotent and its progress is visible in the database (which collections
//! exist, which offset documents are locked), so a rebuild killed anywhere continues on the
//! next run ([`resume_state`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongodb::Database;
use mongodb::bson::{Document, doc};

use super::{RebuildError, check_schema_name};
use crate::sink::SinkError;
use crate::sink::mongo::{
    MongoSink, OFFSETS, STORE_COLLECTIONS, SWAP_LOCK, by_id, check_write_concern, classify,
    find_all, offset_id, stored_offset, write_errors,
};

/// MongoDB's "namespace exists" (the rename target is there).
const NAMESPACE_EXISTS: i32 = 48;
/// MongoDB's "namespace not found".
const NAMESPACE_NOT_FOUND: i32 = 26;

/// What a rebuild finds in the database when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeState {
    /// No shadow: start from the first offset.
    Fresh,
    /// A shadow from an interrupted run: continue from its stored offsets.
    Continue,
    /// A swap was interrupted after locking the live offsets but before any rename: unlock
    /// them, then continue as [`ResumeState::Continue`] (the shadow is caught up again first).
    UnlockThenContinue,
    /// A swap was interrupted after the first rename: finish it (the shadow was checked
    /// caught up under the lock before any rename).
    FinishSwap,
    /// A swap finished but its shadow offsets were not dropped yet: drop them, then start anew.
    CleanUp,
}

/// Decides how to go on from what an earlier run left: whether live offsets are locked, how
/// many of the shadow's data collections exist, whether a live collection was already moved
/// to the old name the lock names, whether the shadow's offsets exist.
pub fn resume_state(
    live_locked: bool,
    shadow_data: usize,
    moved_out: bool,
    shadow_offsets: bool,
) -> Result<ResumeState, String> {
    let all = STORE_COLLECTIONS.len();
    Ok(match (live_locked, shadow_data, shadow_offsets) {
        (true, n, _) if n == all && !moved_out => ResumeState::UnlockThenContinue,
        (true, _, true) => ResumeState::FinishSwap,
        (true, _, false) => {
            return Err(
                "the live offsets are locked by a swap whose shadow offsets are gone; \
                        remove the rebuildSwap field from xclog_offsets by hand"
                    .to_owned(),
            );
        }
        (false, 0, true) => ResumeState::CleanUp,
        (false, 0, false) => ResumeState::Fresh,
        (false, n, _) if n == all => ResumeState::Continue,
        (false, n, _) => {
            return Err(format!(
                "the shadow has {n} of its {all} data collections and no swap is in progress; \
                 drop the shadow's collections to start over"
            ));
        }
    })
}

/// One step of the swap of one collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameStep {
    /// Rename the live collection to the old name.
    LiveToOld,
    /// Drop the live name: the live collection was already moved out, and what is there was
    /// re-created by a batch in flight (it holds only records the shadow has too).
    DropLive,
    /// Rename the shadow collection to the live name.
    ShadowToLive,
}

/// The steps that remain to swap one collection, from which of its three names exist.
pub fn rename_steps(live: bool, shadow: bool, old: bool) -> Vec<RenameStep> {
    match (live, shadow, old) {
        // Swapped in already (the shadow name is gone).
        (_, false, _) => vec![],
        (true, true, false) => vec![RenameStep::LiveToOld, RenameStep::ShadowToLive],
        (true, true, true) => vec![RenameStep::DropLive, RenameStep::ShadowToLive],
        (false, true, _) => vec![RenameStep::ShadowToLive],
    }
}

/// The offsets the live store gets at the end of the swap, per locked partition: the shadow's
/// (`Some`), or none at all (`None`: the document is deleted) where the shadow stored nothing.
pub fn final_offsets(
    locked: &BTreeSet<i32>,
    shadow: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, Option<i64>> {
    locked
        .iter()
        .chain(shadow.keys())
        .map(|p| (*p, shadow.get(p).copied()))
        .collect()
}

/// The live store's offset documents of this projection and topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveOffsets {
    /// Stored next offsets.
    pub offsets: BTreeMap<i32, i64>,
    /// Partitions whose document carries the swap lock.
    pub locked: BTreeSet<i32>,
    /// The old-store prefix named by the lock (set when `locked` is not empty).
    pub old: Option<String>,
}

impl LiveOffsets {
    /// Checks the lock taken as `self` against `now`, the live offsets read again just before
    /// the renames: every partition of `partitions` must still carry the lock, at the offset
    /// it was locked at. Returns what broke, if anything.
    ///
    /// A broken lock is not hypothetical on FerretDB 1.24: it applies an update as read,
    /// modify, write of the whole document without a lock, so a live batch's offset
    /// compare-and-set that read the document just before the lock was set writes it back
    /// without the lock (and with its new offset), and that projector then goes on
    /// committing. Swapping then would leave its newer records in the old collections.
    pub fn lock_lost(&self, now: &LiveOffsets, partitions: &[i32]) -> Option<String> {
        let broken: Vec<String> = partitions
            .iter()
            .filter_map(|p| {
                let (was, is) = (self.offsets.get(p), now.offsets.get(p));
                if !now.locked.contains(p) {
                    Some(format!(
                        "p{p} lost its lock (offset {} -> {})",
                        show(was),
                        show(is)
                    ))
                } else if was != is {
                    Some(format!(
                        "p{p} moved under the lock ({} -> {})",
                        show(was),
                        show(is)
                    ))
                } else {
                    None
                }
            })
            .collect();
        (!broken.is_empty()).then(|| broken.join(", "))
    }
}

fn show(offset: Option<&i64>) -> String {
    offset.map_or_else(|| "none".to_owned(), i64::to_string)
}

/// What [`MongoRebuild::swap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// The offsets the live store continues from.
    pub offsets: BTreeMap<i32, i64>,
    /// Collections re-created by a batch in flight during the window and dropped.
    pub recreated: usize,
    /// How long the renames took, listings between them included.
    pub renames: Duration,
    /// The longest a live collection name was missing (from before its move out to after the
    /// shadow's move in): the window readers can see.
    pub window: Duration,
}

/// A rebuild of one projection of one topic in one MongoDB database.
#[derive(Debug, Clone)]
pub struct MongoRebuild {
    db: Database,
    shadow: String,
    /// Projection name offsets are stored under (the live projector's).
    pub projection: String,
    /// The topic.
    pub topic: String,
    majority_writes: bool,
}

impl MongoRebuild {
    /// A rebuild writing collections named `<shadow>_<name>` in `db`.
    pub fn new(
        db: Database,
        shadow: &str,
        projection: &str,
        topic: &str,
        majority_writes: bool,
    ) -> Result<Self, RebuildError> {
        check_schema_name("--shadow-schema", shadow)?;
        Ok(Self {
            db,
            shadow: shadow.to_owned(),
            projection: projection.to_owned(),
            topic: topic.to_owned(),
            majority_writes,
        })
    }

    /// The prefix of the shadow's collections (`xclog_rebuild_`). Not `xclog_rebuild.`:
    /// FerretDB 1.24's `renameCollection` refuses a collection name with a dot.
    pub fn shadow_prefix(&self) -> String {
        format!("{}_", self.shadow)
    }

    /// The sink writing the shadow collections.
    pub fn shadow_sink(&self) -> MongoSink {
        MongoSink::from_database(self.db.clone(), &self.projection, self.majority_writes)
            .with_prefix(&self.shadow_prefix())
    }

    async fn collection_names(&self) -> Result<BTreeSet<String>, RebuildError> {
        Ok(self
            .db
            .list_collection_names()
            .await
            .map_err(|e| classify(e, "listing collections"))?
            .into_iter()
            .collect())
    }

    /// How to go on from what an earlier run left (see [`resume_state`]).
    pub async fn resume_state(&self) -> Result<ResumeState, RebuildError> {
        let names = self.collection_names().await?;
        let prefix = self.shadow_prefix();
        let shadow_data = STORE_COLLECTIONS
            .iter()
            .filter(|c| names.contains(&format!("{prefix}{c}")))
            .count();
        let shadow_offsets = names.contains(&format!("{prefix}{OFFSETS}"));
        let live = self.live_offsets().await?;
        let moved_out = live.old.as_ref().is_some_and(|old| {
            STORE_COLLECTIONS
                .iter()
                .any(|c| names.contains(&format!("{old}_{c}")))
        });
        resume_state(
            !live.locked.is_empty(),
            shadow_data,
            moved_out,
            shadow_offsets,
        )
        .map_err(RebuildError::Inconsistent)
    }

    async fn offset_documents(&self, collection: &str) -> Result<Vec<Document>, RebuildError> {
        let filter = doc! {"projection": &self.projection, "topic": &self.topic};
        Ok(find_all(&self.db, collection, filter, None, "reading stored offsets").await?)
    }

    /// The live store's offsets, locks included.
    pub async fn live_offsets(&self) -> Result<LiveOffsets, RebuildError> {
        let mut out = LiveOffsets::default();
        for d in self.offset_documents(OFFSETS).await? {
            if let Some((p, o)) = stored_offset(&d) {
                out.offsets.insert(p, o);
            }
            if let Ok(lock) = d.get_document(SWAP_LOCK) {
                if let Ok(p) = d.get_i32("partition") {
                    out.locked.insert(p);
                }
                out.old = lock.get_str("old").ok().map(str::to_owned);
            }
        }
        Ok(out)
    }

    /// The shadow's stored offsets.
    pub async fn shadow_offsets(&self) -> Result<BTreeMap<i32, i64>, RebuildError> {
        Ok(self
            .offset_documents(&format!("{}{OFFSETS}", self.shadow_prefix()))
            .await?
            .iter()
            .filter_map(stored_offset)
            .collect())
    }

    /// Refuses a live store that also holds other topics or projections (their documents
    /// would be replaced by a store built from this topic alone).
    pub async fn check_single_topic(&self) -> Result<(), RebuildError> {
        let filter = doc! {"$or": [
            {"topic": {"$ne": &self.topic}},
            {"projection": {"$ne": &self.projection}},
        ]};
        let others: BTreeSet<String> =
            find_all(&self.db, OFFSETS, filter, None, "reading stored offsets")
                .await?
                .iter()
                .map(|d| {
                    format!(
                        "topic {} as projection {}",
                        d.get_str("topic").unwrap_or("?"),
                        d.get_str("projection").unwrap_or("?")
                    )
                })
                .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(RebuildError::OtherTopics(
                others.into_iter().collect::<Vec<_>>().join(", "),
            ))
        }
    }

    /// Creates the shadow's collections and the indexes its writes need (idempotent); the
    /// readers' indexes wait for [`MongoRebuild::build_read_indexes`].
    pub async fn prepare_shadow(&self) -> Result<(), RebuildError> {
        let sink = self.shadow_sink();
        for c in STORE_COLLECTIONS {
            match self
                .db
                .run_command(doc! {"create": sink.collection_name(c)})
                .await
            {
                Ok(_) => {}
                Err(e) if error_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(classify(e, "creating the shadow collections").into()),
            }
        }
        sink.ensure_write_indexes().await?;
        Ok(())
    }

    /// Builds the shadow's remaining (readers') indexes, once, after the bulk (idempotent).
    pub async fn build_read_indexes(&self) -> Result<(), RebuildError> {
        Ok(self.shadow_sink().ensure_read_indexes().await?)
    }

    /// Locks every live offset document of `partitions` (creating absent ones) for a swap
    /// that moves the live store to `old`; returns the live offsets, frozen from now on.
    pub async fn lock_live(
        &self,
        partitions: &[i32],
        old: &str,
    ) -> Result<LiveOffsets, RebuildError> {
        check_schema_name("old store", old)?;
        let ctx = "locking the live offsets";
        let lock = doc! {"old": old, "shadow": &self.shadow};
        let statements: Vec<Document> = partitions
            .iter()
            .map(|&p| {
                by_id(
                    doc! {"_id": offset_id(&self.projection, &self.topic, p)},
                    doc! {
                        "$set": {SWAP_LOCK: lock.clone()},
                        "$setOnInsert": {
                            "projection": &self.projection,
                            "topic": &self.topic,
                            "partition": p,
                        },
                    },
                    true,
                )
            })
            .collect();
        // A live batch inserting a partition's first offset at the same moment makes an
        // upsert fail with a duplicate key; the document exists then, and a retry locks it.
        let mut attempts = 0;
        loop {
            let errors = self
                .write(
                    doc! {"update": OFFSETS, "updates": &statements, "ordered": false},
                    ctx,
                )
                .await?;
            if errors.is_empty() {
                break;
            }
            attempts += 1;
            if attempts >= 5 {
                let (_, code, message) = &errors[0];
                return Err(SinkError::Transient {
                    context: ctx,
                    source: format!("code {code}: {message}").into(),
                }
                .into());
            }
        }
        self.live_offsets().await
    }

    /// Removes the swap lock from the live offsets (a swap given up before any rename), and
    /// deletes the documents the lock created where nothing was stored.
    pub async fn unlock_live(&self) -> Result<(), RebuildError> {
        let ctx = "unlocking the live offsets";
        let live = self.offset_documents(OFFSETS).await?;
        let mut statements = Vec::new();
        let mut empty = Vec::new();
        for d in live.iter().filter(|d| d.contains_key(SWAP_LOCK)) {
            let Ok(id) = d.get_str("_id") else { continue };
            if stored_offset(d).is_some() {
                statements.push(by_id(
                    doc! {"_id": id},
                    doc! {"$unset": {SWAP_LOCK: ""}},
                    false,
                ));
            } else {
                empty.push(id.to_owned());
            }
        }
        if !statements.is_empty() {
            self.write_all(
                doc! {"update": OFFSETS, "updates": statements, "ordered": false},
                ctx,
            )
            .await?;
        }
        if !empty.is_empty() {
            self.delete_offsets(&empty, ctx).await?;
        }
        Ok(())
    }

    async fn delete_offsets(&self, ids: &[String], ctx: &'static str) -> Result<(), RebuildError> {
        let deletes: Vec<Document> = ids
            .iter()
            .map(|id| doc! {"q": {"_id": id, SWAP_LOCK: {"$exists": true}}, "limit": 0})
            .collect();
        self.write_all(
            doc! {"delete": OFFSETS, "deletes": deletes, "ordered": false},
            ctx,
        )
        .await
    }

    /// Runs a write command (with the majority write concern unless disabled); returns its
    /// per-statement errors.
    async fn write(
        &self,
        mut command: Document,
        ctx: &'static str,
    ) -> Result<Vec<(usize, i32, String)>, RebuildError> {
        if self.majority_writes {
            command.insert("writeConcern", doc! {"w": "majority"});
        }
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(|e| classify(e, ctx))?;
        check_write_concern(&reply, ctx)?;
        Ok(write_errors(&reply))
    }

    /// [`MongoRebuild::write`], failing on the first statement error.
    async fn write_all(&self, command: Document, ctx: &'static str) -> Result<(), RebuildError> {
        match self.write(command, ctx).await?.into_iter().next() {
            None => Ok(()),
            Some((_, code, message)) => Err(SinkError::Transient {
                context: ctx,
                source: format!("code {code}: {message}").into(),
            }
            .into()),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), mongodb::error::Error> {
        let name = self.db.name();
        self.db
            .client()
            .database("admin")
            .run_command(
                doc! {"renameCollection": format!("{name}.{from}"), "to": format!("{name}.{to}")},
            )
            .await
            .map(|_| ())
    }

    async fn drop_collection(&self, name: &str) -> Result<(), RebuildError> {
        match self.db.run_command(doc! {"drop": name}).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(()),
            Err(e) => Err(classify(e, "dropping a collection").into()),
        }
    }

    /// Swaps the shadow in. Call with the live offsets locked, the shadow's projector stopped
    /// and the shadow caught up (checked under the lock); also finishes an interrupted swap.
    /// `old` receives the previous store's collections (`<old>_events`, ...; and with
    /// `keep_old` its offsets).
    pub async fn swap(&self, old: &str, keep_old: bool) -> Result<Swapped, RebuildError> {
        check_schema_name("old store", old)?;
        let ctx = "renaming collections";
        let shadow = self.shadow_prefix();
        let began = std::time::Instant::now();
        let mut recreated = 0;
        let mut window = Duration::ZERO;
        for c in STORE_COLLECTIONS {
            let mut moved_out: Option<std::time::Instant> = None;
            let (shadow_name, old_name) = (format!("{shadow}{c}"), format!("{old}_{c}"));
            let mut attempts = 0;
            loop {
                let names = self.collection_names().await?;
                let steps = rename_steps(
                    names.contains(c),
                    names.contains(&shadow_name),
                    names.contains(&old_name),
                );
                let Some(&last) = steps.last() else { break };
                let mut result = Ok(());
                for step in steps {
                    result = match step {
                        RenameStep::LiveToOld => {
                            moved_out.get_or_insert_with(std::time::Instant::now);
                            self.rename(c, &old_name).await
                        }
                        RenameStep::DropLive => {
                            recreated += 1;
                            self.drop_collection(c).await?;
                            Ok(())
                        }
                        RenameStep::ShadowToLive => self.rename(&shadow_name, c).await,
                    };
                    if result.is_err() {
                        break;
                    }
                }
                match result {
                    Ok(()) if last == RenameStep::ShadowToLive => {
                        if let Some(t) = moved_out {
                            window = window.max(t.elapsed());
                        }
                        break;
                    }
                    Ok(()) => {}
                    // A batch in flight re-created the live name in the window: look again.
                    Err(e) if error_code(&e) == Some(NAMESPACE_EXISTS) && attempts < 50 => {
                        attempts += 1;
                    }
                    Err(e) => return Err(classify(e, ctx).into()),
                }
            }
        }
        let renames = began.elapsed();

        let live = self.offset_documents(OFFSETS).await?;
        if keep_old {
            // The locked documents still hold the old store's offsets.
            let kept: Vec<Document> = live
                .iter()
                .filter(|d| d.contains_key(SWAP_LOCK) && stored_offset(d).is_some())
                .map(|d| {
                    let mut d = d.clone();
                    d.remove(SWAP_LOCK);
                    let id = d.get_str("_id").unwrap_or_default().to_owned();
                    d.remove("_id");
                    by_id(doc! {"_id": id}, doc! {"$set": d}, true)
                })
                .collect();
            if !kept.is_empty() {
                self.write_all(
                    doc! {"update": format!("{old}_{OFFSETS}"), "updates": kept},
                    "keeping the old offsets",
                )
                .await?;
            }
        } else {
            for c in STORE_COLLECTIONS {
                self.drop_collection(&format!("{old}_{c}")).await?;
            }
        }

        // The new offsets, each replacing a lock in one single-document update.
        let shadow_offsets = self.shadow_offsets().await?;
        let locked: BTreeSet<i32> = live
            .iter()
            .filter(|d| d.contains_key(SWAP_LOCK))
            .filter_map(|d| d.get_i32("partition").ok())
            .collect();
        let mut statements = Vec::new();
        let mut delete = Vec::new();
        for (p, next) in final_offsets(&locked, &shadow_offsets) {
            let id = offset_id(&self.projection, &self.topic, p);
            match next {
                Some(next) => statements.push(by_id(
                    doc! {"_id": &id, SWAP_LOCK: {"$exists": true}},
                    doc! {"$set": {"nextOffset": next}, "$unset": {SWAP_LOCK: ""}},
                    false,
                )),
                None => delete.push(id),
            }
        }
        let ctx = "setting the live offsets";
        if !statements.is_empty() {
            // Only after every offset is set are the shadow's offsets dropped (a failure here
            // leaves them, and a rerun finishes the swap from them).
            self.write_all(
                doc! {"update": OFFSETS, "updates": statements, "ordered": false},
                ctx,
            )
            .await?;
        }
        if !delete.is_empty() {
            self.delete_offsets(&delete, ctx).await?;
        }
        self.drop_collection(&format!("{shadow}{OFFSETS}")).await?;
        Ok(Swapped {
            offsets: shadow_offsets,
            recreated,
            renames,
            window,
        })
    }

    /// Drops the shadow's offsets (left by a swap interrupted at its very end).
    pub async fn drop_shadow_offsets(&self) -> Result<(), RebuildError> {
        self.drop_collection(&format!("{}{OFFSETS}", self.shadow_prefix()))
            .await
    }

    /// Documents in `events` (the live store).
    pub async fn count_events(&self) -> Result<u64, RebuildError> {
        self.db
            .collection::<Document>(crate::sink::mongo::EVENTS)
            .estimated_document_count()
            .await
            .map_err(|e| classify(e, "counting events").into())
    }
}

fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(offsets: &[(i32, i64)], locked: &[i32]) -> LiveOffsets {
        LiveOffsets {
            offsets: offsets.iter().copied().collect(),
            locked: locked.iter().copied().collect(),
            old: Some("xclog_old_1".to_owned()),
        }
    }

    #[test]
    fn a_lock_that_a_live_write_back_erased_or_moved_is_reported_and_an_intact_one_is_not() {
        let locked = live(&[(0, 10), (1, 20), (2, 30)], &[0, 1, 2]);
        assert_eq!(locked.lock_lost(&locked.clone(), &[0, 1, 2]), None);
        // A live compare-and-set wrote back its read of p1 from before the lock.
        let erased = live(&[(0, 10), (1, 25), (2, 30)], &[0, 2]);
        assert_eq!(
            locked.lock_lost(&erased, &[0, 1, 2]).as_deref(),
            Some("p1 lost its lock (offset 20 -> 25)")
        );
        // Locked, but the offset moved anyway (the lock came back by a later write).
        let moved = live(&[(0, 10), (1, 20), (2, 31)], &[0, 1, 2]);
        assert_eq!(
            locked.lock_lost(&moved, &[0, 1, 2]).as_deref(),
            Some("p2 moved under the lock (30 -> 31)")
        );
        // A partition without a stored offset yet is locked by a created document.
        let fresh = live(&[(0, 10)], &[0, 1]);
        assert_eq!(fresh.lock_lost(&fresh.clone(), &[0, 1]), None);
        assert_eq!(
            fresh
                .lock_lost(&live(&[(0, 10), (1, 4)], &[0]), &[0, 1])
                .as_deref(),
            Some("p1 lost its lock (offset none -> 4)")
        );
    }

    #[test]
    fn a_rerun_goes_on_from_what_the_earlier_run_left() {
        assert_eq!(resume_state(false, 0, false, false), Ok(ResumeState::Fresh));
        assert_eq!(
            resume_state(false, 3, false, false),
            Ok(ResumeState::Continue)
        );
        assert_eq!(
            resume_state(false, 3, false, true),
            Ok(ResumeState::Continue)
        );
        // Killed after locking, before any rename: the shadow may be behind again later.
        assert_eq!(
            resume_state(true, 3, false, true),
            Ok(ResumeState::UnlockThenContinue)
        );
        // Killed between the two renames of the first collection: `events` is missing.
        assert_eq!(
            resume_state(true, 3, true, true),
            Ok(ResumeState::FinishSwap)
        );
        // Killed between collections or before the offsets were set.
        assert_eq!(
            resume_state(true, 2, true, true),
            Ok(ResumeState::FinishSwap)
        );
        assert_eq!(
            resume_state(true, 0, true, true),
            Ok(ResumeState::FinishSwap)
        );
        // Killed after unlocking, before dropping the shadow's offsets.
        assert_eq!(
            resume_state(false, 0, false, true),
            Ok(ResumeState::CleanUp)
        );
        assert!(resume_state(false, 1, false, true).is_err());
        assert!(resume_state(true, 1, true, false).is_err());
    }

    #[test]
    fn each_collection_is_moved_out_then_in_and_a_recreated_live_name_is_dropped() {
        use RenameStep::*;
        assert_eq!(
            rename_steps(true, true, false),
            vec![LiveToOld, ShadowToLive]
        );
        // The first rename happened; a batch in flight wrote into the missing name.
        assert_eq!(rename_steps(true, true, true), vec![DropLive, ShadowToLive]);
        // The first rename happened and nothing re-created the name (or no live store yet).
        assert_eq!(rename_steps(false, true, true), vec![ShadowToLive]);
        assert_eq!(rename_steps(false, true, false), vec![ShadowToLive]);
        // Swapped already.
        assert!(rename_steps(true, false, true).is_empty());
        assert!(rename_steps(true, false, false).is_empty());
    }

    #[test]
    fn the_live_store_takes_the_shadows_offsets_and_forgets_partitions_it_never_stored() {
        let locked: BTreeSet<i32> = [0, 1, 2].into();
        let shadow: BTreeMap<i32, i64> = [(0, 10), (1, 7), (3, 1)].into();
        assert_eq!(
            final_offsets(&locked, &shadow),
            [(0, Some(10)), (1, Some(7)), (2, None), (3, Some(1))].into()
        );
    }
}
