//! The consumer thread: polls Kafka, decodes, checks and batches records, and hands batches to
//! the writers over one bounded queue per lane.
//!
//! The assigned partitions are dealt out over the lanes ([`Lanes`];
//! [`ProjectorConfig::lanes`], one more than the writers). The writers share the lanes
//! ([`crate::lanes::Handoff`]) but hold one lane at a time: a partition's batches are written
//! one at a time, in order, and two writers never hold batches of the same partition, so their
//! transactions commit independently (the sinks already serialize a parent and a child written
//! at once, as they do for two projectors of one group).
//!
//! Invariants:
//! * On assignment, partitions start at the offsets stored in the sink (never at Kafka's group
//!   offsets, which only feed lag tools). The offsets are loaded inside the rebalance callback
//!   ([`crate::rebalance`]), before `assign`, so no record is fetched from a wrong position.
//! * On revoke (and shutdown), the pending batch is dropped unwritten, the generation moves on
//!   (queued batches of the old assignment are skipped by the writers), and the callback waits
//!   for the in-flight batches (at most `drain_timeout`) before letting the partitions go.
//! * A fence seen by one writer moves the generation too; the consumer waits for the other
//!   writers' in-flight batches, then reloads every stored offset and seeks.
//! * When a lane's queue is full its partitions are paused, not buffered (the other
//!   lanes go on); polling goes on so the
//!   group membership and rebalances keep working. Every new assignment is resumed explicitly:
//!   librdkafka keeps a partition's pause flag across an eager revoke and re-assign.
//!
//! It runs on its own OS thread: librdkafka callbacks may block there without stalling the
//! async runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xclog_schema::Record;

use crate::batch::{Admit, Batch, CutPolicy, DeadLetter, Lanes, WriterLoad};
use crate::config::ProjectorConfig;
use crate::kafka_record::ReadRecord;
use crate::lanes::{Assignment, Handed, LaneSenders, Shared};
use crate::metrics::{KindLabel, Metrics, PartitionLabel};
use crate::rebalance::{OffsetLoader, ProjectorContext};
use crate::sink::{SinkRecord, SourcePosition};
use crate::watermarks::{self, Watermarks};
/// The sink's pre-write check of a decoded record.
pub(crate) type RecordCheck = Arc<dyn Fn(&Record) -> Result<(), String> + Send + Sync>;

/// The longest the consumer waits in one poll.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How often a lane with a pending batch and a busy writer looks again whether the writer is
/// idle (it cannot be woken from inside librdkafka's poll).
const WRITER_RECHECK: Duration = Duration::from_millis(2);

/// Where a lane's batches stand (its queue, and its batches not finished yet), for the cut of
/// its pending batch.
fn writer_load(queue: &mpsc::Sender<Batch>, outstanding: usize) -> WriterLoad {
    if queue.capacity() < queue.max_capacity() {
        WriterLoad::Queued
    } else if outstanding > 0 {
        WriterLoad::Writing
    } else {
        WriterLoad::Idle
    }
}

/// Everything the consumer thread needs.
pub(crate) struct ConsumerLoop {
    pub(crate) consumer: Arc<BaseConsumer<ProjectorContext>>,
    pub(crate) shared: Arc<Shared>,
    /// One queue per lane; lane `i`'s batches go to queue `i`, whichever writer takes them.
    pub(crate) queues: LaneSenders,
    pub(crate) check: RecordCheck,
    pub(crate) loader: OffsetLoader,
    pub(crate) config: ProjectorConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) watermarks: Arc<Watermarks>,
    pub(crate) shutdown: CancellationToken,
}

/// What the consumer loop changes as it goes.
struct LoopState {
    /// Each lane's pending batch and read positions.
    lanes: Lanes,
    /// The generation of the assignment installed last.
    generation: u64,
    /// Cut batches their lane's full queue had no room for yet.
    held: Held,
    /// Partitions not read on, and why.
    stopped: Stopped,
    /// When the lag is measured next.
    next_lag_check: Instant,
}

impl LoopState {
    fn new(config: &ProjectorConfig, lanes: usize, metrics: Arc<Metrics>) -> Self {
        let lanes = Lanes::new(
            config.topic.clone(),
            lanes,
            CutPolicy {
                max_records: config.batch_max_records,
                max_bytes: config.batch_max_bytes,
                max_latency: config.batch_max_latency,
                linger: config.batch_linger,
            },
        );
        let held = Held::new(lanes.len());
        LoopState {
            lanes,
            generation: 0,
            held,
            stopped: Stopped::new(config.topic.clone(), metrics),
            next_lag_check: Instant::now(),
        }
    }

