//! Pure comparison logic of `xclog verify`: per-source digests built from a stream of events and
//! snapshots, their comparison, and the precise (per-event) comparison of a few instances.
//!
//! Memory per source: one [`InstanceDigest`] per instance (a few hashes and counters, not its
//! events), one 64-bit fingerprint per event id (duplicates are dropped as the sinks drop them,
//! and `caused` entries are only compared when both ends are inside the compared range), and one
//! pair of fingerprints per `causedBy` link until [`SideDigest::finish`]. No event is kept.
//!
//! One file: the digests and their comparison share their types, and the tests use both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::Serialize;

use crate::sink::order::InstanceOrder;

/// Next offset (exclusive) to compare up to, per partition. Partitions not named hold nothing
/// to compare.
pub type Bounds = BTreeMap<i32, i64>;

/// Whether `offset` of `partition` lies inside `bounds`.
pub fn within(bounds: &Bounds, partition: i32, offset: i64) -> bool {
    bounds.get(&partition).is_some_and(|next| offset < *next)
}

/// The per-partition minimum of two bounds (what both stores should hold).
pub fn min_bounds(a: &Bounds, b: &Bounds) -> Bounds {
    a.iter()
        .filter_map(|(p, x)| b.get(p).map(|y| (*p, (*x).min(*y))))
        .collect()
}

fn fingerprint(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn edge_hash(parent: u64, child: u64) -> u64 {
    let mut h = DefaultHasher::new();
    (parent, child).hash(&mut h);
    h.finish()
}

/// The compared fields of one event, with where it came from in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFacts {
    /// Event id.
    pub id: String,
    /// Instance id.
    pub instance_id: String,
    /// Component name.
    pub component: String,
    /// Producer's per-instance sequence.
    pub sequence: Option<u64>,
    /// State before the transition.
    pub state_before: String,
    /// State after the transition.
    pub state_after: String,
    /// When the runtime persisted it (epoch ms): part of its instance order.
    pub persisted_at: i64,
    /// Partition it was published to.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

impl EventFacts {
    /// Its place in its instance's order ([`InstanceOrder`]).
    pub fn order(&self) -> InstanceOrder {
        InstanceOrder::new(
            self.sequence,
            self.persisted_at,
            self.partition,
            self.offset,
        )
    }
}

/// The compared fields of a snapshot, with where it came from in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFacts {
    /// Instance id.
    pub instance_id: String,
    /// Producer's per-instance sequence.
    pub sequence: Option<u64>,
    /// Last event the snapshot includes.
    pub last_event_id: String,
    /// Instance state in the snapshot.
    pub state: String,
    /// Snapshot time (epoch ms).
    pub snapshot_at: i64,
    /// Partition it was published to.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

impl SnapshotFacts {
    /// The sinks' rule: later in the instance order ([`InstanceOrder`]).
    pub fn is_newer_than(&self, other: &SnapshotFacts) -> bool {
        self.order() > other.order()
    }

    fn order(&self) -> InstanceOrder {
        InstanceOrder::new(self.sequence, self.snapshot_at, self.partition, self.offset)
    }
}

/// The instance view's latest event of an instance (`fsm_instances` / `instances`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewFacts {
    /// Id of the event the view shows.
    pub last_event_id: String,
    /// State after it.
    pub state: String,
}

/// What a source says about an instance's view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ViewState {
    /// No event of the instance inside the compared range.
    #[default]
    None,
    /// This one.
    Some(ViewFacts),
    /// The stored view shows an event past the compared range, or one without a log position:
    /// it cannot be compared.
    Unknown,
}

/// What a source says about the latest snapshot of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SnapshotState {
    /// No snapshot inside the compared range.
    #[default]
    None,
    /// This one.
    Some(SnapshotFacts),
    /// The stored snapshot is newer than the compared range (a live store moved on) or has no
    /// log position: it cannot be compared.
    Unknown,
}

/// Per-instance state of a digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceDigest {
    /// Component of the instance's events.
    pub component: String,
    /// Events (distinct ids) inside the compared range.
    pub events: u64,
    /// Hash over (id, sequence, stateBefore, stateAfter) of its events in log order, per
    /// partition (one instance's keyless records span partitions, whose offsets do not
    /// compare); set by [`SideDigest::finish`].
    pub digest: u64,
    /// Running hash per partition, until [`SideDigest::finish`].
    partition_digests: Vec<(i32, u64)>,
    /// The event latest in the instance order, from the events added.
    latest: Option<(InstanceOrder, ViewFacts)>,
    /// The instance view: the stored one (stores), else `latest` (the topic).
    pub view: ViewState,
    /// Sum of the hashes of the `caused` links of its events (both ends in range).
    pub caused: u64,
    /// Number of those links.
    pub caused_links: u64,
    /// Latest snapshot.
    pub snapshot: SnapshotState,
}

