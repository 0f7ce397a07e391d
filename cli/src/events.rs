//! `xclog events`: events of one instance (in log order) or of a time range, from the store.

use std::process::ExitCode;

use xclog_projector::read::{EventStore, Page, StoredEvent};

/// Options of `xclog events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Instance whose history to show, in log order.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub instance: Option<String>,
    /// Start of a time range (inclusive), instead of --instance: ISO-8601 UTC
    /// (`2026-01-01T00:00:00Z`) or epoch milliseconds.
    #[arg(long, value_parser = xclog_projector::time::parse)]
    pub from: Option<i64>,
    /// End of a time range (inclusive): ISO-8601 UTC or epoch milliseconds.
    #[arg(long, value_parser = xclog_projector::time::parse)]
    pub to: Option<i64>,
    /// Most events to print.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue after this cursor (printed at the end of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    /// Print JSON (one object: events and next cursor; times in epoch milliseconds) instead of
    /// lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// Prints the events.
pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let reader = args.db.store().await?;
    let page = Page {
        limit: args.limit,
        after: args.after.clone(),
    };
    let result = match (&args.instance, args.from, args.to) {
        (Some(id), _, _) => reader.events_of_instance(id, &page).await?,
        (None, from, to) if from.is_some() || to.is_some() => {
            reader
                .events_in_time_range(from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX), &page)
                .await?
        }
        _ => reader.list_events(&page).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    if result.events.is_empty() {
        println!("no events");
    }
    for e in &result.events {
        println!("{}", line(e));
    }
    if let Some(next) = &result.next {
        println!("more: --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One human-readable line per event (its time in ISO-8601 UTC).
pub fn line(e: &StoredEvent) -> String {
    let p = &e.event;
    let from = if p.state_before.is_empty() {
        "(new)"
    } else {
        p.state_before.as_str()
    };
    let mut s = format!(
        "{at}  {comp}/{machine} {inst}  {ty}: {from} -> {to}  id={id}",
        at = xclog_projector::time::iso(p.persisted_at),
        comp = p.component_name,
        machine = p.machine_name,
        inst = p.instance_id,
        ty = p.event.event_type,
        to = p.state_after,
        id = p.id,
    );
    if !p.caused_by.is_empty() {
        s.push_str(&format!("  caused_by={}", p.caused_by.join(",")));
    }
    if !p.caused.is_empty() {
        s.push_str(&format!("  caused={}", p.caused.join(",")));
    }
    s
}