    /// Starts the assignment of generation `generation` from its stored offsets: what was
    /// pending, held or stopped belongs to the old one. The partitions are read again from
    /// the stored offsets, so a stopped partition stops again at the same record if nothing
    /// changed.
    fn install(&mut self, generation: u64, assignment: &Assignment) {
        self.generation = generation;
        self.lanes.assign(generation, assignment);
        self.held.forget();
        self.stopped.clear();
    }
}

/// What handing the cut batches over leaves the loop to do.
enum HandOver {
    /// Every writer is gone: stop.
    Closed,
    /// A lane cut a batch: hand it over before reading more.
    Cut,
    /// Poll for at most this long.
    Poll(Duration),
}

impl ConsumerLoop {
    /// Runs until shutdown; then drops what is pending, waits for the in-flight batch and leaves
    /// the group.
    ///
    /// Each turn takes completions before new work: changes to the assignment first, then the
    /// cut batches go to the writers, and only then is one more message polled.
    pub(crate) fn run(self) {
        let mut state = LoopState::new(&self.config, self.queues.len(), Arc::clone(&self.metrics));
        while !self.shutdown.is_cancelled() {
            self.install_changes(&mut state);
            let poll_for = match self.hand_over(&mut state) {
                HandOver::Closed => break,
                HandOver::Cut => continue,
                HandOver::Poll(wait) => wait,
            };
            if let Err(error) = self.take_one(&mut state, poll_for) {
                tracing::warn!(error = %error, "kafka consumer error");
                continue;
            }
            self.report_lag(&mut state);
        }
        self.leave(state);
    }

    /// Installs what a rebalance (inside poll) or a fence changed.
    fn install_changes(&self, state: &mut LoopState) {
        let (new_assignment, reseek) = self.shared.take_changes();
        if let Some((generation, assignment)) = new_assignment {
            // The rebalance callback resumed the whole new assignment.
            state.install(generation, &assignment);
        }
        if reseek {
            self.reseek(state);
        }
    }

    /// After a fence: reloads every stored offset and seeks to it; a partition whose seek
    /// fails is stopped.
    fn reseek(&self, state: &mut LoopState) {
        let topic = &self.config.topic;
        // Let the other writers finish (or skip) what they hold first, so the offsets
        // reloaded below include their commits.
        self.shared.wait_drained(self.config.drain_timeout);
        let was_stopped = state.stopped.clear();
        let (g, unsought) = reseek_all(
            |partition, offset| seek(&self.consumer, topic, partition, offset),
            &self.shared,
            &self.loader,
            &mut state.lanes,
            &self.shutdown,
        );
        state.generation = g;
        for lane in state.held.forget() {
            resume(
                &self.consumer,
                topic,
                &state.lanes.lane(lane).partitions(),
                &state.stopped,
            );
        }
        resume(&self.consumer, topic, &was_stopped, &state.stopped);
        for partition in stop_unsought(&mut state.stopped, unsought) {
            pause_stopped(&self.consumer, topic, partition);
        }
    }

    /// Hands each lane's cut batch to the writers, and cuts the pending batches that are due;
    /// a lane whose queue is full has its partitions paused instead of buffering.
    fn hand_over(&self, state: &mut LoopState) -> HandOver {
        let mut cut = false;
        let mut poll_for = POLL_MAX;
        for lane in 0..state.lanes.len() {
            if !self.send_held(state, lane) {
                return HandOver::Closed;
            }
            if state.held.ready[lane].is_some() {
                continue;
            }
            // When the pending batch is cut depends on what the writer does: see CutPolicy.
            let load = writer_load(self.queues.queue(lane), self.shared.outstanding(lane));
            match state.lanes.lane(lane).cut_in(Instant::now(), load) {
                Some(Duration::ZERO) => {
                    state.held.ready[lane] = state.lanes.lane_mut(lane).cut();
                    cut = true;
                }
                Some(wait) => poll_for = poll_for.min(wait),
                None => {}
            }
            if load != WriterLoad::Idle && state.lanes.lane(lane).pending_len() > 0 {
                poll_for = poll_for.min(WRITER_RECHECK);
            }
        }
        if cut {
            HandOver::Cut
        } else {
            HandOver::Poll(poll_for)
        }
    }

