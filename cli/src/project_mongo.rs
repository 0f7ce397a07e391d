//! The MongoDB write options of `xclog project` and `xclog rebuild` (with `--target mongo`).

use std::time::Duration;

use xclog_projector::sink::mongo::MongoSinkConfig;

/// How the projector writes to MongoDB (used with `--target mongo`).
#[derive(Debug, clap::Args)]
pub struct MongoWriteArgs {
    /// Do not ask for `w: "majority"` on writes (majority is what a replica set needs for an
    /// acknowledged batch to survive a failover; standalone servers treat it as `w: 1`).
    #[arg(long, env = "XCLOG_MONGODB_NO_MAJORITY")]
    pub mongodb_no_majority: bool,
    /// How long one write-path command may wait for the server's reply, in ms; then the batch
    /// fails as transient and is retried (so a frozen server never holds a writer for ever).
    #[arg(long, env = "XCLOG_MONGODB_COMMAND_TIMEOUT_MS", default_value_t = xclog_projector::sink::mongo::DEFAULT_COMMAND_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub mongodb_command_timeout_ms: u64,
}

impl MongoWriteArgs {
    /// The MongoDB sink configuration for `projection` in the store `store` names.
    pub fn sink_config(&self, store: &super::StoreArgs, projection: String) -> MongoSinkConfig {
        let mut config = MongoSinkConfig::new(store.mongodb_uri.clone(), projection);
        config.database = store.mongodb_database.clone();
        config.majority_writes = !self.mongodb_no_majority;
        config.command_timeout = self.command_timeout();
        config
    }

    /// `--mongodb-command-timeout-ms`.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.mongodb_command_timeout_ms)
    }
}
