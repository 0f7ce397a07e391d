//! Running the write path's commands: every command bounded by the command timeout, every
//! write with the write concern and its acknowledgement checked, bulk statements cut into
//! chunks under the server's message limit, and the per-statement errors of a bulk reply.

use std::collections::BTreeSet;

use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

use super::classify::{classify, classify_code};
use super::{DUPLICATE_KEY, MongoSink, document};
use crate::sink::SinkError;

/// Statements per bulk command are also cut at this many bytes (MongoDB takes 16 MiB + 16 KiB).
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

impl MongoSink {
    /// Runs one command of the write path, bounded by the command timeout: a server that
    /// accepted the command and never answers (a stalled FerretDB, a frozen host, a store too
    /// slow for a batch this large) fails the batch as timed out instead of holding its writer
    /// for ever; the writer then writes it in smaller parts. Dropping the operation closes its
    /// connection, so a late reply is never read as another's.
    pub(super) async fn bounded<T>(
        &self,
        ctx: &'static str,
        op: impl std::future::Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.command_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::TimedOut {
                context: ctx,
                after: self.command_timeout,
            }),
        }
    }

    fn with_write_concern(&self, mut command: Document) -> Document {
        if let Some(wc) = &self.write_concern {
            command.insert("writeConcern", wc.clone());
        }
        command
    }

    /// Runs one write command (with the write concern, bounded by the command timeout) and
    /// checks that the write concern was satisfied.
    pub(super) async fn run_write(
        &self,
        command: Document,
        ctx: &'static str,
    ) -> Result<Document, SinkError> {
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
    pub(super) async fn update(
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
    pub(super) async fn insert(
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

    pub(super) async fn find_all(
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

pub(super) fn as_u64(b: &Bson) -> Option<u64> {
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

pub(super) fn first_error(
    errors: Vec<(usize, i32, String)>,
    ctx: &'static str,
) -> Result<(), SinkError> {
    match errors.into_iter().next() {
        Some((_, code, message)) => Err(classify_code(code, message, ctx)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
