//! Publishes one small event per instance id read from standard input (one per line) and
//! prints where each landed as `<instance id> <partition> <offset>`: the Rust side of the
//! TypeScript package's test that both producers place every key on the same partition.
//!
//! ```text
//! printf 'a\nb\n' | cargo run -p xclog-producer --example publish_keys -- 127.0.0.1:9092 xclog.keys
//! ```

use std::io::BufRead;

use serde_json::json;
use xclog_producer::{Producer, ProducerConfig};
use xclog_schema::{FsmEvent, PersistedEvent, new_event_id};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: publish_keys BROKERS TOPIC < ids"))?;
    let producer = Producer::connect(ProducerConfig::new(&brokers, &topic)).await?;
    for line in std::io::stdin().lock().lines() {
        let instance_id = line?;
        if instance_id.is_empty() {
            continue;
        }
        let event = PersistedEvent {
            id: new_event_id(),
            instance_id: instance_id.clone(),
            machine_name: "Keys".into(),
            component_name: "KeysComponent".into(),
            event: FsmEvent {
                event_type: "PLACED".into(),
                payload: json!({}),
                timestamp: None,
                extra: Default::default(),
            },
            state_before: String::new(),
            state_after: "Placed".into(),
            persisted_at: 0,
            caused_by: Vec::new(),
            caused: Vec::new(),
            source_component_name: None,
            target_component_name: None,
            public_member_snapshot: None,
            sequence: None,
        };
        let at = producer.append(&event).await?;
        println!("{instance_id} {} {}", at.partition, at.offset);
    }
    producer.close(std::time::Duration::from_secs(30)).await?;
    Ok(())
}
