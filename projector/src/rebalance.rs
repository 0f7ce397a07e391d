//! The librdkafka context of the projector's consumer ([`ProjectorContext`]): its rebalance
//! callback runs on the consumer thread, inside `poll`.
//!
//! Invariants:
//! * On assignment, partitions start at the offsets stored in the sink (never at Kafka's group
//!   offsets, which only feed lag tools). The offsets are loaded inside the callback, before
//!   `assign`, so no record is fetched from a wrong position.
//! * On revoke, the generation moves on (queued batches of the old assignment are skipped by
//!   the writers) and the callback waits for the in-flight batches (at most `drain_timeout`)
//!   before letting the partitions go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::lanes::Shared;
use crate::sink::{ErrorClass, SinkError};

/// Loads stored offsets for partitions of the topic (blocking; called on the consumer thread).
pub(crate) type OffsetLoader =
    Arc<dyn Fn(&[i32]) -> Result<HashMap<i32, i64>, SinkError> + Send + Sync>;

/// librdkafka context: seeks to stored offsets on assignment, drains on revoke.
pub(crate) struct ProjectorContext {
    pub(crate) topic: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) loader: OffsetLoader,
    pub(crate) drain_timeout: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) shutdown: CancellationToken,
}

impl ClientContext for ProjectorContext {}

impl ProjectorContext {
    /// Stored offsets of `partitions`, retrying transient failures until shutdown.
    fn load(&self, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match (self.loader)(partitions) {
                Ok(map) => return Some(map),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot load stored offsets; retrying");
                    if error.class() == ErrorClass::Fatal || self.shutdown.is_cancelled() {
                        self.shutdown.cancel();
                        return None;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }
}

impl ConsumerContext for ProjectorContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                    .map(|e| e.partition())
                    .collect();
                let stored = self.load(&partitions).unwrap_or_default();
                let mut assignment = BTreeMap::new();
                for p in &partitions {
                    let offset = stored.get(p).copied();
                    let position = offset.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(error) = tpl.set_partition_offset(&self.topic, *p, position) {
                        tracing::error!(error = %error, partition = p, "cannot set start offset");
                    }
                    assignment.insert(*p, offset);
                }
                tracing::info!(partitions = ?assignment, "partitions assigned; starting from stored offsets");
                self.shared.assigned(assignment);
                if let Err(error) = base_consumer.assign(tpl) {
                    tracing::error!(error = %error, "assign failed");
                }
                // librdkafka keeps a partition's pause flag across revoke and re-assign: a
                // partition paused (writer busy) before this rebalance would never be fetched
                // again. The new assignment starts unpaused, as the loop assumes.
                if let Err(error) = base_consumer.resume(tpl) {
                    tracing::error!(error = %error, "resume of the new assignment failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.shared.unassigned();
                let drained = self.shared.wait_drained(self.drain_timeout);
                tracing::info!(
                    drained,
                    "partitions revoked; in-flight batch finished or abandoned"
                );
                if let Err(error) = base_consumer.unassign() {
                    tracing::warn!(error = %error, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                self.shared.unassigned();
                let _ = base_consumer.unassign();
            }
        }
    }

    fn pre_rebalance(&self, _base_consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {}
}
