//! `xclog verify` as users run it (the real binary) against real Kafka, PostgreSQL and FerretDB:
//! agreement on clean stores (exit 0), agreement on a live topic that moved past the stores'
//! offsets, then four injected differences per store (a deleted event, a changed state, a missing
//! `caused` entry, a stale snapshot), each found and named (exit 1), and errors (exit 2).

mod projector_pg_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use mongodb::bson::{Document, doc};
use projector_pg_support::*;
use serde_json::Value;
use xclog_projector::sink::mongo::MongoSink;
use xclog_projector::sink::{OffsetAdvance, Sink as _, SinkRecord, SourcePosition, WriteBatch};
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestMongo, TestPg, TestTopic, brokers, unique_suffix};

const CATCH_UP: Duration = Duration::from_secs(120);

/// Longest a single `xclog verify` run may take in these tests.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `xclog verify` with `args` and the given environment; returns (exit code, stdout,
/// stderr). Fails (and kills it) if it runs longer than [`VERIFY_TIMEOUT`].
fn run_verify(
    bin: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(i32, String, String)> {
    use std::io::Read as _;
    let started = Instant::now();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("verify").args(args).env("XCLOG_LOG", "warn");
    for k in [
        "DATABASE_URL",
        "MONGODB_URI",
        "XCLOG_TOPIC",
        "XCLOG_GROUP",
        "XCLOG_PROJECTION",
        "XCLOG_MONGO_PROJECTION",
        "XCLOG_MONGODB_DATABASE",
        "XCLOG_VERIFY_SOURCES",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("XCLOG_KAFKA_BROKERS", brokers());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running xclog verify")?;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    })
    .into_iter();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > VERIFY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("xclog verify {args:?} did not finish within {VERIFY_TIMEOUT:?}");
        }
        // The poll step of a blocking wait for the child's exit with a deadline.
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut next = || {
        pipes
            .next()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let (stdout, stderr) = (next(), next());
    let code = status.code().context("xclog verify was killed")?;
    eprintln!(
        "xclog verify {args:?}: exit {code} in {:?}\n{stdout}{stderr}",
        started.elapsed()
    );
    Ok((code, stdout, stderr))
}

/// What to damage, chosen from the published records so each lands on its own instance.
#[derive(Debug)]
struct Targets {
    /// An event to delete.
    deleted: String,
    /// An event whose stateAfter is changed.
    changed: String,
    changed_state: String,
    /// A parent and one of its children (removed from the parent's `caused`).
    parent: String,
    child: String,
    /// An instance whose snapshot is made stale, and its newest snapshot's sequence.
    snap_instance: String,
    snap_sequence: u64,
}

fn pick_targets(published: &[Published]) -> anyhow::Result<Targets> {
    let mut instance_of: HashMap<&str, &str> = HashMap::new();
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut events = Vec::new();
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for p in published {
        match &p.record {
            Record::Event(e) => {
                instance_of.insert(&e.id, &e.instance_id);
                for parent in &e.caused_by {
                    children.entry(parent).or_default().push(&e.id);
                }
                events.push(e);
            }
            Record::Snapshot(s) => {
                if let Some(seq) = s.sequence {
                    let n = newest.entry(&s.instance.id).or_default();
                    *n = (*n).max(seq);
                }
            }
            Record::SnapshotDeletion(d) => {
                newest.remove(d.instance_id.as_str());
            }
        }
    }
    let (parent, kids) = children
        .iter()
        .find(|(p, _)| instance_of.contains_key(*p))
        .context("the workload has no causedBy link between published events")?;
    let parent_instance = instance_of[parent];
    let mut used = vec![parent_instance];
    let mut pick = |pred: &dyn Fn(&xclog_schema::PersistedEvent) -> bool| {
        let e = events
            .iter()
            .find(|e| !used.contains(&e.instance_id.as_str()) && pred(e))
            .copied();
        if let Some(e) = e {
            used.push(&e.instance_id);
        }
        e
    };
    // Deleted: an event without children or parents, so only its own instance is affected.
    let deleted = pick(&|e| e.caused_by.is_empty() && !children.contains_key(e.id.as_str()))
        .context("no event without causality links")?;
    let changed = pick(&|_| true).context("no third instance")?;
    let used_now: Vec<String> = used.iter().map(|s| (*s).to_owned()).collect();
    let (snap_instance, snap_sequence) = newest
        .iter()
        .find(|(i, seq)| !used_now.iter().any(|u| u == *i) && **seq > 1)
        .context("no other instance with a snapshot")?;
    Ok(Targets {
        deleted: deleted.id.clone(),
        changed: changed.id.clone(),
        changed_state: changed.state_after.clone(),
        parent: (*parent).to_owned(),
        child: kids[0].to_owned(),
        snap_instance: (*snap_instance).to_owned(),
        snap_sequence: *snap_sequence,
    })
}

/// The differences of the pair `left` vs `right` in a JSON report.
fn differences<'a>(report: &'a Value, left: &str, right: &str) -> anyhow::Result<&'a Vec<Value>> {
    report["pairs"]
        .as_array()
        .context("no pairs")?
        .iter()
        .find(|p| p["left"] == left && p["right"] == right)
        .with_context(|| format!("no pair {left} vs {right} in {report}"))?["differences"]
        .as_array()
        .context("no differences array")
}

