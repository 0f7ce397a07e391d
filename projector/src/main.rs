//! The `xclog` command line: thin by design. Each subcommand parses its typed config
//! (flags and `XCLOG_*` environment variables, from one clap definition) and hands it to
//! the library. Errors are reported once, here, with their cause chain.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if let Err(error) = cli::init_tracing(&args) {
        eprintln!("error: {error:#}");
        return std::process::ExitCode::FAILURE;
    }
    match cli::run(args).await {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
