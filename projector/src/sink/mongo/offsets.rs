//! The stored offsets (`xclog_offsets`): loaded on assignment, checked before a batch (step 1,
//! the fence) and advanced after it with a compare-and-set (step 6). A document that carries
//! [`SWAP_LOCK`] is neither loaded nor advanced.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document, doc};

use super::commands::{as_u64, by_id, first_error};
use super::{MongoSink, OFFSETS, SWAP_LOCK};
use crate::sink::{Sink, SinkError, WriteBatch};

impl MongoSink {
    fn offset_id(&self, topic: &str, partition: i32) -> String {
        offset_id(&self.projection, topic, partition)
    }

    /// The stored next offsets of `partitions` of `topic` for this projection; a transient
    /// error while `xclog rebuild` holds the swap lock on them.
    pub(super) async fn load_stored_offsets(
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

    pub(super) async fn check_fence(&self, batch: &WriteBatch) -> Result<(), SinkError> {
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

    pub(super) async fn advance_offsets(&self, batch: &WriteBatch) -> Result<(), SinkError> {
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
