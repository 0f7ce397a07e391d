//! `xclog rebuild --target mongo`: rebuilds the MongoDB store into prefixed shadow collections
//! of the same database, locks the live offsets, lets the shadow catch up under the lock,
//! renames the collections and hands the shadow's offsets to the live projector (see
//! `xclog_projector::rebuild::mongo`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use xclog_projector::rebuild::mongo::{LiveOffsets, MongoRebuild, ResumeState};
use xclog_projector::rebuild::{self, RebuildError};

use super::rebuild::{
    Plan, Progress, RebuildArgs, ShadowRun, Wake, fmt_offsets, interrupted_at, keep_old_text,
    unix_now, watermarks,
};

/// How long the live offsets may stay locked while the shadow reads the last records; past
/// it the lock is released and the swap tried again later.
const LOCK_CATCH_UP: Duration = Duration::from_secs(60);

/// How long after locking the live offsets the lock is checked before the swap: longer than
/// a live batch's offset update takes to land (milliseconds), short against the swap.
const LOCK_SETTLE: Duration = Duration::from_secs(1);

/// Batches of the rebuild's projector are the live projection's (`--batch-max-records`):
/// on FerretDB a batch's cost is per statement, so bigger batches do not write faster
/// (measured: docs/DESIGN.md, section 8), and a small batch in flight when the swap begins
/// ends quickly.
const MIN_BATCH: usize = 0;

