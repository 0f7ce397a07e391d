//! Bad configuration, missing topics and unsafe topics give clear errors (real Kafka).

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::json;
use xclog_producer::{
    EnsuredTopic, Error, NextMove, Producer, ProducerConfig, TopicSpec, ensure_topic,
};
use xclog_schema::{FsmEvent, PersistedEvent};
use xclog_tests::{TestTopic, brokers, unique_suffix};

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client")
}

/// Creates a topic with the given settings; the returned guard deletes it on drop.
async fn topic_with(settings: &[(&str, &str)]) -> TestTopic {
    let name = format!("xclog-test-{}", unique_suffix());
    let mut new_topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new_topic = new_topic.set(key, value);
    }
    let results = admin()
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
    TestTopic {
        name,
        partitions: 1,
    }
}

fn event(payload_bytes: usize) -> PersistedEvent {
    PersistedEvent {
        id: xclog_schema::new_event_id(),
        instance_id: xclog_schema::new_event_id(),
        machine_name: "Order".into(),
        component_name: "OrderComponent".into(),
        event: FsmEvent {
            event_type: "PLACE".into(),
            payload: json!({ "note": "x".repeat(payload_bytes) }),
            timestamp: None,
            extra: Default::default(),
        },
        state_before: String::new(),
        state_after: "Placed".into(),
        persisted_at: 1,
        caused_by: vec![],
        caused: vec![],
        source_component_name: None,
        target_component_name: None,
        public_member_snapshot: None,
        sequence: Some(1),
    }
}

#[tokio::test]
async fn connecting_to_a_missing_topic_says_the_topic_does_not_exist() {
    let name = format!("xclog-test-missing-{}", unique_suffix());
    let error = Producer::connect(ProducerConfig::new(brokers(), &name))
        .await
        .expect_err("the topic does not exist");
    assert!(matches!(error, Error::TopicMissing { .. }), "{error:?}");
    assert_eq!(error.next_move(), NextMove::FixConfig);
    let message = error.to_string();
    assert!(
        message.contains(&name) && message.contains("does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn a_broker_list_without_a_port_is_refused_before_connecting() {
    let error = Producer::connect(ProducerConfig::new("localhost", "xclog.events"))
        .await
        .expect_err("no port");
    assert!(
        matches!(&error, Error::Config { field, .. } if field == "brokers"),
        "{error:?}"
    );
    assert!(error.to_string().contains("host:port"), "{error}");
}

#[tokio::test]
async fn an_unknown_librdkafka_setting_is_refused_naming_the_key() {
    let topic = TestTopic::create(1).await.expect("topic");
    let mut config = ProducerConfig::new(brokers(), &topic.name);
    config
        .passthrough
        .insert("no.such.setting".into(), "1".into());
    let error = Producer::connect(config).await.expect_err("unknown key");
    assert!(
        matches!(&error, Error::Config { field, .. } if field == "no.such.setting"),
        "{error:?}"
    );
    assert_eq!(error.next_move(), NextMove::FixConfig);
}

#[tokio::test]
async fn unreachable_brokers_are_reported_with_the_broker_list() {
    let error = Producer::connect(ProducerConfig::new("127.0.0.1:1", "xclog.events"))
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    assert_eq!(error.next_move(), NextMove::Retry);
}

#[tokio::test]
async fn a_record_larger_than_the_client_accepts_is_given_up() {
    let topic = TestTopic::create(1).await.expect("topic");
    let producer = Producer::connect(ProducerConfig::new(brokers(), &topic.name))
        .await
        .expect("connect");
    let error = producer
        .append(&event(2_000_000))
        .await
        .expect_err("2 MB record");
    assert!(matches!(error, Error::RecordTooLarge { .. }), "{error:?}");
    assert_eq!(error.next_move(), NextMove::GiveUp);
}

#[tokio::test]
async fn ensure_topic_creates_a_missing_topic_with_infinite_retention_and_accepts_it_again() {
    let name = format!("xclog-test-{}", unique_suffix());
    let _guard = TestTopic {
        name: name.clone(),
        partitions: 4,
    };
    let config = ProducerConfig::new(brokers(), "unused");
    let spec = TopicSpec::new(&name, 4, 1);
    let first = ensure_topic(&config, &spec).await.expect("create");
    assert_eq!(
        first,
        EnsuredTopic {
            created: true,
            partitions: 4
        }
    );

    let described = admin()
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await
        .expect("describe");
    let resource = described[0].as_ref().expect("topic config");
    let value = |key: &str| resource.get(key).and_then(|e| e.value.clone());
    assert_eq!(value("retention.ms").as_deref(), Some("-1"));
    assert_eq!(value("retention.bytes").as_deref(), Some("-1"));
    assert_eq!(value("cleanup.policy").as_deref(), Some("delete"));

    let second = ensure_topic(&config, &spec)
        .await
        .expect("exists and is safe");
    assert_eq!(
        second,
        EnsuredTopic {
            created: false,
            partitions: 4
        }
    );
    // The producer can publish to it right away.
    let producer = Producer::connect(ProducerConfig::new(brokers(), &name))
        .await
        .expect("connect");
    producer.append(&event(10)).await.expect("append");
}

#[tokio::test]
async fn ensure_topic_refuses_an_existing_compacted_topic() {
    let topic = topic_with(&[("cleanup.policy", "compact")]).await;
    let error = ensure_topic(
        &ProducerConfig::new(brokers(), "unused"),
        &TopicSpec::new(&topic.name, 1, 1),
    )
    .await
    .expect_err("compaction loses history");
    assert!(
        matches!(&error, Error::TopicUnsafe { setting, .. } if setting == "cleanup.policy"),
        "{error:?}"
    );
    assert!(error.to_string().contains("compact"), "{error}");
}

#[tokio::test]
async fn ensure_topic_refuses_an_existing_topic_with_one_day_retention() {
    let topic = topic_with(&[("retention.ms", "86400000")]).await;
    let error = ensure_topic(
        &ProducerConfig::new(brokers(), "unused"),
        &TopicSpec::new(&topic.name, 1, 1),
    )
    .await
    .expect_err("one day of retention loses history");
    assert!(
        matches!(&error, Error::TopicUnsafe { setting, found, .. } if setting == "retention.ms" && found == "86400000"),
        "{error:?}"
    );
    assert_eq!(error.next_move(), NextMove::FixConfig);
}
