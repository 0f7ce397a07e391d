//! xclog workload: a realistic, reproducible FSM workload, order flows across three
//! components. `xclog produce` publishes it; the end-to-end tests, the soak and the benchmarks
//! publish it too and check what comes back against it. It is a crate of its own so that the
//! producer library apps embed does not carry a load generator.
//!
//! Each *flow* is one order going through three xcomponent-style components, with real
//! `causedBy`/`caused` chains inside and across components:
//!
//! ```text
//! Order      ""->Placed (PLACE)                                 ... Placed->Reserved (STOCK_RESERVED) ...
//! Inventory        ""->Reserving (RESERVE) -> Reserved (STOCK_OK)
//! Payment                    ""->Authorizing (AUTHORIZE) -> Captured | Declined (error)
//! Order      Reserved->Paid (PAYMENT_CAPTURED) | Reserved->Cancelled (PAYMENT_DECLINED, final)
//! Inventory  Reserved->Shipped (SHIP, final) | Reserved->Released (RELEASE, final)
//! Order      Paid->Delivered (SHIPPED, final)
//! ```
//!
//! Every event is caused by the previous event of its flow (`causedBy = [previous id]`, and
//! the previous event's `caused = [this id]`); cross-component events also name their
//! source and target components and carry `_sourceComponent` in the event, as
//! xcomponent-ai does. About one payment in ten is declined. Creation events have
//! `stateBefore = ""`. Each instance's events are numbered by a [`SequenceAssigner`] and
//! snapshots follow a [`SnapshotPolicy`].
//!
//! `instances` flows are in progress at once; the generator advances a randomly chosen one
//! per event and replaces finished flows with new ones, so records of many instances
//! interleave, as in a busy runtime.
//!
//! Invariant: the output is a pure function of [`WorkloadConfig`]: the same seed gives the
//! same ids (UUIDv7-shaped, derived from a seeded ChaCha RNG and a synthetic clock starting
//! at 2026-01-01T00:00:00Z), the same contents and the same order. Exactly
//! `config.events` events are produced; snapshots come in addition, each right after the
//! event that made it due.

use std::collections::VecDeque;
use std::num::NonZeroU32;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use xclog_producer::{DEFAULT_SNAPSHOT_INTERVAL, SequenceAssigner, SnapshotPolicy};
use xclog_schema::{FsmEvent, FsmInstance, InstanceStatus, PersistedEvent, Record};

/// 2026-01-01T00:00:00Z in epoch milliseconds: where the synthetic clock starts.
pub const CLOCK_START_MS: i64 = 1_767_225_600_000;

/// One in this many payments is declined.
const DECLINE_ONE_IN: u32 = 10;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// RNG seed: the same seed gives the same records.
    pub seed: u64,
    /// Number of events to produce (snapshots are extra).
    pub events: u64,
    /// Order flows in progress at once (each flow is one Order, one Inventory and one
    /// Payment instance); at least 1.
    pub instances: usize,
    /// Approximate size in bytes of each event's JSON payload (padded with a `note` field).
    pub payload_bytes: usize,
    /// Snapshot every N transitions of an instance (and always on final/error states).
    pub snapshot_interval: NonZeroU32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            events: 10_000,
            instances: 100,
            payload_bytes: 256,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }
}

/// Which component/machine an instance belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Order,
    Inventory,
    Payment,
}

impl Part {
    fn machine(self) -> &'static str {
        match self {
            Part::Order => "Order",
            Part::Inventory => "Inventory",
            Part::Payment => "Payment",
        }
    }

    fn component(self) -> &'static str {
        match self {
            Part::Order => "OrderComponent",
            Part::Inventory => "InventoryComponent",
            Part::Payment => "PaymentComponent",
        }
    }
}

/// One step of a flow: which instance moves, on which event, from where to where.
#[derive(Debug, Clone, Copy)]
struct Step {
    part: Part,
    event: &'static str,
    before: &'static str,
    after: &'static str,
    status: InstanceStatus,
    /// The component that sent the event, when it came from another component.
    from: Option<Part>,
}

const fn step(
    part: Part,
    event: &'static str,
    before: &'static str,
    after: &'static str,
    status: InstanceStatus,
    from: Option<Part>,
) -> Step {
    Step {
        part,
        event,
        before,
        after,
        status,
        from,
    }
}

