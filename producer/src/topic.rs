//! Topic management: create the log topic with the settings a log needs, or check that an
//! existing one has them.
//!
//! Invariant: [`ensure_topic`] returns `Ok` only for a topic that keeps every record at
//! least as long as [`TopicSpec::retention`] asks (forever by default, because the stores
//! are rebuilt from the log): `cleanup.policy=delete` without compaction, `retention.bytes=-1`,
//! and `retention.ms` of `-1` or at least the asked duration. Compaction would keep only the
//! last record per instance id, dropping history, so it is always refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{ProducerConfig, check_topic_name};
use crate::error::Error;
use xclog_kafka::{WatchedContext, connect, create_error};

/// How long topic records must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retention {
    /// Never delete (`retention.ms=-1`); the default, since stores are rebuilt from the log.
    #[default]
    Forever,
    /// Keep records at least this long (for logs whose stores are rebuilt from snapshots).
    AtLeast(Duration),
}

/// The topic to create or check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count for a new topic (an existing topic keeps its own).
    pub partitions: i32,
    /// Replication factor for a new topic.
    pub replication: i32,
    /// How long records must be kept.
    pub retention: Retention,
}

impl TopicSpec {
    /// A topic with infinite retention.
    pub fn new(name: impl Into<String>, partitions: i32, replication: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication,
            retention: Retention::Forever,
        }
    }
}

/// What [`ensure_topic`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnsuredTopic {
    /// True when this call created the topic.
    pub created: bool,
    /// The topic's partition count (the existing one when it already existed).
    pub partitions: usize,
}

/// How long [`ensure_topic`] waits for the cluster (each request, and the new topic's
/// leaders).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates `spec.name` with the settings a log needs, or checks an existing topic of that
/// name. Uses the brokers, client id, security and passthrough of `config` (its `topic`
/// field is ignored). Returns once every partition of the topic has a leader.
///
/// A new topic gets `cleanup.policy=delete`, `retention.ms` per `spec.retention`,
/// `retention.bytes=-1`, and `min.insync.replicas=2` when the replication factor is 3 or
/// more (1 otherwise).
///
/// # Errors
/// [`Error::Config`] for a bad name, partition count or replication factor;
/// [`Error::TopicUnsafe`] when the existing topic compacts or deletes records too early;
/// [`Error::Admin`] when the cluster refuses or does not answer.
pub async fn ensure_topic(
    config: &ProducerConfig,
    spec: &TopicSpec,
) -> Result<EnsuredTopic, Error> {
    check_topic_name(&spec.name).map_err(|problem| Error::config("topic name", problem))?;
    if spec.partitions < 1 {
        return Err(Error::config(
            "partitions",
            format!("{} is not a positive partition count", spec.partitions),
        ));
    }
    if spec.replication < 1 {
        return Err(Error::config(
            "replication",
            format!("{} is not a positive replication factor", spec.replication),
        ));
    }
    let retention_ms = match spec.retention {
        Retention::Forever => -1,
        Retention::AtLeast(duration) => {
            let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            if ms < 1 {
                return Err(Error::config("retention", "must be at least 1 ms"));
            }
            ms
        }
    };
    let connection = config.connection_config()?;
    // A refused password or certificate fails here at once, not after the admin timeout.
    {
        let (connection, brokers) = (connection.clone(), config.brokers.clone());
        tokio::task::spawn_blocking(move || {
            connect(&connection, &brokers, None, ADMIN_TIMEOUT).map(drop)
        })
        .await
        .map_err(|join| Error::Fatal {
            reason: format!("metadata task failed: {join}"),
        })??;
    }
    let admin: AdminClient<WatchedContext> = connection
        .create_with_context(WatchedContext::default())
        .map_err(|error| create_error(&error))?;
    let admin = Arc::new(admin);
    let admin_error = |operation: &'static str, problem: String| Error::Admin {
        topic: spec.name.clone(),
        operation,
        problem,
    };
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let retention_ms_text = retention_ms.to_string();
    let min_insync = if spec.replication >= 3 { "2" } else { "1" };
    let new_topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication),
    )
    .set("cleanup.policy", "delete")
    .set("retention.ms", &retention_ms_text)
    .set("retention.bytes", "-1")
    .set("min.insync.replicas", min_insync);
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|error| admin_error("create", unreachable_hint(&error, config)))?;
    let created = match results.into_iter().next() {
        Some(Ok(_)) => true,
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => false,
        Some(Err((_, code))) => {
            return Err(admin_error("create", create_problem(code, spec)));
        }
        None => {
            return Err(admin_error(
                "create",
                "the cluster returned no result".into(),
            ));
        }
    };
    if !created {
        check_existing(&admin, spec, retention_ms, &options).await?;
    }
    let partitions = wait_for_leaders(Arc::clone(&admin), spec).await?;
    if !created && partitions != spec.partitions as usize {
        tracing::warn!(
            topic = %spec.name,
            existing = partitions,
            asked = spec.partitions,
            "topic exists with a different partition count; keeping the existing one"
        );
    }
    tracing::info!(topic = %spec.name, created, partitions, "log topic ready");
    Ok(EnsuredTopic {
        created,
        partitions,
    })
}

