//! PostgreSQL restarted under a running projector: no event is lost. Alone in its test binary,
//! because restarting the shared server would disturb any test running beside it.

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use xclog_schema::Encoding;
use xclog_tests::{Service, TestPg, TestTopic, services, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarting_mid_run_loses_nothing() -> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let pg = TestPg::create().await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(6000, 40, 41);
    let (first, second) = records.split_at(3000);
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    let p = start_in_process(config(&topic.name, &group), &pg.url).await?;
    wait_until(CATCH_UP, "the projector to commit something", || {
        let pool = pg.pool.clone();
        async move { Ok((stored_events(&pool).await > 0).then_some(())) }
    })
    .await?;
    services::restart(Service::Postgres).await?;
    published.extend(publish(&producer, &topic.name, second, Encoding::Protobuf).await?);
    wait_caught_up(&pg.pool, &topic.name, &group, 3, CATCH_UP).await?;
    p.stop().await?;
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}
