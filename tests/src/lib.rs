//! Test support for xclog's end-to-end tests (the tests themselves are in `tests/tests/`).
//!
//! Every test that touches a real service gets its own resources, so tests run in parallel
//! (only tests that restart or freeze a shared server run one at a time: alone in their binary,
//! or `#[serial]`):
//! - [`TestTopic`]: a topic with a unique name, deleted when dropped;
//! - [`TestPg`]: a fresh PostgreSQL database, dropped when dropped;
//! - [`TestMongo`]: a fresh MongoDB (FerretDB on the native stack) database, dropped when dropped.
//!
//! [`soak`] is the fault soak (`make soak`, and its short run in `tests/fault_soak.rs`).
//!
//! [`services`] chooses, once per test binary, which Kafka, PostgreSQL and MongoDB the tests
//! talk to: the addresses in `XCLOG_KAFKA_BROKERS`, `DATABASE_URL` and `MONGODB_URI` (the native
//! stack, `scripts/stack.sh env`); else containers, when a Docker engine answers; else the
//! local stack's defaults. Waiting is done on conditions with a deadline ([`wait_until`]),
//! never by sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgPool};
use xclog_projector::sink::mongo::server::MongoServer;

pub mod services;
pub mod soak;

pub use services::Service;

/// Kafka bootstrap servers of this binary's services ([`services`]: `XCLOG_KAFKA_BROKERS`,
/// containers, or `127.0.0.1:9092`).
pub fn brokers() -> String {
    services::address(Service::Kafka).to_owned()
}

/// PostgreSQL URL of the services' main database (`DATABASE_URL`, a container's, or the local
/// stack's).
pub fn database_url() -> String {
    services::address(Service::Postgres).to_owned()
}

/// MongoDB URI of the services (`MONGODB_URI`, a container's, or `mongodb://127.0.0.1:27017/`).
pub fn mongodb_uri() -> String {
    services::address(Service::Mongo).to_owned()
}

/// A short random suffix for resource names (lowercase hex, safe for topics and databases).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Polls `condition` until it returns `Ok(Some(value))`, or fails after `timeout` with the
/// last observation (`Ok(None)` means "not yet"; `Err` is also treated as "not yet" and kept
/// for the failure message).
pub async fn wait_until<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match condition().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => last = "condition not met yet".to_owned(),
            Err(error) => last = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin_client() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .context("creating a Kafka admin client")
}

/// A Kafka topic with a unique name, deleted (with its `.dlq` and `.dlq.rebuild` companions,
/// if any) on drop.
#[derive(Debug)]
pub struct TestTopic {
    /// The topic's name (`xclog-test-<suffix>`).
    pub name: String,
    /// Its number of partitions.
    pub partitions: i32,
}

impl TestTopic {
    /// Creates a topic with `partitions` partitions (replication 1) and waits until its
    /// metadata shows every partition with a leader.
    pub async fn create(partitions: i32) -> anyhow::Result<Self> {
        Self::create_with(format!("xclog-test-{}", unique_suffix()), partitions, &[]).await
    }

    /// Creates the topic `name` with `partitions` partitions and the topic settings `config`
    /// (such as `max.message.bytes`), and waits until every partition has a leader.
    pub async fn create_with(
        name: String,
        partitions: i32,
        config: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin = admin_client()?;
        let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        for (k, v) in config {
            topic = topic.set(k, v);
        }
        let results = admin
            .create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .context("create_topics request")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic} failed: {code}");
            }
        }
        let topic = Self { name, partitions };
        topic.wait_ready().await?;
        Ok(topic)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("xclog-test-probe-{}", unique_suffix()))
            .create()?;
        let name = self.name.clone();
        let expected = self.partitions as usize;
        wait_until(
            Duration::from_secs(30),
            "topic partitions to have leaders",
            || {
                let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(5));
                let ready = match metadata {
                    Ok(m) => m.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && t.partitions().len() == expected
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    }),
                    Err(_) => false,
                };
                async move { Ok(ready.then_some(())) }
            },
        )
        .await
    }

    /// Reads the topic from the beginning until `count` messages were received (all
    /// partitions), or fails after `timeout` saying how many arrived.
    pub async fn consume(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        consume_topic(&self.name, count, timeout).await
    }
}

/// Reads `topic` from the beginning (a fresh consumer group) until `count` messages arrived.
pub async fn consume_topic(
    topic: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    use futures::StreamExt as _;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("xclog-test-reader-{}", unique_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating a test consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    let mut out = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = consumer.stream();
    while out.len() < count {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => out.push(message.detach()),
            Ok(Some(Err(error))) => bail!("consuming {topic}: {error}"),
            Ok(None) => bail!("consumer stream of {topic} ended"),
            Err(_) => bail!(
                "timed out after {timeout:?} reading {topic}: got {} of {count} messages",
                out.len()
            ),
        }
    }
    Ok(out)
}