    /// Queues lane `lane`'s held batch, if it has one: the lane's partitions resume once it is
    /// queued and pause while the queue is full. False once every writer is gone.
    fn send_held(&self, state: &mut LoopState, lane: usize) -> bool {
        let Some(batch) = state.held.ready[lane].take() else {
            return true;
        };
        let topic = &self.config.topic;
        self.shared.batch_sent(lane);
        match self.queues.try_send(lane, batch) {
            Handed::Queued => {
                if state.held.paused[lane] {
                    resume(
                        &self.consumer,
                        topic,
                        &state.lanes.lane(lane).partitions(),
                        &state.stopped,
                    );
                    state.held.paused[lane] = false;
                }
            }
            Handed::Full(batch) => {
                self.shared.batch_done(lane);
                state.held.ready[lane] = Some(batch);
                if !state.held.paused[lane] {
                    pause(&self.consumer, topic, &state.lanes.lane(lane).partitions());
                    state.held.paused[lane] = true;
                }
            }
            Handed::Closed => {
                self.shared.batch_done(lane);
                return false;
            }
        }
        true
    }

    /// Polls for at most `wait` and takes the message, if one came.
    fn take_one(&self, state: &mut LoopState, wait: Duration) -> KafkaResult<()> {
        let Some(result) = self.consumer.poll(wait) else {
            return Ok(());
        };
        let message = result?;
        // The poll may have run a rebalance callback: install it before this record.
        if self.shared.generation() != state.generation
            && let Some((generation, assignment)) = self.shared.take_assignment()
        {
            state.install(generation, &assignment);
        }
        self.metrics.records_consumed.inc();
        self.take_message(state, &message);
        Ok(())
    }

