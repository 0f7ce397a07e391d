//! The writer tasks: take batches from the lanes' bounded queues ([`Handoff`]) and commit them
//! through the sink.
//!
//! There may be more lanes than writers: a free writer takes the next batch of any lane that no
//! other writer is writing, so the writers share the work even when the partitions do not
//! divide evenly over them (3 partitions over 2 writers), and a lane's batches are still
//! written one at a time, in order.
//!
//! Per batch: dead letters are delivered first, then `Sink::write` commits rows and offsets in
//! one transaction, then (only for lag tools) the offsets are stored for the Kafka group,
//! which librdkafka commits once a second.
//! Every failure goes through the sink's classifier:
//! * transient: same batch again after a backoff (never skipped), until it commits, the
//!   assignment changes, or shutdown abandons it;
//! * rejected: the batch is split in halves until the offending record is alone, which is
//!   dead-lettered; its offset still advances in the same transaction as the neighbours;
//! * fenced: the batch is dropped and the consumer reloads offsets and seeks;
//! * timed out: the store is up but too slow for a batch this large: the batch is written
//!   again in halves, and the writers keep later batches under a record limit
//!   ([`WriteLimit`]) that halves whenever a write times out and doubles back while writes
//!   take under half the sink's command timeout, so a slow store still sees progress instead
//!   of the same batch timing out for ever;
//! * fatal: the projector stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use xclog_schema::Record;

use crate::batch::{Batch, DeadLetter};
use crate::dead_letter::{DeadLetterError, DeadLetterProducer};
use crate::lanes::{Handoff, Shared};
use crate::metrics::{KindLabel, Metrics};
use crate::rebalance::ProjectorContext;
use crate::sink::{ErrorClass, Sink, SinkError};

pub(crate) struct Writer<S> {
    pub(crate) sink: Arc<S>,
    pub(crate) shared: Arc<Shared>,
    /// This writer's index: the lane it looks at first.
    pub(crate) index: usize,
    pub(crate) dead_letters: DeadLetterProducer,
    pub(crate) consumer: Option<Arc<BaseConsumer<ProjectorContext>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) shutdown: CancellationToken,
    /// Shared by the writers of one projector: the store is slow for all of them.
    pub(crate) limit: Arc<WriteLimit>,
}

/// The most records the writers put into one store write while the store is slow.
///
/// Unlimited until a write times out; then half of that write's records. A write of over half
/// the limit that takes under half of the sink's command timeout (the timeout bounds each
/// command, and a write is several) doubles the limit again, until it reaches the largest
/// batch the consumer cuts and so binds nothing. A write that is slow but within the timeout
/// does not lower the limit: a write's fixed costs (its reads) do not shrink with its size.
#[derive(Debug)]
pub(crate) struct WriteLimit {
    /// 0: no limit.
    records: AtomicUsize,
    /// The sink's command timeout; without one, the limit never grows back.
    timeout: Option<Duration>,
    /// The most records the consumer puts in a batch.
    batch_max: usize,
}

impl WriteLimit {
    pub(crate) fn new(timeout: Option<Duration>, batch_max: usize) -> Self {
        WriteLimit {
            records: AtomicUsize::new(0),
            timeout,
            batch_max,
        }
    }

    /// The current limit, if any.
    pub(crate) fn records(&self) -> Option<usize> {
        match self.records.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Whether a batch of `len` records is over the limit (a single record never is).
    fn splits(&self, len: usize) -> bool {
        len > 1 && self.records().is_some_and(|limit| len > limit)
    }

    /// A write of `len` records timed out: later writes take half as many.
    fn shrink(&self, len: usize) -> usize {
        let limit = (len / 2).max(1);
        let _ = self
            .records
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(if current == 0 {
                    limit
                } else {
                    current.min(limit)
                })
            });
        self.records().unwrap_or(limit)
    }

    /// A write of `len` records took `elapsed`: grow when it was near the limit and well
    /// inside the timeout. Returns the new limit when it changed.
    fn wrote(&self, len: usize, elapsed: Duration) -> Option<Option<usize>> {
        let timeout = self.timeout?;
        let limit = self.records()?;
        // Pieces of a batch halved down to the limit hold between half of it and all of it.
        if elapsed < timeout / 2 && len.saturating_mul(2) > limit {
            let grown = limit.saturating_mul(2);
            let next = if grown >= self.batch_max { 0 } else { grown };
            if self
                .records
                .compare_exchange(limit, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Some((next != 0).then_some(next));
            }
        }
        None
    }
}

