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
//!   ([`WriteLimit`]) that halves whenever a write times out or takes over half the sink's
//!   command timeout, and doubles back while writes are fast, so a slow store still sees
//!   progress instead of the same batch timing out for ever;
//! * fatal: the projector stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc};
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
/// Unlimited until a write times out or takes over half of the sink's command timeout; then
/// half of that write's records. A write of over half the limit that takes under an eighth of
/// the timeout doubles the limit again, until it reaches the largest batch the consumer cuts
/// and so binds nothing.
#[derive(Debug)]
pub(crate) struct WriteLimit {
    /// 0: no limit.
    records: AtomicUsize,
    /// The sink's command timeout; without one, only timeouts set the limit.
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

    /// A write of `len` records timed out, or came close: later writes take half as many.
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

    /// A write of `len` records took `elapsed`: shrink when it came near the timeout, grow
    /// when it was at the limit and fast. Returns the new limit when it changed.
    fn wrote(&self, len: usize, elapsed: Duration) -> Option<Option<usize>> {
        let timeout = self.timeout?;
        if elapsed > timeout / 2 && len > 1 {
            let before = self.records();
            let after = self.shrink(len);
            return (before != Some(after)).then_some(Some(after));
        }
        let limit = self.records()?;
        // Pieces of a batch halved down to the limit hold between half of it and all of it.
        if elapsed < timeout / 8 && len.saturating_mul(2) > limit {
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

/// The lanes' queues, shared by the writers. A writer holds a lane while it writes the batch
/// it took from it ([`LaneHold`]), so no two writers ever hold batches of one lane (and so of
/// one partition) at once, and a lane's batches commit in the order they were cut.
///
/// One lock covers every lane's receiver and hold flag, taken only for a scan and a release
/// (never across an `await`; a scan's `try_recv` may park the thread for the instant a
/// concurrent send takes to complete): a scan sees each lane either held by a writer that will
/// release it (and wake the others), or free. With a lock per lane, taken by the scans themselves, a
/// writer could see a lane that another writer was only scanning as held, wait for a release
/// that never came, and never end after the close.
pub(crate) struct Handoff {
    state: std::sync::Mutex<LaneStates>,
    /// Woken when a batch is queued, a lane is released, or the queues are closed.
    ready: Notify,
}

struct LaneStates {
    queues: Vec<mpsc::Receiver<Batch>>,
    held: Vec<bool>,
}

/// A lane held by the writer that took its batch; released (and the other writers woken) on
/// drop.
pub(crate) struct LaneHold<'a> {
    handoff: &'a Handoff,
    lane: usize,
}

impl Drop for LaneHold<'_> {
    fn drop(&mut self) {
        self.handoff.states().held[self.lane] = false;
        self.handoff.wake();
    }
}

impl Handoff {
    /// The writers' side of `receivers` (lane `i` is `receivers[i]`).
    pub(crate) fn new(receivers: Vec<mpsc::Receiver<Batch>>) -> Self {
        let held = vec![false; receivers.len()];
        Handoff {
            state: std::sync::Mutex::new(LaneStates {
                queues: receivers,
                held,
            }),
            ready: Notify::new(),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, LaneStates> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiting writers to look again (callable from any thread).
    pub(crate) fn wake(&self) {
        self.ready.notify_waiters();
    }

    /// The next batch of a lane no other writer holds, with that lane held until the returned
    /// [`LaneHold`] drops. The scan starts at lane `turn` (modulo the lanes) and `turn` moves
    /// past the lane taken, so a writer goes round the lanes. `None` once every queue is closed
    /// and empty and no lane is held.
    pub(crate) async fn next(&self, turn: &mut usize) -> Option<(usize, LaneHold<'_>, Batch)> {
        let first = *turn;
        // `Some(None)`: every queue is closed and empty and no lane is held.
        let taken = crate::wait::take_when(&self.state, &self.ready, |states| {
            let n = states.queues.len();
            let mut open = false;
            for i in 0..n {
                let lane = (first + i) % n;
                if states.held[lane] {
                    // Another writer is writing this lane's batch; it wakes us when done.
                    open = true;
                    continue;
                }
                match states.queues[lane].try_recv() {
                    Ok(batch) => {
                        states.held[lane] = true;
                        return Some(Some((lane, batch)));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => open = true,
                    Err(mpsc::error::TryRecvError::Disconnected) => {}
                }
            }
            if open {
                tracing::trace!(first, "no lane has a batch free to take; waiting");
                None
            } else {
                Some(None)
            }
        })
        .await;
        let (lane, batch) = taken?;
        *turn = lane + 1;
        Some((
            lane,
            LaneHold {
                handoff: self,
                lane,
            },
            batch,
        ))
    }
}

/// The consumer's side of the lanes' queues. Dropping it closes every queue and wakes the
/// writers, so they end even if the consumer thread unwinds. It holds the writers' side only
/// weakly: once every writer is gone, the receivers drop and a send reports
/// [`Handed::Closed`].
pub(crate) struct LaneSenders {
    queues: Vec<mpsc::Sender<Batch>>,
    handoff: Weak<Handoff>,
}

impl LaneSenders {
    /// `lanes` bounded queues of `capacity` batches each, and the writers' side of them.
    pub(crate) fn channel(lanes: usize, capacity: usize) -> (Self, Arc<Handoff>) {
        let (queues, receivers): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| mpsc::channel(capacity)).unzip();
        let handoff = Arc::new(Handoff::new(receivers));
        (
            LaneSenders {
                queues,
                handoff: Arc::downgrade(&handoff),
            },
            handoff,
        )
    }

    pub(crate) fn len(&self) -> usize {
        self.queues.len()
    }

    /// Lane `lane`'s queue (for its load).
    pub(crate) fn queue(&self, lane: usize) -> &mpsc::Sender<Batch> {
        &self.queues[lane]
    }

    /// Queues `batch` on lane `lane` if there is room, and wakes a free writer.
    pub(crate) fn try_send(&self, lane: usize, batch: Batch) -> Handed {
        match self.queues[lane].try_send(batch) {
            Ok(()) => {
                self.wake();
                Handed::Queued
            }
            Err(mpsc::error::TrySendError::Full(batch)) => Handed::Full(batch),
            Err(mpsc::error::TrySendError::Closed(_)) => Handed::Closed,
        }
    }

    fn wake(&self) {
        if let Some(handoff) = self.handoff.upgrade() {
            handoff.wake();
        }
    }
}

/// What [`LaneSenders::try_send`] did with a batch.
pub(crate) enum Handed {
    /// Queued for the writers.
    Queued,
    /// The lane's queue is full: the batch comes back.
    Full(Batch),
    /// Every writer is gone (their side of the queues dropped).
    Closed,
}

impl Drop for LaneSenders {
    fn drop(&mut self) {
        self.queues.clear();
        self.wake();
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A batch tagged with its lane and its place in the lane (in `generation`, unused here).
    fn tagged(lane: usize, seq: u64) -> Batch {
        Batch {
            generation: (lane as u64) << 32 | seq,
            ..Batch::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_share_the_lanes_one_batch_of_a_lane_at_a_time_in_order() {
        const LANES: usize = 3;
        const WRITERS: usize = 2;
        const PER_LANE: u64 = 60;
        let (senders, handoff) = LaneSenders::channel(LANES, 1);
        let busy: Arc<Vec<AtomicBool>> =
            Arc::new((0..LANES).map(|_| AtomicBool::new(false)).collect());
        let taken = Arc::new(StdMutex::new(Vec::new()));
        let mut writers = Vec::new();
        for index in 0..WRITERS {
            let (handoff, busy, taken) = (handoff.clone(), busy.clone(), taken.clone());
            writers.push(tokio::spawn(async move {
                let mut turn = index;
                while let Some((lane, hold, batch)) = handoff.next(&mut turn).await {
                    assert_eq!(
                        batch.generation >> 32,
                        lane as u64,
                        "batch came from its lane"
                    );
                    assert!(
                        !busy[lane].swap(true, Ordering::SeqCst),
                        "two writers held lane {lane} at once"
                    );
                    taken
                        .lock()
                        .unwrap()
                        .push((index, lane, batch.generation & 0xffff_ffff));
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    busy[lane].store(false, Ordering::SeqCst);
                    drop(hold);
                }
            }));
        }
        drop(handoff);
        // The consumer's side: round-robin over the lanes, retrying a full queue.
        let producer = tokio::task::spawn_blocking(move || {
            for seq in 0..PER_LANE {
                for lane in 0..LANES {
                    let mut batch = tagged(lane, seq);
                    loop {
                        match senders.try_send(lane, batch) {
                            Handed::Queued => break,
                            Handed::Full(b) => {
                                batch = b;
                                std::thread::sleep(Duration::from_micros(50));
                            }
                            Handed::Closed => panic!("queue closed"),
                        }
                    }
                }
            }
            // Dropping the senders must end every writer, even one waiting on a held lane.
        });
        producer.await.unwrap();
        for writer in writers {
            tokio::time::timeout(Duration::from_secs(10), writer)
                .await
                .expect("a writer did not end once the queues closed")
                .unwrap();
        }
        let taken = taken.lock().unwrap();
        assert_eq!(
            taken.len(),
            LANES * PER_LANE as usize,
            "every batch taken once"
        );
        for lane in 0..LANES {
            let seqs: Vec<u64> = taken.iter().filter(|t| t.1 == lane).map(|t| t.2).collect();
            assert_eq!(
                seqs,
                (0..PER_LANE).collect::<Vec<_>>(),
                "lane {lane} in order"
            );
        }
        for index in 0..WRITERS {
            let lanes: std::collections::BTreeSet<usize> =
                taken.iter().filter(|t| t.0 == index).map(|t| t.1).collect();
            assert!(
                lanes.len() > 1,
                "writer {index} wrote batches of lanes {lanes:?} only; the writers share the lanes"
            );
        }
    }

    #[tokio::test]
    async fn no_lane_waits_for_the_others_to_run_dry() {
        const LANES: usize = 3;
        const PER_LANE: u64 = 10;
        let (senders, handoff) = LaneSenders::channel(LANES, PER_LANE as usize);
        for seq in 0..PER_LANE {
            for lane in 0..LANES {
                assert!(matches!(
                    senders.try_send(lane, tagged(lane, seq)),
                    Handed::Queued
                ));
            }
        }
        drop(senders);
        // Two writers taking turns, each holding the lane of its last batch meanwhile.
        let mut turn = [0, 1];
        let mut held: [Option<(usize, LaneHold<'_>)>; 2] = [None, None];
        let mut order = Vec::new();
        // (Only the first rounds: with every lane still full, a turn never waits on the lane
        // the other writer holds.)
        for step in 0..2 * LANES {
            let w = step % 2;
            held[w] = None;
            let (lane, queue, _) = handoff.next(&mut turn[w]).await.expect("batches left");
            order.push(lane);
            held[w] = Some((lane, queue));
        }
        for lane in 0..LANES {
            assert!(
                order.contains(&lane),
                "lane {lane} not served in the first {} batches: {order:?}",
                2 * LANES
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_woken_by_the_close_all_end_even_while_the_others_scan() {
        // The close wakes every waiting writer at once, and they scan the lanes at the same
        // time: one writer's scan must never look like a lane held for writing to the other,
        // or that writer waits for a release that never comes.
        for round in 0..2000 {
            let (senders, handoff) = LaneSenders::channel(3, 1);
            let mut writers = Vec::new();
            for index in 0..2 {
                let handoff = handoff.clone();
                writers.push(tokio::spawn(async move {
                    let mut turn = index;
                    while handoff.next(&mut turn).await.is_some() {}
                }));
            }
            drop(handoff);
            tokio::task::yield_now().await;
            drop(senders);
            for writer in writers {
                tokio::time::timeout(Duration::from_secs(5), writer)
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {round}: a writer did not end after the close")
                    })
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_writer_waiting_on_a_held_lane_ends_when_it_is_released_after_the_close() {
        let (senders, handoff) = LaneSenders::channel(2, 1);
        assert!(matches!(senders.try_send(0, tagged(0, 0)), Handed::Queued));
        let (lane, hold, _) = handoff.next(&mut 0).await.expect("a batch is queued");
        assert_eq!(lane, 0);
        let other = handoff.clone();
        let waiting =
            tokio::spawn(async move { other.next(&mut 1).await.map(|(lane, _, _)| lane) });
        drop(senders);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a writer ended while lane 0 was still held: a held lane is not closed"
        );
        drop(hold);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the release did not wake the waiting writer")
            .unwrap();
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn a_send_reports_closed_once_every_writer_is_gone() {
        let (senders, handoff) = LaneSenders::channel(1, 1);
        assert!(matches!(senders.try_send(0, tagged(0, 0)), Handed::Queued));
        drop(handoff);
        assert!(matches!(senders.try_send(0, tagged(0, 1)), Handed::Closed));
    }

    #[tokio::test]
    async fn a_writer_waiting_for_work_ends_when_the_queues_close() {
        let (senders, handoff) = LaneSenders::channel(2, 1);
        let waiting =
            tokio::spawn(async move { handoff.next(&mut 0).await.map(|(lane, _, _)| lane) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(senders);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting writer was not woken by the close")
            .unwrap();
        assert_eq!(got, None);
    }
}
