//! Parked (not compiled): see tests/pending/README.md. Belongs in tests/tests/projector_mongo.rs
//! (same imports and helpers) once it passes.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_in_one_group_share_the_partitions_and_one_stopping_midway_loses_nothing()
-> anyhow::Result<()> {
    let topic = TestTopic::create(4).await?;
    let m = TestMongo::create().await?;
    let db = m.database();
    let group = format!("g-{}", unique_suffix());
    let producer = producer()?;
    let records = workload(1500, 50, 21);
    let (first, second) = records.split_at(records.len() / 2);
    let a = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    let b = mongo::start_in_process(config(&topic.name, &group), db.clone()).await?;
    let mut published = publish(&producer, &topic.name, first, Encoding::Protobuf).await?;
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    // One worker leaves while the second half is being published: the other takes over.
    let publishing = publish(&producer, &topic.name, second, Encoding::Json);
    let (stopped, rest) = tokio::join!(a.stop(), publishing);
    stopped?;
    published.extend(rest?);
    mongo::wait_caught_up(&db, &topic.name, &group, 4, CATCH_UP).await?;
    b.stop().await?;
    mongo::assert_store_equals(&db, &published).await?;
    Ok(())
}
