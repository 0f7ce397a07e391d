//! `xclog status`: how far a projection's store has got through the topic (its stored offsets
//! against the topic's end, per partition), optionally waiting until it has caught up.
//!
//! The figures are the offsets the projector committed with its rows, so "caught up" means
//! every record published before the check is in the store (or in the dead-letter topic), not
//! merely read: the lag gauge of `/metrics` counts records read.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use xclog_projector::sink::Sink;
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::sink::postgres::PgSink;

/// Options of `xclog status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Wait up to this many seconds for the store to catch up with the topic's end as seen at
    /// the start (exit 1 if it does not).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stream: super::StreamArgs,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// One partition's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// Next offset the store will write (0 when nothing is stored, or no projector has
    /// created the store yet).
    pub stored: i64,
    /// The topic's end (high watermark) when the check started.
    pub end: i64,
    /// Records published but not yet in the store.
    pub behind: i64,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `postgres` or `mongo`.
    pub target: String,
    /// The topic.
    pub topic: String,
    /// The projection (name the offsets are stored under).
    pub projection: String,
    /// Per partition, in partition order.
    pub partitions: Vec<PartitionStatus>,
    /// Sum of `behind`.
    pub behind: i64,
    /// Every partition is at or past the end.
    pub caught_up: bool,
}

/// Builds the status from the stored offsets and the topic's ends (pure).
pub fn status_of(
    target: &str,
    topic: &str,
    projection: &str,
    stored: &BTreeMap<i32, i64>,
    ends: &BTreeMap<i32, i64>,
) -> Status {
    let partitions: Vec<PartitionStatus> = ends
        .iter()
        .map(|(&partition, &end)| {
            let stored = stored.get(&partition).copied().unwrap_or(0);
            PartitionStatus {
                partition,
                stored,
                end,
                behind: (end - stored).max(0),
            }
        })
        .collect();
    let behind = partitions.iter().map(|p| p.behind).sum();
    Status {
        target: target.to_owned(),
        topic: topic.to_owned(),
        projection: projection.to_owned(),
        caught_up: behind == 0,
        partitions,
        behind,
    }
}

impl Status {
    /// The table people read.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "projection {} of topic {} in {}",
            self.projection, self.topic, self.target
        );
        let _ = writeln!(
            s,
            "{:>9} {:>12} {:>12} {:>10}",
            "partition", "stored", "topic end", "behind"
        );
        for p in &self.partitions {
            let _ = writeln!(
                s,
                "{:>9} {:>12} {:>12} {:>10}",
                p.partition, p.stored, p.end, p.behind
            );
        }
        let stored: i64 = self.partitions.iter().map(|p| p.stored).sum();
        let end: i64 = self.partitions.iter().map(|p| p.end).sum();
        let _ = writeln!(
            s,
            "{:>9} {:>12} {:>12} {:>10}  {}",
            "all",
            stored,
            end,
            self.behind,
            if self.caught_up {
                "caught up"
            } else {
                "behind"
            }
        );
        s
    }
}

/// Prints the status (once, or when caught up / at the deadline with `--wait`). Exit 0 when
/// caught up or not waiting, 1 when `--wait` ran out.
pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let projection = args.stream.projection();
    let (brokers, settings, topic) = (
        args.stream.log.brokers.clone(),
        args.stream.log.kafka.settings()?,
        args.stream.log.topic.clone(),
    );
    let marks = tokio::task::spawn_blocking(move || {
        super::rebuild::watermarks(&brokers, &settings, &topic)
    })
    .await??;
    let ends: BTreeMap<i32, i64> = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let loader = Loader::connect(&args.db, &projection).await?;
    let deadline = args.wait.map(|s| Instant::now() + Duration::from_secs(s));
    let status = loop {
        let stored = loader
            .load(&args.stream.log.topic, &partitions)
            .await
            .with_context(|| format!("reading the stored offsets of projection {projection}"))?;
        let status = status_of(
            args.db.target.name(),
            &args.stream.log.topic,
            &projection,
            &stored,
            &ends,
        );
        match deadline {
            Some(d) if !status.caught_up && Instant::now() < d => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => break status,
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.to_text());
    }
    Ok(if deadline.is_some() && !status.caught_up {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads stored offsets with the sink's own `load_offsets`.
enum Loader {
    /// The sink, and the pool to check that the store exists.
    Postgres(PgSink, sqlx::PgPool),
    Mongo(MongoSink),
}

impl Loader {
    async fn connect(db: &super::DbArgs, projection: &str) -> anyhow::Result<Self> {
        Ok(match db.store().await? {
            super::store::Store::Postgres(r) => Loader::Postgres(
                PgSink::from_pool(r.pool().clone(), projection),
                r.pool().clone(),
            ),
            super::store::Store::Mongo(r) => Loader::Mongo(MongoSink::from_database(
                r.database().clone(),
                projection,
                false,
            )),
        })
    }

    async fn load(&self, topic: &str, partitions: &[i32]) -> anyhow::Result<BTreeMap<i32, i64>> {
        let map = match self {
            Loader::Postgres(s, pool) => {
                // No projector has migrated this database yet: nothing is stored.
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('xclog_offsets') IS NOT NULL")
                        .fetch_one(pool)
                        .await?;
                if !exists {
                    return Ok(BTreeMap::new());
                }
                s.load_offsets(topic, partitions).await?
            }
            Loader::Mongo(s) => s.load_offsets(topic, partitions).await?,
        };
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_at_the_topic_end_is_caught_up_and_one_behind_says_by_how_much() {
        let ends = BTreeMap::from([(0, 10), (1, 0), (2, 7)]);
        let s = status_of(
            "postgres",
            "t",
            "g",
            &BTreeMap::from([(0, 10), (2, 7)]),
            &ends,
        );
        assert!(s.caught_up);
        assert_eq!(s.behind, 0);
        assert_eq!(
            s.partitions[1].stored, 0,
            "a partition with nothing stored reads 0"
        );

        let s = status_of("mongo", "t", "g", &BTreeMap::from([(0, 4)]), &ends);
        assert!(!s.caught_up);
        assert_eq!(s.behind, 6 + 7);
        assert_eq!(
            s.partitions[2],
            PartitionStatus {
                partition: 2,
                stored: 0,
                end: 7,
                behind: 7
            }
        );
        assert!(s.to_text().contains("behind"), "{}", s.to_text());
    }

    #[test]
    fn a_store_past_the_end_seen_at_start_is_not_behind() {
        // Records published after the check started were already stored.
        let s = status_of(
            "postgres",
            "t",
            "g",
            &BTreeMap::from([(0, 12)]),
            &BTreeMap::from([(0, 10)]),
        );
        assert!(s.caught_up);
        assert_eq!(s.partitions[0].behind, 0);
    }
}