    /// One consumed record: checked for a gap before it, decoded, checked, and pushed to its
    /// lane's pending batch or dead-lettered; or its partition is stopped before it.
    fn take_message(&self, state: &mut LoopState, message: &BorrowedMessage<'_>) {
        let ConsumerLoop {
            consumer,
            check,
            config,
            metrics,
            ..
        } = self;
        let LoopState { lanes, stopped, .. } = state;
        let topic = &config.topic;
        let partition = message.partition();
        let offset = message.offset();
        if stopped.contains(partition) || lanes.would_admit(partition, offset) != Admit::Accept {
            return;
        }
        if let Some(next) = lanes.next_offset(partition).filter(|&n| offset > n) {
            // Offsets are not dense (transaction markers take offsets too), so a jump alone is no
            // loss: records were lost only if the log now starts after the expected offset.
            match missing_before(consumer, topic, partition, next, offset) {
                Ok(None) => {}
                Ok(Some(missing_end)) if config.accept_offset_gaps => {
                    tracing::warn!(
                        topic = %topic,
                        partition,
                        missing_from = next,
                        missing_to = missing_end - 1,
                        "records deleted before they were projected; skipping them as configured \
                         (--accept-offset-gaps)"
                    );
                    metrics
                        .offsets_skipped
                        .get_or_create(&PartitionLabel { partition })
                        .inc_by(u64::try_from(missing_end - next).unwrap_or(0));
                }
                Ok(Some(missing_end)) => {
                    stopped.stop(
                        consumer,
                        partition,
                        format!(
                            "offsets {next}..={} were deleted from the topic before they were \
                             projected (the log now starts at {missing_end}); their records are \
                             lost to this store. Rebuild from a source that has them, or restart \
                             with --accept-offset-gaps to skip them",
                            missing_end - 1
                        ),
                    );
                    return;
                }
                Err(error) => {
                    stopped.stop(
                        consumer,
                        partition,
                        format!(
                            "the next record is at offset {offset}, not {next}, and the start of \
                             the log could not be read to tell a gap from transaction markers \
                             ({error}); restart the projector to try again"
                        ),
                    );
                    return;
                }
            }
        }
        let read = ReadRecord::from_message(message);
        let decoded = read.decode(&config.limits);
        if let Err(error) = &decoded
            && error.is_unsupported_version()
        {
            stopped.stop(
                consumer,
                partition,
                format!(
                    "the record at offset {offset} is of a newer schema version than this \
                     projector reads ({error}); it was not dead-lettered: upgrade the projector \
                     and it goes on from this record"
                ),
            );
            return;
        }
        if lanes.admit(partition, offset) != Admit::Accept {
            return;
        }
        let dead = |kind: &'static str, reason: String| DeadLetter {
            raw: read.raw.clone(),
            partition,
            offset,
            kind,
            reason,
        };
        match decoded {
            Err(error) => {
                tracing::warn!(partition, offset, error = %error, "record does not decode; dead-lettering it");
                metrics
                    .dead_lettered
                    .get_or_create(&KindLabel { kind: "decode" })
                    .inc();
                lanes.push_dead_letter(dead("decode", error.to_string()));
            }
            Ok(decoded) => match check(&decoded.record) {
                Err(reason) => {
                    tracing::warn!(partition, offset, reason = %reason, "record fails validation; dead-lettering it");
                    metrics
                        .dead_lettered
                        .get_or_create(&KindLabel { kind: "validation" })
                        .inc();
                    lanes.push_dead_letter(dead("validation", reason));
                }
                Ok(()) => lanes.push(
                    SinkRecord {
                        record: decoded.record,
                        source: SourcePosition {
                            topic: topic.clone(),
                            partition,
                            offset,
                        },
                    },
                    read.raw,
                ),
            },
        }
    }

    /// Every half second: the lag of each partition, and whether the projector is ready.
    fn report_lag(&self, state: &mut LoopState) {
        if Instant::now() >= state.next_lag_check {
            state.next_lag_check = Instant::now() + Duration::from_millis(500);
            update_lag(
                &self.watermarks,
                &state.lanes,
                &self.shared,
                &self.metrics,
                self.config.ready_max_lag,
            );
            if state.stopped.any() {
                self.metrics.set_ready(false);
            }
        }
    }

    /// Shutdown: stop fetching, drop what was not handed over, let the writers finish, leave
    /// the group.
    fn leave(self, state: LoopState) {
        let LoopState { held, .. } = state;
        drop(held);
        let ConsumerLoop {
            consumer,
            shared,
            queues,
            config,
            metrics,
            ..
        } = self;
        drop(queues);
        let drained = shared.wait_writers_done(config.drain_timeout);
        tracing::info!(drained, "consumer stopping; leaving the group");
        metrics.set_ready(false);
        consumer.unsubscribe();
        // Dropping the last handle closes the consumer (runs the final revoke on this thread).
        drop(consumer);
    }
}

