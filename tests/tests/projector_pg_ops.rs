//! The projector as operators and users meet it: the ops server and the read commands.

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestPg, TestTopic, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(120);

async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ops_server_reports_health_readiness_and_counts() -> anyhow::Result<()> {
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records: Vec<Record> = workload(300, 10, 3)
        .into_iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .collect();
    publish(&producer, &topic.name, &records, Encoding::Protobuf).await?;
    publish_raw(&producer, &topic.name, "k", b"garbage", &[]).await?;

    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut c = config(&topic.name, &group);
    c.http_addr = Some(addr);
    let p = start_in_process(c, &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    assert_eq!(get(addr, "/healthz").await?.0, 200);
    // Lag is measured every 2 s: wait for a measurement of both partitions.
    let body = wait_until(CATCH_UP, "/readyz 200 and lag measured", || async move {
        let (status, body) = get(addr, "/metrics").await?;
        let measured = status == 200
            && body.contains("xclog_projector_partition_lag{partition=\"0\"} 0")
            && body.contains("xclog_projector_partition_lag{partition=\"1\"} 0");
        Ok((measured && get(addr, "/readyz").await?.0 == 200).then_some(body))
    })
    .await?;
    let want_rows = format!(
        "xclog_projector_rows_written_total{{kind=\"event\"}} {}",
        records.len()
    );
    assert!(
        body.contains(&want_rows),
        "missing {want_rows:?} in\n{body}"
    );
    assert!(
        body.contains("xclog_projector_dead_lettered_total{kind=\"decode\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "xclog_projector_records_consumed_total {}",
            records.len() + 1
        )),
        "{body}"
    );
    assert!(
        body.contains("xclog_projector_end_to_end_delay_seconds_count"),
        "{body}"
    );
    assert!(
        body.contains("xclog_projector_partition_lag{partition=\"0\"}"),
        "{body}"
    );
    p.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_commands_print_an_instance_history_a_trace_and_a_snapshot() -> anyhow::Result<()>
{
    let bin = xclog_binary()?;
    let topic = TestTopic::create(2).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let records = workload(600, 10, 9);
    let published = publish(&producer()?, &topic.name, &records, Encoding::Protobuf).await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_caught_up(&pg.pool, &topic.name, &group, 2, CATCH_UP).await?;
    p.stop().await?;

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
