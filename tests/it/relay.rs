//! The outbox relay when Redis or Postgres goes back: published events are kept for the
//! retention window and published again when Redis lost them; an outbox whose sequence went
//! back cannot make the relay skip events. (Redis restored from a snapshot mid-drain, with every
//! event checked on the output stream, is in `dedupe`.)

use std::time::Duration;

use crate::helpers::child::ChildService;
use crate::helpers::oracle::{
    Expected, STREAM, adjustments, assert_applied, assert_published, assert_totals, write,
};
use crate::helpers::redis_server::RedisServer;
use crate::helpers::{AppOptions, Isolation, eventually, spawn_app_on, spawn_app_with};

const APPLIED: &str = "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state";
const PUBLISHED_ROWS: &str =
    "SELECT COUNT(*)::int8 AS v FROM troupe_outbox WHERE published_at IS NOT NULL";

async fn drained(iso: &Isolation, inputs: i64) {
    eventually(
        Duration::from_secs(60),
        "every input applied and acknowledged, the outbox published",
        || async {
            // The child service may not have migrated yet.
            iso.sql_i64("SELECT COUNT(*) AS v FROM pg_tables WHERE tablename = 'troupe_outbox'")
                .await
                == 1
                && iso.sql_i64(APPLIED).await == inputs
                && iso.pending(STREAM, "inventory").await == 0
                && iso
                    .sql_i64(
                        "SELECT COUNT(*)::int8 AS v FROM troupe_outbox WHERE published_at IS NULL",
                    )
                    .await
                    == 0
        },
    )
    .await;
}

#[actix_web::test]
async fn an_outbox_whose_sequence_went_back_cannot_make_the_relay_skip_events() {
    let iso = Isolation::new().await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 2_000, &mut expected)).await;
    let child = ChildService::start(&iso, &[]);
    drained(&iso, 2_000).await;
    assert_published(&iso, &expected).await;
    // Published events are kept (default retention: an hour), not deleted.
    assert_eq!(iso.sql_i64(PUBLISHED_ROWS).await, expected.emitted as i64);
    child.kill().await;

    // Postgres loses its outbox and its sequence starts again (a restore or a reset against
    // the same Redis): new events get sequence numbers at or below the relay's marker.
    iso.sql_i64(
        "WITH gone AS (DELETE FROM troupe_outbox RETURNING 1) SELECT COUNT(*)::int8 AS v FROM gone",
    )
    .await;
    iso.sql_i64("SELECT setval('troupe_outbox_seq_seq', 1, false) AS v")
        .await;

    let child = ChildService::start(&iso, &[]);
    write(&iso, &adjustments(2_000, 4_000, &mut expected)).await;
    drained(&iso, 4_000).await;
    assert_published(&iso, &expected).await;
    child.kill().await;
}

#[actix_web::test]
async fn published_events_are_pruned_after_the_retention_window_but_the_newest() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.outbox_retention_seconds = 1),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 2_000, &mut expected)).await;
    assert_totals(&app, &expected, 2_000).await;
    eventually(
        Duration::from_secs(20),
        "published rows older than a second pruned, the newest kept",
        || async { app.sql_i64(PUBLISHED_ROWS).await == 1 },
    )
    .await;
    // The kept row is the newest one: the one Redis's marker names.
    let marker: String = redis::cmd("GET")
        .arg(format!(
            "{}troupe:relay:inventory",
            app.settings.redis.key_prefix
        ))
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let (seq, id) = marker.split_once(' ').unwrap();
    let kept = app
        .sql_i64(&format!(
            "SELECT COUNT(*)::int8 AS v FROM troupe_outbox \
             WHERE published_at IS NOT NULL AND seq = {seq} AND event_id = '{id}'"
        ))
        .await;
    assert_eq!(kept, 1, "the row at the marker {marker:?} is kept");
    // And the relay goes on publishing after pruning.
    write(&app, &adjustments(2_000, 3_000, &mut expected)).await;
    assert_totals(&app, &expected, 3_000).await;
}

#[actix_web::test]
async fn events_redis_lost_are_published_again_even_when_nothing_new_is_emitted() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 1_000, &mut expected)).await;
    assert_totals(&app, &expected, 1_000).await;
    redis.save().await;
    write(&app, &adjustments(1_000, 2_000, &mut expected)).await;
    assert_totals(&app, &expected, 2_000).await;

    // Redis comes back without the second half's events; the domain emits nothing more.
    redis.restart_from_snapshot().await;
    assert_published(&app, &expected).await;
}

#[actix_web::test]
async fn one_relay_per_domain_publishes_while_another_holds_the_relay_lock() {
    use diesel_async::RunQueryDsl;

    let iso = Isolation::new().await;
    // Another instance's relay leads: it holds the domain's relay lock (a session lock).
    let mut other = iso.db().await;
    diesel::sql_query("SELECT pg_advisory_lock(hashtextextended('troupe_relay:inventory', 0))")
        .execute(&mut other)
        .await
        .unwrap();
    let app = spawn_app_on(iso, AppOptions::default()).await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 1_000, &mut expected)).await;
    assert_applied(&app, &expected, 1_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.xlen("inventory.events").await,
        0,
        "this relay stands by"
    );

    // The other instance goes away: this relay takes over and publishes everything once.
    drop(other);
    assert_published(&app, &expected).await;
}

#[actix_web::test]
async fn two_instances_of_a_domain_publish_every_event_exactly_once() {
    let iso = Isolation::new().await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 6_000, &mut expected)).await;
    // A rolling deploy: two instances run the domain at once, each with its own relay.
    let first = ChildService::start(&iso, &[]);
    let second = ChildService::start(&iso, &[("TROUPE__INSTANCE__ID", "second-instance")]);
    drained(&iso, 6_000).await;
    let rows = iso
        .sql_i64("SELECT COUNT(*)::int8 AS v FROM troupe_outbox")
        .await;
    assert!(rows > 100, "the load emits events ({rows})");
    eventually(
        Duration::from_secs(30),
        "every outbox row published",
        || async { iso.xlen("inventory.events").await == rows as u64 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = iso.output_event_ids().await;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len() as i64, rows, "no event published twice");
    assert_eq!(distinct.len(), ids.len(), "no event id twice");
    first.kill().await;
    second.kill().await;
}
