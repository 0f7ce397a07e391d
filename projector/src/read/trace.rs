//! Cross-component trace, written once over the [`EventStore`] primitives.
//!
//! Invariant: every event is visited at most once (a visited set makes cycles and diamonds
//! harmless), the walk stops at `max_events`, and the result is in causal order: an event comes
//! after every traced event that caused it, unless they form a cycle; ties by (persistedAt, id).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{EventStore, ReadError, StoredEvent};

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedEvent {
    /// Causal distance from the root: negative for causes, 0 for the root, positive for effects.
    pub depth: i32,
    /// The event.
    pub event: StoredEvent,
}

/// The causal neighbourhood of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The event the trace started from.
    pub root: String,
    /// Causes and effects (transitively) and the root, in causal then time order.
    pub events: Vec<TracedEvent>,
    /// Whether the walk stopped at the bound before exhausting the graph.
    pub truncated: bool,
}

/// Traces from `root` in both directions: its causes (following `causedBy`) and its effects
/// (events whose `causedBy` names an event of the trace), across components. Returns `None` if
/// the root is unknown.
pub async fn trace<S: EventStore>(
    store: &S,
    root: &str,
    max_events: usize,
) -> Result<Option<Trace>, ReadError> {
    let Some(first) = store.event(root).await? else {
        return Ok(None);
    };
    let max_events = max_events.max(1);
    let mut nodes: HashMap<String, TracedEvent> = HashMap::new();
    let mut truncated = false;
    nodes.insert(
        root.to_owned(),
        TracedEvent {
            depth: 0,
            event: first,
        },
    );

    // Causes: follow causedBy upwards, level by level.
    let mut frontier: Vec<String> = vec![root.to_owned()];
    let mut depth = 0;
    while !frontier.is_empty() && !truncated {
        depth -= 1;
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for id in &frontier {
            for parent in &nodes[id].event.event.caused_by {
                if !nodes.contains_key(parent) {
                    wanted.insert(parent.clone());
                }
            }
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        frontier = Vec::new();
        for e in store.events_by_ids(&wanted).await? {
            if nodes.len() >= max_events {
                truncated = true;
                break;
            }
            let id = e.event.id.clone();
            nodes
                .entry(id.clone())
                .or_insert(TracedEvent { depth, event: e });
            frontier.push(id);
        }
    }

    // Effects: follow the edges downwards, level by level.
    let mut frontier: Vec<String> = vec![root.to_owned()];
    let mut depth = 0;
    let mut seen_down: HashSet<String> = HashSet::from([root.to_owned()]);
    while !frontier.is_empty() && !truncated {
        depth += 1;
        let edges = store.effect_ids(&frontier).await?;
        let wanted: Vec<String> = edges
            .into_iter()
            .map(|(_, child)| child)
            .filter(|c| seen_down.insert(c.clone()) && !nodes.contains_key(c))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        frontier = Vec::new();
        for e in store.events_by_ids(&wanted).await? {
            if nodes.len() >= max_events {
                truncated = true;
                break;
            }
            let id = e.event.id.clone();
            nodes
                .entry(id.clone())
                .or_insert(TracedEvent { depth, event: e });
            frontier.push(id);
        }
    }

    Ok(Some(Trace {
        root: root.to_owned(),
        events: causal_order(nodes),
        truncated,
    }))
}

/// Kahn's algorithm over the edges inside the trace, smallest (persistedAt, id) first; events
/// left over (a cycle) follow in time order.
fn causal_order(nodes: HashMap<String, TracedEvent>) -> Vec<TracedEvent> {
    let key = |t: &TracedEvent| (t.event.event.persisted_at, t.event.event.id.clone());
    let mut indegree: HashMap<&str, usize> = nodes.keys().map(|k| (k.as_str(), 0)).collect();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, t) in &nodes {
        let parents: BTreeSet<&str> = t.event.event.caused_by.iter().map(String::as_str).collect();
        for p in parents {
            if p != id && nodes.contains_key(p) {
                *indegree.entry(id.as_str()).or_default() += 1;
                children.entry(p).or_default().push(id.as_str());
            }
        }
    }
    let mut ready: BTreeSet<((i64, String), &str)> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(id, _)| (key(&nodes[*id]), *id))
        .collect();
    let mut order: Vec<&str> = Vec::with_capacity(nodes.len());
    let mut placed: HashSet<&str> = HashSet::new();
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        let id = first.1;
        order.push(id);
        placed.insert(id);
        for c in children.get(id).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(c) {
                *d -= 1;
                if *d == 0 {
                    ready.insert((key(&nodes[*c]), *c));
                }
            }
        }
    }
    let mut rest: Vec<&str> = nodes
        .keys()
        .map(String::as_str)
        .filter(|id| !placed.contains(id))
        .collect();
    rest.sort_by_key(|id| key(&nodes[*id]));
    order.extend(rest);
    let order: Vec<String> = order.into_iter().map(str::to_owned).collect();
    let mut nodes = nodes;
    order
        .into_iter()
        .filter_map(|id| nodes.remove(&id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{EventPage, Page};
    use serde_json::json;
    use xclog_schema::{FsmEvent, PersistedEvent};

    /// In-memory store for the trace algorithm's tests.
    struct Mem(Vec<StoredEvent>);

    fn ev(id: &str, at: i64, parents: &[&str]) -> StoredEvent {
        StoredEvent {
            event: PersistedEvent {
                id: id.into(),
                instance_id: "i".into(),
                machine_name: "m".into(),
                component_name: "c".into(),
                event: FsmEvent {
                    event_type: "E".into(),
                    payload: json!({}),
                    timestamp: None,
                    extra: Default::default(),
                },
                state_before: "".into(),
                state_after: "s".into(),
                persisted_at: at,
                caused_by: parents.iter().map(|p| (*p).to_owned()).collect(),
                caused: vec![],
                source_component_name: None,
                target_component_name: None,
                public_member_snapshot: None,
                sequence: None,
            },
            source: None,
        }
    }

    impl EventStore for Mem {
        async fn event(&self, id: &str) -> Result<Option<StoredEvent>, ReadError> {
            Ok(self.0.iter().find(|e| e.event.id == id).cloned())
        }
        async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<StoredEvent>, ReadError> {
            Ok(self
                .0
                .iter()
                .filter(|e| ids.contains(&e.event.id))
                .cloned()
                .collect())
        }
        async fn events_of_instance(&self, _: &str, _: &Page) -> Result<EventPage, ReadError> {
            unreachable!("not used by trace")
        }
        async fn events_in_time_range(
            &self,
            _: i64,
            _: i64,
            _: &Page,
        ) -> Result<EventPage, ReadError> {
            unreachable!("not used by trace")
        }
        async fn list_events(&self, _: &Page) -> Result<EventPage, ReadError> {
            unreachable!("not used by trace")
        }
        async fn events_caused_by(&self, _: &str) -> Result<Vec<StoredEvent>, ReadError> {
            unreachable!("not used by trace")
        }
        async fn events_that_caused(&self, _: &str) -> Result<Vec<StoredEvent>, ReadError> {
            unreachable!("not used by trace")
        }
        async fn effect_ids(&self, ids: &[String]) -> Result<Vec<(String, String)>, ReadError> {
            let mut out = vec![];
            for e in &self.0 {
                for p in &e.event.caused_by {
                    if ids.contains(p) {
                        out.push((p.clone(), e.event.id.clone()));
                    }
                }
            }
            Ok(out)
        }
    }

    fn ids(t: &Trace) -> Vec<&str> {
        t.events.iter().map(|e| e.event.event.id.as_str()).collect()
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_trace_walks_causes_and_effects_in_causal_then_time_order() {
        // a -> b -> d, a -> c -> d ; x unrelated; d's effect e has an earlier clock than d.
        let store = Mem(vec![
            ev("a", 1, &[]),
            ev("b", 3, &["a"]),
            ev("c", 2, &["a"]),
            ev("d", 5, &["b", "c"]),
            ev("e", 4, &["d"]),
            ev("x", 0, &[]),
        ]);
        let t = run(trace(&store, "b", 100)).unwrap().unwrap();
        assert_eq!(ids(&t), vec!["a", "b", "d", "e"]);
        let depth: Vec<i32> = t.events.iter().map(|e| e.depth).collect();
        assert_eq!(depth, vec![-1, 0, 1, 2]);
        assert!(!t.truncated);
    }

    #[test]
    fn cycles_terminate_and_every_event_appears_once() {
        let store = Mem(vec![
            ev("a", 2, &["b"]),
            ev("b", 1, &["a"]),
            ev("c", 3, &["a"]),
        ]);
        let t = run(trace(&store, "a", 100)).unwrap().unwrap();
        let mut got = ids(&t);
        got.sort();
        assert_eq!(got, vec!["a", "b", "c"]);
    }

    #[test]
    fn the_walk_stops_at_the_bound_and_says_so() {
        let mut events = vec![ev("r", 0, &[])];
        for n in 0..50 {
            events.push(ev(&format!("k{n:02}"), n + 1, &["r"]));
        }
        let t = run(trace(&Mem(events), "r", 10)).unwrap().unwrap();
        assert_eq!(t.events.len(), 10);
        assert!(t.truncated);
        assert!(run(trace(&Mem(vec![]), "nope", 10)).unwrap().is_none());
    }
}