/// Checks that each injected difference is named: which event or instance, which field, and
/// the values (`store` is the right-hand side).
fn assert_names_all_four(diffs: &[Value], t: &Targets, what: &str) -> anyhow::Result<()> {
    let has = |event: Option<&str>,
               instance: Option<&str>,
               field: &str,
               check: &dyn Fn(&Value) -> bool| {
        diffs.iter().any(|d| {
            event.is_none_or(|e| d["eventId"] == e)
                && instance.is_none_or(|i| d["instance"] == i)
                && d["field"].as_str().is_some_and(|f| f.starts_with(field))
                && check(d)
        })
    };
    ensure!(
        has(Some(&t.deleted), None, "event", &|d| d["right"]
            == "missing"
            && d["left"]
                .as_str()
                .is_some_and(|l| l.starts_with("present"))),
        "{what}: the deleted event {} is not named in {diffs:#?}",
        t.deleted
    );
    ensure!(
        has(Some(&t.changed), None, "stateAfter", &|d| d["left"]
            == t.changed_state.as_str()
            && d["right"] == "Tampered"),
        "{what}: the changed state of {} is not named in {diffs:#?}",
        t.changed
    );
    ensure!(
        has(Some(&t.parent), None, "caused", &|d| d["left"]
            .as_str()
            .is_some_and(
                |l| l.contains(&format!("only here: [\"{}\"]", t.child))
            )),
        "{what}: the missing caused entry {} of {} is not named in {diffs:#?}",
        t.child,
        t.parent
    );
    ensure!(
        has(
            None,
            Some(&t.snap_instance),
            "snapshot.sequence",
            &|d| d["left"] == t.snap_sequence.to_string().as_str()
                && d["right"] == (t.snap_sequence - 1).to_string().as_str()
        ),
        "{what}: the stale snapshot of {} is not named in {diffs:#?}",
        t.snap_instance
    );
    ensure!(
        has(
            None,
            Some(&t.snap_instance),
            "snapshot.state",
            &|d| d["right"] == "Stale"
        ),
        "{what}: the stale snapshot state of {} is not named",
        t.snap_instance
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_agrees_on_a_projected_store_and_names_each_injected_difference_in_postgres()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(3).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let published = publish(
        &producer,
        &topic.name,
        &workload(2000, 60, 17),
        Encoding::Protobuf,
    )
    .await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 3, CATCH_UP).await?;
    p.stop().await?;

    let env = [
        ("XCLOG_TOPIC", topic.name.as_str()),
        ("XCLOG_GROUP", group.as_str()),
        ("DATABASE_URL", pg.url.as_str()),
    ];
    let (code, out, _) = run_verify(&bin, &["--json"], &env)?;
    ensure!(code == 0, "clean store: exit {code}");
    let report: Value = serde_json::from_str(&out)?;
    ensure!(report["agree"] == true);
    let pair = &report["pairs"][0];
    let per_component = pair["leftCounts"]["eventsPerComponent"]
        .as_object()
        .context("no counts")?;
    let total: u64 = per_component.values().filter_map(Value::as_u64).sum();
    ensure!(total == 2000, "topic side counted {total} events");
    ensure!(per_component.len() >= 2, "{per_component:?}");
    ensure!(pair["leftCounts"] == pair["rightCounts"], "{pair}");
    ensure!(pair["rightCounts"]["snapshots"].as_u64().unwrap_or(0) > 0);

    // Live: the topic moves on while the store does not (no projector running); verify reads
    // the topic only up to the store's offsets, so they still agree.
    publish(
        &producer,
        &topic.name,
        &workload(300, 10, 99),
        Encoding::Json,
    )
    .await?;
    let (code, out, _) = run_verify(&bin, &[], &env)?;
    ensure!(code == 0, "store behind the topic: exit {code}");
    ensure!(out.contains("result: the sources agree"), "{out}");

    // Inject the four differences.
    let t = pick_targets(&published)?;
    eprintln!("targets: {t:?}");
    let deleted = sqlx::query("DELETE FROM fsm_events WHERE id = $1")
        .bind(&t.deleted)
        .execute(&pg.pool)
        .await?;
    ensure!(deleted.rows_affected() == 1);
    sqlx::query("UPDATE fsm_events SET state_after = 'Tampered' WHERE id = $1")
        .bind(&t.changed)
        .execute(&pg.pool)
        .await?;
    let pulled = sqlx::query(
        "UPDATE fsm_events SET caused = array_remove(caused, $2) WHERE id = $1 AND $2 = ANY(caused)",
    )
    .bind(&t.parent)
    .bind(&t.child)
    .execute(&pg.pool)
    .await?;
    ensure!(
        pulled.rows_affected() == 1,
        "{} not in caused of {}",
        t.child,
        t.parent
    );
    let stale = sqlx::query(
        "UPDATE fsm_snapshots SET sequence = sequence - 1, current_state = 'Stale' \
         WHERE instance_id = $1 AND sequence = $2",
    )
    .bind(&t.snap_instance)
    .bind(t.snap_sequence as i64)
    .execute(&pg.pool)
    .await?;
    ensure!(
        stale.rows_affected() == 1,
        "snapshot of {} not found",
        t.snap_instance
    );

    let (code, out, _) = run_verify(&bin, &["--json", "--max-differences", "50"], &env)?;
    ensure!(code == 1, "damaged store: exit {code}");
    let report: Value = serde_json::from_str(&out)?;
    ensure!(report["agree"] == false);
    let diffs = differences(&report, "topic", "postgres")?;
    assert_names_all_four(diffs, &t, "postgres")?;
    // The per-component count names the component of the deleted event.
    ensure!(
        diffs.iter().any(|d| d["field"] == "eventCount"),
        "no count difference in {diffs:#?}"
    );

    // The text report names them too, and --max-differences caps what is printed.
    let (code, out, _) = run_verify(&bin, &["--max-differences", "2"], &env)?;
    ensure!(code == 1, "text: exit {code}");
    ensure!(out.contains("result: the sources DIFFER"), "{out}");
    ensure!(out.contains("first 2 shown"), "{out}");
    ensure!(out.matches("\n  - ").count() == 2, "{out}");

    // Errors: exit 2 with a message naming what is wrong (and never the password).
    let (code, _, err) = run_verify(&bin, &["--sources", "topic"], &env)?;
    ensure!(
        code == 2 && err.contains("two or three distinct sources"),
        "{err}"
    );
    let (code, _, err) = run_verify(
        &bin,
        &[],
        &[
            ("XCLOG_TOPIC", topic.name.as_str()),
            ("DATABASE_URL", "postgres://xclog:hunter2@127.0.0.1:1/xclog"),
        ],
    )?;
    ensure!(
        code == 2 && err.contains("connecting to PostgreSQL"),
        "{err}"
    );
    ensure!(!err.contains("hunter2"), "the password was printed: {err}");
    let (code, _, err) = run_verify(&bin, &["--projection", "nobody"], &env)?;
    ensure!(code == 2 && err.contains("no stored offsets"), "{err}");
    let (code, _, err) = run_verify(
        &bin,
        &[],
        &[
            ("XCLOG_TOPIC", "xclog-no-such-topic"),
            ("DATABASE_URL", pg.url.as_str()),
        ],
    )?;
    ensure!(code == 2 && err.contains("does not exist"), "{err}");
    Ok(())
}