/// Runs the MongoDB rebuild until the swap (exit 0), an interruption (130: run again to
/// continue) or an error.
pub async fn run(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let p = &args.project;
    let database = &p.db.store.mongodb_database;
    let db = super::connect_mongo(&p.db.store.mongodb_uri, database, "xclog-rebuild").await?;
    let projection = p.stream.projection();
    let rb = MongoRebuild::new(
        db,
        &args.shadow_schema,
        &projection,
        &p.stream.log.topic,
        !p.mongo.mongodb_no_majority,
    )?;
    rb.check_single_topic().await?;
    let state = rb.resume_state().await?;
    let live = rb.live_offsets().await?;
    let start = match state {
        ResumeState::Continue | ResumeState::UnlockThenContinue => Some(rb.shadow_offsets().await?),
        _ => None,
    };
    let shadow = format!("shadow collections {}*", rb.shadow_prefix());
    if state == ResumeState::FinishSwap {
        let old = live
            .old
            .clone()
            .context("the live offsets are locked without the old store's name")?;
        println!(
            "rebuild of topic {} (projection {projection}) into MongoDB database {database}: \
             a swap was interrupted after its first rename; finishing it (previous store {old}_*)",
            p.stream.log.topic
        );
        if args.dry_run {
            println!("dry run: nothing changed");
            return Ok(ExitCode::SUCCESS);
        }
        let swapped = rb.swap(&old, args.keep_old).await?;
        report(
            &rb,
            &old,
            args.keep_old,
            &swapped.offsets,
            Instant::now(),
            database,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = Plan::make(
        p,
        &format!("MongoDB database {database}"),
        &shadow,
        &live.offsets,
        start.as_ref(),
        &keep_old_text(args.keep_old, "_*"),
    )
    .await?;
    if !live.locked.is_empty() {
        println!("  the live offsets are locked by an interrupted swap; they are unlocked first");
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    match state {
        ResumeState::UnlockThenContinue => rb.unlock_live().await?,
        ResumeState::CleanUp => rb.drop_shadow_offsets().await?,
        _ => {}
    }
    // The shadow is written with the indexes its writes query; the readers' indexes are
    // built once, when it has caught up.
    rb.prepare_shadow().await?;
    let start = start.unwrap_or_default();
    let target = plan.target.clone();
    let command_timeout = p.mongo.command_timeout();
    let mut run = ShadowRun::start(
        p,
        rb.shadow_sink().with_command_timeout(command_timeout),
        MIN_BATCH,
        Progress::new(&args.progress, &start, &target),
    )?;
    let began = Instant::now();
    let mut indexed = false;
    loop {
        if let Wake::Interrupted = run.next().await? {
            return Ok(interrupted_at(&rb.shadow_offsets().await?));
        }
        let shadow = rb.shadow_offsets().await?;
        run.progress.show(rebuild::remaining(&shadow, &target));
        if !rebuild::caught_up(&shadow, &target)
            || !rebuild::caught_up(&shadow, &rb.live_offsets().await?.offsets)
        {
            continue;
        }
        if !indexed {
            run.progress.finish();
            let t = Instant::now();
            rb.build_read_indexes().await?;
            println!(
                "built the readers' indexes in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            indexed = true;
        }

        // Freeze the live offsets, then read on to them and to the end of the topic as it is
        // now: the live store may already show records of a batch in flight up to there.
        let old = rebuild::old_schema_name(unix_now());
        let locked = rb.lock_live(&plan.partitions(), &old).await?;
        let high: BTreeMap<i32, i64> = {
            let log = &p.stream.log;
            let (brokers, settings, topic) = (
                log.brokers.clone(),
                log.kafka.settings()?,
                log.topic.clone(),
            );
            tokio::task::spawn_blocking(move || watermarks(&brokers, &settings, &topic))
                .await??
                .into_iter()
                .map(|(p, (_, h))| (p, h))
                .collect()
        };
        let must = rebuild::target(&high, &locked.offsets);
        let t = Instant::now();
        let reached = loop {
            let shadow = rb.shadow_offsets().await?;
            if rebuild::caught_up(&shadow, &must) {
                break true;
            }
            if t.elapsed() > LOCK_CATCH_UP {
                break false;
            }
            match run.next().await {
                Ok(Wake::Tick) => {}
                Ok(Wake::Interrupted) => {
                    rb.unlock_live().await?;
                    return Ok(interrupted_at(&rb.shadow_offsets().await?));
                }
                Err(e) => {
                    rb.unlock_live().await?;
                    return Err(e);
                }
            }
        };
        if !reached {
            rb.unlock_live().await?;
            tracing::warn!(must = %fmt_offsets(&must), "the shadow did not reach the locked live offsets in time; unlocked, trying again");
            continue;
        }
        // The lock must have held: on FerretDB a live batch's compare-and-set in flight when
        // it was set can write it away (`LiveOffsets::lock_lost`). Such a straggler lands
        // within one command, so the check waits out LOCK_SETTLE from the lock first.
        tokio::time::sleep(LOCK_SETTLE.saturating_sub(t.elapsed())).await;
        if let Some(why) = lock_broken(&rb, &locked, &plan.partitions()).await? {
            tracing::warn!(%why, "the live offsets did not stay locked (a live batch wrote over the lock); unlocked, trying again");
            continue;
        }
        tracing::info!(
            live = %fmt_offsets(&locked.offsets),
            must = %fmt_offsets(&must),
            waited_ms = t.elapsed().as_millis() as u64,
            "live offsets locked and the shadow caught up; swapping"
        );
        // The shadow's projector names shadow collections: stop it before they are renamed.
        run.stop().await;
        // The lock once more, now that the renames are next (a best-effort check, see above).
        if let Some(why) = lock_broken(&rb, &locked, &plan.partitions()).await? {
            return Err(RebuildError::Inconsistent(format!(
                "the live offsets did not stay locked ({why}); unlocked before any rename, run the rebuild again"
            ))
            .into());
        }
        let final_shadow = rb.shadow_offsets().await?;
        if !rebuild::caught_up(&final_shadow, &must) {
            return Err(RebuildError::Inconsistent(format!(
                "the shadow's offsets went back ({} < {})",
                fmt_offsets(&final_shadow),
                fmt_offsets(&must)
            ))
            .into());
        }
        let swapped = rb.swap(&old, args.keep_old).await?;
        println!(
            "renamed the collections in {:.0} ms; a collection was missing for at most {:.0} ms \
             ({} re-created by a live batch in flight and dropped)",
            swapped.renames.as_secs_f64() * 1000.0,
            swapped.window.as_secs_f64() * 1000.0,
            swapped.recreated
        );
        report(&rb, &old, args.keep_old, &swapped.offsets, began, database).await?;
        return Ok(ExitCode::SUCCESS);
    }
}

/// Reads the live offsets again and checks that the swap lock held
/// (`LiveOffsets::lock_lost`); if it did not, unlocks them and returns what broke.
async fn lock_broken(
    rb: &MongoRebuild,
    locked: &LiveOffsets,
    partitions: &[i32],
) -> anyhow::Result<Option<String>> {
    let why = locked.lock_lost(&rb.live_offsets().await?, partitions);
    if why.is_some() {
        rb.unlock_live().await?;
    }
    Ok(why)
}

async fn report(
    rb: &MongoRebuild,
    old: &str,
    keep_old: bool,
    offsets: &BTreeMap<i32, i64>,
    began: Instant,
    database: &str,
) -> anyhow::Result<()> {
    if keep_old {
        println!("previous store kept in collections {old}_*");
    }
    println!(
        "swapped: database {database} now holds the rebuilt store ({} events, offsets {}) after \
         {:.1}s; the live projector continues from these offsets",
        rb.count_events().await?,
        fmt_offsets(offsets),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
