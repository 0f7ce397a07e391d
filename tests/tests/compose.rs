//! compose/docker-compose.yml cannot run here (no Docker engine), so this test checks that it
//! agrees with scripts/stack.sh: the same host ports on 127.0.0.1, the same credentials, and
//! projector services configured through variables the binary reads, with values it accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use serde_yaml::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The variables `scripts/stack.sh env` exports, with the process environment cleared of
/// overrides so the script's defaults are what we compare against.
fn stack_env() -> anyhow::Result<BTreeMap<String, String>> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/stack.sh"))
        .arg("env")
        .env_remove("XCLOG_KAFKA_PORT")
        .env_remove("XCLOG_PG_PORT")
        .env_remove("XCLOG_MONGO_PORT")
        .output()
        .context("running scripts/stack.sh env")?;
    anyhow::ensure!(
        out.status.success(),
        "stack.sh env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn compose() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(repo_root().join("compose/docker-compose.yml"))?;
    Ok(serde_yaml::from_str(&text)?)
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    &compose["services"][name]
}

fn published_ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `host:port` of a URL such as `postgres://u:p@127.0.0.1:5432/db` or `mongodb://127.0.0.1:27017/`.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[test]
fn compose_publishes_the_same_loopback_ports_as_the_stack_script() -> anyhow::Result<()> {
    let env = stack_env()?;
    let compose = compose()?;
    for (svc, var) in [
        ("kafka", "XCLOG_KAFKA_BROKERS"),
        ("postgres", "DATABASE_URL"),
        ("mongo", "MONGODB_URI"),
    ] {
        let addr = host_port(
            env.get(var)
                .with_context(|| format!("stack.sh env lacks {var}"))?,
        );
        let port = addr.rsplit_once(':').context("no port")?.1;
        let expected = format!("{addr}:{port}");
        let ports = published_ports(service(&compose, svc));
        assert!(
            ports.contains(&expected),
            "compose service {svc} should publish {expected} (from {var}); it publishes {ports:?}"
        );
        assert!(
            ports.iter().all(|p| p.starts_with("127.0.0.1:")),
            "{svc} must publish on 127.0.0.1 only: {ports:?}"
        );
    }
    Ok(())
}

#[test]
fn compose_postgres_credentials_match_database_url() -> anyhow::Result<()> {
    let env = stack_env()?;
    let url = &env["DATABASE_URL"];
    let pg = env_of(service(&compose()?, "postgres"));
    let expected = format!(
        "postgres://{}:{}@{}/{}",
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        host_port(url),
        pg["POSTGRES_DB"]
    );
    assert_eq!(url, &expected);
    Ok(())
}

/// The environment variables `xclog project` reads, from its `--help` (`[env: NAME=...]`).
fn project_env_names() -> anyhow::Result<Vec<String>> {
    let out = Command::new(xclog_tests::xclog_binary()?)
        .args(["project", "--help"])
        .output()
        .context("running xclog project --help")?;
    anyhow::ensure!(out.status.success(), "xclog project --help failed");
    let help = String::from_utf8(out.stdout)?;
    Ok(help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect())
}

#[test]
fn compose_projectors_are_configured_with_variables_the_binary_reads() -> anyhow::Result<()> {
    let stack = stack_env()?;
    let reads = project_env_names()?;
    let compose = compose()?;
    for (name, store_var) in [
        ("projector-postgres", "DATABASE_URL"),
        ("projector-mongo", "MONGODB_URI"),
        ("projector-postgres-secured", "DATABASE_URL"),
    ] {
        let vars = env_of(service(&compose, name));
        for key in vars.keys() {
            assert!(
                reads.contains(key),
                "{name} sets {key}, which `xclog project` does not read (it reads {reads:?})"
            );
        }
        for key in ["XCLOG_KAFKA_BROKERS", store_var] {
            assert!(vars.contains_key(key), "{name} lacks {key}");
            assert!(
                stack.contains_key(key),
                "scripts/stack.sh env does not export {key}, which {name} uses"
            );
        }
    }
    Ok(())
}

/// `${NAME:-default}` of a compose value, as compose interpolates it with NAME unset.
fn interpolate_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

#[test]
fn compose_projectors_start_with_the_values_compose_gives_them() -> anyhow::Result<()> {
    let compose = compose()?;
    // Secrets are mounted under /run/secrets/<name>; stand-ins here, so the check reads files.
    let secrets =
        std::env::temp_dir().join(format!("xclog-compose-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&secrets)?;
    for name in ["kafka_password", "kafka_ca"] {
        assert!(
            compose["secrets"][name]["file"].is_string(),
            "compose declares no secret {name}"
        );
        std::fs::write(secrets.join(name), "stand-in\n")?;
    }
    for name in [
        "projector-postgres",
        "projector-mongo",
        "projector-postgres-secured",
    ] {
        let svc = service(&compose, name);
        let args: Vec<String> = svc["command"]
            .as_sequence()
            .with_context(|| format!("{name} has no command"))?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let mut command = Command::new(xclog_tests::xclog_binary()?);
        command.env_clear().args(&args).arg("--check-config");
        for (key, value) in env_of(svc) {
            let value = interpolate_defaults(&value);
            let value = match value.strip_prefix("/run/secrets/") {
                Some(secret) => secrets.join(secret).display().to_string(),
                None => value,
            };
            command.env(key, value);
        }
        let out = command
            .output()
            .context("running xclog project --check-config")?;
        assert!(
            out.status.success(),
            "{name}: `xclog {}` refuses the environment compose gives it: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        let http = interpolate_defaults(&env_of(svc)["XCLOG_HTTP_ADDR"]);
        assert!(
            said.contains(&format!("ops server {http}")),
            "{name}: the ops server is not on {http}: {said}"
        );
    }
    std::fs::remove_dir_all(&secrets)?;
    Ok(())
}

#[test]
fn compose_services_that_the_tests_need_have_healthchecks() -> anyhow::Result<()> {
    let compose = compose()?;
    for svc in ["kafka", "postgres", "mongo"] {
        assert!(
            service(&compose, svc)["healthcheck"]["test"].is_sequence(),
            "{svc} has no healthcheck"
        );
    }
    Ok(())
}
