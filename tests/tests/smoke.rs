//! First end-to-end checks that the three real services of the stack work as xclog uses them.

use std::time::Duration;

use futures::TryStreamExt as _;
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use xclog_tests::{TestMongo, TestPg, TestTopic, brokers};

#[tokio::test]
async fn a_record_produced_to_a_fresh_topic_is_consumed_back_unchanged() -> anyhow::Result<()> {
    let topic = TestTopic::create(3).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let delivery = producer
        .send(
            FutureRecord::to(&topic.name)
                .key("instance-1")
                .payload("hello xclog"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)?;
    let partition = delivery.partition;
    assert!((0..3).contains(&partition));
    assert_eq!(
        delivery.offset, 0,
        "first record of a fresh topic lands at offset 0"
    );

    let messages = topic.consume(1, Duration::from_secs(30)).await?;
    assert_eq!(messages[0].key(), Some(&b"instance-1"[..]));
    assert_eq!(messages[0].payload(), Some(&b"hello xclog"[..]));
    assert_eq!(messages[0].partition(), partition);
    Ok(())
}

#[tokio::test]
async fn a_row_written_to_postgres_is_read_back() -> anyhow::Result<()> {
    let pg = TestPg::create().await?;
    sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, payload JSONB NOT NULL)")
        .execute(&pg.pool)
        .await?;
    sqlx::query("INSERT INTO t VALUES ($1, $2)")
        .bind("e1")
        .bind(serde_json::json!({"amount": 42}))
        .execute(&pg.pool)
        .await?;
    let (id, payload): (String, serde_json::Value) = sqlx::query_as("SELECT id, payload FROM t")
        .fetch_one(&pg.pool)
        .await?;
    assert_eq!(id, "e1");
    assert_eq!(payload, serde_json::json!({"amount": 42}));
    Ok(())
}

#[tokio::test]
async fn a_document_inserted_through_the_mongo_protocol_is_found() -> anyhow::Result<()> {
    let mongo = TestMongo::create().await?;
    let events = mongo.database().collection::<Document>("events");
    events
        .insert_one(doc! { "_id": "e1", "instanceId": "i1", "causedBy": ["e0"] })
        .await?;
    let found: Vec<Document> = events
        .find(doc! { "causedBy": "e0" })
        .await?
        .try_collect()
        .await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get_str("instanceId")?, "i1");
    Ok(())
}
