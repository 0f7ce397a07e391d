//! How every Kafka client of a subcommand connects: TLS, SASL and other librdkafka settings,
//! declared once and flattened into each subcommand that talks to Kafka. Secrets (the SASL
//! password, the client key's password) are read from a flag, an environment variable or a
//! file, and never reach a log line, an error, `--help` or `Debug`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use xclog_producer::{SaslConfig, SaslMechanism, Security, TlsConfig};
use xclog_projector::Secret;

/// Kafka connection security, shared by every Kafka client the command creates.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kafka security")]
pub struct KafkaSecurityArgs {
    /// How to talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL
    /// over TLS, what managed Kafka services ask for).
    #[arg(long, env = "XCLOG_KAFKA_SECURITY_PROTOCOL", default_value = "PLAINTEXT",
          value_parser = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], ignore_case = true)]
    pub kafka_security_protocol: String,
    /// SASL mechanism (with SASL_PLAINTEXT or SASL_SSL): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "XCLOG_KAFKA_SASL_MECHANISM", default_value = "SCRAM-SHA-512",
          value_parser = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], ignore_case = true)]
    pub kafka_sasl_mechanism: String,
    /// SASL username.
    #[arg(long, env = "XCLOG_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password; never logged. Prefer --kafka-sasl-password-file (a flag shows in the
    /// process list).
    #[arg(long, env = "XCLOG_KAFKA_SASL_PASSWORD", hide_env_values = true,
          value_parser = super::parse_secret, conflicts_with = "kafka_sasl_password_file")]
    pub kafka_sasl_password: Option<Secret>,
    /// File holding the SASL password (a container secret); one trailing newline is ignored.
    #[arg(long, env = "XCLOG_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// CA certificates (PEM) to verify the brokers with (SSL, SASL_SSL); default: the
    /// system's trust store.
    #[arg(long, env = "XCLOG_KAFKA_SSL_CA_FILE")]
    pub kafka_ssl_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that ask for mutual TLS; needs --kafka-ssl-key-file.
    #[arg(
        long,
        env = "XCLOG_KAFKA_SSL_CERTIFICATE_FILE",
        requires = "kafka_ssl_key_file"
    )]
    pub kafka_ssl_certificate_file: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(
        long,
        env = "XCLOG_KAFKA_SSL_KEY_FILE",
        requires = "kafka_ssl_certificate_file"
    )]
    pub kafka_ssl_key_file: Option<PathBuf>,
    /// Password of an encrypted client key; never logged.
    #[arg(long, env = "XCLOG_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true,
          value_parser = super::parse_secret, conflicts_with = "kafka_ssl_key_password_file")]
    pub kafka_ssl_key_password: Option<Secret>,
    /// File holding the client key's password; one trailing newline is ignored.
    #[arg(long, env = "XCLOG_KAFKA_SSL_KEY_PASSWORD_FILE")]
    pub kafka_ssl_key_password_file: Option<PathBuf>,
    /// Any other librdkafka setting, as key=value (repeatable; in the environment, separated
    /// by `;`). Keys xclog sets itself are refused, naming the flag to use instead.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", env = "XCLOG_KAFKA_OPTIONS",
          hide_env_values = true, value_delimiter = ';', value_parser = super::parse_secret)]
    pub kafka_options: Vec<Secret>,
}

/// librdkafka keys xclog sets itself, with what to use instead.
const OWNED_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "--brokers"),
    ("metadata.broker.list", "--brokers"),
    ("security.protocol", "--kafka-security-protocol"),
    ("sasl.mechanism", "--kafka-sasl-mechanism"),
    ("sasl.mechanisms", "--kafka-sasl-mechanism"),
    ("sasl.username", "--kafka-sasl-username"),
    (
        "sasl.password",
        "--kafka-sasl-password-file (or --kafka-sasl-password)",
    ),
    ("ssl.ca.location", "--kafka-ssl-ca-file"),
    ("ssl.certificate.location", "--kafka-ssl-certificate-file"),
    ("ssl.key.location", "--kafka-ssl-key-file"),
    (
        "ssl.key.password",
        "--kafka-ssl-key-password-file (or --kafka-ssl-key-password)",
    ),
    ("group.id", "--group"),
    ("session.timeout.ms", "--session-timeout-ms"),
    ("queued.max.messages.kbytes", "--fetch-buffer-kbytes"),
    (
        "enable.idempotence",
        "nothing: xclog's producers are always idempotent",
    ),
    (
        "acks",
        "nothing: xclog's producers always wait for all replicas",
    ),
    (
        "request.required.acks",
        "nothing: xclog's producers always wait for all replicas",
    ),
    (
        "transactional.id",
        "nothing: xclog's exactly-once effect comes from offsets stored with the rows",
    ),
    (
        "isolation.level",
        "nothing: xclog reads committed records only",
    ),
    (
        "enable.auto.commit",
        "nothing: offsets are stored in the target store, with the rows",
    ),
    (
        "enable.auto.offset.store",
        "nothing: offsets are stored in the target store, with the rows",
    ),
    (
        "auto.commit.interval.ms",
        "nothing: offsets are stored in the target store, with the rows",
    ),
    (
        "auto.offset.reset",
        "nothing: offsets are stored in the target store, with the rows",
    ),
    (
        "partition.assignment.strategy",
        "nothing: xclog deals partitions round robin",
    ),
];

