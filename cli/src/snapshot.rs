//! `xclog snapshot`: show (or delete, or list) instance snapshots. Deleting publishes a
//! snapshot deletion to the log topic; the projectors apply it to every store.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use xclog_producer::{Producer, ProducerConfig};
use xclog_projector::read::{Page, SnapshotStore};
use xclog_schema::{Record, SnapshotDeletion};

/// Options of `xclog snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Instance whose snapshot to show (omit with --list).
    #[arg(required_unless_present = "list")]
    pub instance_id: Option<String>,
    /// Delete the snapshot: publish a snapshot deletion to --topic, which the projectors apply
    /// to every store in log order (a rebuild keeps it deleted). Needs no store connection.
    #[arg(long, requires = "instance_id")]
    pub delete: bool,
    /// With --delete: the sequence of the instance's last event, if the runtime numbers them.
    #[arg(long, requires = "delete")]
    pub sequence: Option<u64>,
    /// List snapshots by instance id.
    #[arg(long, conflicts_with = "instance_id")]
    pub list: bool,
    /// Most snapshots to list.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue the listing after this instance id.
    #[arg(long)]
    pub after: Option<String>,
    /// Print JSON (times in epoch milliseconds) instead of text.
    #[arg(long)]
    pub json: bool,
    // With --delete: the topic the deletion is published to, and its brokers.
    #[command(flatten)]
    pub log: super::LogTopicArgs,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// Shows, deletes or lists; exit code 1 if the snapshot to show does not exist.
pub async fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    if args.delete {
        let id = args.instance_id.clone().unwrap_or_default();
        anyhow::ensure!(!id.is_empty(), "the instance id must not be empty");
        // Published as a runtime publishes it: the Rust producer (idempotent, acks=all, key =
        // instance id, the wire headers), waiting for the brokers' acknowledgement.
        let record = Record::SnapshotDeletion(SnapshotDeletion {
            instance_id: id.clone(),
            snapshot_deleted_at: now_ms(),
            sequence: args.sequence,
        });
        let mut config = ProducerConfig::new(&args.log.brokers, &args.log.topic);
        args.log.kafka.apply_to_producer(&mut config)?;
        let producer = Producer::connect(config)
            .await
            .with_context(|| super::kafka_hint(&args.log.brokers, &args.log.topic))?;
        let at = producer.publish(&record).await?;
        producer.close(Duration::from_secs(30)).await?;
        if args.json {
            let published = serde_json::json!({
                "topic": args.log.topic, "partition": at.partition, "offset": at.offset, "record": record,
            });
            println!("{}", serde_json::to_string_pretty(&published)?);
        } else {
            println!(
                "published the deletion of the snapshot of {id}: topic {} partition {} offset {}",
                args.log.topic, at.partition, at.offset
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reader = args.db.store().await?;
    if args.list {
        let page = reader
            .list_snapshots(&Page {
                limit: args.limit,
                after: args.after.clone(),
            })
            .await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
        } else {
            for s in &page.snapshots {
                println!(
                    "{}  {} {} [{}]  snapshot_at={}",
                    s.instance.id,
                    s.instance.machine_name,
                    s.instance.current_state,
                    s.instance.status.as_str(),
                    xclog_projector::time::iso(s.snapshot_at)
                );
            }
            if let Some(next) = page.next {
                println!("more: --after {next}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = args.instance_id.clone().unwrap_or_default();
    let Some(s) = reader.snapshot(&id).await? else {
        eprintln!(
            "no snapshot for instance {id} in {} (list them with `xclog snapshot --list`)",
            args.db.target
        );
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let i = &s.instance;
        println!("instance     {}", i.id);
        println!("machine      {}", i.machine_name);
        println!("state        {} [{}]", i.current_state, i.status.as_str());
        match s.sequence {
            Some(sequence) => println!(
                "snapshot at  {}  (sequence {sequence})",
                xclog_projector::time::iso(s.snapshot_at)
            ),
            None => println!("snapshot at  {}", xclog_projector::time::iso(s.snapshot_at)),
        }
        println!("last event   {}", s.last_event_id);
        println!("created      {}", xclog_projector::time::iso(i.created_at));
        println!("updated      {}", xclog_projector::time::iso(i.updated_at));
        if let Some(p) = &i.parent_instance_id {
            println!(
                "parent       {p} ({})",
                i.parent_machine_name
                    .as_deref()
                    .unwrap_or("machine unknown")
            );
        }
        println!("context      {}", i.context);
        if let Some(pm) = &i.public_member {
            println!("publicMember {pm}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
