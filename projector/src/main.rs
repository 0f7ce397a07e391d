//! The `xclog` command line: thin by design. Each subcommand parses its typed config
//! (flags and `XCLOG_*` environment variables, from one clap definition) and hands it to
//! the library. Errors are reported once, here, with their cause chain.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args.log);
    match cli::run(args).await {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
