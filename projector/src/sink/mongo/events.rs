//! Events and causality (steps 2 and 3 of the sink): the unordered insert by event id, which
//! copy of an id is the stored one, and the `caused` links between parents and children,
//! updated by one writer of the sink at a time per parent.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mongodb::bson::{Bson, Document, doc};
use xclog_schema::PersistedEvent;

use super::commands::{by_id, first_error};
use super::{EVENTS, MongoSink, document};
use crate::sink::{SinkError, SourcePosition};

impl MongoSink {
    /// Steps 2-4 of the module docs. Returns the number of events newly inserted.
    pub(super) async fn write_events(
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
}
