//! Which Kafka, PostgreSQL and MongoDB the tests of one binary talk to, chosen once, on first
//! use ([`choose`] is the rule, [`services`] applies it):
//!
//! 1. the addresses in `XCLOG_KAFKA_BROKERS`, `DATABASE_URL` and `MONGODB_URI`, when any of
//!    them is set (`make test` and CI set all three from `scripts/stack.sh env`); one left
//!    unset takes the local stack's default;
//! 2. otherwise, when a Docker engine answers, containers started with `testcontainers`
//!    ([`containers`]): Apache Kafka in KRaft mode (`apache/kafka`), PostgreSQL 16 and
//!    MongoDB 7 as a single-node replica set, published on 127.0.0.1 only, shared by every test
//!    of the binary and removed when the binary exits;
//! 3. otherwise the local stack's defaults; the first test that needs a service which does not
//!    answer there fails with one line that says what to do.
//!
//! The native stack's extras that containers do not reproduce (the SASL_SSL listener) are
//! named by [`require_native_stack`], which skips a test with its reason printed.

use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

pub mod containers;

/// Kafka bootstrap servers of the local stack (`scripts/stack.sh`).
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// PostgreSQL URL of the local stack's main database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://xclog:xclog@127.0.0.1:5432/xclog";
/// MongoDB URI of the local stack (FerretDB).
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017/";

/// What to do when no service answers, in one line.
pub const NO_SERVICES: &str = "start the local stack (scripts/stack.sh up, then eval \"$(scripts/stack.sh env)\") \
     or a Docker engine (the tests then start their own Kafka, PostgreSQL and MongoDB containers)";

/// The service addresses found in the environment (a variable set to the empty string counts
/// as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAddresses {
    /// `XCLOG_KAFKA_BROKERS`.
    pub kafka_brokers: Option<String>,
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `MONGODB_URI`.
    pub mongodb_uri: Option<String>,
}

impl EnvAddresses {
    /// Reads the three variables of this process.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            kafka_brokers: var("XCLOG_KAFKA_BROKERS"),
            database_url: var("DATABASE_URL"),
            mongodb_uri: var("MONGODB_URI"),
        }
    }

    fn any(&self) -> bool {
        self.kafka_brokers.is_some() || self.database_url.is_some() || self.mongodb_uri.is_some()
    }
}

/// The three addresses the tests use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// PostgreSQL URL of a database the tests may create databases from.
    pub database_url: String,
    /// MongoDB connection string.
    pub mongodb_uri: String,
}

impl Addresses {
    /// The local stack's addresses.
    pub fn local_defaults() -> Self {
        Self {
            kafka_brokers: DEFAULT_KAFKA_BROKERS.to_owned(),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            mongodb_uri: DEFAULT_MONGODB_URI.to_owned(),
        }
    }
}

/// Where the services come from: the outcome of [`choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Addresses given in the environment (the unset ones default to the local stack's).
    Environment(Addresses),
    /// Start containers on the Docker engine that answered.
    Containers,
    /// Nothing given, no Docker engine: the local stack's addresses.
    LocalDefaults(Addresses),
}

/// The selection rule. `docker_answers` is asked only when the environment names no address,
/// so a run on the native stack never talks to Docker.
pub fn choose(env: &EnvAddresses, docker_answers: impl FnOnce() -> bool) -> Choice {
    if env.any() {
        let defaults = Addresses::local_defaults();
        return Choice::Environment(Addresses {
            kafka_brokers: env.kafka_brokers.clone().unwrap_or(defaults.kafka_brokers),
            database_url: env.database_url.clone().unwrap_or(defaults.database_url),
            mongodb_uri: env.mongodb_uri.clone().unwrap_or(defaults.mongodb_uri),
        });
    }
    if docker_answers() {
        Choice::Containers
    } else {
        Choice::LocalDefaults(Addresses::local_defaults())
    }
}

/// Where the services of this test binary come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The environment's addresses (`make test`: the native stack).
    Environment,
    /// Containers this binary started (`make test-docker`).
    Containers,
    /// The local stack's default addresses, nothing set and no Docker engine.
    LocalDefaults,
}

/// The services of this test binary.
#[derive(Debug)]
pub struct Services {
    /// Where they come from.
    pub origin: Origin,
    /// Their addresses.
    pub addresses: Addresses,
}

static SERVICES: OnceLock<Result<Services, String>> = OnceLock::new();

