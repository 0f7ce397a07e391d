//! Turns between the writers of one sink for the documents they update in place: a parent's
//! `caused` (step 3) and an instance of the view (step 4). FerretDB 1.24 applies an update as
//! read, modify, write of the whole document without a lock, so two writers updating one
//! document at once would lose one update (docs/DESIGN.md, "Causality with several workers");
//! MongoDB updates one document atomically, and there the claims only make the writers take
//! turns.

use std::collections::BTreeSet;
use std::sync::Arc;

/// Parents claimed by the writers of one sink for their `caused` statements: a writer
/// claims the parents no other writer holds, sends their statements, and releases them;
/// parents held by another writer wait for the next round. Nothing is held while waiting, so
/// two writers cannot deadlock, and a writer stuck on a stalled server releases its claim
/// when its command times out (the claim is dropped with the batch's future).
#[derive(Debug, Default)]
pub(crate) struct CausedClaims {
    held: std::sync::Mutex<BTreeSet<String>>,
    released: tokio::sync::Notify,
}

impl CausedClaims {
    /// Moves out of `wanted` the parents no other writer holds (at least one: waits for a
    /// release if all are held) and holds them until the returned claim is dropped.
    pub(crate) async fn claim(self: &Arc<Self>, wanted: &mut BTreeSet<String>) -> Claim {
        let parents = crate::wait::take_when(&self.held, &self.released, |held| {
            let free: Vec<String> = wanted
                .iter()
                .filter(|p| !held.contains(*p))
                .cloned()
                .collect();
            if free.is_empty() && !wanted.is_empty() {
                tracing::trace!(
                    wanted = wanted.len(),
                    "every parent wanted is claimed by another writer; waiting"
                );
                return None;
            }
            for p in &free {
                wanted.remove(p);
                held.insert(p.clone());
            }
            Some(free)
        })
        .await;
        Claim {
            claims: Arc::clone(self),
            parents,
        }
    }
}

/// Parents held by one writer (see [`CausedClaims`]); released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    claims: Arc<CausedClaims>,
    parents: Vec<String>,
}

impl Claim {
    pub(crate) fn parents(&self) -> &[String] {
        &self.parents
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|e| e.into_inner());
        for p in &self.parents {
            held.remove(p);
        }
        drop(held);
        self.claims.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_parent_held_by_one_writer_waits_for_its_release_and_the_others_go_ahead() {
        let claims = Arc::new(CausedClaims::default());
        let mut a_wants = set(&["p1", "p2"]);
        let a = claims.claim(&mut a_wants).await;
        assert_eq!(a.parents(), ["p1", "p2"]);
        assert!(a_wants.is_empty());

        // The free parent is claimed at once; the held one stays wanted.
        let mut b_wants = set(&["p2", "p3"]);
        let b = claims.claim(&mut b_wants).await;
        assert_eq!(b.parents(), ["p3"]);
        assert_eq!(b_wants, set(&["p2"]));

        // p2 is held by a: the next round waits, and ends when a releases it.
        let waiting = tokio::spawn({
            let claims = Arc::clone(&claims);
            async move {
                let mut wants = b_wants;
                let c = claims.claim(&mut wants).await;
                c.parents().to_vec()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "claimed a parent another writer holds"
        );
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a release wakes the waiting writer")
            .unwrap();
        assert_eq!(got, ["p2"]);
        // Released claims can be taken again; b still holds p3.
        let mut again = set(&["p1", "p3"]);
        assert_eq!(claims.claim(&mut again).await.parents(), ["p1"]);
        assert_eq!(again, set(&["p3"]));
        drop(b);
        assert_eq!(claims.claim(&mut again).await.parents(), ["p3"]);
    }
}
