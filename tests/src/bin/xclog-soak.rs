//! `xclog-soak`, run by `make soak`: the fault soak of [`xclog_tests::soak`] against the local
//! stack, with the full run's parameters unless told otherwise. Prints the report; exits 1 when
//! anything was lost, doubled or disagrees, 2 when the run could not be carried out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use xclog_tests::soak::{SoakConfig, run};

/// The fault soak: continuous publishing while projector processes are SIGKILLed and Kafka,
/// PostgreSQL and FerretDB are restarted; then nothing may be lost or doubled.
#[derive(Debug, Parser)]
#[command(name = "xclog-soak", long_about = None)]
struct Args {
    /// SIGKILLs per store (PostgreSQL projector and MongoDB projector).
    #[arg(long, env = "XCLOG_SOAK_KILLS", default_value_t = 100)]
    kills: u64,
    /// Restarts of each service (Kafka, PostgreSQL, FerretDB).
    #[arg(long, env = "XCLOG_SOAK_RESTARTS", default_value_t = 3)]
    restarts: u64,
    /// Seconds between two service restarts.
    #[arg(long, env = "XCLOG_SOAK_RESTART_INTERVAL_SECS", default_value_t = 40)]
    restart_interval_secs: u64,
    /// Records (events and snapshots) published per second; FerretDB's projector must keep up.
    #[arg(long, env = "XCLOG_SOAK_RATE", default_value_t = 15)]
    rate: u64,
    /// Most members alive at once in each store's consumer group (1 to this).
    #[arg(long, env = "XCLOG_SOAK_MEMBERS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    members: u64,
    /// Bound of the kill-and-restart phase, in seconds.
    #[arg(long, env = "XCLOG_SOAK_MAX_SECS", default_value_t = 2400)]
    max_secs: u64,
    /// Bound of each store's final catch-up, in seconds.
    #[arg(long, env = "XCLOG_SOAK_CATCH_UP_SECS", default_value_t = 600)]
    catch_up_secs: u64,
    /// Seed of the kill schedule and the workload (default: from the clock; printed).
    #[arg(long, env = "XCLOG_SOAK_SEED")]
    seed: Option<u64>,
    /// The `xclog` binary the members run (default: the one beside this binary).
    #[arg(long, env = "XCLOG_TEST_BINARY")]
    xclog: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The soak's own clients (its producer's librdkafka errors); members log to the soak log.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XCLOG_SOAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("xclog")));
    let Some(xclog) = args.xclog.or(beside).filter(|bin| bin.exists()) else {
        eprintln!("error: no xclog binary; cargo build -p xclog-cli --bin xclog, or --xclog PATH");
        return ExitCode::from(2);
    };
    let mut config = SoakConfig::full(xclog);
    config.kills_per_store = args.kills;
    config.kafka_restarts = args.restarts;
    config.postgres_restarts = args.restarts;
    config.ferretdb_restarts = args.restarts;
    config.restart_interval = Duration::from_secs(args.restart_interval_secs);
    config.records_per_sec = args.rate;
    config.max_members = args.members;
    config.max_duration = Duration::from_secs(args.max_secs);
    config.catch_up = Duration::from_secs(args.catch_up_secs);
    config.seed = args.seed;
    match run(config).await {
        Ok(report) => {
            print!("{}", report.to_text());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                println!("{}", report.verify_output);
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("error: the soak could not be carried out: {error:#}");
            ExitCode::from(2)
        }
    }
}