/// Counts of what a source held and what was left out of the comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SideCounts {
    /// Distinct events compared, per component.
    pub events_per_component: BTreeMap<String, u64>,
    /// Instances with at least one event or snapshot compared.
    pub instances: u64,
    /// Snapshots compared.
    pub snapshots: u64,
    /// Events or snapshots past the compared offsets (a live source moved on): not compared.
    pub beyond_offsets: u64,
    /// Rows with no log position (written before the log) or from another topic: not compared.
    pub without_position: u64,
    /// Topic records read twice with the same event id (the first copy is compared).
    pub duplicate_ids: u64,
    /// Topic records the projector dead-letters (do not decode or are refused by the store's
    /// check): not compared.
    pub dead_letters: u64,
}

/// The digest of one source over one range of the log.
#[derive(Debug, Clone, Default)]
pub struct SideDigest {
    /// Counts for the summary.
    pub counts: SideCounts,
    instances: HashMap<String, InstanceDigest>,
    ids: HashMap<u64, u32>,
    instance_names: Vec<String>,
    instance_index: HashMap<String, u32>,
    links: Vec<(u64, u64)>,
    stored_views: bool,
}

impl SideDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    fn instance_slot(&mut self, id: &str) -> u32 {
        if let Some(i) = self.instance_index.get(id) {
            return *i;
        }
        let i = self.instance_names.len() as u32;
        self.instance_names.push(id.to_owned());
        self.instance_index.insert(id.to_owned(), i);
        i
    }

    /// Adds an event; returns `false` (and counts it) when its id was seen before: the first
    /// copy wins, as in the sinks. Events of an instance must come in log order.
    ///
    /// `parents` are the ids in the event's `causedBy` (topic side); `children` the ids in its
    /// stored `caused` (store side). Either describes the same links.
    pub fn add_event(&mut self, e: &EventFacts, parents: &[String], children: &[String]) -> bool {
        let fp = fingerprint(&e.id);
        if self.ids.contains_key(&fp) {
            self.counts.duplicate_ids += 1;
            return false;
        }
        let slot = self.instance_slot(&e.instance_id);
        self.ids.insert(fp, slot);
        let inst = self.instances.entry(e.instance_id.clone()).or_default();
        if inst.component.is_empty() {
            inst.component.clone_from(&e.component);
        }
        inst.events += 1;
        let slot = match inst
            .partition_digests
            .iter()
            .position(|(p, _)| *p == e.partition)
        {
            Some(i) => i,
            None => {
                inst.partition_digests.push((e.partition, 0));
                inst.partition_digests.len() - 1
            }
        };
        let mut h = DefaultHasher::new();
        (
            inst.partition_digests[slot].1,
            &e.id,
            e.sequence,
            &e.state_before,
            &e.state_after,
        )
            .hash(&mut h);
        inst.partition_digests[slot].1 = h.finish();
        let order = e.order();
        if !self.stored_views && inst.latest.as_ref().is_none_or(|(k, _)| order > *k) {
            inst.latest = Some((
                order,
                ViewFacts {
                    last_event_id: e.id.clone(),
                    state: e.state_after.clone(),
                },
            ));
        }
        *self
            .counts
            .events_per_component
            .entry(e.component.clone())
            .or_default() += 1;
        let parents: BTreeSet<&String> = parents.iter().collect();
        for p in parents {
            self.links.push((fingerprint(p), fp));
        }
        let children: BTreeSet<&String> = children.iter().collect();
        for c in children {
            self.links.push((fp, fingerprint(c)));
        }
        true
    }

    /// Adds a snapshot read from the topic: the newest one per instance is kept.
    pub fn add_topic_snapshot(&mut self, s: SnapshotFacts) {
        let inst = self.instances.entry(s.instance_id.clone()).or_default();
        match &inst.snapshot {
            SnapshotState::Some(old) if !s.is_newer_than(old) => {}
            _ => inst.snapshot = SnapshotState::Some(s),
        }
    }

    /// Adds a snapshot deletion read from the topic: the instance has no snapshot until a later
    /// one (records of an instance must come in log order, as events do).
    pub fn add_topic_snapshot_deletion(&mut self, instance_id: &str) {
        if let Some(inst) = self.instances.get_mut(instance_id) {
            inst.snapshot = SnapshotState::None;
        }
    }

    /// Adds the snapshot a store holds for an instance (`Unknown` when it cannot be compared).
    pub fn set_store_snapshot(&mut self, instance_id: &str, s: SnapshotState) {
        self.instances
            .entry(instance_id.to_owned())
            .or_default()
            .snapshot = s;
    }

    /// Sets the instance view a store holds for an instance; once called, the digest compares
    /// stored views (instances with none stored have [`ViewState::None`]) instead of the view
    /// its events imply. Called before the events are added, it spares deriving that view.
    pub fn set_store_view(&mut self, instance_id: &str, v: ViewState) {
        self.stored_views = true;
        self.instances
            .entry(instance_id.to_owned())
            .or_default()
            .view = v;
    }

    /// Whether an event id is inside this digest (after [`SideDigest::finish`] too).
    pub fn contains_event(&self, id: &str) -> bool {
        self.ids.contains_key(&fingerprint(id))
    }

    /// The instance an event id belongs to, if the id is in this digest.
    pub fn instance_of(&self, id: &str) -> Option<&str> {
        self.ids
            .get(&fingerprint(id))
            .map(|i| self.instance_names[*i as usize].as_str())
    }

    /// Folds the `caused` links whose two ends are both in range into their parent's instance.
    pub fn finish(&mut self) {
        for (parent, child) in std::mem::take(&mut self.links) {
            let (Some(slot), true) = (self.ids.get(&parent), self.ids.contains_key(&child)) else {
                continue;
            };
            let name = &self.instance_names[*slot as usize];
            if let Some(inst) = self.instances.get_mut(name) {
                inst.caused = inst.caused.wrapping_add(edge_hash(parent, child));
                inst.caused_links += 1;
            }
        }
        self.links.shrink_to_fit();
        for inst in self.instances.values_mut() {
            inst.partition_digests.sort_unstable();
            let mut h = DefaultHasher::new();
            inst.partition_digests.hash(&mut h);
            inst.digest = h.finish();
            let latest = inst.latest.take();
            if !self.stored_views {
                inst.view = latest.map_or(ViewState::None, |(_, v)| ViewState::Some(v));
            }
        }
        self.counts.instances = self.instances.len() as u64;
        self.counts.snapshots = self
            .instances
            .values()
            .filter(|i| matches!(i.snapshot, SnapshotState::Some(_)))
            .count() as u64;
    }

    /// The per-instance digests.
    pub fn instances(&self) -> &HashMap<String, InstanceDigest> {
        &self.instances
    }
}