/// Deletes topics, ignoring "unknown topic" (for cleanup paths).
pub async fn delete_topics(names: &[&str]) -> anyhow::Result<()> {
    let admin = admin_client()?;
    admin
        .delete_topics(
            names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .context("delete_topics request")?;
    Ok(())
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        // The topic, its dead-letter topic and a rebuild's (`xclog rebuild`).
        let names = [
            self.name.clone(),
            format!("{}.dlq", self.name),
            format!("{}.dlq.rebuild", self.name),
        ];
        run_cleanup(async move {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            delete_topics(&refs).await
        });
    }
}

/// Runs an async cleanup from `Drop`, on its own thread and runtime (a test's runtime may be
/// shutting down). Failures are reported on stderr, never panic in drop.
/// How long dropping a test's database may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

fn run_cleanup<F>(future: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            // Bounded: a server that stopped answering must fail the test, not hang it.
            Ok(rt) => {
                match rt.block_on(async { tokio::time::timeout(CLEANUP_TIMEOUT, future).await }) {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => eprintln!("test cleanup failed: {error:#}"),
                    Err(_) => eprintln!(
                        "test cleanup did not finish within {CLEANUP_TIMEOUT:?} (the server is not answering); left as is"
                    ),
                }
            }
            Err(error) => eprintln!("test cleanup could not start a runtime: {error}"),
        }
    });
    let _ = handle.join();
}

/// A fresh PostgreSQL database for one test, dropped (with `FORCE`) on drop.
#[derive(Debug)]
pub struct TestPg {
    /// The database name (`xclog_test_<suffix>`).
    pub name: String,
    /// A URL that points at this database (same credentials as `DATABASE_URL`).
    pub url: String,
    /// A small pool on this database.
    pub pool: PgPool,
    admin_url: String,
}

impl TestPg {
    /// Creates the database and a pool of up to 5 connections to it.
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = database_url();
        let name = format!("xclog_test_{}", unique_suffix());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("connecting to DATABASE_URL (is the stack up? scripts/stack.sh up)")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        admin.close().await.ok();
        let url = replace_database(&admin_url, &name)?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {name}"))?;
        Ok(Self {
            name,
            url,
            pool,
            admin_url,
        })
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // The pool belongs to the test's runtime, which is blocked in this drop: closing it here
        // would wait forever. `WITH (FORCE)` ends its connections server-side instead.
        run_cleanup(async move {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            Ok(())
        });
    }
}

/// Replaces the database name (the path) of a `postgres://` URL, keeping its query string.
pub fn replace_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("DATABASE_URL has no scheme")? + 3;
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// A fresh MongoDB database for one test, dropped on drop.
#[derive(Debug)]
pub struct TestMongo {
    /// The database name (`xclog_test_<suffix>`).
    pub name: String,
    /// The server URI (`MONGODB_URI`).
    pub uri: String,
    /// A connected client.
    pub client: mongodb::Client,
}

impl TestMongo {
    /// Connects and picks a unique database name (MongoDB creates it on first write).
    pub async fn create() -> anyhow::Result<Self> {
        let uri = mongodb_uri();
        let client = mongodb::Client::with_uri_str(&uri)
            .await
            .context("connecting to MONGODB_URI (is the stack up? scripts/stack.sh up)")?;
        Ok(Self {
            name: format!("xclog_test_{}", unique_suffix()),
            uri,
            client,
        })
    }

    /// The test's database handle.
    pub fn database(&self) -> mongodb::Database {
        self.client.database(&self.name)
    }

    /// The server behind the URI: MongoDB, or FerretDB on the native stack (`buildInfo`).
    pub async fn server(&self) -> anyhow::Result<MongoServer> {
        MongoServer::detect(&self.client)
            .await
            .context("asking the Mongo server who it is (buildInfo)")
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        let uri = self.uri.clone();
        let name = self.name.clone();
        run_cleanup(async move {
            let client = mongodb::Client::with_uri_str(&uri).await?;
            client.database(&name).drop().await?;
            Ok(())
        });
    }
}

/// Runs a command to its end within `timeout`, returning (success, stdout, stderr).
pub async fn run_to_end(
    timeout: Duration,
    mut c: std::process::Command,
) -> anyhow::Result<(bool, String, String)> {
    let what = format!("{:?}", c.get_args().collect::<Vec<_>>());
    let out = tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || c.stdin(std::process::Stdio::null()).output()),
    )
    .await
    .with_context(|| format!("xclog {what} did not finish within {timeout:?}"))???;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Checks the output of an `xclog rebuild` run that resumed an interrupted one: it succeeded,