enum Attempt {
    Done,
    Abandoned,
    Split(Box<(Batch, Batch)>),
}

impl<S: Sink> Writer<S> {
    /// Runs until every lane's queue is closed and empty. A fatal sink error stops the
    /// projector (cancels `shutdown`); the writer then only skips what it takes.
    pub(crate) async fn run(mut self, handoff: Arc<Handoff>) -> Result<(), SinkError> {
        let mut result = Ok(());
        // Each writer goes round the lanes, so a lane with a batch queued is served within one
        // round even while the others always have batches too.
        let mut turn = self.index;
        while let Some((lane, hold, batch)) = handoff.next(&mut turn).await {
            tracing::trace!(
                writer = self.index,
                lane,
                records = batch.write.records.len(),
                generation = batch.generation,
                "took a batch of a lane"
            );
            if result.is_ok()
                && batch.generation == self.shared.generation()
                && let Err(error) = self.commit(batch).await
            {
                tracing::error!(error = %error, "fatal store error; stopping the projector");
                self.shutdown.cancel();
                result = Err(error);
            }
            self.shared.batch_done(lane);
            // The lane is free again (and the other writers woken): another writer may take
            // its next batch.
            drop(hold);
            tracing::trace!(writer = self.index, lane, "released the lane");
        }
        tracing::debug!(
            writer = self.index,
            "writer ends: every lane is closed and empty"
        );
        drop(self.consumer.take());
        self.shared.writer_done();
        result
    }

    async fn commit(&self, batch: Batch) -> Result<(), SinkError> {
        let started = Instant::now();
        let records = batch.write.records.len() + batch.dead_letters.len();
        let mut work = vec![batch];
        while let Some(batch) = work.pop() {
            match self.attempt(batch).await? {
                Attempt::Done => {}
                Attempt::Abandoned => return Ok(()),
                Attempt::Split(halves) => {
                    let (first, second) = *halves;
                    work.push(second);
                    work.push(first);
                }
            }
        }
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_records.observe(records as f64);
        Ok(())
    }

    async fn send_dead_letter(&self, dead: &DeadLetter) -> Result<bool, SinkError> {
        match self.dead_letters.send(dead, &self.shutdown).await {
            Ok(()) => Ok(true),
            Err(DeadLetterError::Cancelled) => Ok(false),
            Err(other) => {
                // Not ready from here on, with the reason, while the projector stops.
                self.metrics
                    .halt(format!("stopping: cannot dead-letter a record: {other}"));
                Err(SinkError::Fatal {
                    context: "sending a dead letter",
                    source: Box::new(other),
                })
            }
        }
    }

