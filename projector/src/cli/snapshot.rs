//! `xclog snapshot`: show (or delete, or list) instance snapshots.

use std::process::ExitCode;

use xclog_projector::read::{Page, SnapshotStore};

/// Options of `xclog snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// Instance whose snapshot to show (omit with --list).
    #[arg(required_unless_present = "list")]
    pub instance_id: Option<String>,
    /// Delete the snapshot instead of showing it.
    #[arg(long, requires = "instance_id")]
    pub delete: bool,
    /// List snapshots by instance id.
    #[arg(long, conflicts_with = "instance_id")]
    pub list: bool,
    /// Most snapshots to list.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue the listing after this instance id.
    #[arg(long)]
    pub after: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// Shows, deletes or lists; exit code 1 if the snapshot does not exist.
pub async fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
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
                    s.snapshot_at
                );
            }
            if let Some(next) = page.next {
                println!("more: --after {next}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let id = args.instance_id.clone().unwrap_or_default();
    if args.delete {
        let existed = reader.delete_snapshot(&id).await?;
        println!("{}", if existed { "deleted" } else { "no snapshot" });
        return Ok(if existed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let Some(s) = reader.snapshot(&id).await? else {
        eprintln!("no snapshot for instance {id:?}");
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let i = &s.instance;
        println!("instance     {}", i.id);
        println!("machine      {}", i.machine_name);
        println!("state        {} [{}]", i.current_state, i.status.as_str());
        println!(
            "snapshot at  {}  (sequence {:?})",
            s.snapshot_at, s.sequence
        );
        println!("last event   {}", s.last_event_id);
        println!("created/upd  {} / {}", i.created_at, i.updated_at);
        if let Some(p) = &i.parent_instance_id {
            println!(
                "parent       {p} ({})",
                i.parent_machine_name.as_deref().unwrap_or("?")
            );
        }
        println!("context      {}", i.context);
        if let Some(pm) = &i.public_member {
            println!("publicMember {pm}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
