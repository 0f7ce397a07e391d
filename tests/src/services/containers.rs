//! The test services as containers (`testcontainers`), for machines with a Docker engine and
//! no native stack: Apache Kafka 4.1.1 in KRaft mode, PostgreSQL 16, MongoDB 7 as a
//! single-node replica set (so majority writes and transactions behave as in production).
//!
//! Invariants:
//! - every port is published on 127.0.0.1 only, on a host port chosen once, so a container
//!   stopped and started again ([`stop`], [`start_again`]) keeps its address;
//! - the containers carry a label unique to this process, and the Ryuk reaper
//!   (`testcontainers/ryuk`, as the other testcontainers libraries use it) removes everything
//!   with that label once this process has exited and its connection to the reaper closed
//!   (`TESTCONTAINERS_RYUK_DISABLED=true` turns the reaper off; the containers then stay);
//! - all Docker calls run on one runtime owned by this module, on its own threads, so any test
//!   (async or not, whatever its runtime) can use them.
//!
//! Not exercised by this repository's CI (its machines have no Docker engine): the code is
//! compiled and linted there, and the rule that picks it is unit-tested (`services::choose`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use mongodb::bson::doc;
use testcontainers_modules::kafka::apache::{self, KAFKA_PORT};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers_modules::testcontainers::core::client::docker_client_instance;
use testcontainers_modules::testcontainers::core::{IntoContainerPort as _, Mount};
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

use super::{Addresses, Service};

/// The label that ties this process's containers to its reaper.
const SESSION_LABEL: &str = "xclog.tests.session";
/// The images: the native stack's Kafka, PostgreSQL 16, and the MongoDB major the sink is written for.
const KAFKA_TAG: &str = "4.1.1";
const POSTGRES_TAG: &str = "16-alpine";
const MONGO_TAG: &str = "7";
const RYUK_IMAGE: (&str, &str) = ("testcontainers/ryuk", "0.13.0");
/// The replica set's name and the member address mongod knows itself by.
const REPLICA_SET: &str = "rs0";
/// How long a service may take to answer after its container started (Kafka's JVM, MongoDB's
/// first election).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The containers of this process, alive until it exits.
struct Running {
    kafka: ContainerAsync<apache::Kafka>,
    postgres: ContainerAsync<Postgres>,
    mongo: ContainerAsync<Mongo>,
    addresses: Addresses,
    /// The reaper and the open connection that keeps it from removing the containers.
    _reaper: Option<(ContainerAsync<GenericImage>, std::net::TcpStream)>,
}

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static RUNNING: OnceLock<Running> = OnceLock::new();

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the test containers")
    })
}

/// Runs `future` on this module's runtime, from a thread of its own (so the caller may be inside
/// another runtime).
fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || runtime().block_on(future))
        .join()
        .expect("the test containers' thread panicked")
}

/// Runs `future` on this module's runtime and awaits it from the caller's.
async fn on_runtime<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    runtime()
        .spawn(future)
        .await
        .context("the test containers' task failed")
}

/// Whether a Docker engine answers a ping within 5 s (where `testcontainers` looks for one:
/// `DOCKER_HOST`, `~/.testcontainers.properties`, the default socket).
pub fn docker_answers() -> bool {
    block_on(async {
        let ping = async { docker_client_instance().await.ok()?.ping().await.ok() };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), ping).await,
            Ok(Some(_))
        )
    })
}

/// Starts the three containers (and the reaper) and waits until each service answers.
pub fn start() -> anyhow::Result<Addresses> {
    let running = block_on(start_all())?;
    let addresses = running.addresses.clone();
    if RUNNING.set(running).is_err() {
        anyhow::bail!("the test containers were started twice");
    }
    Ok(addresses)
}

