//! Exactly-once by envelope id: an input whose id was applied is acknowledged without being
//! applied again — on its first delivery too, whatever Redis says.

use std::time::Duration;

use crate::helpers::oracle::{Expected, STREAM, adjustments, assert_applied, assert_totals, write};
use crate::helpers::redis_server::RedisServer;
use crate::helpers::{AppOptions, eventually, spawn_app, spawn_app_with};

const APPLIED: &str = "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state";

#[actix_web::test]
async fn an_envelope_written_again_under_a_new_stream_id_is_applied_once() {
    let app = spawn_app().await;
    let mut expected = Expected::default();
    let first = adjustments(0, 2_000, &mut expected);
    write(&app, &first).await;
    assert_applied(&app, &expected, 2_000).await;

    // A producer that lost its replies sends every envelope again: new stream entries, same ids.
    write(&app, &first).await;
    // And the same envelope twice in a row, so that both copies arrive in one read.
    let more = adjustments(2_000, 2_100, &mut expected);
    let doubled: Vec<_> = more.iter().flat_map(|a| [a.clone(), a.clone()]).collect();
    write(&app, &doubled).await;

    assert_applied(&app, &expected, 2_100).await;
    assert_eq!(app.xlen(STREAM).await, 4_200);
    let recorded = app
        .sql_i64("SELECT count(*)::int8 AS v FROM troupe_applied_input WHERE domain = 'inventory'")
        .await;
    assert_eq!(recorded, 2_100, "one record per applied envelope id");
    // Every copy was acknowledged as a duplicate: none left pending, none dead-lettered.
    eventually(Duration::from_secs(10), "nothing pending", || async {
        app.pending(STREAM, "inventory").await == 0
    })
    .await;
    assert_eq!(
        app.xlen(&format!("{STREAM}.dlq")).await,
        0,
        "duplicates are not dead letters"
    );
}

#[actix_web::test]
async fn redis_restored_from_an_earlier_snapshot_mid_drain_applies_nothing_twice_and_loses_no_event()
 {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 30_000, &mut expected)).await;
    eventually(Duration::from_secs(30), "the drain under way", || async {
        app.sql_i64(APPLIED).await > 0
    })
    .await;
    redis.save().await;
    let at_snapshot = app.sql_i64(APPLIED).await;
    eventually(
        Duration::from_secs(60),
        "everything applied and acknowledged",
        || async {
            app.sql_i64(APPLIED).await == 30_000 && app.pending(STREAM, "inventory").await == 0
        },
    )
    .await;
    assert!(
        at_snapshot < 30_000,
        "the snapshot was taken mid-drain ({at_snapshot} applied)"
    );

    // Redis comes back from the snapshot: its group is back where it was, so every entry
    // acknowledged since is delivered again, as new; and the events published since are gone
    // from the output stream, so the relay must publish them again (each exactly once).
    redis.restart_from_snapshot().await;
    write(&app, &adjustments(30_000, 31_000, &mut expected)).await;
    assert_totals(&app, &expected, 31_000).await;
}
