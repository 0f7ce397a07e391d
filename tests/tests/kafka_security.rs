//! The `xclog` binary against the local stack's SASL_SSL listener (SCRAM-SHA-512, a throwaway
//! CA): `produce`, `project`, `status`, `verify` and `snapshot --delete` round trip through it,
//! and a wrong password or an untrusted CA fails at once with an error that says which, never
//! showing the password; a dead-letter topic the user may not write to (the stack's ACLs deny
//! it Write on `xclog-write-denied-*`) stops the projector saying to grant Write, with nothing
//! committed past the refused record. Settings come from `eval "$(scripts/stack.sh env)"`
//! (`XCLOG_KAFKA_SECURE_*`). On the test containers (`make test-docker`) these tests are
//! skipped, saying so: the Kafka container has no SASL_SSL listener.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncReadExt as _;
use xclog_tests::{TestPg, TestTopic, unique_suffix, xclog_binary};

/// The SASL_SSL listener, as `scripts/stack.sh env` describes it.
struct Secure {
    brokers: String,
    ca_file: String,
    username: String,
    password: String,
    password_file: String,
}

/// The listener's settings; `None` (the test is skipped, with the reason printed) on the test
/// containers, which have no such listener.
fn secure() -> anyhow::Result<Option<Secure>> {
    if !xclog_tests::services::require_native_stack(
        "SASL_SSL listener (SCRAM-SHA-512 user, throwaway CA: XCLOG_KAFKA_SECURE_*)",
    ) {
        return Ok(None);
    }
    let var = |name: &str| {
        std::env::var(name).with_context(|| {
            format!("{name} is not set: run eval \"$(scripts/stack.sh env)\" on a stack started by scripts/stack.sh up")
        })
    };
    Ok(Some(Secure {
        brokers: var("XCLOG_KAFKA_SECURE_BROKERS")?,
        ca_file: var("XCLOG_KAFKA_SECURE_CA_FILE")?,
        username: var("XCLOG_KAFKA_SECURE_USERNAME")?,
        password: var("XCLOG_KAFKA_SECURE_PASSWORD")?,
        password_file: var("XCLOG_KAFKA_SECURE_PASSWORD_FILE")?,
    }))
}