    async fn attempt(&self, mut batch: Batch) -> Result<Attempt, SinkError> {
        for dead in std::mem::take(&mut batch.dead_letters) {
            if !self.send_dead_letter(&dead).await? {
                return Ok(Attempt::Abandoned);
            }
        }
        let mut backoff = self.backoff_initial;
        loop {
            if batch.generation != self.shared.generation() {
                tracing::info!("assignment changed; abandoning the in-flight batch");
                return Ok(Attempt::Abandoned);
            }
            let len = batch.write.records.len();
            if self.limit.splits(len) {
                let (a, b) = batch.split();
                return Ok(Attempt::Split(Box::new((a, b))));
            }
            // tokio's clock, so that tests with paused time measure the store's pace too.
            let started = tokio::time::Instant::now();
            let error = match self.sink.write(&batch.write).await {
                Ok(outcome) => {
                    if let Some(limit) = self.limit.wrote(len, started.elapsed()) {
                        self.report_limit(limit, len, started.elapsed());
                    }
                    self.metrics
                        .rows_written
                        .get_or_create(&KindLabel { kind: "event" })
                        .inc_by(outcome.events_inserted);
                    self.metrics
                        .rows_written
                        .get_or_create(&KindLabel { kind: "snapshot" })
                        .inc_by(outcome.snapshots_applied);
                    self.metrics
                        .rows_written
                        .get_or_create(&KindLabel {
                            kind: "snapshot-deletion",
                        })
                        .inc_by(outcome.snapshots_deleted);
                    self.after_commit(&batch);
                    return Ok(Attempt::Done);
                }
                Err(error) => error,
            };
            let class = error.class();
            self.metrics
                .write_errors
                .get_or_create(&KindLabel {
                    kind: class_name(class),
                })
                .inc();
            match class {
                ErrorClass::TimedOut if len > 1 => {
                    if self.shutdown.is_cancelled() {
                        return Ok(Attempt::Abandoned);
                    }
                    let limit = self.limit.shrink(len);
                    self.report_limit(Some(limit), len, started.elapsed());
                    let (a, b) = batch.split();
                    return Ok(Attempt::Split(Box::new((a, b))));
                }
                ErrorClass::Transient | ErrorClass::TimedOut => {
                    tracing::warn!(error = %error, cause = %causes(&error), backoff_ms = backoff.as_millis() as u64, "transient store error; retrying the same batch");
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => return Ok(Attempt::Abandoned),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                ErrorClass::Rejected if batch.write.records.len() > 1 => {
                    tracing::debug!(
                        records = batch.write.records.len(),
                        "store rejected a record; splitting the batch to isolate it"
                    );
                    let (a, b) = batch.split();
                    return Ok(Attempt::Split(Box::new((a, b))));
                }
                ErrorClass::Rejected if batch.write.records.len() == 1 => {
                    let record = batch.write.records.pop().map(|r| r.source);
                    let raw = batch.raw.pop();
                    if let (Some(source), Some(raw)) = (record, raw) {
                        tracing::warn!(partition = source.partition, offset = source.offset, error = %error, "store rejected a record; dead-lettering it");
                        self.metrics
                            .dead_lettered
                            .get_or_create(&KindLabel { kind: "rejected" })
                            .inc();
                        let dead = DeadLetter {
                            raw,
                            partition: source.partition,
                            offset: source.offset,
                            kind: "rejected",
                            reason: error.to_string(),
                        };
                        if !self.send_dead_letter(&dead).await? {
                            return Ok(Attempt::Abandoned);
                        }
                    }
                    // Loop: write the now empty batch so its offsets still advance.
                }
                ErrorClass::Fenced => {
                    tracing::warn!(error = %error, "batch fenced; reloading offsets");
                    self.shared.request_reseek();
                    return Ok(Attempt::Abandoned);
                }
                _ => return Err(error),
            }
        }
    }

    /// Logs and exports a change of the write limit.
    fn report_limit(&self, limit: Option<usize>, len: usize, elapsed: Duration) {
        self.metrics
            .write_record_limit
            .set(limit.map_or(0, |l| l as i64));
        match limit {
            Some(limit) => tracing::warn!(
                records = len,
                elapsed_ms = elapsed.as_millis() as u64,
                limit,
                "the store is slow for batches this large; writing at most `limit` records at a time"
            ),
            None => tracing::info!("the store keeps up again; batches are written whole"),
        }
    }

    fn after_commit(&self, batch: &Batch) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for r in &batch.write.records {
            if let Record::Event(e) = &r.record {
                let delay = (now_ms - e.persisted_at).max(0) as f64 / 1000.0;
                self.metrics.end_to_end_delay.observe(delay);
            }
        }
        // Kafka's group offsets only feed lag tools; the store holds the truth.
        if let Some(consumer) = &self.consumer {
            let mut tpl = TopicPartitionList::new();
            for o in &batch.write.offsets {
                let _ = tpl.add_partition_offset(
                    &batch.write.topic,
                    o.partition,
                    Offset::Offset(o.next),
                );
            }
            // Stored locally; librdkafka commits the latest stored offsets once a second.
            if let Err(error) = consumer.store_offsets(&tpl) {
                tracing::debug!(error = %error, "storing the group offsets (for lag tools) failed");
            }
        }
    }
}

/// The source chain of an error, `outer: inner: ...` (what the store actually said).
fn causes(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.join(": ")
}

fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Transient => "transient",
        ErrorClass::TimedOut => "timed-out",
        ErrorClass::Rejected => "rejected",
        ErrorClass::Fenced => "fenced",
        _ => "fatal",
    }
}

#[cfg(test)]
mod retry_tests;