/// Splits a `--kafka-option` value into key and value, refusing keys xclog owns. Errors name
/// the key, never the value (it may be a secret).
fn parse_option(option: &Secret) -> anyhow::Result<(String, Secret)> {
    let Some((key, value)) = option.expose().split_once('=') else {
        bail!("--kafka-option takes key=value (a librdkafka setting); one value has no `=`");
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("--kafka-option has an empty key");
    }
    let lower = key.to_ascii_lowercase();
    if let Some((_, instead)) = OWNED_KEYS.iter().find(|(owned, _)| *owned == lower) {
        bail!("--kafka-option {key}=... is refused: xclog sets {key} itself; use {instead}");
    }
    Ok((key.to_owned(), Secret::new(value)))
}

/// Reads a secret from a file, without one trailing newline.
fn read_secret_file(flag: &str, path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {flag} {}", path.display()))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        bail!("{flag} {} is empty", path.display());
    }
    Ok(Secret::new(text))
}

fn readable(flag: &str, path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    std::fs::File::open(path).with_context(|| format!("opening {flag} {}", path.display()))?;
    Ok(Some(path.display().to_string()))
}

impl KafkaSecurityArgs {
    /// The TLS and SASL settings these options describe, checked (files readable, SASL with a
    /// username and a password, no SASL or TLS option beside a protocol that does not use it).
    pub fn security(&self) -> anyhow::Result<Security> {
        let protocol = self.kafka_security_protocol.to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            _ => (true, true),
        };
        let sasl_given = self.kafka_sasl_username.is_some()
            || self.kafka_sasl_password.is_some()
            || self.kafka_sasl_password_file.is_some();
        if sasl_given && !sasl {
            bail!(
                "--kafka-sasl-username/--kafka-sasl-password need --kafka-security-protocol \
                 SASL_SSL or SASL_PLAINTEXT (it is {protocol})"
            );
        }
        let tls_given = self.kafka_ssl_ca_file.is_some()
            || self.kafka_ssl_certificate_file.is_some()
            || self.kafka_ssl_key_password.is_some()
            || self.kafka_ssl_key_password_file.is_some();
        if tls_given && !tls {
            bail!(
                "--kafka-ssl-* options need --kafka-security-protocol SSL or SASL_SSL (it is \
                 {protocol})"
            );
        }
        let mut security = Security::default();
        if tls {
            let key_password = match (
                &self.kafka_ssl_key_password,
                &self.kafka_ssl_key_password_file,
            ) {
                (Some(password), _) => Some(password.expose().to_owned()),
                (None, Some(path)) => Some(
                    read_secret_file("--kafka-ssl-key-password-file", path)?
                        .expose()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            if key_password.is_some() && self.kafka_ssl_key_file.is_none() {
                bail!("a client key password is given but no --kafka-ssl-key-file");
            }
            security.tls = Some(TlsConfig {
                ca_location: readable("--kafka-ssl-ca-file", &self.kafka_ssl_ca_file)?,
                certificate_location: readable(
                    "--kafka-ssl-certificate-file",
                    &self.kafka_ssl_certificate_file,
                )?,
                key_location: readable("--kafka-ssl-key-file", &self.kafka_ssl_key_file)?,
                key_password: key_password.map(xclog_producer::Secret::new),
            });
        }
        if sasl {
            let username = self.kafka_sasl_username.clone().with_context(|| {
                format!("--kafka-security-protocol {protocol} needs --kafka-sasl-username")
            })?;
            let password = match (&self.kafka_sasl_password, &self.kafka_sasl_password_file) {
                (Some(password), _) => password.clone(),
                (None, Some(path)) => read_secret_file("--kafka-sasl-password-file", path)?,
                (None, None) => bail!(
                    "--kafka-security-protocol {protocol} needs a password: \
                     --kafka-sasl-password-file (XCLOG_KAFKA_SASL_PASSWORD_FILE) or \
                     --kafka-sasl-password (XCLOG_KAFKA_SASL_PASSWORD)"
                ),
            };
            let mechanism = match self.kafka_sasl_mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                _ => SaslMechanism::ScramSha512,
            };
            security.sasl = Some(SaslConfig {
                mechanism,
                username,
                password: xclog_producer::Secret::new(password.expose()),
            });
        }
        security.validate()?;
        Ok(security)
    }

