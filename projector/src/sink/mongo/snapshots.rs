//! Snapshots (step 5 of the sink): the deletions first, then newer-only upserts decided from
//! the stored snapshots in the instance order, then the instance view's status from the
//! snapshot that is stored.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document, doc};
use xclog_schema::InstanceSnapshot;

use super::classify::classify_code;
use super::commands::{by_id, first_error, write_errors};
use super::{DUPLICATE_KEY, INSTANCES, MongoSink, SNAPSHOTS, document};
use crate::sink::order::{self, InstanceOrder};
use crate::sink::{SinkError, SourcePosition};

/// Instance ids per `delete` statement of snapshot deletions.
const DELETE_CHUNK: usize = 1000;

impl MongoSink {
    /// Step 5a: removes the stored snapshot of every instance the batch deletes it for (before
    /// the snapshots that follow the deletion in the log are written, in step 5b). Deleting
    /// what is already gone changes nothing, so a replay leaves the same result.
    pub(super) async fn delete_snapshots(&self, instance_ids: &[&str]) -> Result<u64, SinkError> {
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
    pub(super) async fn write_snapshots(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