use InstanceStatus::{Active, Completed, Error as Failed};
use Part::{Inventory, Order, Payment};

const CAPTURED_FLOW: [Step; 9] = [
    step(Order, "PLACE", "", "Placed", Active, None),
    step(Inventory, "RESERVE", "", "Reserving", Active, Some(Order)),
    step(Inventory, "STOCK_OK", "Reserving", "Reserved", Active, None),
    step(
        Order,
        "STOCK_RESERVED",
        "Placed",
        "Reserved",
        Active,
        Some(Inventory),
    ),
    step(Payment, "AUTHORIZE", "", "Authorizing", Active, Some(Order)),
    step(
        Payment,
        "CAPTURE",
        "Authorizing",
        "Captured",
        Completed,
        None,
    ),
    step(
        Order,
        "PAYMENT_CAPTURED",
        "Reserved",
        "Paid",
        Active,
        Some(Payment),
    ),
    step(
        Inventory,
        "SHIP",
        "Reserved",
        "Shipped",
        Completed,
        Some(Order),
    ),
    step(
        Order,
        "SHIPPED",
        "Paid",
        "Delivered",
        Completed,
        Some(Inventory),
    ),
];

const DECLINED_FLOW: [Step; 8] = [
    step(Order, "PLACE", "", "Placed", Active, None),
    step(Inventory, "RESERVE", "", "Reserving", Active, Some(Order)),
    step(Inventory, "STOCK_OK", "Reserving", "Reserved", Active, None),
    step(
        Order,
        "STOCK_RESERVED",
        "Placed",
        "Reserved",
        Active,
        Some(Inventory),
    ),
    step(Payment, "AUTHORIZE", "", "Authorizing", Active, Some(Order)),
    step(Payment, "DECLINE", "Authorizing", "Declined", Failed, None),
    step(
        Order,
        "PAYMENT_DECLINED",
        "Reserved",
        "Cancelled",
        Completed,
        Some(Payment),
    ),
    step(
        Inventory,
        "RELEASE",
        "Reserved",
        "Released",
        Completed,
        Some(Order),
    ),
];

/// One order flow in progress.
#[derive(Debug)]
struct Flow {
    steps: &'static [Step],
    next: usize,
    /// Id of the next step's event (known one step ahead so `caused` can name it).
    next_event_id: String,
    previous_event_id: Option<String>,
    order_id: String,
    amount_cents: u64,
    items: u32,
    /// Instances by part (Order, Inventory, Payment), created by their first step.
    instances: [Option<FsmInstance>; 3],
    instance_ids: [String; 3],
}

/// The generator: an iterator of [`Record`]s (events, and snapshots when due).
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    rng: ChaCha8Rng,
    clock_ms: i64,
    flows: Vec<Flow>,
    emitted_events: u64,
    sequences: SequenceAssigner,
    policy: SnapshotPolicy,
    queued: VecDeque<Record>,
}

impl Workload {
    /// A generator for `config` (an `instances` of 0 is treated as 1).
    pub fn new(config: WorkloadConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let policy = SnapshotPolicy::every(config.snapshot_interval);
        let mut workload = Self {
            rng,
            clock_ms: CLOCK_START_MS,
            flows: Vec::new(),
            emitted_events: 0,
            sequences: SequenceAssigner::new(),
            policy,
            queued: VecDeque::new(),
            config,
        };
        let slots = workload.config.instances.max(1);
        for _ in 0..slots {
            let flow = workload.new_flow();
            workload.flows.push(flow);
        }
        workload
    }

    /// The configuration this generator follows.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Events produced so far.
    pub fn emitted_events(&self) -> u64 {
        self.emitted_events
    }

    fn uuid_v7(&mut self) -> String {
        let random: [u8; 10] = self.rng.random();
        let millis = u64::try_from(self.clock_ms).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .to_string()
    }

    fn new_flow(&mut self) -> Flow {
        let declined = self.rng.random_range(0..DECLINE_ONE_IN) == 0;
        let instance_ids = [self.uuid_v7(), self.uuid_v7(), self.uuid_v7()];
        let order_id = format!("ORD-{:08}", self.rng.random_range(0..100_000_000u32));
        Flow {
            steps: if declined {
                &DECLINED_FLOW
            } else {
                &CAPTURED_FLOW
            },
            next: 0,
            next_event_id: self.uuid_v7(),
            previous_event_id: None,
            order_id,
            amount_cents: self.rng.random_range(100..500_000),
            items: self.rng.random_range(1..20),
            instances: [None, None, None],
            instance_ids,
        }
    }

