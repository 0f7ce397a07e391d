//! Small cleanup and check tools: `mongo-count`, `mongo-drop`, `mongo-server`, `delete-topics`.

use std::time::Duration;

use anyhow::Context as _;
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use xclog_projector::sink::mongo::server::MongoServer;

/// The Mongo server to talk to (`mongo-server`; part of the other tools' options).
#[derive(Debug, clap::Args)]
pub struct MongoUri {
    /// MongoDB URI.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/"
    )]
    uri: String,
}

/// Options naming one Mongo database (and optionally a collection).
#[derive(Debug, clap::Args)]
pub struct MongoArgs {
    #[command(flatten)]
    server: MongoUri,
    /// Database.
    #[arg(long)]
    db: String,
    /// Collection (for `mongo-count`).
    #[arg(long, default_value = "events")]
    collection: String,
}

/// Options of `delete-topics`.
#[derive(Debug, clap::Args)]
pub struct DeleteTopicsArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "XCLOG_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topics to delete (missing ones are ignored).
    topics: Vec<String>,
}

/// Prints the exact number of documents in the collection.
pub async fn mongo_count(args: MongoArgs) -> anyhow::Result<Value> {
    let client = mongodb::Client::with_uri_str(&args.server.uri).await?;
    let n = client
        .database(&args.db)
        .collection::<Document>(&args.collection)
        .count_documents(doc! {})
        .await
        .with_context(|| format!("counting {}.{}", args.db, args.collection))?;
    Ok(json!(n))
}

/// Prints what answers at the URI: `{"server": "ferretdb" | "mongodb", "version": ...}`.
/// `scripts/bench.sh` sizes the Mongo workload by it (FerretDB 1.24 scans a collection for
/// every update statement, so a backlog of a million events would take hours there).
pub async fn mongo_server(args: MongoUri) -> anyhow::Result<Value> {
    let client = mongodb::Client::with_uri_str(&args.uri).await?;
    let server = MongoServer::detect(&client)
        .await
        .context("running buildInfo")?;
    Ok(server_json(&server))
}

/// The JSON line `scripts/bench.sh` reads.
fn server_json(server: &MongoServer) -> Value {
    match server {
        MongoServer::FerretDb {
            version,
            compatible_with,
        } => json!({"server": "ferretdb", "version": version, "compatible_with": compatible_with}),
        MongoServer::MongoDb { version } => json!({"server": "mongodb", "version": version}),
        other => json!({"server": "unknown", "name": other.to_string()}),
    }
}

/// Drops the database.
pub async fn mongo_drop(args: MongoArgs) -> anyhow::Result<Value> {
    let client = mongodb::Client::with_uri_str(&args.server.uri).await?;
    client
        .database(&args.db)
        .drop()
        .await
        .with_context(|| format!("dropping {}", args.db))?;
    Ok(json!({"dropped": args.db}))
}

/// Deletes topics.
pub async fn delete_topics(args: DeleteTopicsArgs) -> anyhow::Result<Value> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let names: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    Ok(json!({"deleted": deleted}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_line_names_ferretdb_with_both_versions_and_mongodb_with_its_own() {
        // As FerretDB v1.24 answers (built with `go install`, so its own version is unknown).
        let ferret = doc! {"version": "7.0.42", "ferretdbVersion": "unknown", "ok": 1.0};
        assert_eq!(
            server_json(&MongoServer::from_build_info(&ferret)),
            json!({"server": "ferretdb", "version": "unknown", "compatible_with": "7.0.42"})
        );
        let mongod = doc! {"version": "7.0.14", "gitVersion": "ce59cfc", "ok": 1.0};
        assert_eq!(
            server_json(&MongoServer::from_build_info(&mongod)),
            json!({"server": "mongodb", "version": "7.0.14"})
        );
    }
}
