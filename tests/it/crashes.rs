//! Nothing lost, nothing doubled: the real binary killed with SIGKILL at random moments, aborted
//! at each named crash point, or stopped with SIGTERM mid-drain, then restarted; afterwards every
//! input is applied exactly once, every emitted event published exactly once, and nothing is
//! left pending.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use rand::Rng;

use crate::helpers::child::ChildService;
use crate::helpers::oracle::{Expected, STREAM, assert_published, assert_stored};
use crate::helpers::{Adjustment, Isolation, eventually};

/// Writes `n` adjustments over `skus` SKUs, each SKU's stock going up from zero and back down
/// so most inputs emit an event; returns what they must produce.
async fn load(iso: &Isolation, n: usize, skus: usize) -> Expected {
    let names: Vec<String> = (0..skus).map(|i| format!("S{i:03}")).collect();
    let mut expected = Expected::default();
    let mut adjustments = Vec::with_capacity(n);
    for i in 0..n {
        let sku = &names[(i * 31) % skus];
        let delta = [2, -2, 5, -5, 1, -1, 3][(expected.version(sku) % 7) as usize];
        expected.add(sku, delta);
        adjustments.push(Adjustment {
            id: format!("c{i}"),
            sku,
            delta,
        });
    }
    iso.write_adjustments(&adjustments).await;
    expected
}

/// Everything applied once (the oracle's totals), acknowledged, published once, nothing
/// dead-lettered.
async fn assert_exactly_once(iso: &Isolation, expected: &Expected) {
    eventually(
        Duration::from_secs(120),
        "everything applied, acknowledged and published",
        || async {
            iso.sql_i64("SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state")
                .await
                == expected.inputs()
                && iso.pending(STREAM, "inventory").await == 0
                && iso
                    .sql_i64("SELECT COUNT(*) AS v FROM troupe_outbox WHERE published_at IS NULL")
                    .await
                    == 0
        },
    )
    .await;
    assert_stored(iso, expected, expected.inputs()).await;
    assert_published(iso, expected).await;
    assert_eq!(iso.xlen("inventory.adjustments.dlq").await, 0);
}

#[actix_web::test]
async fn sigkill_at_random_moments_while_draining_loses_and_doubles_nothing() {
    let iso = Isolation::new().await;
    let total = 20_000;
    let expected = load(&iso, total, 300).await;
    let applied = "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state";
    let migrated = "SELECT COUNT(*) AS v FROM pg_tables WHERE tablename = 'troupe_entity_state'";
    let mut before = 0;
    let mut after_kills = Vec::new();
    for _ in 0..4 {
        if before == total as i64 {
            break; // drained between kills: nothing left to interrupt
        }
        let child = ChildService::start(&iso, &[]);
        // Each kill lands while draining: after this run has committed something, at a
        // random moment within the next 200 ms.
        eventually(
            Duration::from_secs(60),
            "the restarted service commits",
            || async { iso.sql_i64(migrated).await > 0 && iso.sql_i64(applied).await > before },
        )
        .await;
        let pause = rand::rng().random_range(0..200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().await;
        before = iso.sql_i64(applied).await;
        after_kills.push(before);
    }
    assert!(
        after_kills.iter().any(|applied| *applied < total as i64),
        "a kill interrupted the drain: {after_kills:?}"
    );
    let child = ChildService::start(&iso, &[]);
    assert_exactly_once(&iso, &expected).await;
    child.kill().await;
}

/// A stop signal mid-drain: the process finishes its batch in flight, publishes the outbox and
/// exits 0; a restart drains the rest.
async fn graceful_stop_mid_drain(signal: &str) {
    let iso = Isolation::new().await;
    let total = 20_000;
    let expected = load(&iso, total, 300).await;
    let child = ChildService::start(&iso, &[("TROUPE__HTTP__SHUTDOWN_GRACE_SECONDS", "10")]);
    let applied = "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state";
    let migrated = "SELECT COUNT(*) AS v FROM pg_tables WHERE tablename = 'troupe_entity_state'";
    eventually(Duration::from_secs(60), "the service migrates", || async {
        iso.sql_i64(migrated).await > 0
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the first batch commits",
        || async { iso.sql_i64(applied).await > 0 },
    )
    .await;

    child.signal(signal).await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process stops after the signal");
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    let applied_before_restart = iso.sql_i64(applied).await;
    assert!(
        applied_before_restart < total as i64,
        "stopped mid-drain ({applied_before_restart} of {total} applied)"
    );
    // Every entry the reader took was committed and acknowledged, and the relay published what
    // those batches emitted, before the process exited.
    assert_eq!(iso.pending(STREAM, "inventory").await, 0, "nothing pending");
    assert_eq!(
        iso.sql_i64("SELECT COUNT(*) AS v FROM troupe_outbox WHERE published_at IS NULL")
            .await,
        0,
        "outbox published"
    );

    let child = ChildService::start(&iso, &[]);
    assert_exactly_once(&iso, &expected).await;
    child.kill().await;
}

#[actix_web::test]
async fn sigterm_mid_drain_stops_cleanly_leaving_nothing_pending() {
    graceful_stop_mid_drain("TERM").await;
}

#[actix_web::test]
async fn sigint_mid_drain_stops_cleanly_leaving_nothing_pending() {
    graceful_stop_mid_drain("INT").await;
}

async fn crash_at(point: &str, after: &str) {
    let iso = Isolation::new().await;
    let expected = load(&iso, 3_000, 50).await;
    let child = ChildService::start(
        &iso,
        &[
            ("TROUPE__FAULTS__CRASH_AT", point),
            ("TROUPE__FAULTS__CRASH_AFTER", after),
        ],
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process crashes");
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted (SIGABRT) at {point}: {status:?}"
    );
    let child = ChildService::start(&iso, &[]);
    assert_exactly_once(&iso, &expected).await;
    child.kill().await;
}

#[actix_web::test]
async fn crash_after_read() {
    crash_at("after_read", "3").await;
}

#[actix_web::test]
async fn crash_after_commit_before_ack() {
    crash_at("after_commit_before_ack", "3").await;
}

#[actix_web::test]
async fn crash_after_publish_before_mark() {
    crash_at("after_publish_before_mark", "1").await;
}