    fn filler(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    /// Produces the next event (and queues a snapshot when one is due).
    fn next_event(&mut self) -> PersistedEvent {
        self.clock_ms += self.rng.random_range(0..=3);
        let slot = self.rng.random_range(0..self.flows.len());
        let step = {
            let flow = &self.flows[slot];
            flow.steps[flow.next]
        };
        let has_next = self.flows[slot].next + 1 < self.flows[slot].steps.len();
        let following_id = has_next.then(|| self.uuid_v7());

        let flow = &self.flows[slot];
        let part_index = step.part as usize;
        let instance_id = flow.instance_ids[part_index].clone();
        let mut payload = Map::new();
        payload.insert("orderId".into(), json!(flow.order_id));
        payload.insert("amountCents".into(), json!(flow.amount_cents));
        payload.insert("currency".into(), json!("EUR"));
        payload.insert("items".into(), json!(flow.items));
        payload.insert("orderInstanceId".into(), json!(flow.instance_ids[0]));
        let base_len = Value::Object(payload.clone()).to_string().len();
        // `,"note":""` adds 10 bytes around the filler.
        let filler_len = self.config.payload_bytes.saturating_sub(base_len + 10);
        let note = self.filler(filler_len);
        payload.insert("note".into(), json!(note));

        let flow = &mut self.flows[slot];
        let id = std::mem::replace(
            &mut flow.next_event_id,
            following_id.clone().unwrap_or_default(),
        );
        let mut extra = Map::new();
        if let Some(from) = step.from {
            extra.insert("_sourceComponent".into(), json!(from.component()));
        }
        let public_member = json!({
            "orderId": flow.order_id,
            "amountCents": flow.amount_cents,
            "items": flow.items,
            "lastEvent": step.event,
        });
        let now = self.clock_ms;
        let instance = flow.instances[part_index].get_or_insert_with(|| FsmInstance {
            id: instance_id.clone(),
            machine_name: step.part.machine().to_owned(),
            current_state: String::new(),
            context: json!({}),
            public_member: None,
            internal_member: None,
            created_at: now,
            updated_at: now,
            status: Active,
            is_entry_point: None,
            parent_instance_id: None,
            parent_machine_name: None,
        });
        debug_assert_eq!(instance.current_state, step.before);
        instance.current_state = step.after.to_owned();
        instance.updated_at = now;
        instance.status = step.status;
        instance.public_member = Some(public_member.clone());
        let mut event = PersistedEvent {
            id: id.clone(),
            instance_id,
            machine_name: step.part.machine().to_owned(),
            component_name: step.part.component().to_owned(),
            event: FsmEvent {
                event_type: step.event.to_owned(),
                payload: Value::Object(payload),
                timestamp: Some(now),
                extra,
            },
            state_before: step.before.to_owned(),
            state_after: step.after.to_owned(),
            persisted_at: now,
            caused_by: flow.previous_event_id.iter().cloned().collect(),
            caused: following_id.into_iter().collect(),
            source_component_name: step.from.map(|p| p.component().to_owned()),
            target_component_name: step.from.map(|_| step.part.component().to_owned()),
            public_member_snapshot: Some(public_member),
            sequence: None,
        };
        flow.previous_event_id = Some(id);
        flow.next += 1;
        let instance = instance.clone();
        self.sequences.assign(&mut event);
        if let Some(snapshot) = self.policy.observe(&instance, &event, now) {
            self.queued.push_back(Record::Snapshot(snapshot));
        }
        if instance.status != Active {
            self.sequences.forget(&instance.id);
        }
        if !has_next {
            let fresh = self.new_flow();
            self.flows[slot] = fresh;
        }
        self.emitted_events += 1;
        event
    }
}

impl Iterator for Workload {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if let Some(snapshot) = self.queued.pop_front() {
            return Some(snapshot);
        }
        if self.emitted_events >= self.config.events {
            return None;
        }
        Some(Record::Event(self.next_event()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use proptest::prelude::*;

    fn config(seed: u64, events: u64, instances: usize) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            events,
            instances,
            payload_bytes: 300,
            snapshot_interval: NonZeroU32::new(2).unwrap(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_records_and_another_seed_does_not() {
        let a: Vec<Record> = Workload::new(config(7, 500, 20)).collect();
        let b: Vec<Record> = Workload::new(config(7, 500, 20)).collect();
        let c: Vec<Record> = Workload::new(config(8, 500, 20)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn event_payloads_have_about_the_configured_size() {
        let sizes: Vec<usize> = Workload::new(config(1, 200, 10))
            .filter_map(|r| match r {
                Record::Event(e) => Some(e.event.payload.to_string().len()),
                Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
            })
            .collect();
        assert!(sizes.iter().all(|&s| (300..=310).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn ids_are_uuid_v7() {
        for record in Workload::new(config(3, 50, 5)) {
            if let Record::Event(e) = record {
                let id = uuid::Uuid::parse_str(&e.id).unwrap();
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(
                    uuid::Uuid::parse_str(&e.instance_id)
                        .unwrap()
                        .get_version_num(),
                    7
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn the_workload_is_a_consistent_history(seed in any::<u64>(), events in 0u64..400, instances in 1usize..30) {
            let records: Vec<Record> = Workload::new(config(seed, events, instances)).collect();
            let mut seen_events = HashSet::new();
            let mut by_id = HashMap::new();
            let mut last_sequence: HashMap<String, u64> = HashMap::new();
            let mut state: HashMap<String, String> = HashMap::new();
            let mut terminal = HashSet::new();
            let mut snapshotted_terminal = HashSet::new();
            let mut event_count = 0;
            for record in &records {
                match record {
                    Record::Event(e) => {
                        event_count += 1;
                        // causedBy names an earlier event of the history.
                        for cause in &e.caused_by {
                            prop_assert!(seen_events.contains(cause), "cause {cause} not seen before");
                            let parent: &PersistedEvent = by_id[cause];
                            prop_assert!(parent.caused.contains(&e.id));
                        }
                        // Creation starts from "" and each transition starts where the last ended.
                        let before = state.get(&e.instance_id).cloned().unwrap_or_default();
                        prop_assert_eq!(&e.state_before, &before);
                        state.insert(e.instance_id.clone(), e.state_after.clone());
                        // Sequences are gapless from 1 per instance.
                        let expected = last_sequence.get(&e.instance_id).map_or(1, |s| s + 1);
                        prop_assert_eq!(e.sequence, Some(expected));
                        last_sequence.insert(e.instance_id.clone(), expected);
                        if ["Delivered", "Cancelled", "Shipped", "Released", "Captured", "Declined"].contains(&e.state_after.as_str()) {
                            terminal.insert(e.instance_id.clone());
                        }
                        prop_assert!(seen_events.insert(e.id.clone()), "duplicate id");
                        by_id.insert(e.id.clone(), e);
                    }
                    Record::Snapshot(s) => {
                        prop_assert!(seen_events.contains(&s.last_event_id));
                        prop_assert_eq!(s.sequence, last_sequence.get(&s.instance.id).copied());
                        if s.instance.status != InstanceStatus::Active {
                            snapshotted_terminal.insert(s.instance.id.clone());
                        }
                    }
                    Record::SnapshotDeletion(d) => {
                        prop_assert!(false, "the workload deletes no snapshot ({})", d.instance_id);
                    }
                }
            }
            prop_assert_eq!(event_count, events);
            prop_assert_eq!(terminal, snapshotted_terminal);
        }
    }

    #[test]
    fn flows_cross_components_and_some_payments_fail() {
        let records: Vec<Record> = Workload::new(config(11, 3_000, 50)).collect();
        let events: Vec<&PersistedEvent> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e),
                Record::Snapshot(_) | Record::SnapshotDeletion(_) => None,
            })
            .collect();
        let components: HashSet<&str> = events.iter().map(|e| e.component_name.as_str()).collect();
        assert_eq!(components.len(), 3);
        assert!(events.iter().any(|e| e.component_name == "PaymentComponent"
            && e.source_component_name.as_deref() == Some("OrderComponent")
            && e.event.extra.get("_sourceComponent") == Some(&json!("OrderComponent"))));
        assert!(events.iter().any(|e| e.state_after == "Declined"));
        assert!(events.iter().any(|e| e.state_after == "Delivered"));
    }
}
