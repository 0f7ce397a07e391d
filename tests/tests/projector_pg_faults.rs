//! Fault test of the PostgreSQL projector: the `xclog project` process killed with SIGKILL at
//! random points. After recovery the store equals the topic. (The PostgreSQL restart test is in
//! `projector_pg_restart.rs`: a test that restarts a shared service lives alone in its binary,
//! because cargo runs test binaries one after another but the tests of one binary at once.)

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use xclog_tests::{TestPg, TestTopic, unique_suffix};

const CATCH_UP: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_then_a_restart_leaves_the_store_equal_to_the_topic()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(4).await?;
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let group = format!("g-{}", unique_suffix());
    let run = SigkillRun {
        topic: &topic.name,
        records: workload(12_000, 60, 31),
        chunk_len: 2000,
        kills: 5,
        catch_up: CATCH_UP,
    };
    let published = run
        .run(
            || spawn_binary(&bin, &topic.name, &group, &pg.url),
            async || stored_events(&pg.pool).await,
            async || wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await,
        )
        .await?;
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}