async fn start_all() -> anyhow::Result<Running> {
    let session = crate::unique_suffix();
    let reaper = reaper(&session).await?;
    let kafka_port = free_port()?;
    let postgres_port = free_port()?;
    let mongo_port = free_port()?;

    let kafka = apache::Kafka::default()
        .with_jvm_image()
        .with_tag(KAFKA_TAG)
        // The native stack's broker settings that the tests rely on (scripts/stack.sh).
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env_var("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "10")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var(
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1",
        )
        .with_env_var("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_label(SESSION_LABEL, &session)
        .with_startup_timeout(READY_TIMEOUT)
        .with_mapped_port(kafka_port, KAFKA_PORT)
        .with_host_config_modifier(on_loopback(KAFKA_PORT.as_u16(), kafka_port));
    let postgres = Postgres::default()
        .with_user("xclog")
        .with_password("xclog")
        .with_db_name("xclog")
        .with_tag(POSTGRES_TAG)
        // The native stack's limit: tests open many pools at once.
        .with_cmd(["-c", "fsync=off", "-c", "max_connections=300"])
        .with_label(SESSION_LABEL, &session)
        .with_startup_timeout(READY_TIMEOUT)
        .with_mapped_port(postgres_port, 5432.tcp())
        .with_host_config_modifier(on_loopback(5432, postgres_port));
    let mongo = Mongo::default()
        .with_tag(MONGO_TAG)
        .with_cmd(["--replSet", REPLICA_SET, "--bind_ip_all"])
        .with_label(SESSION_LABEL, &session)
        .with_startup_timeout(READY_TIMEOUT)
        .with_mapped_port(mongo_port, 27017.tcp())
        .with_host_config_modifier(on_loopback(27017, mongo_port));
    let (kafka, postgres, mongo) = tokio::try_join!(
        async { kafka.start().await.context("starting the Kafka container") },
        async {
            postgres
                .start()
                .await
                .context("starting the PostgreSQL container")
        },
        async {
            mongo
                .start()
                .await
                .context("starting the MongoDB container")
        },
    )?;
    let addresses = Addresses {
        // The Kafka module advertises 127.0.0.1 and the host port it finds mapped.
        kafka_brokers: format!("127.0.0.1:{kafka_port}"),
        database_url: format!("postgres://xclog:xclog@127.0.0.1:{postgres_port}/xclog"),
        // The replica set's member is named by its address inside the container: the tests
        // talk to it directly, not through the set's member list.
        mongodb_uri: format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true"),
    };
    initiate_replica_set(&addresses.mongodb_uri).await?;
    for service in [Service::Kafka, Service::Postgres, Service::Mongo] {
        wait_ready(service, &addresses).await?;
    }
    Ok(Running {
        kafka,
        postgres,
        mongo,
        addresses,
        _reaper: reaper,
    })
}

/// A port on 127.0.0.1 that nothing listens on now, for a container's published port.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Publishes `container_port` on 127.0.0.1:`host_port` only: replaces the binding that
/// `with_mapped_port` makes on every interface (the mapping still exposes the port).
fn on_loopback(container_port: u16, host_port: u16) -> impl Fn(&mut HostConfig) + Send + Sync {
    move |host_config: &mut HostConfig| {
        host_config.publish_all_ports = Some(false);
        host_config.port_bindings = Some(HashMap::from([(
            format!("{container_port}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                host_port: Some(host_port.to_string()),
            }]),
        )]));
    }
}

/// Starts the reaper and registers this process's label with it; the returned connection must
/// stay open for as long as the containers are used. `None` when the reaper is turned off.
async fn reaper(
    session: &str,
) -> anyhow::Result<Option<(ContainerAsync<GenericImage>, std::net::TcpStream)>> {
    if std::env::var("TESTCONTAINERS_RYUK_DISABLED").is_ok_and(|v| v == "true") {
        eprintln!(
            "xclog tests: TESTCONTAINERS_RYUK_DISABLED=true: the test containers (label {SESSION_LABEL}={session}) stay after the run"
        );
        return Ok(None);
    }
    let socket = docker_socket();
    let port = free_port()?;
    let container = GenericImage::new(RYUK_IMAGE.0, RYUK_IMAGE.1)
        .with_exposed_port(8080.tcp())
        .with_mount(Mount::bind_mount(socket, "/var/run/docker.sock"))
        // As in the other testcontainers libraries: unprivileged unless asked (SELinux hosts).
        .with_privileged(std::env::var("TESTCONTAINERS_RYUK_PRIVILEGED").is_ok_and(|v| v == "true"))
        .with_mapped_port(port, 8080.tcp())
        .with_host_config_modifier(move |host_config: &mut HostConfig| {
            on_loopback(8080, port)(host_config);
            // The reaper exits on its own once no connection is left; Docker then removes it.
            host_config.auto_remove = Some(true);
        })
        .start()
        .await
        .context("starting the reaper (testcontainers/ryuk; TESTCONTAINERS_RYUK_DISABLED=true does without it)")?;
    let filter = format!("label={SESSION_LABEL}={session}\n");
    let registered =
        crate::wait_until(Duration::from_secs(30), "the reaper to acknowledge", || {
            let filter = filter.clone();
            async move {
                use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                stream.write_all(filter.as_bytes()).await?;
                let mut reply = String::new();
                tokio::io::BufReader::new(&mut stream)
                    .read_line(&mut reply)
                    .await?;
                anyhow::ensure!(reply.trim() == "ACK", "the reaper answered {reply:?}");
                Ok(Some(stream.into_std()?))
            }
        })
        .await?;
    Ok(Some((container, registered)))
}

