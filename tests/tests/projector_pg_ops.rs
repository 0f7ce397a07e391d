//! The projector as operators meet it: `/healthz`, `/readyz` and `/metrics`.

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use xclog_schema::{Encoding, Record};
use xclog_tests::{TestPg, TestTopic, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(120);

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
    assert_eq!(http_get(addr, "/healthz").await?.0, 200);
    // Watermarks are read every 2 s: wait for a measurement of both partitions.
    let body = wait_until(CATCH_UP, "/readyz 200 and lag measured", || async move {
        let (status, body) = http_get(addr, "/metrics").await?;
        let measured = status == 200
            && body.contains("xclog_projector_partition_lag{partition=\"0\"} 0")
            && body.contains("xclog_projector_partition_lag{partition=\"1\"} 0");
        Ok((measured && http_get(addr, "/readyz").await?.0 == 200).then_some(body))
    })
    .await;
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let (m, metrics) = http_get(addr, "/metrics").await?;
            let (r, ready) = http_get(addr, "/readyz").await?;
            anyhow::bail!("{e}\n/metrics {m}:\n{metrics}\n/readyz {r}:\n{ready}");
        }
    };
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