/// The services of this test binary, chosen (and, for containers, started) on the first call.
///
/// # Panics
/// When the containers could not be started, with the reason; every later call panics with the
/// same message.
pub fn services() -> &'static Services {
    match SERVICES.get_or_init(select) {
        Ok(services) => services,
        Err(message) => panic!("{message}"),
    }
}

fn select() -> Result<Services, String> {
    match choose(&EnvAddresses::from_process(), containers::docker_answers) {
        Choice::Environment(addresses) => Ok(Services {
            origin: Origin::Environment,
            addresses,
        }),
        Choice::LocalDefaults(addresses) => Ok(Services {
            origin: Origin::LocalDefaults,
            addresses,
        }),
        Choice::Containers => match containers::start() {
            Ok(addresses) => {
                eprintln!(
                    "xclog tests: no service addresses set and a Docker engine answers: using containers \
                     (Kafka {}, PostgreSQL and MongoDB on 127.0.0.1)",
                    addresses.kafka_brokers
                );
                Ok(Services {
                    origin: Origin::Containers,
                    addresses,
                })
            }
            Err(error) => Err(format!(
                "no service addresses set and a Docker engine answers, but starting the test containers failed: {error:#} \
                 (to use the local stack instead: scripts/stack.sh up, then eval \"$(scripts/stack.sh env)\")"
            )),
        },
    }
}

