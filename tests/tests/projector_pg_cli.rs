//! The projector as users meet it: `xclog events`, `trace` and `snapshot` run as the real binary.
//! (The ops server test is in `projector_pg_ops.rs`: it failed once in a clean run while this
//! test built the binary beside it, so the two run apart.)

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestPg, TestTopic, unique_suffix};

const CATCH_UP: Duration = Duration::from_secs(120);

/// A two-partition topic of `records`, projected into a fresh database under `group` by an
/// in-process projector that is stopped once the store has caught up.
struct Projected {
    topic: TestTopic,
    pg: TestPg,
    group: String,
    published: Vec<Published>,
}

async fn projected(records: Vec<Record>, encoding: Encoding) -> anyhow::Result<Projected> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let published = publish(&producer()?, &topic.name, &records, encoding).await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;
    Ok(Projected {
        topic,
        pg,
        group,
        published,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_commands_print_an_instance_history_a_trace_and_a_snapshot() -> anyhow::Result<()>
{
    let bin = xclog_binary()?;
    let Projected {
        topic: _topic,
        pg,
        published,
        ..
    } = projected(workload(600, 10, 9), Encoding::Protobuf).await?;

    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .env("DATABASE_URL", &pg.url)
            .env("XCLOG_LOG", "warn")
            .output()
    };
    // An event with a cause: its instance's history, its trace.
    let child = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Event(e) if !e.caused_by.is_empty() => Some(e.clone()),
            _ => None,
        })
        .expect("the workload has causedBy");
    let history: Vec<String> = published
        .iter()
        .filter_map(|p| match &p.record {
            Record::Event(e) if e.instance_id == child.instance_id => Some(e.id.clone()),
            _ => None,
        })
        .collect();
    let out = run(&[
        "events",
        "--instance",
        &child.instance_id,
        "--json",
        "--limit",
        "1000",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ids: Vec<String> = page["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, history);
    let out = run(&["events", "--instance", &child.instance_id])?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains(&child.id) && text.contains(&child.state_after),
        "{text}"
    );

    let out = run(&["trace", &child.id])?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.contains(&child.id) && text.contains(&child.caused_by[0]),
        "{text}"
    );
    let out = run(&["trace", "no-such-event"])?;
    assert_eq!(out.status.code(), Some(1));

    let snapshot_of = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Snapshot(s) => Some(s.instance.id.clone()),
            _ => None,
        })
        .expect("the workload has snapshots");
    let out = run(&["snapshot", &snapshot_of, "--json"])?;
    assert!(out.status.success());
    let snap: xclog_schema::InstanceSnapshot = serde_json::from_slice(&out.stdout)?;
    assert_eq!(snap.instance.id, snapshot_of);
    let out = run(&["snapshot", "no-such-instance"])?;
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xclog_status_says_how_far_behind_the_store_is_and_wait_returns_once_caught_up()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(3).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let group_name = group.clone();
    let records = workload(300, 10, 4);
    let published = publish(&producer()?, &topic.name, &records, Encoding::Json).await?;
    let (topic_name, url) = (topic.name.clone(), pg.url.clone());
    let status = move |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--topic",
            &topic_name,
            "--group",
            &group,
            "--json",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(&bin)
            .args(&args)
            .env("DATABASE_URL", &url)
            .env("XCLOG_KAFKA_BROKERS", xclog_tests::brokers())
            .env("XCLOG_LOG", "warn")
            .output()
    };

    // No projector has run: the database has no store yet, everything is behind.
    let out = status(&[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(s["caught_up"], false);
    assert_eq!(s["behind"], published.len());
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(3));
    // --wait that runs out exits 1.
    assert_eq!(status(&["--wait", "1"])?.status.code(), Some(1));

    let p = start_in_process(config(&topic.name, &group_name), &pg.url).await?;
    let out = tokio::task::spawn_blocking({
        let status = status.clone();
        move || status(&["--wait", "120"])
    })
    .await??;
    p.stop().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(s["caught_up"], true);
    assert_eq!(s["behind"], 0);
    let stored: i64 = s["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["stored"].as_i64().unwrap_or(-1))
        .sum();
    assert_eq!(stored, published.len() as i64, "every record is stored");
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_iso_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_commands_print_iso_times_no_debug_formatting_and_no_info_logs_by_default()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let Projected {
        topic,
        pg,
        group,
        published,
    } = projected(workload(300, 8, 5), Encoding::Json).await?;

    // As a user runs them: no log settings in the environment.
    let run = |args: &[&str]| -> anyhow::Result<(String, String)> {
        let out = std::process::Command::new(&bin)
            .args(args)
            .env("DATABASE_URL", &pg.url)
            .env("XCLOG_KAFKA_BROKERS", xclog_tests::brokers())
            .env("XCLOG_TOPIC", &topic.name)
            .env("XCLOG_GROUP", &group)
            .env_remove("XCLOG_LOG")
            .env_remove("RUST_LOG")
            .output()?;
        let (stdout, stderr) = (
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        );
        anyhow::ensure!(out.status.success(), "xclog {args:?} failed: {stderr}");
        Ok((stdout, stderr))
    };
    let (event, instance) = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Event(e) => Some((e.clone(), e.instance_id.clone())),
            _ => None,
        })
        .expect("the workload has events");
    let snapshot_of = published
        .iter()
        .find_map(|p| match &p.record {
            Record::Snapshot(s) if s.sequence.is_some() => Some(s.instance.id.clone()),
            _ => None,
        })
        .expect("the workload has snapshots with a sequence");

    // Human output: the event's line starts with its time in ISO-8601 UTC, never the epoch
    // number; --json keeps the number.
    let (events, _) = run(&["events", "--instance", &instance])?;
    let line = events
        .lines()
        .find(|l| l.contains(&event.id))
        .expect("the event is listed");
    let at = line.split_whitespace().next().unwrap_or_default();
    assert!(is_iso_utc_millis(at), "{line}");
    assert!(
        !events.contains(&event.persisted_at.to_string()),
        "{events}"
    );
    let (json, _) = run(&["events", "--instance", &instance, "--json"])?;
    let page: serde_json::Value = serde_json::from_str(&json)?;
    let stored = page["events"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == event.id.as_str()))
        .expect("the event is in the JSON page");
    assert_eq!(stored["persistedAt"].as_i64(), Some(event.persisted_at));
    // The printed time is the stored millisecond: as --from and --to it finds the event.
    let (json, _) = run(&["events", "--from", at, "--to", at, "--json"])?;
    let page: serde_json::Value = serde_json::from_str(&json)?;
    let found = page["events"].as_array().expect("events array");
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|e| e["persistedAt"].as_i64() == Some(event.persisted_at)),
        "{json}"
    );

    let (snapshot, _) = run(&["snapshot", &snapshot_of])?;
    let snapshot_line = snapshot
        .lines()
        .find(|l| l.starts_with("snapshot at"))
        .expect("a snapshot at line");
    assert!(
        snapshot_line.split_whitespace().any(is_iso_utc_millis),
        "{snapshot}"
    );
    assert!(snapshot_line.contains("(sequence "), "{snapshot}");

    let mut reports = vec![
        ("events", events.clone(), String::new()),
        ("snapshot", snapshot.clone(), String::new()),
    ];
    for args in [
        &["events", "--instance", &instance][..],
        &["snapshot", &snapshot_of],
        &["snapshot", "--list"],
        &["trace", &event.id],
        &["status"],
        &["verify"],
    ] {
        let (stdout, stderr) = run(args)?;
        reports.push((args[0], stdout, stderr));
    }
    for (command, stdout, stderr) in &reports {
        for debug in ["Some(", "None", "[\"", "{ "] {
            assert!(
                !stdout.contains(debug) && !stderr.contains(debug),
                "xclog {command} shows Rust debug formatting ({debug}):\n{stdout}{stderr}"
            );
        }
        assert!(
            !stderr.contains(" INFO ") && !stderr.contains("INFO"),
            "xclog {command} logs at INFO by default:\n{stderr}"
        );
    }
    // -v brings the logs back (verify logs each source it reads at INFO).
    let (_, stderr) = run(&["-v", "verify"])?;
    assert!(stderr.contains("INFO"), "{stderr}");
    Ok(())
}
