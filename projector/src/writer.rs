//! The writer task: takes batches from the bounded queue and commits them through the sink.
//!
//! Per batch: dead letters are delivered first, then `Sink::write` commits rows and offsets in
//! one transaction, then (only for lag tools) the offsets are committed to the Kafka group.
//! Every failure goes through the sink's classifier:
//! * transient: same batch again after a backoff (never skipped), until it commits, the
//!   assignment changes, or shutdown abandons it;
//! * rejected: the batch is split in halves until the offending record is alone, which is
//!   dead-lettered; its offset still advances in the same transaction as the neighbours;
//! * fenced: the batch is dropped and the consumer reloads offsets and seeks;
//! * fatal: the projector stops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xclog_schema::Record;

use crate::batch::{Batch, DeadLetter};
use crate::consumer::{ProjectorContext, Shared};
use crate::dead_letter::{DeadLetterError, DeadLetterProducer};
use crate::metrics::{KindLabel, Metrics};
use crate::sink::{ErrorClass, Sink, SinkError};

pub(crate) struct Writer<S> {
    pub(crate) sink: Arc<S>,
    pub(crate) shared: Arc<Shared>,
    /// This writer's index: its lane, and its count in [`Shared`].
    pub(crate) lane: usize,
    pub(crate) dead_letters: DeadLetterProducer,
    pub(crate) consumer: Option<Arc<BaseConsumer<ProjectorContext>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) shutdown: CancellationToken,
}

enum Attempt {
    Done,
    Abandoned,
    Split(Box<(Batch, Batch)>),
}

impl<S: Sink> Writer<S> {
    /// Runs until the queue closes. A fatal sink error stops the projector (cancels `shutdown`).
    pub(crate) async fn run(mut self, mut queue: mpsc::Receiver<Batch>) -> Result<(), SinkError> {
        let mut result = Ok(());
        while let Some(batch) = queue.recv().await {
            if result.is_ok()
                && batch.generation == self.shared.generation()
                && let Err(error) = self.commit(batch).await
            {
                tracing::error!(error = %error, "fatal store error; stopping the projector");
                self.shutdown.cancel();
                result = Err(error);
            }
            self.shared.batch_done(self.lane);
        }
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
            Err(other) => Err(SinkError::Fatal {
                context: "sending a dead letter",
                source: Box::new(other),
            }),
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
            let error = match self.sink.write(&batch.write).await {
                Ok(outcome) => {
                    self.metrics
                        .rows_written
                        .get_or_create(&KindLabel { kind: "event" })
                        .inc_by(outcome.events_inserted);
                    self.metrics
                        .rows_written
                        .get_or_create(&KindLabel { kind: "snapshot" })
                        .inc_by(outcome.snapshots_applied);
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
                ErrorClass::Transient => {
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
            if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %error, "group offset commit (for lag tools) failed");
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
        ErrorClass::Rejected => "rejected",
        ErrorClass::Fenced => "fenced",
        _ => "fatal",
    }
}
