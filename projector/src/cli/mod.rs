//! Subcommands of `xclog`. One file per subcommand; each owns its clap `Args` struct,
//! whose doc comments are the `--help` text.

mod produce;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// xclog: the durable event log for FSM runtimes (Kafka -> PostgreSQL / MongoDB).
#[derive(Debug, Parser)]
#[command(name = "xclog", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (for example `info,xclog_projector=debug`).
    #[arg(long, env = "XCLOG_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "XCLOG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a realistic, reproducible FSM workload to the log topic (load generator).
    Produce(produce::ProduceArgs),
}

/// Installs the global tracing subscriber (logs go to stderr; stdout is for command output).
pub fn init_tracing(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the chosen subcommand until it finishes or is stopped (Ctrl-C / SIGTERM).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Produce(args) => produce::run(args).await,
    }
}