/// The three services, for the checks and faults that name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Kafka.
    Kafka,
    /// PostgreSQL.
    Postgres,
    /// The MongoDB-protocol server (FerretDB on the native stack, MongoDB in containers).
    Mongo,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kafka => "Kafka",
            Service::Postgres => "PostgreSQL",
            Service::Mongo => "MongoDB",
        }
    }

    /// The local stack's address of this service.
    fn default_socket(self) -> SocketAddr {
        let port = match self {
            Service::Kafka => 9092,
            Service::Postgres => 5432,
            Service::Mongo => 27017,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

static DEFAULTS_ANSWER: [OnceLock<bool>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// The address of `service`, checked once when it is a local default: a port that nobody
/// listens on fails the test at once with what to do, instead of a client's timeout later.
///
/// # Panics
/// On the local defaults, when nothing listens on the service's port.
pub fn address(service: Service) -> &'static str {
    let services = services();
    if services.origin == Origin::LocalDefaults {
        let answers = DEFAULTS_ANSWER[service as usize].get_or_init(|| {
            TcpStream::connect_timeout(&service.default_socket(), Duration::from_secs(2)).is_ok()
        });
        assert!(
            *answers,
            "no {} at {} and no service addresses set: {NO_SERVICES}",
            service.name(),
            service.default_socket()
        );
    }
    let a = &services.addresses;
    match service {
        Service::Kafka => &a.kafka_brokers,
        Service::Postgres => &a.database_url,
        Service::Mongo => &a.mongodb_uri,
    }
}

/// Whether this binary's services are the native stack's (`scripts/stack.sh`), which has the
/// SASL_SSL listener and the process files that some tests use.
pub fn on_native_stack() -> bool {
    services().origin != Origin::Containers
}

/// `true` when the test may go on: on containers, prints why the test is skipped (what it
/// needs, which containers do not provide) and returns `false`.
///
/// ```no_run
/// if !xclog_tests::services::require_native_stack("the SASL_SSL listener on 9094") {
///     return Ok(());
/// }
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn require_native_stack(needs: &str) -> bool {
    if on_native_stack() {
        return true;
    }
    eprintln!(
        "SKIPPED: this test needs the native stack's {needs}, which the test containers do not provide; \
         run it with `make test` (scripts/stack.sh up)"
    );
    false
}

/// Stops `service` (`scripts/stack.sh stop NAME` on the native stack, the container on
/// containers). Its address stays the same when it comes back.
pub async fn stop(service: Service) -> anyhow::Result<()> {
    match services().origin {
        Origin::Containers => containers::stop(service).await,
        _ => stack(&format!("stop {}", stack_name(service))).await,
    }
}

/// Starts `service` again after [`stop`] and waits until it answers.
pub async fn start(service: Service) -> anyhow::Result<()> {
    match services().origin {
        Origin::Containers => containers::start_again(service).await,
        _ => stack(&format!("start {}", stack_name(service))).await,
    }
}

/// Restarts `service` (`scripts/stack.sh restart NAME`, or the container) and waits until it
/// answers.
pub async fn restart(service: Service) -> anyhow::Result<()> {
    match services().origin {
        Origin::Containers => {
            containers::stop(service).await?;
            containers::start_again(service).await
        }
        _ => stack(&format!("restart {}", stack_name(service))).await,
    }
}

/// A service frozen by [`freeze`]: it holds its connections and answers nothing until this is
/// dropped (also when the test fails, so the next test finds it running).
#[derive(Debug)]
pub struct Frozen {
    service: Service,
    /// The frozen process on the native stack; `None` for a paused container.
    pid: Option<String>,
}

/// Freezes `service`: SIGSTOP to its process on the native stack (its pid file under
/// `$XCLOG_HOME/run/`), `docker pause` of its container on containers.
pub async fn freeze(service: Service) -> anyhow::Result<Frozen> {
    if services().origin == Origin::Containers {
        containers::freeze(service).await?;
        return Ok(Frozen { service, pid: None });
    }
    let home = std::env::var("XCLOG_HOME").unwrap_or_else(|_| "/var/tmp/xclog".into());
    let name = stack_name(service);
    let pid_file = format!("{home}/run/{name}/{name}.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .map_err(|e| {
            anyhow::anyhow!("reading {pid_file}: {e} (is the stack up? scripts/stack.sh up)")
        })?
        .trim()
        .to_owned();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()?;
    anyhow::ensure!(status.success(), "kill -STOP {pid} ({name}) failed");
    Ok(Frozen {
        service,
        pid: Some(pid),
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        match &self.pid {
            Some(pid) => {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", pid])
                    .status();
            }
            None => {
                if let Err(error) = containers::thaw_now(self.service) {
                    eprintln!(
                        "unpausing the {} container failed: {error:#}",
                        self.service.name()
                    );
                }
            }
        }
    }
}

fn stack_name(service: Service) -> &'static str {
    match service {
        Service::Kafka => "kafka",
        Service::Postgres => "postgres",
        Service::Mongo => "ferretdb",
    }
}

/// Runs `scripts/stack.sh ARGS` (space-separated) and fails with its output when it fails.
async fn stack(args: &str) -> anyhow::Result<()> {
    let script = crate::workspace_root()?.join("scripts/stack.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .args(args.split(' '))
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/stack.sh {args} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kafka: Option<&str>, pg: Option<&str>, mongo: Option<&str>) -> EnvAddresses {
        EnvAddresses {
            kafka_brokers: kafka.map(str::to_owned),
            database_url: pg.map(str::to_owned),
            mongodb_uri: mongo.map(str::to_owned),
        }
    }

    #[test]
    fn addresses_in_the_environment_win_and_docker_is_not_asked() {
        let given = env(
            Some("127.0.0.1:19092"),
            Some("postgres://u:p@127.0.0.1:15432/x"),
            Some("mongodb://127.0.0.1:17017/"),
        );
        let choice = choose(&given, || {
            panic!("Docker was asked although addresses are set")
        });
        assert_eq!(
            choice,
            Choice::Environment(Addresses {
                kafka_brokers: "127.0.0.1:19092".into(),
                database_url: "postgres://u:p@127.0.0.1:15432/x".into(),
                mongodb_uri: "mongodb://127.0.0.1:17017/".into(),
            })
        );
    }

    #[test]
    fn one_address_in_the_environment_keeps_the_local_defaults_for_the_others() {
        let choice = choose(&env(None, Some("postgres://h:1/db"), None), || true);
        assert_eq!(
            choice,
            Choice::Environment(Addresses {
                kafka_brokers: DEFAULT_KAFKA_BROKERS.into(),
                database_url: "postgres://h:1/db".into(),
                mongodb_uri: DEFAULT_MONGODB_URI.into(),
            })
        );
    }

    #[test]
    fn no_addresses_and_a_docker_engine_answering_start_containers() {
        assert_eq!(
            choose(&EnvAddresses::default(), || true),
            Choice::Containers
        );
    }

    #[test]
    fn no_addresses_and_no_docker_engine_take_the_local_defaults() {
        assert_eq!(
            choose(&EnvAddresses::default(), || false),
            Choice::LocalDefaults(Addresses::local_defaults())
        );
    }

    #[test]
    fn the_local_defaults_are_the_stacks_ports_on_loopback() {
        for service in [Service::Kafka, Service::Postgres, Service::Mongo] {
            let socket = service.default_socket();
            assert!(socket.ip().is_loopback());
            let port = format!(":{}", socket.port());
            let a = Addresses::local_defaults();
            let address = match service {
                Service::Kafka => a.kafka_brokers,
                Service::Postgres => a.database_url,
                Service::Mongo => a.mongodb_uri,
            };
            assert!(address.contains(&port), "{address} lacks {port}");
        }
    }
}