/// said it resumed, read exactly the `left` records the first run had not stored, and swapped.
pub fn check_resumed_run(ok: bool, stdout: &str, stderr: &str, left: i64) -> anyhow::Result<()> {
    anyhow::ensure!(ok, "the second run failed:\n{stdout}\n{stderr}");
    anyhow::ensure!(stdout.contains("exists: resuming from"), "{stdout}");
    let to_read = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("records to read:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<i64>().ok())
        .context("no 'records to read' line")?;
    anyhow::ensure!(
        to_read == left,
        "the second run reads {to_read}, not the {left} left after the kill"
    );
    anyhow::ensure!(stdout.contains("swapped"), "{stdout}");
    Ok(())
}

/// Only the events of a workload (no snapshots).
pub fn events_only(records: Vec<xclog_schema::Record>) -> Vec<xclog_schema::Record> {
    records
        .into_iter()
        .filter(|r| matches!(r, xclog_schema::Record::Event(_)))
        .collect()
}

/// Deletes the records of `topic` below `offset` on `partition` (what retention does), and
/// waits until the low watermark has moved.
pub async fn delete_records_before(topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
    use rdkafka::Offset;
    use rdkafka::TopicPartitionList;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    let result = admin_client()?
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .context("DeleteRecords")?;
    for e in result.elements() {
        if let Err(error) = e.error() {
            bail!("DeleteRecords on partition {}: {error}", e.partition());
        }
    }
    wait_until(Duration::from_secs(30), "the low watermark to move", || {
        let topic = topic.to_owned();
        async move {
            let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .create()?;
            let (low, _) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            Ok((low >= offset).then_some(()))
        }
    })
    .await
}

/// The workspace root (where `scripts/` and `Cargo.toml` are).
pub fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest.parent().context("workspace root")?.to_owned())
}

/// The target directory this test binary lives in (`<target>/<profile>/deps/<test>`): children
/// that build something build there, sharing this build's artifacts.
pub fn test_target_dir() -> anyhow::Result<std::path::PathBuf> {
    Ok(test_profile_dir()?
        .parent()
        .context("target dir of the test binary")?
        .to_owned())
}

/// `<target>/<profile>` of this test binary.
fn test_profile_dir() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .context("target/<profile> dir of the test binary")?
        .to_owned())
}

/// Clears from `command`'s environment what cargo sets for a running test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, `CARGO_CRATE_NAME`, ...), for children that run cargo. Build scripts that
/// watch those variables (ring's watches `CARGO_MANIFEST_DIR`) would otherwise run again in a
/// nested build, rebuilding everything above them, and again in the next ordinary build.
pub fn without_test_cargo_env<C: std::borrow::BorrowMut<std::process::Command>>(
    mut command: C,
) -> C {
    const SET_FOR_TESTS: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_FOR_TESTS.iter().any(|prefix| name.starts_with(prefix)) {
            command.borrow_mut().env_remove(name);
        }
    }
    command
}

/// Path of the `xclog` binary, built on first use into the target directory this test binary
/// lives in (`target/<profile>/deps/<test>`), whatever `CARGO_TARGET_DIR` the child sees.
///
/// `XCLOG_TEST_BINARY` names a prebuilt binary instead.
pub fn xclog_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("XCLOG_TEST_BINARY") {
        return Ok(bin.into());
    }
    let (root, target_dir) = (workspace_root()?, test_target_dir()?);
    let profile_dir = test_profile_dir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = without_test_cargo_env(std::process::Command::new(cargo))
        .args(["build", "-q", "-p", "xclog-cli", "--bin", "xclog"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .status()
        .context("running cargo build for the xclog binary")?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p xclog-cli --bin xclog failed"
    );
    let bin = profile_dir.join("xclog");
    anyhow::ensure!(bin.exists(), "{} not found after building", bin.display());
    Ok(bin)
}

/// A small deterministic pseudo-random sequence (xorshift).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock (the seed is printed, so a failing run can be replayed).
    pub fn from_time() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        eprintln!("rng seed {seed}");
        Self::seeded(seed)
    }

    /// The sequence of `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value, below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// An `Order` event `id` of instance `instance` with parents `parents`, persisted at `at`: the
/// event fixture of the projector tests of both stores.
pub fn event(id: &str, instance: &str, parents: &[&str], at: i64) -> xclog_schema::PersistedEvent {
    xclog_schema::PersistedEvent {
        id: id.to_owned(),
        instance_id: instance.to_owned(),
        machine_name: "Order".to_owned(),
        component_name: "OrderComponent".to_owned(),
        event: xclog_schema::FsmEvent {
            event_type: "SUBMIT".to_owned(),
            payload: serde_json::json!({"orderId": id}),
            timestamp: Some(at),
            extra: Default::default(),
        },
        state_before: "Draft".to_owned(),
        state_after: "Submitted".to_owned(),
        persisted_at: at,
        caused_by: parents.iter().map(|p| (*p).to_owned()).collect(),
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replace_database_swaps_only_the_path_and_keeps_the_query() {
        assert_eq!(
            replace_database("postgres://u:p@127.0.0.1:5432/xclog?sslmode=disable", "t1").unwrap(),
            "postgres://u:p@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://h", "t2").unwrap(),
            "postgres://h/t2"
        );
    }
}
