//! Fault test of the PostgreSQL projector: the `xclog project` process killed with SIGKILL at
//! random points. After recovery the store equals the topic. (The PostgreSQL restart test is in
//! `projector_pg_restart.rs`: a test that restarts a shared service lives alone in its binary,
//! because cargo runs test binaries one after another but the tests of one binary at once.)

mod projector_pg_support;

use std::time::Duration;

use projector_pg_support::*;
use xclog_schema::Encoding;
use xclog_tests::{TestPg, TestTopic, unique_suffix, wait_until};

const CATCH_UP: Duration = Duration::from_secs(180);

async fn stored_events(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fsm_events")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_then_a_restart_leaves_the_store_equal_to_the_topic()
-> anyhow::Result<()> {
    let bin = xclog_binary()?;
    let topic = TestTopic::create(4).await?;
    let pg = TestPg::create().await?;
    migrate(&pg.pool).await?;
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(12_000, 60, 31);
    let chunks: Vec<Vec<xclog_schema::Record>> = records.chunks(2000).map(<[_]>::to_vec).collect();
    let mut published = Vec::new();
    let mut rng = Rng::from_time();
    const KILLS: usize = 5;
    for round in 0..KILLS {
        // Publish while the projector works, so kills land mid-batch and mid-commit.
        let mut child = spawn_binary(&bin, &topic.name, &group, &pg.url)?;
        if let Some(chunk) = chunks.get(round) {
            published.extend(publish(&producer, &topic.name, chunk, Encoding::Protobuf).await?);
        }
        let before = stored_events(&pg.pool).await;
        // Wait for progress (so each life commits something), then kill at a random moment.
        wait_until(CATCH_UP, "the projector to commit something", || {
            let pool = pg.pool.clone();
            async move { Ok((stored_events(&pool).await > before).then_some(())) }
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    for chunk in chunks.iter().skip(KILLS) {
        published.extend(publish(&producer, &topic.name, chunk, Encoding::Json).await?);
    }
    let mut child = spawn_binary(&bin, &topic.name, &group, &pg.url)?;
    let caught_up = wait_caught_up(&pg.pool, &topic.name, &group, 4, CATCH_UP).await;
    // SIGTERM: graceful stop.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = child.wait()?;
    caught_up?;
    assert!(
        status.success(),
        "xclog project exited with {status} after SIGTERM"
    );
    assert_store_equals(&pg.pool, &published).await?;
    Ok(())
}
