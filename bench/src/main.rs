//! `xclog-bench`: the small tools `scripts/bench.sh` needs around the measured processes.
//!
//! - `prepare`: reads the log topic once and republishes its events in the forms the peers
//!   read (JSON-with-schema for the JDBC sink, plain JSON documents for the Mongo sink), and
//!   writes the Mongo documents to a file for the bulk-insert limit;
//! - `mongo-bulk`: the Mongo limit, unordered `insertMany` of those documents;
//! - `wait`: polls a row/document count until it reaches a target and reports when the first
//!   and the last rows became visible and the peak RSS of a process;
//! - `delay`: publishes fresh events at a steady rate and measures "publish acknowledged ->
//!   row visible" in PostgreSQL (p50, p99, max);
//! - `mongo-server`: whether the Mongo URI is a MongoDB or a FerretDB (sizes the Mongo workload);
//! - `mongo-count`, `mongo-drop`, `delete-topics`: checks and cleanup.
//!
//! Every tool prints one JSON object on stdout (the script parses it) and logs to stderr.

mod admin;
mod delay;
mod mongo_bulk;
mod prepare;
mod wait;

use clap::{Parser, Subcommand};

/// Helper binary of scripts/bench.sh.
#[derive(Debug, Parser)]
#[command(name = "xclog-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Republish the log topic's events for the peers and write the Mongo documents file.
    Prepare(prepare::PrepareArgs),
    /// Unordered bulk insert of the documents file (the Mongo limit).
    MongoBulk(mongo_bulk::MongoBulkArgs),
    /// Wait until a count reaches a target; report timings and peak RSS.
    Wait(wait::WaitArgs),
    /// Publish at a steady rate; measure publish acknowledged -> row visible.
    Delay(delay::DelayArgs),
    /// Print the number of documents in a collection.
    MongoCount(admin::MongoArgs),
    /// Drop a Mongo database.
    MongoDrop(admin::MongoArgs),
    /// Print which server answers at the Mongo URI (MongoDB or FerretDB) and its version.
    MongoServer(admin::MongoUri),
    /// Delete topics.
    DeleteTopics(admin::DeleteTopicsArgs),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Prepare(args) => prepare::run(args).await?,
        Command::MongoBulk(args) => mongo_bulk::run(args).await?,
        Command::Wait(args) => wait::run(args).await?,
        Command::Delay(args) => delay::run(args).await?,
        Command::MongoCount(args) => admin::mongo_count(args).await?,
        Command::MongoDrop(args) => admin::mongo_drop(args).await?,
        Command::MongoServer(args) => admin::mongo_server(args).await?,
        Command::DeleteTopics(args) => admin::delete_topics(args).await?,
    };
    println!("{report}");
    Ok(())
}