/// One difference between two sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// Component (for count differences, and when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Instance id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Event id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What differs: `eventCount`, `event` (present on one side only), `sequence`,
    /// `stateBefore`, `stateAfter`, `caused`, `logOrder`, `snapshot`, `snapshot.sequence`,
    /// `snapshot.lastEventId`, `snapshot.state`, `instanceView` (the instance's latest event
    /// and state), `instanceDigest`.
    pub field: String,
    /// The value on the left source.
    pub left: String,
    /// The value on the right source.
    pub right: String,
}

impl Difference {
    fn new(field: &str, left: impl Into<String>, right: impl Into<String>) -> Self {
        Self {
            component: None,
            instance: None,
            event_id: None,
            field: field.to_owned(),
            left: left.into(),
            right: right.into(),
        }
    }
    fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_owned());
        self
    }
    fn event(mut self, id: &str) -> Self {
        self.event_id = Some(id.to_owned());
        self
    }
}

/// What comparing two digests found: differences that are already precise, and the instances
/// whose events or `caused` sets differ (to be compared event by event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Per-component counts and snapshots, precise.
    pub differences: Vec<Difference>,
    /// Instances (sorted) whose events or `caused` links differ.
    pub instances_to_detail: Vec<String>,
}

fn show_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// Compares two finished digests.
pub fn compare(left: &SideDigest, right: &SideDigest) -> Comparison {
    let mut out = Comparison::default();
    let components: BTreeSet<&String> = left
        .counts
        .events_per_component
        .keys()
        .chain(right.counts.events_per_component.keys())
        .collect();
    for c in components {
        let l = left
            .counts
            .events_per_component
            .get(c)
            .copied()
            .unwrap_or(0);
        let r = right
            .counts
            .events_per_component
            .get(c)
            .copied()
            .unwrap_or(0);
        if l != r {
            let mut d = Difference::new("eventCount", l.to_string(), r.to_string());
            d.component = Some(c.clone());
            out.differences.push(d);
        }
    }
    let empty = InstanceDigest::default();
    let ids: BTreeSet<&String> = left
        .instances
        .keys()
        .chain(right.instances.keys())
        .collect();
    for id in ids {
        let l = left.instances.get(id).unwrap_or(&empty);
        let r = right.instances.get(id).unwrap_or(&empty);
        if (l.events, l.digest, l.caused, l.caused_links)
            != (r.events, r.digest, r.caused, r.caused_links)
        {
            out.instances_to_detail.push(id.clone());
        }
        let component = if l.component.is_empty() {
            &r.component
        } else {
            &l.component
        };
        let differences = compare_snapshots(id, &l.snapshot, &r.snapshot)
            .into_iter()
            .chain(compare_views(id, &l.view, &r.view));
        for mut d in differences {
            if !component.is_empty() {
                d.component = Some(component.clone());
            }
            out.differences.push(d);
        }
    }
    out
}

