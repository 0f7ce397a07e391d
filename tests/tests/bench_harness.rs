//! The benchmark harness (`scripts/bench.sh`) end to end on a tiny workload: every PostgreSQL
//! and MongoDB comparison runs (ours, the database's own bulk load, the peer on Kafka Connect,
//! and our rebuild), and every side writes exactly the events of its workload (the MongoDB
//! sides on a smaller one of their own, as `make bench` runs them on FerretDB); the end-to-end
//! delay of ours and of the peer, in each store, is measured at each level (3 s each here) and
//! every event it published became visible. No timing is asserted anywhere: the figures of such a
//! run mean nothing.
//!
//! The producer comparison is left out: it is `cargo bench` of the producer crate, a release
//! build of its own that would double this test's time; `scripts/bench.sh --only producer`
//! runs it.

use std::collections::BTreeMap;

use anyhow::Context as _;

const EVENTS: u64 = 1000;
/// The MongoDB sides' workload: smaller, so that the harness publishes and reads a second one.
const MONGO_EVENTS: u64 = 600;

#[test]
fn the_harness_runs_every_store_comparison_and_each_side_writes_every_event() -> anyhow::Result<()>
{
    let root = xclog_tests::workspace_root()?;
    let results = std::env::temp_dir().join(format!(
        "xclog-bench-harness-{}.jsonl",
        xclog_tests::unique_suffix()
    ));
    let out = xclog_tests::without_test_cargo_env(std::process::Command::new("bash"))
        .arg(root.join("scripts/bench.sh"))
        .args([
            "--events",
            &EVENTS.to_string(),
            "--mongo-events",
            &MONGO_EVENTS.to_string(),
            "--runs",
            "1",
            "--only",
            "pg,mongo",
        ])
        .args(["--profile", "dev", "--no-doc", "--results"])
        .arg(&results)
        .env("CARGO_TARGET_DIR", xclog_tests::test_target_dir()?)
        .env("BENCH_DELAY_SECONDS", "3")
        .current_dir(&root)
        .output()
        .context("running scripts/bench.sh")?;
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench.sh failed:\n{log}");

    let text = std::fs::read_to_string(&results)
        .with_context(|| format!("reading {}", results.display()))?;
    let _ = std::fs::remove_file(&results);
    let mut rows: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let m: serde_json::Value = serde_json::from_str(line)?;
        let key = (
            m["comparison"].as_str().unwrap_or_default().to_owned(),
            m["side"].as_str().unwrap_or_default().to_owned(),
        );
        rows.insert(key, m);
    }
    for (comparison, side) in [
        ("pg", "xclog"),
        ("pg", "rebuild"),
        ("pg", "copy"),
        ("pg", "jdbc-sink"),
        ("mongo", "xclog"),
        ("mongo", "rebuild"),
        ("mongo", "bulk-insert"),
        ("mongo", "mongo-sink"),
    ] {
        let m = rows
            .get(&(comparison.to_owned(), side.to_owned()))
            .with_context(|| format!("no measurement of {comparison}/{side}:\n{text}\n{log}"))?;
        assert!(
            m.get("missing").is_none(),
            "{comparison}/{side} was not measured: {m}"
        );
        let expected = if comparison == "mongo" {
            MONGO_EVENTS
        } else {
            EVENTS
        };
        assert_eq!(
            m["rows"].as_u64(),
            Some(expected),
            "{comparison}/{side} wrote another number of events: {m}"
        );
        assert_eq!(
            m["events"].as_u64(),
            Some(expected),
            "{comparison}/{side} is recorded against another workload: {m}"
        );
    }
    // The delay: `xclog-bench delay` fails unless every event it published became visible,
    // so a measurement here means every one was seen.
    for side in ["xclog", "jdbc-sink", "xclog-mongo", "mongo-sink"] {
        for pct in [20, 50, 80] {
            let key = ("delay".to_owned(), format!("{side}@{pct}%"));
            let m = rows
                .get(&key)
                .with_context(|| format!("no delay measurement {key:?}:\n{text}\n{log}"))?;
            assert!(
                m.get("missing").is_none(),
                "the delay of {side} at {pct}% was not measured: {m}"
            );
            assert!(
                m["count"].as_u64().is_some_and(|n| n > 0),
                "the delay of {side} at {pct}% published no event: {m}"
            );
            let workload = if side.contains("mongo") {
                MONGO_EVENTS
            } else {
                EVENTS
            };
            assert_eq!(
                m["events"].as_u64(),
                Some(workload),
                "the delay of {side} at {pct}% is recorded against another workload: {m}"
            );
            for field in ["p50_ms", "p99_ms", "max_ms"] {
                assert!(
                    m[field].as_f64().is_some(),
                    "the delay of {side} at {pct}% has no {field}: {m}"
                );
            }
        }
    }
    Ok(())
}