/// When records before `offset` (the next expected at `next`) were deleted unread: the end of
/// the missing range (the log's first offset), or `None` when the log still starts at or
/// before `next` (the jump is transaction markers or aborted records).
fn missing_before(
    consumer: &BaseConsumer<ProjectorContext>,
    topic: &str,
    partition: i32,
    next: i64,
    offset: i64,
) -> KafkaResult<Option<i64>> {
    let (low, _high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
    Ok((next < low).then_some(low.min(offset)))
}

/// Partitions the consumer stopped reading: paused, skipped when already-fetched records come,
/// reported in `/readyz` and `xclog_projector_partition_stopped`, and read again from the stored
/// offset on the next assignment or reseek.
struct Stopped {
    topic: String,
    partitions: BTreeSet<i32>,
    metrics: Arc<Metrics>,
}

/// Pauses a stopped partition (a failure is logged: the stop still holds in the books).
fn pause_stopped(consumer: &BaseConsumer<ProjectorContext>, topic: &str, partition: i32) {
    if let Err(error) = consumer.pause(&tpl_of(topic, &[partition])) {
        tracing::warn!(error = %error, partition, "pause of the stopped partition failed");
    }
}

impl Stopped {
    fn new(topic: String, metrics: Arc<Metrics>) -> Self {
        Self {
            topic,
            partitions: BTreeSet::new(),
            metrics,
        }
    }

    fn contains(&self, partition: i32) -> bool {
        self.partitions.contains(&partition)
    }

    fn any(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// Stops reading `partition` for `reason` (logged as an error).
    fn stop(&mut self, consumer: &BaseConsumer<ProjectorContext>, partition: i32, reason: String) {
        pause_stopped(consumer, &self.topic, partition);
        self.record(partition, reason);
    }

    /// Counts `partition` as stopped for `reason`: logged as an error, named by `/readyz`,
    /// and 1 in the stopped-partition gauge. The caller pauses it.
    fn record(&mut self, partition: i32, reason: String) {
        tracing::error!(topic = %self.topic, partition, reason = %reason, "stopped reading the partition");
        self.partitions.insert(partition);
        self.metrics.stop_partition(partition, reason);
    }

    /// Forgets every stop (the partitions are read again); returns the partitions that were
    /// stopped.
    fn clear(&mut self) -> Vec<i32> {
        let was: Vec<i32> = std::mem::take(&mut self.partitions).into_iter().collect();
        for &p in &was {
            self.metrics.clear_stopped(p);
        }
        was
    }
}

/// Per lane: a cut batch its writer's queue had no room for, and whether the lane's
/// partitions are paused because of it.
struct Held {
    ready: Vec<Option<Batch>>,
    paused: Vec<bool>,
}

impl Held {
    fn new(lanes: usize) -> Self {
        Self {
            ready: (0..lanes).map(|_| None).collect(),
            paused: vec![false; lanes],
        }
    }

    /// Drops every held batch (its records are fetched again from the offsets the consumer
    /// restarts from) and clears every pause; returns the lanes that were paused, for a caller
    /// whose partitions stay assigned and must be resumed.
    fn forget(&mut self) -> Vec<usize> {
        self.ready.iter_mut().for_each(|r| *r = None);
        let was_paused = (0..self.paused.len()).filter(|&l| self.paused[l]).collect();
        self.paused.iter_mut().for_each(|p| *p = false);
        was_paused
    }
}

fn tpl_of(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    tpl
}

fn pause(consumer: &BaseConsumer<ProjectorContext>, topic: &str, partitions: &[i32]) {
    if let Err(error) = consumer.pause(&tpl_of(topic, partitions)) {
        tracing::warn!(error = %error, "pause failed");
    } else {
        tracing::debug!(?partitions, "writer busy; its partitions paused");
    }
}

/// Resumes `partitions`, except those stopped.
fn resume(
    consumer: &BaseConsumer<ProjectorContext>,
    topic: &str,
    partitions: &[i32],
    stopped: &Stopped,
) {
    let partitions: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|&p| !stopped.contains(p))
        .collect();
    if partitions.is_empty() {
        return;
    }
    if let Err(error) = consumer.resume(&tpl_of(topic, &partitions)) {
        tracing::warn!(error = %error, "resume failed");
    }
}

/// After a fence: reload stored offsets of every assigned partition and seek to them. Returns
/// the generation and the partitions whose seek failed (partition, offset, error).
fn reseek_all(
    seek: impl Fn(i32, Offset) -> KafkaResult<()>,
    shared: &Shared,
    loader: &OffsetLoader,
    lanes: &mut Lanes,
    shutdown: &CancellationToken,
) -> (u64, Vec<(i32, String, String)>) {
    let partitions = lanes.partitions();
    let mut backoff = Duration::from_millis(100);
    let stored = loop {
        match loader(&partitions) {
            Ok(m) => break m,
            Err(error)
                if !shutdown.is_cancelled() && error.class() != crate::sink::ErrorClass::Fatal =>
            {
                tracing::warn!(error = %error, "cannot reload offsets after a fence; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot reload offsets after a fence; stopping");
                shutdown.cancel();
                break HashMap::new();
            }
        }
    };
    let mut assignment = BTreeMap::new();
    let mut unsought = Vec::new();
    for p in partitions {
        let offset = stored.get(&p).copied();
        let position = offset.map_or(Offset::Beginning, Offset::Offset);
        // A seek can fail while the partition's fetcher is between states; try a few times.
        let mut result = seek(p, position);
        for _ in 0..3 {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            result = seek(p, position);
        }
        if let Err(error) = result {
            let at = offset.map_or_else(|| "the beginning".to_owned(), |o| o.to_string());
            unsought.push((p, at, error.to_string()));
        }
        assignment.insert(p, offset);
    }
    tracing::warn!(partitions = ?assignment, "fenced: reloaded stored offsets and sought");
    let generation = shared.generation();
    lanes.assign(generation, &assignment);
    (generation, unsought)
}

/// Stops each partition whose seek failed after a fence, since reading on from wherever the
/// consumer was would skip or repeat records; returns the partitions to pause.
fn stop_unsought(stopped: &mut Stopped, unsought: Vec<(i32, String, String)>) -> Vec<i32> {
    unsought
        .into_iter()
        .map(|(partition, offset, error)| {
            stopped.record(
                partition,
                format!(
                    "cannot seek to the stored offset {offset} after a fence ({error}); \
                     restart the projector to read it from there"
                ),
            );
            partition
        })
        .collect()
}

fn seek(
    consumer: &BaseConsumer<ProjectorContext>,
    topic: &str,
    partition: i32,
    offset: Offset,
) -> KafkaResult<()> {
    consumer.seek(topic, partition, offset, Duration::from_secs(5))
}

fn update_lag(
    watermarks: &Watermarks,
    lanes: &Lanes,
    shared: &Shared,
    metrics: &Metrics,
    ready_max_lag: i64,
) {
    // Ready only once an assignment was received *and* installed by this loop, and every
    // assigned partition has a fresh watermark within `ready_max_lag` of what was read.
    let mut ready = shared.assignment_installed();
    let now = Instant::now();
    for (partition, position) in lanes.read_positions() {
        match watermarks.fresh(partition, now) {
            Some(mark) => {
                let lag = watermarks::lag(position, mark);
                metrics
                    .partition_lag
                    .get_or_create(&PartitionLabel { partition })
                    .set(lag);
                ready &= lag <= ready_max_lag;
            }
            None => ready = false,
        }
    }
    metrics.set_ready(ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_clears_every_pause_and_names_the_lanes_that_were_paused() {
        let mut held = Held::new(4);
        held.paused[1] = true;
        held.paused[3] = true;
        assert_eq!(held.forget(), vec![1, 3]);
        assert_eq!(held.paused, vec![false; 4]);
        assert!(held.ready.iter().all(Option::is_none));
        assert_eq!(held.forget(), Vec::<usize>::new());
    }

    #[test]
    fn a_partition_whose_seek_fails_after_a_fence_is_stopped_naming_its_stored_offset_and_the_others_read_on()
     {
        let policy = CutPolicy {
            max_records: 10,
            max_bytes: usize::MAX,
            max_latency: Duration::from_secs(60),
            linger: Duration::from_secs(60),
        };
        let mut lanes = Lanes::new("t", 2, policy);
        lanes.assign(1, &BTreeMap::from([(0, Some(3)), (1, Some(4)), (2, None)]));
        let shared = Shared::new(2, 1);
        let loader: OffsetLoader = Arc::new(|_: &[i32]| Ok(HashMap::from([(0, 10), (1, 20)])));
        let sought = std::sync::Mutex::new(Vec::new());
        let seek = |partition: i32, offset: Offset| {
            sought.lock().unwrap().push((partition, offset));
            if partition == 1 {
                Err(rdkafka::error::KafkaError::Seek(
                    "Local: Erroneous state".to_owned(),
                ))
            } else {
                Ok(())
            }
        };

        let (_, unsought) = reseek_all(
            seek,
            &shared,
            &loader,
            &mut lanes,
            &CancellationToken::new(),
        );

        let sought = sought.into_inner().unwrap();
        assert_eq!(
            sought.iter().filter(|(p, _)| *p == 1).count(),
            4,
            "a failing seek is tried again a few times: {sought:?}"
        );
        assert!(sought.contains(&(0, Offset::Offset(10))), "{sought:?}");
        assert!(sought.contains(&(2, Offset::Beginning)), "{sought:?}");
        // Every partition reads on from its stored offset in the books, the failed one too
        // (it is paused, so nothing is read from wherever the consumer really is).
        assert_eq!(lanes.next_offset(0), Some(10));
        assert_eq!(lanes.next_offset(1), Some(20));

        let metrics = Metrics::new();
        let mut stopped = Stopped::new("t".to_owned(), metrics.clone());
        assert_eq!(stop_unsought(&mut stopped, unsought), vec![1]);
        assert!(stopped.contains(1) && !stopped.contains(0) && !stopped.contains(2));
        let blockers = metrics.blockers();
        assert_eq!(blockers.len(), 1, "{blockers:?}");
        assert!(
            blockers[0].starts_with(
                "partition 1 stopped: cannot seek to the stored offset 20 after a fence"
            ) && blockers[0].contains("Erroneous state")
                && blockers[0].contains("restart the projector"),
            "{blockers:?}"
        );
    }
}
