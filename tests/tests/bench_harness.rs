//! The benchmark harness (`scripts/bench.sh`, behind `make bench`) on a tiny workload: every
//! PostgreSQL and Mongo comparison runs end to end (our projectors, the limits, the peers on
//! Kafka Connect) and each side must write exactly the events of the topic. No timing is
//! asserted: the figures of a 1,000-event debug-build run mean nothing.
//!
//! The producer comparison is left out here: it is the producer's own bench (`cargo bench -p
//! xclog-producer --bench throughput`, a release build), which the harness only calls.
//!
//! Bounded: two Kafka Connect JVM starts (about 10 s each) dominate; the whole test takes
//! about a minute once the binaries are built, and is killed after 10 minutes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

const EVENTS: u64 = 1_000;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

#[test]
fn the_bench_harness_runs_every_store_comparison_and_each_side_writes_every_event()
-> anyhow::Result<()> {
    let root = repo_root();
    let results = std::env::temp_dir().join(format!(
        "xclog-bench-harness-{}.jsonl",
        xclog_tests::unique_suffix()
    ));
    let log = std::env::temp_dir().join(format!(
        "xclog-bench-harness-{}.log",
        xclog_tests::unique_suffix()
    ));
    let mut child = Command::new(root.join("scripts/bench.sh"))
        .args(["--events", &EVENTS.to_string(), "--runs", "1"])
        .args(["--only", "pg,mongo", "--profile", "dev", "--no-doc"])
        .arg("--results")
        .arg(&results)
        .env("XCLOG_KAFKA_BROKERS", xclog_tests::brokers())
        .env("DATABASE_URL", xclog_tests::database_url())
        .env("MONGODB_URI", xclog_tests::mongodb_uri())
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting scripts/bench.sh")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "scripts/bench.sh did not finish in 10 minutes (log: {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        status.success(),
        "scripts/bench.sh failed ({status}); its log ends with:\n{}",
        log_text
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let text = std::fs::read_to_string(&results)
        .with_context(|| format!("reading {}", results.display()))?;
    let mut sides: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let m: Value = serde_json::from_str(line).with_context(|| format!("result {line}"))?;
        let key = (
            m["comparison"].as_str().unwrap_or_default().to_owned(),
            m["side"].as_str().unwrap_or_default().to_owned(),
        );
        sides.insert(key, m);
    }
    let expected = [
        ("pg", "xclog"),
        ("pg", "copy"),
        ("pg", "jdbc-sink"),
        ("mongo", "xclog"),
        ("mongo", "bulk-insert"),
        ("mongo", "mongo-sink"),
    ];
    for (comparison, side) in expected {
        let m = sides
            .get(&(comparison.to_owned(), side.to_owned()))
            .with_context(|| format!("no result for {comparison}/{side} in {text}"))?;
        if let Some(reason) = m.get("missing") {
            // A side the build cannot run yet must say why (it is reported, never dropped).
            ensure!(
                reason.as_str().is_some_and(|r| !r.is_empty()),
                "{comparison}/{side} is missing without a reason: {m}"
            );
            continue;
        }
        assert_eq!(
            m["rows"].as_u64(),
            Some(EVENTS),
            "{comparison}/{side} wrote a different number of events: {m}"
        );
        assert_eq!(
            m["events"].as_u64(),
            Some(EVENTS),
            "{comparison}/{side}: {m}"
        );
    }
    let ours_pg = &sides[&("pg".to_owned(), "xclog".to_owned())];
    ensure!(
        ours_pg["snapshot_rows"].as_u64().is_some_and(|n| n > 0),
        "our projector wrote no snapshot rows: {ours_pg}"
    );
    let _ = std::fs::remove_file(&results);
    let _ = std::fs::remove_file(&log);
    Ok(())
}
