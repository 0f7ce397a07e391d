//! A small FSM runtime that publishes its transitions and snapshots with xclog-producer.
//!
//! Run it against the local stack (`scripts/stack.sh up`):
//!
//! ```text
//! cargo run -p xclog-producer --example runtime -- 127.0.0.1:9092 xclog.example
//! ```
//!
//! The runtime drives "Ticket" instances through `Open -> InProgress -> Resolved -> Closed`
//! and publishes every transition, a snapshot every 2 transitions (and on the final state),
//! then shows the three ways to publish: awaited one by one, as a batch, and
//! fire-and-forget.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use xclog_producer::{
    Producer, ProducerConfig, SequenceAssigner, SnapshotPolicy, TopicSpec, ensure_topic,
};
use xclog_schema::{FsmEvent, FsmInstance, InstanceStatus, PersistedEvent, new_event_id};

/// The machine: (event, from, to). Reaching `Closed` completes the instance.
const TRANSITIONS: &[(&str, &str, &str)] = &[
    ("START", "Open", "InProgress"),
    ("RESOLVE", "InProgress", "Resolved"),
    ("CLOSE", "Resolved", "Closed"),
];

/// The runtime's in-memory state: its instances plus the two producer helpers.
struct Runtime {
    producer: Producer,
    sequences: SequenceAssigner,
    snapshots: SnapshotPolicy,
    instances: Vec<FsmInstance>,
    /// Id of the last event, used as `causedBy` of the next one (a simple causal chain).
    last_event_id: Option<String>,
}

impl Runtime {
    /// Builds the `PersistedEvent` for a transition of `instance` and applies it in memory.
    /// Apps persist first and apply second; here both happen before publishing for brevity.
    fn transition(&mut self, index: usize, event_type: &str, to: &str) -> PersistedEvent {
        let now = now_millis();
        let instance = &mut self.instances[index];
        let before = std::mem::replace(&mut instance.current_state, to.to_owned());
        instance.updated_at = now;
        if to == "Closed" {
            instance.status = InstanceStatus::Completed;
        }
        let mut event = PersistedEvent {
            id: new_event_id(),
            instance_id: instance.id.clone(),
            machine_name: instance.machine_name.clone(),
            component_name: "HelpdeskComponent".into(),
            event: FsmEvent {
                event_type: event_type.into(),
                payload: json!({ "by": "example" }),
                timestamp: Some(now),
                extra: Default::default(),
            },
            state_before: before,
            state_after: to.into(),
            persisted_at: now,
            caused_by: self.last_event_id.iter().cloned().collect(),
            caused: vec![],
            source_component_name: None,
            target_component_name: None,
            public_member_snapshot: instance.public_member.clone(),
            sequence: None,
        };
        // The assigner numbers each instance's events 1, 2, 3, ... so the projector can
        // detect gaps and order records without relying on timestamps.
        self.sequences.assign(&mut event);
        self.last_event_id = Some(event.id.clone());
        event
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "xclog.example".into());

    // 1. Plain config struct; the defaults are the safe ones (idempotent, acks=all).
    let config = ProducerConfig::new(&brokers, &topic);

    // 2. The topic must exist (auto-creation is off in a sane cluster). ensure_topic creates
    //    it with infinite retention, or refuses an existing one that compacts or expires data.
    let ensured = ensure_topic(&config, &TopicSpec::new(&topic, 3, 1)).await?;
    println!(
        "topic {topic}: created={} partitions={}",
        ensured.created, ensured.partitions
    );

    // 3. Connect: checks the brokers answer and the topic exists, with clear errors if not.
    let producer = Producer::connect(config).await?;
    let mut runtime = Runtime {
        producer,
        sequences: SequenceAssigner::new(),
        snapshots: SnapshotPolicy::every(NonZeroU32::new(2).expect("2 > 0")),
        instances: Vec::new(),
        last_event_id: None,
    };

    // 4. Create three tickets; a creation event has stateBefore "".
    let mut creations = Vec::new();
    for n in 0..3 {
        let now = now_millis();
        let id = new_event_id(); // instance ids are UUIDv7 too
        runtime.instances.push(FsmInstance {
            id,
            machine_name: "Ticket".into(),
            current_state: String::new(),
            context: json!({}),
            public_member: Some(json!({ "title": format!("ticket {n}") })),
            internal_member: None,
            created_at: now,
            updated_at: now,
            status: InstanceStatus::Active,
            is_entry_point: None,
            parent_instance_id: None,
            parent_machine_name: None,
        });
        creations.push(runtime.transition(n, "CREATE", "Open"));
    }
    // append_all: one call, every record acknowledged (or a Batch error saying which were).
    let positions = runtime.producer.append_all(&creations).await?;
    println!("created 3 tickets at {positions:?}");

    // 5. Drive each ticket to Closed, awaiting each acknowledgement (append), and let the
    //    snapshot policy publish snapshots when due (every 2 transitions, and on Closed).
    for index in 0..runtime.instances.len() {
        for (event_type, from, to) in TRANSITIONS {
            assert_eq!(runtime.instances[index].current_state, *from);
            let event = runtime.transition(index, event_type, to);
            let position = runtime.producer.append(&event).await?;
            let instance = runtime.instances[index].clone();
            let snapshot = runtime
                .snapshots
                .publish_if_due(&runtime.producer, &instance, &event)
                .await?;
            println!(
                "{} {} -> {} at {:?}{}",
                instance.id,
                from,
                to,
                position,
                if snapshot.is_some() {
                    " (+snapshot)"
                } else {
                    ""
                }
            );
        }
    }

    // 6. Fire-and-forget: enqueue now, await the handles later (for example at the end of
    //    a request). Here: a burst of self-transitions of the first (closed) ticket.
    let mut handles = Vec::new();
    for _ in 0..100 {
        let event = runtime.transition(0, "TOUCH", "Closed");
        handles.push(runtime.producer.append_nowait(&event).await?);
    }
    let mut acknowledged = 0;
    for handle in handles {
        // Each error says what to do: error.next_move() is Retry, FixConfig, GiveUp or Recreate.
        match handle.await {
            Ok(_) => acknowledged += 1,
            Err(error) => eprintln!("not acknowledged ({:?}): {error}", error.next_move()),
        }
    }
    println!("fire-and-forget: {acknowledged}/100 acknowledged");

    // 7. Close drains what is still queued. Dropping without close would purge it.
    runtime.producer.close(Duration::from_secs(10)).await?;
    Ok(())
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