/// Writes `published` into MongoDB with the sink directly (FerretDB is slow under sustained
/// load: docs/DESIGN.md, "FerretDB 1.24: the rules the sink follows"), partition by partition
/// in log order, storing offsets under `projection`.
async fn write_mongo(
    m: &TestMongo,
    projection: &str,
    topic: &str,
    published: &[Published],
) -> anyhow::Result<()> {
    let sink = MongoSink::from_database(m.database(), projection, true);
    sink.ensure_indexes().await?;
    let mut by_partition: BTreeMap<i32, Vec<&Published>> = BTreeMap::new();
    for p in published {
        by_partition.entry(p.partition).or_default().push(p);
    }
    for (partition, mut records) in by_partition {
        records.sort_by_key(|p| p.offset);
        let mut expected = None;
        for chunk in records.chunks(50) {
            let next = chunk.last().map_or(0, |p| p.offset + 1);
            let batch = WriteBatch {
                topic: topic.to_owned(),
                records: chunk
                    .iter()
                    .map(|p| SinkRecord {
                        record: p.record.clone(),
                        source: SourcePosition {
                            topic: topic.to_owned(),
                            partition,
                            offset: p.offset,
                        },
                    })
                    .collect(),
                offsets: vec![OffsetAdvance {
                    partition,
                    expected,
                    next,
                }],
            };
            sink.write(&batch).await?;
            expected = Some(next);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_compares_all_three_and_names_each_injected_difference_in_mongo()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let m = TestMongo::create().await?;
    let group = format!("g-{}", unique_suffix());
    let mongo_projection = format!("m-{}", unique_suffix());
    let producer = producer()?;
    let published = publish(
        &producer,
        &topic.name,
        &workload(300, 16, 23),
        Encoding::Json,
    )
    .await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    tokio::time::timeout(
        Duration::from_secs(120),
        write_mongo(&m, &mongo_projection, &topic.name, &published),
    )
    .await
    .context(
        "writing 300 events into MongoDB took over 120 s (FerretDB stalled? docs/DESIGN.md)",
    )??;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;

    let env = [
        ("XCLOG_TOPIC", topic.name.as_str()),
        ("XCLOG_GROUP", group.as_str()),
        ("XCLOG_MONGO_PROJECTION", mongo_projection.as_str()),
        ("DATABASE_URL", pg.url.as_str()),
        ("MONGODB_URI", m.uri.as_str()),
        ("XCLOG_MONGODB_DATABASE", m.name.as_str()),
    ];
    let all = [
        "--sources",
        "topic,postgres,mongo",
        "--json",
        "--max-differences",
        "50",
    ];
    let (code, out, _) = run_verify(&bin, &all, &env)?;
    ensure!(code == 0, "clean stores: exit {code}");
    let report: Value = serde_json::from_str(&out)?;
    ensure!(
        report["pairs"].as_array().map(Vec::len) == Some(3),
        "{report}"
    );
    for pair in report["pairs"].as_array().context("pairs")? {
        let total: u64 = pair["rightCounts"]["eventsPerComponent"]
            .as_object()
            .context("counts")?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        ensure!(total == 300, "{} counted {total} events", pair["right"]);
    }

    let t = pick_targets(&published)?;
    eprintln!("targets: {t:?}");
    let db = m.database();
    let events = db.collection::<Document>("events");
    ensure!(
        events
            .delete_one(doc! {"_id": &t.deleted})
            .await?
            .deleted_count
            == 1
    );
    ensure!(
        events
            .update_one(
                doc! {"_id": &t.changed},
                doc! {"$set": {"stateAfter": "Tampered"}}
            )
            .await?
            .modified_count
            == 1
    );
    ensure!(
        events
            .update_one(
                doc! {"_id": &t.parent},
                doc! {"$pull": {"caused": &t.child}}
            )
            .await?
            .modified_count
            == 1,
        "{} not in caused of {}",
        t.child,
        t.parent
    );
    ensure!(
        db.collection::<Document>("snapshots")
            .update_one(
                doc! {"instance.id": &t.snap_instance},
                doc! {"$set": {"sequence": (t.snap_sequence - 1) as i64, "instance.currentState": "Stale"}},
            )
            .await?
            .modified_count
            == 1
    );

    let (code, out, _) = run_verify(&bin, &all, &env)?;
    ensure!(code == 1, "damaged mongo: exit {code}");
    let report: Value = serde_json::from_str(&out)?;
    assert_names_all_four(
        differences(&report, "topic", "mongo")?,
        &t,
        "topic vs mongo",
    )?;
    assert_names_all_four(
        differences(&report, "postgres", "mongo")?,
        &t,
        "postgres vs mongo",
    )?;
    ensure!(
        differences(&report, "topic", "postgres")?.is_empty(),
        "postgres was not damaged"
    );
    // Two stores without the topic.
    let (code, out, _) = run_verify(&bin, &["--sources", "postgres,mongo"], &env)?;
    ensure!(code == 1 && out.contains(&t.deleted), "{out}");
    Ok(())
}
