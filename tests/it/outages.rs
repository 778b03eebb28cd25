//! Postgres or Redis going away mid-stream: no loss, no duplicates, and processing resumes by
//! itself once the server is back, without restarting the service.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::redis_server::RedisServer;
use crate::helpers::{Adjustment, AppOptions, TestApp, eventually, spawn_app_with};

const STREAM: &str = "inventory.adjustments";

/// What the inputs so far must produce: per SKU (on_hand, version), and how many events
/// inventory emits (one each time a SKU's available stock crosses zero).
#[derive(Default)]
struct Expected {
    skus: HashMap<String, (i64, i64)>,
    emitted: u64,
}

fn adjustments(from: usize, to: usize, expected: &mut Expected) -> Vec<(String, String, i64)> {
    (from..to)
        .map(|i| {
            let sku = format!("O{:02}", i % 40);
            let delta = [3, -1, -1, -2, 2, -3, 1][(i / 40) % 7];
            let e = expected.skus.entry(sku.clone()).or_default();
            let was = e.0 > 0;
            e.0 += delta;
            e.1 += 1;
            if was != (e.0 > 0) {
                expected.emitted += 1;
            }
            (format!("o{i}"), sku, delta)
        })
        .collect()
}

async fn write(app: &TestApp, batch: &[(String, String, i64)]) {
    let list: Vec<Adjustment> = batch
        .iter()
        .map(|(id, sku, delta)| Adjustment {
            id: id.clone(),
            sku,
            delta: *delta,
        })
        .collect();
    app.write_adjustments(&list).await;
}

async fn assert_totals(app: &TestApp, expected: &Expected, total: i64) {
    eventually(
        Duration::from_secs(60),
        "every entry applied once and acknowledged",
        || async {
            app.sql_i64("SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state")
                .await
                == total
                && app.pending(STREAM, "inventory").await == 0
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "every emitted event published exactly once",
        || async { app.xlen("inventory.events").await == expected.emitted },
    )
    .await;
    // And not more, a moment later (a relay re-sending after the outage would show here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.xlen("inventory.events").await, expected.emitted);
    assert!(expected.emitted > 100, "the load emits events");
    for (sku, (on_hand, version)) in &expected.skus {
        let body: serde_json::Value = app
            .get(&format!("/api/v1/inventory/{sku}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (
                body["on_hand"].as_i64().unwrap(),
                body["version"].as_i64().unwrap()
            ),
            (*on_hand, *version),
            "{sku}"
        );
    }
}

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