fn compare_snapshots(id: &str, l: &SnapshotState, r: &SnapshotState) -> Vec<Difference> {
    let describe = |s: &SnapshotFacts| {
        format!(
            "sequence {} lastEventId {} state {}",
            show_opt(s.sequence),
            s.last_event_id,
            s.state
        )
    };
    match (l, r) {
        (SnapshotState::Unknown, _) | (_, SnapshotState::Unknown) => vec![],
        (SnapshotState::None, SnapshotState::None) => vec![],
        (SnapshotState::Some(s), SnapshotState::None) => {
            vec![Difference::new("snapshot", describe(s), "missing").instance(id)]
        }
        (SnapshotState::None, SnapshotState::Some(s)) => {
            vec![Difference::new("snapshot", "missing", describe(s)).instance(id)]
        }
        (SnapshotState::Some(a), SnapshotState::Some(b)) => {
            let mut out = Vec::new();
            if a.sequence != b.sequence {
                out.push(
                    Difference::new(
                        "snapshot.sequence",
                        show_opt(a.sequence),
                        show_opt(b.sequence),
                    )
                    .instance(id),
                );
            }
            if a.last_event_id != b.last_event_id {
                out.push(
                    Difference::new("snapshot.lastEventId", &a.last_event_id, &b.last_event_id)
                        .instance(id),
                );
            }
            if a.state != b.state {
                out.push(Difference::new("snapshot.state", &a.state, &b.state).instance(id));
            }
            out
        }
    }
}

fn compare_views(id: &str, l: &ViewState, r: &ViewState) -> Vec<Difference> {
    let describe = |v: &ViewFacts| format!("lastEventId {} state {}", v.last_event_id, v.state);
    match (l, r) {
        (ViewState::Unknown, _) | (_, ViewState::Unknown) => vec![],
        (ViewState::None, ViewState::None) => vec![],
        (ViewState::Some(v), ViewState::None) => {
            vec![Difference::new("instanceView", describe(v), "missing").instance(id)]
        }
        (ViewState::None, ViewState::Some(v)) => {
            vec![Difference::new("instanceView", "missing", describe(v)).instance(id)]
        }
        (ViewState::Some(a), ViewState::Some(b)) if a != b => {
            vec![Difference::new("instanceView", describe(a), describe(b)).instance(id)]
        }
        (ViewState::Some(_), ViewState::Some(_)) => vec![],
    }
}

/// One event of an instance, for the event-by-event comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailEvent {
    /// The compared fields.
    pub facts: EventFacts,
    /// Its `caused` set, restricted to children inside the compared range.
    pub caused: BTreeSet<String>,
}

