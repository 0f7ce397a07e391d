//! The short fault soak ([`SoakConfig::short`], `make soak` in small): continuous publishing
//! while `xclog project` processes of both stores are SIGKILLed (at least 10 per store, 1 to 3
//! members per consumer group, some of them mid-batch) and Kafka, PostgreSQL and FerretDB are each
//! restarted once; afterwards every acknowledged event is in both stores exactly once and
//! `xclog verify --sources topic,postgres,mongo` agrees.
//!
//! Alone in its test binary, because it restarts the shared services (cargo runs test binaries
//! one after another, but the tests of one binary at once). The tests share one run, made by
//! the first of them to ask for it, and each asserts one behaviour of that run.

use std::sync::OnceLock;

use xclog_tests::soak::{SoakConfig, SoakReport, run};
use xclog_tests::xclog_binary;

static REPORT: OnceLock<Result<SoakReport, String>> = OnceLock::new();

/// The run's report (the run happens on the first call, on its own runtime).
fn report() -> &'static SoakReport {
    let result = REPORT.get_or_init(|| {
        let soak = std::thread::spawn(|| -> anyhow::Result<SoakReport> {
            let config = SoakConfig::short(xclog_binary()?);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run(config))
        });
        match soak.join() {
            Ok(Ok(report)) => {
                eprintln!("{}", report.to_text());
                Ok(report)
            }
            Ok(Err(error)) => Err(format!("{error:#}")),
            Err(_) => Err("the soak's thread panicked".to_owned()),
        }
    });
    match result {
        Ok(report) => report,
        Err(error) => panic!("the short soak could not be carried out: {error}"),
    }
}

fn assert_nothing_lost_or_doubled(r: &SoakReport) {
    assert!(r.published_events > 0, "nothing was published");
    for (store, s) in [("postgres", &r.postgres), ("mongo", &r.mongo)] {
        assert_eq!(s.lost, 0, "{store} lost events:\n{}", r.to_text());
        assert_eq!(s.duplicated, 0, "{store} doubled events:\n{}", r.to_text());
        assert_eq!(
            s.unexpected,
            0,
            "{store} holds events never published:\n{}",
            r.to_text()
        );
        assert_eq!(
            s.distinct,
            r.published_events,
            "{store} does not hold every published event:\n{}",
            r.to_text()
        );
    }
    assert!(
        r.verify_agreed,
        "xclog verify found differences:\n{}",
        r.verify_output
    );
}

#[test]
fn sigkills_mid_batch_under_continuous_publishing_lose_and_duplicate_nothing() {
    let r = report();
    for (store, s) in [("postgres", &r.postgres), ("mongo", &r.mongo)] {
        assert!(s.kills >= 10, "{store}: only {} kills", s.kills);
        assert!(
            s.kills_mid_batch > 0,
            "{store}: no kill landed mid-batch:\n{}",
            r.to_text()
        );
        assert_eq!(
            s.unclean_stops,
            0,
            "{store}: a member did not stop cleanly on SIGTERM:\n{}",
            r.to_text()
        );
    }
    assert_nothing_lost_or_doubled(r);
    assert!(r.passed(), "{}", r.to_text());
}

#[test]
fn a_member_killed_while_another_member_is_live_hands_its_partitions_over_without_loss_or_duplicates()
 {
    let r = report();
    // A killed member never comes back (every member has its own name): whatever it held was
    // finished by the members alive beside it or started after it.
    for (store, s) in [("postgres", &r.postgres), ("mongo", &r.mongo)] {
        assert!(
            s.kills_with_live_member > 0,
            "{store}: no kill happened while another member was live:\n{}",
            r.to_text()
        );
    }
    assert_nothing_lost_or_doubled(r);
}

#[test]
fn a_kafka_broker_restart_under_running_projectors_loses_nothing() {
    let r = report();
    assert!(
        r.restarts_under_projectors
            .get("kafka")
            .copied()
            .unwrap_or(0)
            >= 1,
        "Kafka was not restarted under running projectors:\n{}",
        r.to_text()
    );
    assert_nothing_lost_or_doubled(r);
}

#[test]
fn postgres_and_ferretdb_restarts_under_running_projectors_lose_nothing() {
    let r = report();
    for service in ["postgres", "ferretdb"] {
        assert!(
            r.restarts_under_projectors
                .get(service)
                .copied()
                .unwrap_or(0)
                >= 1,
            "{service} was not restarted under running projectors:\n{}",
            r.to_text()
        );
    }
    assert_nothing_lost_or_doubled(r);
}
