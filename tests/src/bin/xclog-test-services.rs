//! Runs one command with the test services' addresses in its environment, chosen as the Rust
//! tests choose them (`xclog_tests::services`): the addresses already set, else containers on
//! a Docker engine (removed after this process exits), else the local stack's defaults.
//! `make test-docker` runs the TypeScript suites through it:
//!
//! ```text
//! cargo run -p xclog-tests --bin xclog-test-services -- scripts/ts.sh test --prebuilt
//! ```

use std::process::ExitCode;

use xclog_tests::Service;
use xclog_tests::services::{self, Origin};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--") {
        args.next();
    }
    let Some(program) = args.next() else {
        eprintln!("usage: xclog-test-services [--] COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let origin = match services::services().origin {
        Origin::Environment => "the addresses set in the environment",
        Origin::Containers => "containers on the Docker engine",
        Origin::LocalDefaults => "the local stack's default addresses",
    };
    let (kafka, postgres, mongo) = (
        services::address(Service::Kafka),
        services::address(Service::Postgres),
        services::address(Service::Mongo),
    );
    eprintln!(
        "xclog-test-services: {origin}: XCLOG_KAFKA_BROKERS={kafka}, PostgreSQL and MongoDB on 127.0.0.1"
    );
    let status = std::process::Command::new(&program)
        .args(args)
        .env("XCLOG_KAFKA_BROKERS", kafka)
        .env("DATABASE_URL", postgres)
        .env("MONGODB_URI", mongo)
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("xclog-test-services: {program:?} ended with {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("xclog-test-services: running {program:?} failed: {error}");
            ExitCode::from(2)
        }
    }
}
