//! The hand-off between the consumer thread and the writer tasks: one bounded queue per lane
//! ([`LaneSenders`] on the consumer's side, [`Handoff`] on the writers'), and the state both
//! sides and the rebalance callback share ([`Shared`]: the generation, a new assignment to
//! install, the batches not finished yet per lane).
//!
//! Invariants:
//! * A lane's batches are taken in the order they were queued, and no two writers hold batches
//!   of one lane at once ([`LaneHold`]).
//! * A batch is counted in [`Shared`] from before it is queued until a writer is done with it,
//!   so whoever waits for the batches to drain (revoke, reseek, shutdown) never misses one.
//! * Dropping the consumer's side closes every queue and wakes the writers, so they end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::batch::Batch;

/// A new assignment: partition -> stored next offset (`None`: nothing stored).
pub(crate) type Assignment = BTreeMap<i32, Option<i64>>;

/// State shared by the consumer thread, its rebalance callback and the writer tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    changed: Condvar,
    /// Per lane, the batches handed over and not finished yet (queued or being written):
    /// counted up before a batch is sent, down when a writer is done with it. Atomics, so the
    /// consumer reads a writer's load for every cut without the lock; their sum is what revoke,
    /// reseek and shutdown wait to drain.
    outstanding: Box<[AtomicUsize]>,
    /// How many writer tasks there are (each reports [`Shared::writer_done`] once).
    writers: usize,
}

#[derive(Debug, Default)]
struct SharedState {
    generation: u64,
    /// A new assignment (partition -> stored offset) for the consumer loop to install.
    assignment: Option<Assignment>,
    assigned_once: bool,
    reseek: bool,
    writers_done: usize,
}

impl SharedState {
    /// The new assignment, if any, with the generation it belongs to.
    fn take_assignment(&mut self) -> Option<(u64, Assignment)> {
        self.assignment.take().map(|a| (self.generation, a))
    }
}

impl Shared {
    /// Shared state for `lanes` lanes written by `writers` writers.
    pub(crate) fn new(lanes: usize, writers: usize) -> Self {
        Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            outstanding: (0..lanes).map(|_| AtomicUsize::new(0)).collect(),
            writers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A poisoned lock means a thread panicked while holding it; the state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The rebalance callback assigned partitions, starting at their stored offsets: a new
    /// generation, and an assignment for the consumer loop to install (any reseek asked for
    /// before is moot, the offsets were just loaded).
    pub(crate) fn assigned(&self, assignment: Assignment) {
        let mut s = self.lock();
        s.generation += 1;
        s.assignment = Some(assignment);
        s.assigned_once = true;
        s.reseek = false;
    }

    /// The partitions were revoked or lost: a new generation, and an empty assignment for the
    /// consumer loop to install.
    pub(crate) fn unassigned(&self) {
        let mut s = self.lock();
        s.generation += 1;
        s.assignment = Some(BTreeMap::new());
    }

    /// What changed since the consumer loop last looked, taken in one step: a new assignment
    /// (with its generation) and whether a writer asked for a reseek.
    pub(crate) fn take_changes(&self) -> (Option<(u64, Assignment)>, bool) {
        let mut s = self.lock();
        let reseek = std::mem::take(&mut s.reseek);
        (s.take_assignment(), reseek)
    }

    /// A new assignment left by the rebalance callback, with its generation.
    pub(crate) fn take_assignment(&self) -> Option<(u64, Assignment)> {
        self.lock().take_assignment()
    }

    /// An assignment was received and the consumer loop has installed it.
    pub(crate) fn assignment_installed(&self) -> bool {
        let s = self.lock();
        s.assigned_once && s.assignment.is_none()
    }

    /// A batch of lane `lane` is about to be queued.
    pub(crate) fn batch_sent(&self, lane: usize) {
        self.outstanding[lane].fetch_add(1, Ordering::AcqRel);
    }

    /// A writer finished (or skipped) one batch of lane `lane`, or the consumer took one back.
    pub(crate) fn batch_done(&self, lane: usize) {
        let _ = self.outstanding[lane]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        // Notify under the lock: a waiter checks the counts with the lock held, so it either
        // sees this decrement or is already waiting when the notification comes.
        let _s = self.lock();
        self.changed.notify_all();
    }

    /// Batches of lane `lane` queued or being written.
    pub(crate) fn outstanding(&self, lane: usize) -> usize {
        self.outstanding[lane].load(Ordering::Acquire)
    }

    /// Waits (at most `timeout`) until no writer holds a batch; false on timeout.
    pub(crate) fn wait_drained(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |_| {
            self.outstanding
                .iter()
                .all(|n| n.load(Ordering::Acquire) == 0)
        })
    }

    /// The writer was fenced: the consumer must reload offsets and seek.
    pub(crate) fn request_reseek(&self) {
        let mut s = self.lock();
        s.reseek = true;
        s.generation += 1;
    }

    /// One writer stopped (its queue closed, or a fatal error).
    pub(crate) fn writer_done(&self) {
        let mut s = self.lock();
        s.writers_done += 1;
        self.changed.notify_all();
    }

    /// Waits (at most `timeout`) until every writer has stopped; false on timeout.
    pub(crate) fn wait_writers_done(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.writers_done >= self.writers)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&SharedState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while !done(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
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
