//! `xclog verify`: compares the topic, the PostgreSQL store and the MongoDB store (any two or
//! all three) and names what differs.
//!
//! What is compared, per pair of sources: events per component; per instance, a digest over
//! (event id, sequence, stateBefore, stateAfter) in log order and over the `caused` links of
//! its events; the latest snapshot per instance (sequence, lastEventId, state). Instances whose
//! digests differ are then read again event by event (up to `max_differences` of them) to name
//! each differing event and field.
//!
//! Live systems: a store is compared only up to the offsets it has stored (its committed
//! position); the topic is read up to those offsets; two stores are compared over what both
//! should hold (the per-partition minimum of their offsets), using each row's log position.
//!
//! [`digest`] is the pure part (unit and property tested); [`sources`] reads the sources.

pub mod digest;
pub mod sources;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use mongodb::Database;
use serde::Serialize;

use crate::read::mongo::MongoReader;
use crate::read::postgres::PgReader;
use digest::{Bounds, Difference, SideCounts, SideDigest, compare, compare_instance, min_bounds};
use sources::{StoreKind, TopicSource};

/// A failed verification (not a difference: the comparison could not be made).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A source could not be read.
    #[error("{what}")]
    Source {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The sources cannot be compared as asked.
    #[error("{0}")]
    Invalid(String),
}

/// One of the three sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Kafka topic.
    Topic,
    /// The PostgreSQL store.
    Postgres,
    /// The MongoDB store.
    Mongo,
}

impl SourceKind {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Topic => "topic",
            SourceKind::Postgres => "postgres",
            SourceKind::Mongo => "mongo",
        }
    }

    /// Parses `topic`, `postgres` or `mongo`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "topic" => Ok(SourceKind::Topic),
            "postgres" => Ok(SourceKind::Postgres),
            "mongo" => Ok(SourceKind::Mongo),
            other => Err(format!(
                "unknown source {other:?} (expected topic, postgres or mongo)"
            )),
        }
    }
}

/// What to compare and how to reach it.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Two or three distinct sources, in report order.
    pub sources: Vec<SourceKind>,
    /// The topic (its name is also the one the stores' offsets are stored under).
    pub topic: TopicSource,
    /// The PostgreSQL store (required with [`SourceKind::Postgres`]).
    pub postgres: Option<PgReader>,
    /// Projection name of the PostgreSQL offsets.
    pub postgres_projection: String,
    /// The MongoDB database (required with [`SourceKind::Mongo`]).
    pub mongo: Option<Database>,
    /// Projection name of the MongoDB offsets.
    pub mongo_projection: String,
    /// Most differences listed per pair of sources (instances compared event by event too).
    pub max_differences: usize,
}

/// The comparison of two sources.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairReport {
    /// Left source.
    pub left: SourceKind,
    /// Right source.
    pub right: SourceKind,
    /// Offsets compared up to (exclusive), per partition.
    pub offsets: Bounds,
    /// What the left source held in that range.
    pub left_counts: SideCounts,
    /// What the right source held in that range.
    pub right_counts: SideCounts,
    /// Differences found (at least; instances beyond `max_differences` count once each).
    pub differences_found: usize,
    /// The first differences, at most `max_differences`.
    pub differences: Vec<Difference>,
}

/// The result of `xclog verify`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Whether every pair agrees.
    pub agree: bool,
    /// The sources compared.
    pub sources: Vec<SourceKind>,
    /// The topic.
    pub topic: String,
    /// Stored offsets of each store (what it has committed).
    pub stored_offsets: Vec<(SourceKind, Bounds)>,
    /// One entry per pair of sources.
    pub pairs: Vec<PairReport>,
}

/// Reads one count of a side.
type CountOf = fn(&SideCounts) -> u64;

type DigestKey = (SourceKind, Option<StoreKind>, Bounds);

struct Run<'a> {
    options: &'a VerifyOptions,
    digests: HashMap<DigestKey, Arc<SideDigest>>,
}