/// Compares the events of one instance on two sources, each in log order; names every event
/// and field that differs. `digests_differed` says the digests disagreed: if the events turn
/// out equal (the source moved between the two reads), that is reported too.
pub fn compare_instance(
    instance: &str,
    left: &[DetailEvent],
    right: &[DetailEvent],
    digests_differed: bool,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let l_ids: HashMap<&str, &DetailEvent> =
        left.iter().map(|e| (e.facts.id.as_str(), e)).collect();
    let r_ids: HashMap<&str, &DetailEvent> =
        right.iter().map(|e| (e.facts.id.as_str(), e)).collect();
    let describe = |e: &EventFacts| {
        format!(
            "present (sequence {}, {} -> {}, partition {} offset {})",
            show_opt(e.sequence),
            if e.state_before.is_empty() {
                "(new)"
            } else {
                &e.state_before
            },
            e.state_after,
            e.partition,
            e.offset
        )
    };
    for e in left {
        let id = e.facts.id.as_str();
        match r_ids.get(id) {
            None => out.push(
                Difference::new("event", describe(&e.facts), "missing")
                    .instance(instance)
                    .event(id),
            ),
            Some(r) => {
                let (a, b) = (&e.facts, &r.facts);
                if a.sequence != b.sequence {
                    out.push(
                        Difference::new("sequence", show_opt(a.sequence), show_opt(b.sequence))
                            .instance(instance)
                            .event(id),
                    );
                }
                if a.state_before != b.state_before {
                    out.push(
                        Difference::new("stateBefore", &a.state_before, &b.state_before)
                            .instance(instance)
                            .event(id),
                    );
                }
                if a.state_after != b.state_after {
                    out.push(
                        Difference::new("stateAfter", &a.state_after, &b.state_after)
                            .instance(instance)
                            .event(id),
                    );
                }
                if e.caused != r.caused {
                    let only_l: Vec<&String> = e.caused.difference(&r.caused).collect();
                    let only_r: Vec<&String> = r.caused.difference(&e.caused).collect();
                    out.push(
                        Difference::new(
                            "caused",
                            format!("{:?} (only here: {only_l:?})", e.caused),
                            format!("{:?} (only here: {only_r:?})", r.caused),
                        )
                        .instance(instance)
                        .event(id),
                    );
                }
            }
        }
    }
    for e in right {
        if !l_ids.contains_key(e.facts.id.as_str()) {
            out.push(
                Difference::new("event", "missing", describe(&e.facts))
                    .instance(instance)
                    .event(&e.facts.id),
            );
        }
    }
    // Log order is compared within each partition (an instance's keyless records span
    // partitions, and sources may interleave those differently).
    fn in_log_order<'a>(
        events: &'a [DetailEvent],
        other: &HashMap<&str, &DetailEvent>,
    ) -> Vec<&'a str> {
        let mut v: Vec<(i32, &str)> = events
            .iter()
            .map(|e| (e.facts.partition, e.facts.id.as_str()))
            .filter(|(_, id)| other.contains_key(id))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v.into_iter().map(|(_, id)| id).collect()
    }
    let l_order = in_log_order(left, &r_ids);
    let r_order = in_log_order(right, &l_ids);
    if let Some(i) = (0..l_order.len()).find(|i| l_order[*i] != r_order[*i]) {
        out.push(
            Difference::new(
                "logOrder",
                format!("{} at position {i}", l_order[i]),
                format!("{} at position {i}", r_order[i]),
            )
            .instance(instance)
            .event(l_order[i]),
        );
    }
    if out.is_empty() && digests_differed {
        out.push(
            Difference::new(
                "instanceDigest",
                format!("{} events", left.len()),
                format!(
                    "{} events (equal when read again: the source moved)",
                    right.len()
                ),
            )
            .instance(instance),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tiny log: `(instance, parents)` per event, on partition = instance % 3.
    #[derive(Debug, Clone)]
    struct Log {
        events: Vec<(EventFacts, Vec<String>)>,
    }

    fn log_of(spec: &[(u8, Vec<usize>)]) -> Log {
        let mut offsets = [0i64; 3];
        let mut events: Vec<(EventFacts, Vec<String>)> = Vec::new();
        for (n, (inst, parents)) in spec.iter().enumerate() {
            let p = i32::from(inst % 3);
            let offset = offsets[p as usize];
            offsets[p as usize] += 1;
            let parents = parents
                .iter()
                .filter(|i| **i < n)
                .map(|i| format!("e{i}"))
                .collect();
            events.push((
                EventFacts {
                    id: format!("e{n}"),
                    instance_id: format!("i{inst}"),
                    component: format!("C{}", inst % 2),
                    sequence: Some(n as u64),
                    state_before: format!("s{n}"),
                    state_after: format!("s{}", n + 1),
                    persisted_at: 0,
                    partition: p,
                    offset,
                },
                parents,
            ));
        }
        Log { events }
    }

    /// The topic side: events in publication order with their parents.
    fn topic_digest(log: &Log) -> SideDigest {
        let mut d = SideDigest::new();
        for (e, parents) in &log.events {
            d.add_event(e, parents, &[]);
        }
        d.finish();
        d
    }

    /// What a correct store holds: each event with its children, read instance by instance.
    fn store_rows(log: &Log) -> Vec<(EventFacts, Vec<String>)> {
        let mut rows: Vec<(EventFacts, Vec<String>)> = log
            .events
            .iter()
            .map(|(e, _)| {
                let children = log
                    .events
                    .iter()
                    .filter(|(_, ps)| ps.contains(&e.id))
                    .map(|(c, _)| c.id.clone())
                    .collect();
                (e.clone(), children)
            })
            .collect();
        rows.sort_by(|a, b| (&a.0.instance_id, a.0.offset).cmp(&(&b.0.instance_id, b.0.offset)));
        rows
    }

    fn store_digest(rows: &[(EventFacts, Vec<String>)]) -> SideDigest {
        let mut d = SideDigest::new();
        for (e, children) in rows {
            d.add_event(e, &[], children);
        }
        d.finish();
        d
    }

    fn details(rows: &[(EventFacts, Vec<String>)], instance: &str) -> Vec<DetailEvent> {
        rows.iter()
            .filter(|(e, _)| e.instance_id == instance)
            .map(|(e, c)| DetailEvent {
                facts: e.clone(),
                caused: c.iter().cloned().collect(),
            })
            .collect()
    }

    fn spec() -> impl Strategy<Value = Vec<(u8, Vec<usize>)>> {
        prop::collection::vec((0u8..6, prop::collection::vec(0usize..40, 0..3)), 1..40)
    }

    #[derive(Debug, Clone, Copy)]
    enum Damage {
        DeleteEvent,
        ChangeStateAfter,
        DropCausedEntry,
    }

    proptest! {
        /// A correct store agrees with the topic however its reads interleave instances.
        #[test]
        fn a_faithful_store_agrees_in_any_read_order(spec in spec()) {
            let log = log_of(&spec);
            let rows = store_rows(&log);
            let c = compare(&topic_digest(&log), &store_digest(&rows));
            prop_assert!(c.differences.is_empty(), "{:?}", c.differences);
            prop_assert!(c.instances_to_detail.is_empty(), "{:?}", c.instances_to_detail);
            // By (partition, offset) instead of by instance: same digests.
            let mut by_offset = rows.clone();
            by_offset.sort_by_key(|(e, _)| (e.partition, e.offset));
            let c = compare(&store_digest(&rows), &store_digest(&by_offset));
            prop_assert!(c.instances_to_detail.is_empty());
        }

        /// Any one damaged row is found, and the event-by-event comparison names it.
        #[test]
        fn one_damaged_row_is_found_and_named(
            spec in spec(),
            pick in any::<prop::sample::Index>(),
            damage in prop_oneof![Just(Damage::DeleteEvent), Just(Damage::ChangeStateAfter), Just(Damage::DropCausedEntry)],
        ) {
            let log = log_of(&spec);
            let mut rows = store_rows(&log);
            let (i, field) = match damage {
                Damage::DeleteEvent => {
                    let i = pick.index(rows.len());
                    (i, "event")
                }
                Damage::ChangeStateAfter => {
                    let i = pick.index(rows.len());
                    rows[i].0.state_after.push_str("-changed");
                    (i, "stateAfter")
                }
                Damage::DropCausedEntry => {
                    let with: Vec<usize> = (0..rows.len()).filter(|i| !rows[*i].1.is_empty()).collect();
                    prop_assume!(!with.is_empty());
                    let i = with[pick.index(with.len())];
                    rows[i].1.pop();
                    (i, "caused")
                }
            };
            let (event, instance) = (rows[i].0.id.clone(), rows[i].0.instance_id.clone());
            let before = rows.clone();
            if matches!(damage, Damage::DeleteEvent) {
                rows.remove(i);
            }
            let topic = topic_digest(&log);
            let store = store_digest(&rows);
            let c = compare(&topic, &store);
            prop_assert!(c.instances_to_detail.contains(&instance), "{:?}", c);
            let truth = store_rows(&log);
            let mut named = compare_instance(&instance, &details(&truth, &instance), &details(&rows, &instance), true);
            if matches!(damage, Damage::DeleteEvent) {
                // Deleting an event also takes its links away from its parents' `caused`:
                // those are other instances (reported under theirs).
                named.retain(|d| d.field == "event");
            }
            prop_assert!(
                named.iter().any(|d| d.event_id.as_deref() == Some(event.as_str()) && d.field == field),
                "{named:?} does not name {event} {field} ({:?})", before[i]
            );
        }

        /// The topic side drops a second copy of an id (first one wins), like the sinks.
        #[test]
        fn duplicate_ids_on_the_topic_count_once(spec in spec(), pick in any::<prop::sample::Index>()) {
            let log = log_of(&spec);
            let mut dup = log.clone();
            let mut copy = log.events[pick.index(log.events.len())].clone();
            copy.0.state_after = "later copy".into();
            copy.0.offset += 1000;
            dup.events.push(copy);
            let a = topic_digest(&log);
            let b = topic_digest(&dup);
            prop_assert_eq!(b.counts.duplicate_ids, 1);
            prop_assert!(compare(&a, &b).instances_to_detail.is_empty());
        }
    }

    fn snap(seq: Option<u64>, at: i64, offset: i64, state: &str) -> SnapshotFacts {
        SnapshotFacts {
            instance_id: "i".into(),
            sequence: seq,
            last_event_id: format!("e-{state}"),
            state: state.into(),
            snapshot_at: at,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn the_topic_keeps_the_newest_snapshot_and_a_stale_stored_one_is_named() {
        let mut topic = SideDigest::new();
        topic.add_topic_snapshot(snap(Some(2), 5, 1, "B"));
        topic.add_topic_snapshot(snap(Some(1), 9, 2, "A")); // older by sequence, later offset
        topic.finish();
        let mut store = SideDigest::new();
        store.set_store_snapshot("i", SnapshotState::Some(snap(Some(1), 9, 2, "A")));
        store.finish();
        let c = compare(&topic, &store);
        let fields: Vec<(&str, &str, &str)> = c
            .differences
            .iter()
            .map(|d| (d.field.as_str(), d.left.as_str(), d.right.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("snapshot.sequence", "2", "1"),
                ("snapshot.lastEventId", "e-B", "e-A"),
                ("snapshot.state", "B", "A"),
            ]
        );
        assert!(
            c.differences
                .iter()
                .all(|d| d.instance.as_deref() == Some("i"))
        );
        // A stored snapshot past the compared offsets is not compared.
        let mut live = SideDigest::new();
        live.set_store_snapshot("i", SnapshotState::Unknown);
        live.finish();
        assert!(compare(&topic, &live).differences.is_empty());
        // Without sequences: by time, then offset.
        assert!(snap(None, 5, 3, "x").is_newer_than(&snap(None, 5, 2, "y")));
        assert!(!snap(None, 4, 9, "x").is_newer_than(&snap(None, 5, 2, "y")));
    }

    #[test]
    fn a_deletion_on_the_topic_expects_no_snapshot_until_a_later_one() {
        let mut topic = SideDigest::new();
        topic.add_topic_snapshot(snap(Some(2), 5, 1, "B"));
        topic.add_topic_snapshot_deletion("i");
        topic.add_topic_snapshot_deletion("never-seen");
        topic.finish();
        let mut store = SideDigest::new();
        store.finish();
        assert_eq!(compare(&topic, &store).differences, vec![]);
        assert_eq!(topic.counts.snapshots, 0);
        assert!(!topic.instances().contains_key("never-seen"));

        // A snapshot after the deletion is expected again, even with a lower sequence.
        topic.add_topic_snapshot(snap(Some(1), 9, 3, "C"));
        topic.finish();
        let differences = compare(&topic, &store).differences;
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].field, "snapshot");
    }

    #[test]
    fn caused_links_to_events_outside_the_range_are_not_compared() {
        let e = |id: &str, inst: &str, offset: i64| EventFacts {
            id: id.into(),
            instance_id: inst.into(),
            component: "C".into(),
            sequence: None,
            state_before: String::new(),
            state_after: "S".into(),
            persisted_at: 0,
            partition: 0,
            offset,
        };
        // The topic names a parent that was never published; the store holds a child that is
        // past the compared offsets (a live store): neither link is compared.
        let mut topic = SideDigest::new();
        topic.add_event(&e("p", "i1", 0), &[], &[]);
        topic.add_event(&e("c", "i2", 1), &["p".into(), "ghost".into()], &[]);
        topic.finish();
        let mut store = SideDigest::new();
        store.add_event(&e("p", "i1", 0), &[], &["c".into(), "later".into()]);
        store.add_event(&e("c", "i2", 1), &[], &[]);
        store.finish();
        assert_eq!(compare(&topic, &store), Comparison::default());
        assert_eq!(topic.instances()["i1"].caused_links, 1);
    }

    #[test]
    fn counts_per_component_and_order_are_named() {
        let e = |id: &str, offset: i64| EventFacts {
            id: id.into(),
            instance_id: "i".into(),
            component: "Orders".into(),
            sequence: None,
            state_before: "a".into(),
            state_after: "b".into(),
            persisted_at: 0,
            partition: 0,
            offset,
        };
        let mut l = SideDigest::new();
        l.add_event(&e("x", 0), &[], &[]);
        l.add_event(&e("y", 1), &[], &[]);
        l.finish();
        let mut r = SideDigest::new();
        r.add_event(&e("x", 0), &[], &[]);
        r.finish();
        let c = compare(&l, &r);
        assert_eq!(c.differences[0].field, "eventCount");
        assert_eq!(c.differences[0].component.as_deref(), Some("Orders"));
        assert_eq!(
            (
                c.differences[0].left.as_str(),
                c.differences[0].right.as_str()
            ),
            ("2", "1")
        );
        assert_eq!(c.instances_to_detail, vec!["i".to_owned()]);
        let d = |id: &str, offset| DetailEvent {
            facts: e(id, offset),
            caused: BTreeSet::new(),
        };
        let swapped = compare_instance("i", &[d("x", 0), d("y", 1)], &[d("y", 0), d("x", 1)], true);
        assert_eq!(swapped.len(), 1, "{swapped:?}");
        assert_eq!(swapped[0].field, "logOrder");
        // Equal when read again: said so rather than passing silently.
        let moved = compare_instance("i", &[d("x", 0)], &[d("x", 0)], true);
        assert_eq!(moved[0].field, "instanceDigest");
        assert!(compare_instance("i", &[d("x", 0)], &[d("x", 0)], false).is_empty());
    }

    #[test]
    fn bounds() {
        let a: Bounds = [(0, 10), (1, 5)].into();
        let b: Bounds = [(0, 7), (1, 9), (2, 3)].into();
        assert_eq!(min_bounds(&a, &b), [(0, 7), (1, 5)].into());
        assert!(within(&a, 0, 9) && !within(&a, 0, 10) && !within(&a, 2, 0));
    }

    fn keyless(id: &str, partition: i32, offset: i64, at: i64, state: &str) -> EventFacts {
        EventFacts {
            id: id.into(),
            instance_id: "i".into(),
            component: "C".into(),
            sequence: None,
            state_before: "A".into(),
            state_after: state.into(),
            persisted_at: at,
            partition,
            offset,
        }
    }

    #[test]
    fn an_instance_spread_over_partitions_agrees_whatever_the_interleaving() {
        let a = keyless("a", 0, 7, 10, "One");
        let b = keyless("b", 1, 3, 20, "Two");
        let c = keyless("c", 0, 8, 30, "Three");
        let mut topic = SideDigest::new();
        for e in [&a, &b, &c] {
            topic.add_event(e, &[], &[]);
        }
        topic.finish();
        // A store reads the instance's rows by offset: b (3), a (7), c (8).
        let mut store = SideDigest::new();
        for e in [&b, &a, &c] {
            store.add_event(e, &[], &[]);
        }
        let view = |id: &str, state: &str| {
            ViewState::Some(ViewFacts {
                last_event_id: id.into(),
                state: state.into(),
            })
        };
        store.set_store_view("i", view("c", "Three"));
        store.finish();
        assert_eq!(topic.instances()["i"].view, view("c", "Three"));
        let c_ = compare(&topic, &store);
        assert!(c_.differences.is_empty(), "{:?}", c_.differences);
        assert!(c_.instances_to_detail.is_empty());
        let d = |e: &EventFacts| DetailEvent {
            facts: e.clone(),
            caused: BTreeSet::new(),
        };
        assert!(
            compare_instance("i", &[d(&a), d(&b), d(&c)], &[d(&b), d(&a), d(&c)], false).is_empty()
        );

        // A store whose view shows an earlier event is named.
        let mut stale = SideDigest::new();
        for e in [&b, &a, &c] {
            stale.add_event(e, &[], &[]);
        }
        stale.set_store_view("i", view("b", "Two"));
        stale.finish();
        let c_ = compare(&topic, &stale);
        assert_eq!(c_.differences.len(), 1, "{:?}", c_.differences);
        assert_eq!(c_.differences[0].field, "instanceView");
        assert_eq!(c_.differences[0].right, "lastEventId b state Two");
    }
}