    /// The `--kafka-option` settings, checked.
    pub fn options(&self) -> anyhow::Result<Vec<(String, Secret)>> {
        self.kafka_options.iter().map(parse_option).collect()
    }

    /// Every librdkafka setting of these options (security first, then `--kafka-option`), for
    /// the projector library's clients.
    pub fn settings(&self) -> anyhow::Result<Vec<(String, Secret)>> {
        let mut config = rdkafka::ClientConfig::new();
        self.security()?.apply(&mut config);
        let mut settings: Vec<(String, Secret)> = config
            .config_map()
            .keys()
            // `config_map` masks secret values; `get` gives the value set.
            .map(|key| {
                let value = config.get(key).unwrap_or_default();
                (key.to_string(), Secret::new(value))
            })
            .collect();
        settings.sort_by(|a, b| a.0.cmp(&b.0));
        settings.extend(self.options()?);
        Ok(settings)
    }

    /// Applies these options to a producer configuration (`xclog produce`, `snapshot --delete`).
    pub fn apply_to_producer(
        &self,
        config: &mut xclog_producer::ProducerConfig,
    ) -> anyhow::Result<()> {
        config.security = self.security()?;
        for (key, value) in self.options()? {
            config.passthrough.insert(key, value.expose().to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaSecurityArgs,
    }

    fn parse(args: &[&str]) -> KafkaSecurityArgs {
        let mut all = vec!["xclog"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().kafka
    }

    #[test]
    fn a_kafka_option_xclog_owns_is_refused_naming_the_flag_to_use() {
        for (option, flag) in [
            ("group.id=other", "--group"),
            ("enable.idempotence=false", "always idempotent"),
            (
                "enable.auto.commit=true",
                "offsets are stored in the target store",
            ),
            ("isolation.level=read_uncommitted", "committed records only"),
            ("transactional.id=t", "exactly-once"),
            ("bootstrap.servers=elsewhere:9092", "--brokers"),
            ("sasl.password=hunter2", "--kafka-sasl-password-file"),
            ("SASL.Username=app", "--kafka-sasl-username"),
            ("security.protocol=sasl_ssl", "--kafka-security-protocol"),
            ("ssl.ca.location=/ca.pem", "--kafka-ssl-ca-file"),
        ] {
            let error = parse(&["--kafka-option", option])
                .settings()
                .unwrap_err()
                .to_string();
            assert!(error.contains(flag), "{option}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        let error = parse(&["--kafka-option", "hunter2"])
            .settings()
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn other_kafka_options_reach_every_client_after_the_security_settings() {
        let settings = parse(&[
            "--kafka-option",
            "socket.keepalive.enable=true",
            "--kafka-option",
            "client.rack=eu-west-1a",
        ])
        .settings()
        .unwrap();
        let keys: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "security.protocol",
                "socket.keepalive.enable",
                "client.rack"
            ]
        );
        assert_eq!(settings[0].1.expose(), "plaintext");
        assert_eq!(settings[2].1.expose(), "eu-west-1a");
    }

    #[test]
    fn sasl_ssl_takes_the_password_from_a_file_and_never_shows_it() {
        let dir = std::env::temp_dir().join(format!("xclog-kafka-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "hunter2-file\n").unwrap();
        let args = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-username",
            "app",
            "--kafka-sasl-password-file",
            file.to_str().unwrap(),
        ]);
        let settings = args.settings().unwrap();
        let get = |key: &str| {
            settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.expose().to_owned())
        };
        assert_eq!(get("security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.password").as_deref(), Some("hunter2-file"));
        assert!(!format!("{settings:?}").contains("hunter2"));
        let inline = parse(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-username",
            "app",
            "--kafka-sasl-password",
            "hunter2-flag",
        ]);
        assert!(!format!("{inline:?}").contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn security_options_that_do_not_fit_the_protocol_are_refused() {
        let error = parse(&["--kafka-sasl-username", "app"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("SASL_SSL"), "{error}");
        let error = parse(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-username",
            "app",
        ])
        .settings()
        .unwrap_err();
        assert!(
            error.to_string().contains("--kafka-sasl-password-file"),
            "{error}"
        );
        let error = parse(&["--kafka-ssl-ca-file", "/nonexistent/ca.pem"])
            .settings()
            .unwrap_err();
        assert!(error.to_string().contains("SSL or SASL_SSL"), "{error}");
        let error = parse(&[
            "--kafka-security-protocol",
            "SSL",
            "--kafka-ssl-ca-file",
            "/nonexistent/ca.pem",
        ])
        .settings()
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("--kafka-ssl-ca-file /nonexistent/ca.pem"),
            "{error:#}"
        );
    }
}
