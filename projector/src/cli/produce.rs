//! `xclog produce`: the load generator (being written by the producer work).

use std::process::ExitCode;

/// Options of `xclog produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {}

pub async fn run(_args: ProduceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("xclog produce is not built yet")
}
