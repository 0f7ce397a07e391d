//! Publishing the events at the measured rate, in the form under test: through the xclog
//! producer, or as a peer's records through a plain librdkafka producer. Each queued record
//! comes back with its delivery ([`Ack`]), which resolves when the brokers acknowledge it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use xclog_producer::{Producer, ProducerConfig};
use xclog_schema::Record;

use super::{DelayArgs, Format};
use crate::prepare::{JdbcRecords, mongo_document};

/// The publishers' linger: they publish a steady stream and await no record before the next,
/// so they batch as bulk publishers do (as `xclog produce`): fewer, larger requests keep the
/// publisher's and the broker's share of the host's cores small. The delay is counted from
/// the acknowledgement, so the linger is not in it.
pub(super) const PUBLISH_LINGER: Duration = Duration::from_millis(5);

/// A record's delivery: resolves when the brokers acknowledged it (or failed it).
pub(super) type Ack = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

pub(super) enum Publisher {
    Xclog(Producer),
    /// The peers' forms, through a plain librdkafka producer.
    Peer {
        producer: FutureProducer,
        topic: String,
        form: PeerForm,
    },
}

/// How a peer's record is made from an event.
pub(super) enum PeerForm {
    Jdbc(JdbcRecords),
    Mongo,
}

impl PeerForm {
    /// The record's key and value.
    fn key_value(&self, event: &xclog_schema::PersistedEvent) -> anyhow::Result<(String, String)> {
        match self {
            Self::Jdbc(records) => records.key_value(event),
            Self::Mongo => Ok((event.id.clone(), mongo_document(event)?.to_string())),
        }
    }
}

impl Publisher {
    pub(super) async fn connect(args: &DelayArgs) -> anyhow::Result<Self> {
        let mut config = ProducerConfig::new(&args.brokers, &args.topic);
        config.client_id = "xclog-bench-delay".to_owned();
        config.linger = PUBLISH_LINGER;
        match args.format {
            Format::Xclog => {
                Ok(Self::Xclog(Producer::connect(config).await.with_context(
                    || format!("connecting to {}", args.brokers),
                )?))
            }
            // The same delivery guarantees and linger as the xclog publisher above.
            Format::Jdbc | Format::Mongo => Ok(Self::Peer {
                producer: ClientConfig::new()
                    .set("bootstrap.servers", &args.brokers)
                    .set("client.id", "xclog-bench-delay")
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", config.linger.as_millis().to_string())
                    .create()
                    .with_context(|| format!("connecting to {}", args.brokers))?,
                topic: args.topic.clone(),
                form: match args.format {
                    Format::Mongo => PeerForm::Mongo,
                    _ => PeerForm::Jdbc(JdbcRecords::new()),
                },
            }),
        }
    }

    /// Queues one record; `None` for a record this form does not carry (the peers get no
    /// snapshots).
    pub(super) async fn send(&self, record: &Record) -> anyhow::Result<Option<Ack>> {
        match self {
            Self::Xclog(producer) => {
                let ack = producer
                    .publish_nowait(record, None)
                    .await
                    .context("queueing a record")?;
                Ok(Some(Box::pin(async move {
                    ack.await.map(drop).map_err(|e| e.to_string())
                })))
            }
            Self::Peer {
                producer,
                topic,
                form,
            } => {
                let Record::Event(event) = record else {
                    return Ok(None);
                };
                let (key, value) = form.key_value(event)?;
                let mut queued = FutureRecord::to(topic).key(&key).payload(&value);
                let delivery = loop {
                    match producer.send_result(queued) {
                        Ok(delivery) => break delivery,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            queued = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((error, _)) => {
                            return Err(error).context("queueing a record for the peer's topic");
                        }
                    }
                };
                Ok(Some(Box::pin(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((error, _))) => Err(error.to_string()),
                        Err(_) => Err("the producer dropped the record".to_owned()),
                    }
                })))
            }
        }
    }

    pub(super) async fn close(self) -> anyhow::Result<()> {
        match self {
            Self::Xclog(producer) => producer
                .close(Duration::from_secs(30))
                .await
                .context("closing the producer"),
            // Every delivery has resolved by now: nothing left to flush.
            Self::Peer { .. } => Ok(()),
        }
    }
}
