//! Postgres or Redis going away mid-stream: no loss, no duplicates, and processing resumes by
//! itself once the server is back, without restarting the service.

use std::time::Duration;

use crate::helpers::oracle::{Expected, STREAM, adjustments, assert_totals, write};
use crate::helpers::redis_server::RedisServer;
use crate::helpers::{AppOptions, eventually, spawn_app_with};

/// An outage restarts readers and relay many times over (backoff 20 to 500 ms); none of those
/// restarts may count toward the intensity limit, or the domain would fail for good.
fn few_restarts_allowed(settings: &mut troupe::settings::Settings) {
    settings.runtime.max_restarts = 3;
}

#[actix_web::test]
async fn postgres_unreachable_for_10_seconds_mid_stream() {
    let app = spawn_app_with(AppOptions {
        database_proxy: true,
        configure: Some(few_restarts_allowed),
        ..Default::default()
    })
    .await;
    let proxy = app.database_proxy.as_ref().unwrap();
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 5_000, &mut expected)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    proxy.cut().await;
    write(&app, &adjustments(5_000, 8_000, &mut expected)).await;
    eventually(
        Duration::from_secs(5),
        "readiness reports postgres down",
        || async { app.get("/health/ready").await.status() == 503 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Dozens of restarts, yet pending entries were not re-read while Postgres was away: their
    // delivery counts, which decide dead-lettering, stay where they were.
    let most_deliveries = app.max_delivery_count(STREAM, "inventory").await;
    assert!(
        most_deliveries <= 2,
        "delivery count {most_deliveries} after the outage"
    );
    proxy.restore();
    write(&app, &adjustments(8_000, 10_000, &mut expected)).await;

    assert_totals(&app, &expected, 10_000).await;
    assert_eq!(
        app.get("/health/ready").await.status(),
        200,
        "the domain recovered, it did not fail"
    );
}

#[actix_web::test]
async fn redis_restarted_mid_stream() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        configure: Some(few_restarts_allowed),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 5_000, &mut expected)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    redis.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    write(&app, &adjustments(5_000, 8_000, &mut expected)).await;

    assert_totals(&app, &expected, 8_000).await;
    eventually(Duration::from_secs(10), "ready again", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
}