impl Secure {
    /// The flags every subcommand takes to reach the listener (the password comes apart).
    fn flags(&self, ca_file: &str) -> Vec<String> {
        [
            "--brokers",
            &self.brokers,
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            &self.username,
            "--kafka-ssl-ca-file",
            ca_file,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// What one run of the binary printed.
struct Run {
    ok: bool,
    output: String,
    took: Duration,
}

/// Runs `xclog args...` with `password` in `XCLOG_KAFKA_SASL_PASSWORD` (when given), giving
/// up after `limit`.
async fn xclog(
    args: &[String],
    password: Option<&str>,
    database_url: &str,
    limit: Duration,
) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(xclog_binary()?);
    command
        .args(args)
        .env_remove("XCLOG_KAFKA_SASL_PASSWORD")
        .env_remove("XCLOG_KAFKA_SASL_PASSWORD_FILE")
        .env("DATABASE_URL", database_url)
        .env("XCLOG_LOG", "info")
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("XCLOG_KAFKA_SASL_PASSWORD", password);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("xclog {} did not finish within {limit:?}", args.join(" ")))??;
    Ok(Run {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: started.elapsed(),
    })
}

fn args(parts: &[&str], flags: &[String]) -> Vec<String> {
    parts
        .iter()
        .map(|p| (*p).to_owned())
        .chain(flags.iter().cloned())
        .collect()
}

fn assert_never_shown(output: &str, secret: &str) {
    for line in output.lines() {
        assert!(!line.contains(secret), "a line shows the password: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_project_status_verify_and_deletion_round_trip_through_sasl_ssl_with_scram()
-> anyhow::Result<()> {
    let Some(s) = secure()? else {
        return Ok(());
    };
    let flags = s.flags(&s.ca_file);
    let topic = TestTopic {
        name: format!("xclog-test-{}", unique_suffix()),
        partitions: 2,
    };
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let mut printed = String::new();

    let produce = xclog(
        &args(
            &[
                "produce",
                "--topic",
                &topic.name,
                "--partitions",
                "2",
                "--events",
                "300",
            ],
            &flags,
        ),
        Some(&s.password),
        &pg.url,
        Duration::from_secs(60),
    )
    .await?;
    printed.push_str(&produce.output);
    assert!(
        produce.ok,
        "produce through SASL_SSL failed: {}",
        produce.output
    );
    assert!(
        produce.output.contains("acknowledged 300 events"),
        "{}",
        produce.output
    );

    // The projector takes its password from a file, as a container secret.
    let mut projector = tokio::process::Command::new(xclog_binary()?)
        .args(args(
            &[
                "project",
                "--target",
                "postgres",
                "--topic",
                &topic.name,
                "--group",
                &group,
                "--http-addr",
                "off",
                "--kafka-sasl-password-file",
                &s.password_file,
            ],
            &flags,
        ))
        .env_remove("XCLOG_KAFKA_SASL_PASSWORD")
        .env("DATABASE_URL", &pg.url)
        .env("XCLOG_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting xclog project")?;

    let status = xclog(
        &args(
            &[
                "status",
                "--target",
                "postgres",
                "--topic",
                &topic.name,
                "--group",
                &group,
                "--wait",
                "90",
            ],
            &flags,
        ),
        Some(&s.password),
        &pg.url,
        Duration::from_secs(120),
    )
    .await?;
    printed.push_str(&status.output);
    assert!(
        status.ok,
        "the projection did not catch up through SASL_SSL: {}",
        status.output
    );

    let verify = xclog(
        &args(
            &[
                "verify",
                "--sources",
                "topic,postgres",
                "--topic",
                &topic.name,
                "--group",
                &group,
            ],
            &flags,
        ),
        Some(&s.password),
        &pg.url,
        Duration::from_secs(90),
    )
    .await?;
    printed.push_str(&verify.output);
    assert!(
        verify.ok,
        "verify through SASL_SSL did not agree: {}",
        verify.output
    );

    let instance: String = sqlx::query_scalar("SELECT instance_id FROM fsm_snapshots LIMIT 1")
        .fetch_one(&pg.pool)
        .await
        .context("the workload has snapshots")?;
    let delete = xclog(
        &args(
            &["snapshot", &instance, "--delete", "--topic", &topic.name],
            &flags,
        ),
        Some(&s.password),
        &pg.url,
        Duration::from_secs(60),
    )
    .await?;
    printed.push_str(&delete.output);
    assert!(
        delete.ok,
        "snapshot --delete through SASL_SSL failed: {}",
        delete.output
    );
    xclog_tests::wait_until(
        Duration::from_secs(60),
        "the projector to apply the deletion read through SASL_SSL",
        || {
            let pool = pg.pool.clone();
            let instance = instance.clone();
            async move {
                let left: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM fsm_snapshots WHERE instance_id = $1")
                        .bind(&instance)
                        .fetch_one(&pool)
                        .await?;
                Ok((left == 0).then_some(()))
            }
        },
    )
    .await?;

    let pid = projector.id().context("projector pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let exit = tokio::time::timeout(Duration::from_secs(30), projector.wait()).await??;
    let mut out = String::new();
    if let Some(mut stderr) = projector.stderr.take() {
        stderr.read_to_string(&mut out).await?;
    }
    printed.push_str(&out);
    assert!(exit.success(), "the projector did not stop cleanly: {out}");
    assert_never_shown(&printed, &s.password);
    drop(topic);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_saying_authentication_failed_and_is_never_shown()
-> anyhow::Result<()> {
    let Some(s) = secure()? else {
        return Ok(());
    };
    let flags = s.flags(&s.ca_file);
    let pg = TestPg::create().await?;
    let wrong = format!("wrong-{}", unique_suffix());
    let topic = "xclog-test-never-created";
    for command in [
        args(&["project", "--topic", topic, "--http-addr", "off"], &flags),
        args(&["verify", "--topic", topic], &flags),
        args(&["produce", "--topic", topic, "--events", "1"], &flags),
        args(&["status", "--topic", topic], &flags),
    ] {
        let run = xclog(&command, Some(&wrong), &pg.url, Duration::from_secs(30)).await?;
        assert!(
            !run.ok,
            "xclog {} succeeded with a wrong password",
            command[0]
        );
        assert!(
            run.output.contains("authentication failed"),
            "xclog {}: the error does not say authentication failed: {}",
            command[0],
            run.output
        );
        assert!(
            run.took < Duration::from_secs(20),
            "xclog {} took {:?} to give up",
            command[0],
            run.took
        );
        assert_never_shown(&run.output, &wrong);
        assert_never_shown(&run.output, &s.password);
    }
    // `--help` lists the environment variables with their values, but never a secret's.
    for subcommand in ["project", "verify", "produce", "status"] {
        let help = xclog(
            &[subcommand.to_owned(), "--help".to_owned()],
            Some(&wrong),
            &pg.url,
            Duration::from_secs(30),
        )
        .await?;
        assert!(
            help.ok && help.output.contains("XCLOG_KAFKA_SASL_PASSWORD"),
            "{}",
            help.output
        );
        assert_never_shown(&help.output, &wrong);
        let db_password = pg
            .url
            .split_once("://")
            .and_then(|(_, r)| r.split_once('@'))
            .and_then(|(user, _)| user.split_once(':'))
            .map(|(_, p)| p.to_owned());
        if let Some(db_password) = db_password {
            assert!(
                !help.output.contains(&format!(":{db_password}@")),
                "{}",
                help.output
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_a_ca_the_client_does_not_trust_fails_saying_so()
-> anyhow::Result<()> {
    let Some(s) = secure()? else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("xclog-untrusted-ca-{}", unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let ca = dir.join("ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=a CA the broker does not know"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()?;
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let flags = s.flags(&ca.display().to_string());
    let run = xclog(
        &args(&["verify", "--topic", "xclog-test-never-created"], &flags),
        Some(&s.password),
        &xclog_tests::database_url(),
        Duration::from_secs(30),
    )
    .await?;
    std::fs::remove_dir_all(&dir)?;
    assert!(!run.ok, "verify trusted a broker certificate it should not");
    assert!(
        run.output.contains("TLS handshake failed")
            && run.output.contains("certificate verify failed"),
        "the error does not say the certificate is not trusted: {}",
        run.output
    );
    assert!(run.took < Duration::from_secs(20), "took {:?}", run.took);
    assert_never_shown(&run.output, &s.password);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_the_principal_may_not_write_stops_the_projector_saying_grant_write()
-> anyhow::Result<()> {
    let Some(s) = secure()? else {
        return Ok(());
    };
    // The stack's ACLs let the SCRAM user create and read these topics, never write to them.
    let denied_prefix = std::env::var("XCLOG_KAFKA_SECURE_WRITE_DENIED_PREFIX").context(
        "XCLOG_KAFKA_SECURE_WRITE_DENIED_PREFIX is not set: run eval \"$(scripts/stack.sh env)\"",
    )?;
    let flags = s.flags(&s.ca_file);
    let topic = TestTopic::create(1).await?;
    let dead_letter_topic = format!("{denied_prefix}{}", unique_suffix());
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());

    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", xclog_tests::brokers())
        .create()?;
    let delivery = producer
        .send(
            FutureRecord::to(&topic.name)
                .key("i-1")
                .payload("not a record"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    anyhow::ensure!(
        delivery.partition == 0,
        "one partition, got {}",
        delivery.partition
    );
    let poison_at = delivery.offset;

    let run = xclog(
        &args(
            &[
                "project",
                "--target",
                "postgres",
                "--topic",
                &topic.name,
                "--group",
                &group,
                "--dead-letter-topic",
                &dead_letter_topic,
                "--http-addr",
                "off",
            ],
            &flags,
        ),
        Some(&s.password),
        &pg.url,
        Duration::from_secs(150),
    )
    .await
    .context("the projector kept retrying a dead letter it may not write instead of stopping")?;
    assert!(!run.ok, "the projector did not fail: {}", run.output);
    assert!(
        run.output.contains(&dead_letter_topic)
            && run.output.contains(&format!("offset {poison_at}"))
            && run
                .output
                .contains("grant this projector's principal Write"),
        "the error does not name the topic, the record and the fix: {}",
        run.output
    );
    assert_never_shown(&run.output, &s.password);
    // Nothing at or past the refused record was committed: it is read again once granted.
    let stored: Option<i64> = sqlx::query_scalar(
        "SELECT next_offset FROM xclog_offsets WHERE topic = $1 AND partition = 0",
    )
    .bind(&topic.name)
    .fetch_optional(&pg.pool)
    .await?;
    assert!(
        stored.is_none_or(|next| next <= poison_at),
        "stored {stored:?}, refused record at {poison_at}"
    );
    xclog_tests::delete_topics(&[&dead_letter_topic]).await?;
    Ok(())
}