impl Run<'_> {
    fn pg(&self) -> Result<&PgReader, VerifyError> {
        self.options
            .postgres
            .as_ref()
            .ok_or_else(|| VerifyError::Invalid("no PostgreSQL connection given".to_owned()))
    }

    fn mongo(&self) -> Result<&Database, VerifyError> {
        self.options
            .mongo
            .as_ref()
            .ok_or_else(|| VerifyError::Invalid("no MongoDB connection given".to_owned()))
    }

    async fn digest(
        &mut self,
        source: SourceKind,
        check: Option<StoreKind>,
        bounds: &Bounds,
    ) -> Result<Arc<SideDigest>, VerifyError> {
        let key = (source, check, bounds.clone());
        if let Some(d) = self.digests.get(&key) {
            return Ok(d.clone());
        }
        let topic = &self.options.topic.topic;
        tracing::info!(source = source.name(), "reading");
        let d = match source {
            SourceKind::Topic => {
                self.options
                    .topic
                    .digest(bounds, check.unwrap_or(StoreKind::Postgres))
                    .await?
            }
            SourceKind::Postgres => sources::pg_digest(self.pg()?, topic, bounds).await?,
            SourceKind::Mongo => sources::mongo_digest(self.mongo()?, topic, bounds).await?,
        };
        let d = Arc::new(d);
        self.digests.insert(key, d.clone());
        Ok(d)
    }

    async fn details(
        &self,
        source: SourceKind,
        check: Option<StoreKind>,
        bounds: &Bounds,
        instances: &BTreeSet<String>,
        digest: Arc<SideDigest>,
    ) -> Result<HashMap<String, Vec<digest::DetailEvent>>, VerifyError> {
        let topic = &self.options.topic.topic;
        let mut out = HashMap::new();
        match source {
            SourceKind::Topic => {
                return self
                    .options
                    .topic
                    .details(
                        bounds,
                        check.unwrap_or(StoreKind::Postgres),
                        instances,
                        digest,
                    )
                    .await;
            }
            SourceKind::Postgres => {
                for i in instances {
                    let got = sources::store_details(self.pg()?, topic, i, bounds, &digest).await?;
                    out.insert(i.clone(), got);
                }
            }
            SourceKind::Mongo => {
                let reader = MongoReader::new(self.mongo()?.clone());
                for i in instances {
                    let got = sources::store_details(&reader, topic, i, bounds, &digest).await?;
                    out.insert(i.clone(), got);
                }
            }
        }
        Ok(out)
    }

    async fn pair(
        &mut self,
        left: SourceKind,
        right: SourceKind,
        bounds: Bounds,
    ) -> Result<PairReport, VerifyError> {
        // The topic side leaves out what the compared store's projector dead-letters.
        let store_of = |s: SourceKind| match s {
            SourceKind::Mongo => Some(StoreKind::Mongo),
            SourceKind::Postgres => Some(StoreKind::Postgres),
            SourceKind::Topic => None,
        };
        let check_for = |s: SourceKind, other: SourceKind| {
            if s == SourceKind::Topic {
                store_of(other)
            } else {
                None
            }
        };
        let (lc, rc) = (check_for(left, right), check_for(right, left));
        let l = self.digest(left, lc, &bounds).await?;
        let r = self.digest(right, rc, &bounds).await?;
        let comparison = compare(&l, &r);
        let max = self.options.max_differences;
        let mut differences = comparison.differences;
        let detailed: BTreeSet<String> = comparison
            .instances_to_detail
            .iter()
            .take(max)
            .cloned()
            .collect();
        let undetailed = comparison.instances_to_detail.len() - detailed.len();
        if !detailed.is_empty() {
            let ld = self
                .details(left, lc, &bounds, &detailed, l.clone())
                .await?;
            let rd = self
                .details(right, rc, &bounds, &detailed, r.clone())
                .await?;
            for i in &detailed {
                let empty = Vec::new();
                let component = l
                    .instances()
                    .get(i)
                    .or_else(|| r.instances().get(i))
                    .map(|x| x.component.clone())
                    .filter(|c| !c.is_empty());
                for mut d in compare_instance(
                    i,
                    ld.get(i).unwrap_or(&empty),
                    rd.get(i).unwrap_or(&empty),
                    true,
                ) {
                    d.component.clone_from(&component);
                    differences.push(d);
                }
            }
        }
        let differences_found = differences.len() + undetailed;
        differences.truncate(max);
        Ok(PairReport {
            left,
            right,
            offsets: bounds,
            left_counts: l.counts.clone(),
            right_counts: r.counts.clone(),
            differences_found,
            differences,
        })
    }
}