fn unreachable_hint(error: &KafkaError, config: &ProducerConfig) -> String {
    format!("{error} (brokers {}; are they reachable?)", config.brokers)
}

fn create_problem(code: RDKafkaErrorCode, spec: &TopicSpec) -> String {
    match code {
        RDKafkaErrorCode::InvalidReplicationFactor => format!(
            "replication factor {} is larger than the number of brokers: {code}",
            spec.replication
        ),
        RDKafkaErrorCode::InvalidPartitions => {
            format!("partition count {} was refused: {code}", spec.partitions)
        }
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            format!("not allowed to create topics (ACLs): {code}")
        }
        other => other.to_string(),
    }
}

async fn check_existing(
    admin: &AdminClient<WatchedContext>,
    spec: &TopicSpec,
    retention_ms: i64,
    options: &AdminOptions,
) -> Result<(), Error> {
    let describe_error = |problem: String| Error::Admin {
        topic: spec.name.clone(),
        operation: "describe",
        problem,
    };
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(&spec.name)], options)
        .await
        .map_err(|error| describe_error(error.to_string()))?;
    let resource = match results.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => return Err(describe_error(code.to_string())),
        None => return Err(describe_error("the cluster returned no result".into())),
    };
    let value = |name: &str| {
        resource
            .get(name)
            .and_then(|entry| entry.value.clone())
            .unwrap_or_default()
    };
    let unsafe_setting = |setting: &str, found: String, required: String| Error::TopicUnsafe {
        topic: spec.name.clone(),
        setting: setting.to_owned(),
        found,
        required,
    };
    check_settings(
        &value("cleanup.policy"),
        &value("retention.ms"),
        &value("retention.bytes"),
        retention_ms,
    )
    .map_err(|(setting, found, required)| unsafe_setting(setting, found, required))
}

/// Checks an existing topic's settings against the required retention (`-1` = forever).
/// Returns the offending `(setting, found, required)`.
fn check_settings(
    cleanup_policy: &str,
    retention_ms: &str,
    retention_bytes: &str,
    required_ms: i64,
) -> Result<(), (&'static str, String, String)> {
    if cleanup_policy.split(',').any(|p| p.trim() == "compact") {
        return Err((
            "cleanup.policy",
            cleanup_policy.to_owned(),
            "cleanup.policy=delete (compaction keeps only the last record per instance)".into(),
        ));
    }
    let found_ms: i64 = retention_ms.trim().parse().unwrap_or(i64::MIN);
    let enough = found_ms == -1 || (required_ms != -1 && found_ms >= required_ms);
    if !enough {
        let required = if required_ms == -1 {
            "retention.ms=-1 (keep forever: the stores are rebuilt from the log)".to_owned()
        } else {
            format!("retention.ms=-1 or at least {required_ms}")
        };
        return Err(("retention.ms", retention_ms.to_owned(), required));
    }
    if retention_bytes.trim() != "-1" {
        return Err((
            "retention.bytes",
            retention_bytes.to_owned(),
            "retention.bytes=-1 (size-based deletion drops history)".into(),
        ));
    }
    Ok(())
}

/// Waits until the topic's metadata shows every partition with a leader; returns the
/// partition count.
async fn wait_for_leaders(
    admin: Arc<AdminClient<WatchedContext>>,
    spec: &TopicSpec,
) -> Result<usize, Error> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let name = spec.name.clone();
    loop {
        let admin = Arc::clone(&admin);
        let topic = name.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            Ok::<_, KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| {
                        let ready = t.partitions().iter().all(|p| p.leader() >= 0);
                        (t.partitions().len(), ready)
                    }),
            )
        })
        .await
        .map_err(|join| Error::Admin {
            topic: name.clone(),
            operation: "describe",
            problem: join.to_string(),
        })?;
        if let Ok(Some((count, true))) = seen
            && count > 0
        {
            return Ok(count);
        }
        if Instant::now() >= deadline {
            return Err(Error::Admin {
                topic: name,
                operation: "describe",
                problem: format!(
                    "partitions still had no leader after {ADMIN_TIMEOUT:?} (last look: {seen:?})"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_topic_is_refused() {
        let (setting, ..) = check_settings("compact,delete", "-1", "-1", -1).unwrap_err();
        assert_eq!(setting, "cleanup.policy");
    }

    #[test]
    fn a_week_of_retention_is_refused_when_forever_is_required() {
        let (setting, found, _) = check_settings("delete", "604800000", "-1", -1).unwrap_err();
        assert_eq!((setting, found.as_str()), ("retention.ms", "604800000"));
    }

    #[test]
    fn a_retention_at_least_the_required_duration_is_accepted() {
        assert!(check_settings("delete", "604800000", "-1", 86_400_000).is_ok());
        assert!(check_settings("delete", "3600000", "-1", 86_400_000).is_err());
        assert!(check_settings("delete", "-1", "-1", -1).is_ok());
    }

    #[test]
    fn size_based_retention_is_refused() {
        let (setting, ..) = check_settings("delete", "-1", "1073741824", -1).unwrap_err();
        assert_eq!(setting, "retention.bytes");
    }
}