/// The Docker socket as the reaper's container sees it.
fn docker_socket() -> String {
    if let Ok(path) = std::env::var("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE") {
        return path;
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => host["unix://".len()..].to_owned(),
        _ => "/var/run/docker.sock".to_owned(),
    }
}

/// Makes the MongoDB container a one-member replica set and waits until it is primary.
async fn initiate_replica_set(uri: &str) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let admin = client.database("admin");
    let config = doc! {"_id": REPLICA_SET, "members": [{"_id": 0, "host": "127.0.0.1:27017"}]};
    crate::wait_until(
        Duration::from_secs(60),
        "MongoDB to take the replica set",
        || {
            let admin = admin.clone();
            let config = config.clone();
            async move {
                match admin.run_command(doc! {"replSetInitiate": config}).await {
                    Ok(_) => Ok(Some(())),
                    // AlreadyInitialized: a second attempt after a lost reply.
                    Err(e) if e.to_string().contains("already initialized") => Ok(Some(())),
                    Err(e) => Err(e.into()),
                }
            }
        },
    )
    .await
}

/// Waits until `service` answers as the tests need it: Kafka's metadata, a PostgreSQL query, a
/// writable MongoDB primary.
async fn wait_ready(service: Service, addresses: &Addresses) -> anyhow::Result<()> {
    let addresses = addresses.clone();
    let what = format!("the {} container to answer", service.name());
    crate::wait_until(READY_TIMEOUT, &what, || {
        let addresses = addresses.clone();
        async move {
            match service {
                Service::Kafka => {
                    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", &addresses.kafka_brokers)
                        .create()?;
                    tokio::task::spawn_blocking(move || {
                        use rdkafka::consumer::Consumer as _;
                        consumer.fetch_metadata(None, Duration::from_secs(5))
                    })
                    .await??;
                }
                Service::Postgres => {
                    use sqlx::Connection as _;
                    let mut c = sqlx::PgConnection::connect(&addresses.database_url).await?;
                    sqlx::query("SELECT 1").execute(&mut c).await?;
                    c.close().await?;
                }
                Service::Mongo => {
                    let client = mongodb::Client::with_uri_str(&addresses.mongodb_uri).await?;
                    let hello = client
                        .database("admin")
                        .run_command(doc! {"hello": 1})
                        .await?;
                    if !hello.get_bool("isWritablePrimary").unwrap_or(false) {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(()))
        }
    })
    .await
}

fn running() -> anyhow::Result<&'static Running> {
    RUNNING
        .get()
        .context("the test containers are not running (this binary's services are not containers)")
}

/// What [`control`] does to a container.
#[derive(Debug, Clone, Copy)]
enum Op {
    Stop,
    Start,
    Pause,
    Unpause,
}

/// `$body` with `$c` bound to the container of `$service`.
macro_rules! on_container {
    ($running:expr, $service:expr, |$c:ident| $body:expr) => {
        match $service {
            Service::Kafka => {
                let $c = &$running.kafka;
                $body
            }
            Service::Postgres => {
                let $c = &$running.postgres;
                $body
            }
            Service::Mongo => {
                let $c = &$running.mongo;
                $body
            }
        }
    };
}

/// Applies `op` to the container of `service`; after a start, waits until the service answers.
async fn control(service: Service, op: Op) -> anyhow::Result<()> {
    let running = running()?;
    on_runtime(async move {
        let result = match op {
            Op::Stop => on_container!(running, service, |c| c.stop_with_timeout(Some(10)).await),
            Op::Start => on_container!(running, service, |c| c.start().await),
            Op::Pause => on_container!(running, service, |c| c.pause().await),
            Op::Unpause => on_container!(running, service, |c| c.unpause().await),
        };
        result.with_context(|| format!("{op:?} of the {} container", service.name()))?;
        if matches!(op, Op::Start) {
            wait_ready(service, &running.addresses).await?;
        }
        Ok(())
    })
    .await?
}

/// Stops the container of `service` (its data and address stay).
pub async fn stop(service: Service) -> anyhow::Result<()> {
    control(service, Op::Stop).await
}

/// Starts the container of `service` again and waits until it answers.
pub async fn start_again(service: Service) -> anyhow::Result<()> {
    control(service, Op::Start).await
}

/// Freezes the container of `service` (`docker pause`): it keeps its connections and answers
/// nothing until [`thaw_now`].
pub async fn freeze(service: Service) -> anyhow::Result<()> {
    control(service, Op::Pause).await
}

/// Undoes [`freeze`], from synchronous code (a `Drop`).
pub fn thaw_now(service: Service) -> anyhow::Result<()> {
    block_on(control(service, Op::Unpause))
}
