//! Waiting for a share of state that other tasks hold and give back.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Locks `state` and calls `take` until it returns `Some`, waiting on `changed` between tries.
/// Whoever gives something back changes `state` and then calls `changed.notify_waiters()`.
///
/// The wait is registered before each try, so a change made between a try and the wait still
/// wakes the caller; the lock is held only for the try, never across the wait.
pub(crate) async fn take_when<S, T>(
    state: &Mutex<S>,
    changed: &Notify,
    mut take: impl FnMut(&mut S) -> Option<T>,
) -> T {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(taken) = take(&mut guard) {
                return taken;
            }
        }
        notified.await;
    }
}
