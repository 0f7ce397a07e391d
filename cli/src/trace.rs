//! `xclog trace`: the causes and effects of one event, across components.

use std::process::ExitCode;

/// Options of `xclog trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The event to trace from.
    pub event_id: String,
    /// Most events in the trace (the walk stops there and says so).
    #[arg(long, default_value_t = 1000)]
    pub max: usize,
    /// Print JSON instead of an indented list.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: super::DbArgs,
}

/// Prints the trace; exit code 1 if the event is unknown.
pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let reader = args.db.store().await?;
    let Some(trace) = xclog_projector::read::trace(&reader, &args.event_id, args.max).await? else {
        eprintln!(
            "no event with id {} in {} (find ids with `xclog events --instance <INSTANCE_ID>`)",
            args.event_id, args.db.target
        );
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
        return Ok(ExitCode::SUCCESS);
    }
    let min = trace.events.iter().map(|t| t.depth).min().unwrap_or(0);
    for t in &trace.events {
        let marker = if t.depth == 0 { "*" } else { " " };
        let indent = "  ".repeat((t.depth - min) as usize);
        println!("{marker}{indent}{}", super::events::line(&t.event));
    }
    if trace.truncated {
        println!("(stopped at --max {}; the trace goes on)", args.max);
    }
    Ok(ExitCode::SUCCESS)
}
