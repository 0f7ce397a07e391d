//! Partition watermarks for lag and readiness, measured on a thread and a Kafka handle of
//! their own.
//!
//! Why not ask the group consumer: a `ListOffsets` request sent on the consumer's handle shares
//! the broker connection with its fetch long-polls (up to `fetch.wait.max.ms`), so a short
//! query timeout fails over and over on an idle partition, and a long one stalls the poll loop.
//! A separate handle has its own connection; the poll loop only reads the latest figures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

/// How often the probe measures, and how old a measurement may be and still count.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(15);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's low and high watermarks and when they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) low: i64,
    pub(crate) high: i64,
    pub(crate) at: Instant,
}

/// The latest watermarks per partition, shared between the probe and the consumer loop.
#[derive(Debug, Default)]
pub(crate) struct Watermarks {
    marks: Mutex<BTreeMap<i32, Mark>>,
}

impl Watermarks {
    fn set(&self, partition: i32, low: i64, high: i64) {
        let mark = Mark {
            low,
            high,
            at: Instant::now(),
        };
        self.marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, mark);
    }

    /// The latest measurement of `partition`, if one is fresher than [`STALE_AFTER`].
    pub(crate) fn fresh(&self, partition: i32, now: Instant) -> Option<Mark> {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks
            .get(&partition)
            .copied()
            .filter(|m| now.saturating_duration_since(m.at) <= STALE_AFTER)
    }
}

/// Lag of one partition: records between what this worker has read and the high watermark.
/// Without a read position yet, the worker starts at the low watermark (or the stored offset,
/// which the caller passes as the position).
pub(crate) fn lag(position: Option<i64>, mark: Mark) -> i64 {
    (mark.high - position.unwrap_or(mark.low.max(0))).max(0)
}

/// Starts the probe thread; it ends when `shutdown` is cancelled.
pub(crate) fn spawn_probe(
    client: BaseConsumer,
    topic: String,
    watermarks: Arc<Watermarks>,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xclog-watermarks".into())
        .spawn(move || probe(&client, &topic, &watermarks, &shutdown))
}

fn probe(
    client: &BaseConsumer,
    topic: &str,
    watermarks: &Watermarks,
    shutdown: &CancellationToken,
) {
    let mut partitions: Vec<i32> = Vec::new();
    let mut rounds = 0u64;
    while !shutdown.is_cancelled() {
        // The partition count can grow; re-read it now and then.
        if partitions.is_empty() || rounds.is_multiple_of(15) {
            match client.fetch_metadata(Some(topic), QUERY_TIMEOUT) {
                Ok(metadata) => {
                    if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                        partitions = t.partitions().iter().map(|p| p.id()).collect();
                    }
                }
                Err(error) => {
                    tracing::debug!(error = %error, "watermark probe: metadata fetch failed")
                }
            }
        }
        for &partition in &partitions {
            if shutdown.is_cancelled() {
                return;
            }
            match client.fetch_watermarks(topic, partition, QUERY_TIMEOUT) {
                Ok((low, high)) => watermarks.set(partition, low, high),
                Err(error) => {
                    tracing::debug!(partition, error = %error, "watermark probe: query failed")
                }
            }
        }
        rounds += 1;
        let until = Instant::now() + PROBE_INTERVAL;
        while Instant::now() < until && !shutdown.is_cancelled() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(low: i64, high: i64) -> Mark {
        Mark {
            low,
            high,
            at: Instant::now(),
        }
    }

    #[test]
    fn lag_counts_from_the_read_position_to_the_high_watermark() {
        assert_eq!(lag(Some(90), mark(0, 100)), 10);
        assert_eq!(lag(Some(100), mark(0, 100)), 0);
    }

    #[test]
    fn lag_without_a_position_counts_from_the_low_watermark() {
        assert_eq!(lag(None, mark(40, 100)), 60);
        assert_eq!(lag(None, mark(0, 0)), 0);
    }

    #[test]
    fn lag_is_never_negative() {
        assert_eq!(lag(Some(120), mark(0, 100)), 0);
    }

    #[test]
    fn a_stale_measurement_does_not_count() {
        let w = Watermarks::default();
        w.set(3, 0, 10);
        let now = Instant::now();
        assert_eq!(w.fresh(3, now).map(|m| m.high), Some(10));
        assert_eq!(w.fresh(3, now + STALE_AFTER + Duration::from_secs(1)), None);
        assert_eq!(w.fresh(4, now), None);
    }
}