/// Compares the sources; `Ok` whether they agree or not (see [`Report::agree`]).
pub async fn verify(options: &VerifyOptions) -> Result<Report, VerifyError> {
    let mut seen = BTreeSet::new();
    if options.sources.len() < 2 || !options.sources.iter().all(|s| seen.insert(*s)) {
        return Err(VerifyError::Invalid(format!(
            "--sources needs two or three distinct sources of topic, postgres, mongo; got {:?}",
            options.sources.iter().map(|s| s.name()).collect::<Vec<_>>()
        )));
    }
    let topic = options.topic.topic.clone();
    let partitions = if options.sources.contains(&SourceKind::Topic) {
        options.topic.partitions().await?
    } else {
        // Without the topic, take every partition either store has an offset for.
        (0..1024).collect()
    };
    let mut stored = Vec::new();
    let mut run = Run {
        options,
        digests: HashMap::new(),
    };
    for s in &options.sources {
        let (bounds, projection) = match s {
            SourceKind::Topic => continue,
            SourceKind::Postgres => (
                sources::pg_offsets(run.pg()?, &options.postgres_projection, &topic, &partitions)
                    .await?,
                &options.postgres_projection,
            ),
            SourceKind::Mongo => (
                sources::mongo_offsets(
                    run.mongo()?,
                    &options.mongo_projection,
                    &topic,
                    &partitions,
                )
                .await?,
                &options.mongo_projection,
            ),
        };
        let bounds: Bounds = if options.sources.contains(&SourceKind::Topic) {
            bounds
        } else {
            bounds.into_iter().filter(|(_, o)| *o > 0).collect()
        };
        if bounds.values().all(|o| *o == 0) {
            return Err(VerifyError::Invalid(format!(
                "{} has no stored offsets for projection {projection:?} on topic {topic:?}: \
                 nothing was projected under that name (check --projection / --mongo-projection)",
                s.name()
            )));
        }
        stored.push((*s, bounds));
    }
    let offsets_of = |s: SourceKind| {
        stored
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let mut pairs = Vec::new();
    for (i, left) in options.sources.iter().enumerate() {
        for right in &options.sources[i + 1..] {
            let bounds = match (left, right) {
                (SourceKind::Topic, s) | (s, SourceKind::Topic) => offsets_of(*s),
                (a, b) => {
                    let (a, b) = (offsets_of(*a), offsets_of(*b));
                    // A partition only one store has offsets for: the other holds none of it.
                    let mut m = min_bounds(&a, &b);
                    for p in a.keys().chain(b.keys()) {
                        m.entry(*p).or_insert(0);
                    }
                    m
                }
            };
            pairs.push(run.pair(*left, *right, bounds).await?);
        }
    }
    Ok(Report {
        agree: pairs.iter().all(|p| p.differences_found == 0),
        sources: options.sources.clone(),
        topic,
        stored_offsets: stored,
        pairs,
    })
}

impl Report {
    /// The human-readable report: a summary table per pair, then the first differences.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let names: Vec<&str> = self.sources.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            s,
            "xclog verify: {} (topic {})",
            names.join(", "),
            self.topic
        );
        for (kind, bounds) in &self.stored_offsets {
            let _ = writeln!(
                s,
                "  {} stored offsets: {}",
                kind.name(),
                show_bounds(bounds)
            );
        }
        for p in &self.pairs {
            let (l, r) = (p.left.name(), p.right.name());
            let _ = writeln!(s);
            let _ = writeln!(s, "{l} vs {r}  (up to offsets {})", show_bounds(&p.offsets));
            let _ = writeln!(s, "  {:<28} {:>12} {:>12}", "", l, r);
            let components: BTreeSet<&String> = p
                .left_counts
                .events_per_component
                .keys()
                .chain(p.right_counts.events_per_component.keys())
                .collect();
            for c in components {
                let get = |x: &SideCounts| x.events_per_component.get(c).copied().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "  {:<28} {:>12} {:>12}",
                    format!("events {c}"),
                    get(&p.left_counts),
                    get(&p.right_counts)
                );
            }
            let rows: [(&str, CountOf); 6] = [
                ("instances", |x| x.instances),
                ("snapshots", |x| x.snapshots),
                ("beyond offsets (skipped)", |x| x.beyond_offsets),
                ("without log position", |x| x.without_position),
                ("duplicate ids (skipped)", |x| x.duplicate_ids),
                ("dead letters (skipped)", |x| x.dead_letters),
            ];
            for (label, get) in rows {
                let _ = writeln!(
                    s,
                    "  {label:<28} {:>12} {:>12}",
                    get(&p.left_counts),
                    get(&p.right_counts)
                );
            }
            if p.differences_found == 0 {
                let _ = writeln!(s, "  agree");
                continue;
            }
            let _ = writeln!(
                s,
                "  DIFFER: {} difference(s){}",
                p.differences_found,
                if p.differences.len() < p.differences_found {
                    format!(", first {} shown", p.differences.len())
                } else {
                    String::new()
                }
            );
            for d in &p.differences {
                let _ = writeln!(s, "  - {}", describe(d, l, r));
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{}",
            if self.agree {
                "result: the sources agree"
            } else {
                "result: the sources DIFFER"
            }
        );
        s
    }
}

fn show_bounds(b: &Bounds) -> String {
    let parts: Vec<String> = b.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    if parts.is_empty() {
        "(none)".to_owned()
    } else {
        parts.join(" ")
    }
}

/// One line naming a difference: where, which field, each side's value.
pub fn describe(d: &Difference, left: &str, right: &str) -> String {
    let mut at = Vec::new();
    if let Some(c) = &d.component {
        at.push(format!("component {c}"));
    }
    if let Some(i) = &d.instance {
        at.push(format!("instance {i}"));
    }
    if let Some(e) = &d.event_id {
        at.push(format!("event {e}"));
    }
    format!(
        "{}: {}: {left}={:?} {right}={:?}",
        at.join(" "),
        d.field,
        d.left,
        d.right
    )
}
