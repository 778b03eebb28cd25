//! Exactly-once commands: `Idempotency-Key` makes a retry return the first reply and apply
//! nothing; a command whose outcome is unknown answers 504, never a 503 that invites a blind
//! retry.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{AppOptions, TestApp, spawn_app, spawn_app_with};

async fn adjust(app: &TestApp, sku: &str, delta: i64, key: Option<&str>) -> reqwest::Response {
    let request = app.inventory().adjust(sku, delta);
    match key {
        Some(key) => request.idempotency_key(key).send().await,
        None => request.send().await,
    }
}

/// `(on_hand, version)` of `sku`.
async fn stock(app: &TestApp, sku: &str) -> (i64, u64) {
    let stock = app.inventory().stock(sku).await.expect("the SKU exists");
    (stock.on_hand, stock.version)
}

#[actix_web::test]
async fn a_command_retried_with_its_idempotency_key_applies_once_and_gets_the_first_reply() {
    let app = spawn_app().await;
    let first = adjust(&app, "IDEM", 5, Some("req-1")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // Something else changes the SKU in between: the retry must still get the first reply.
    assert_eq!(adjust(&app, "IDEM", 1, Some("req-2")).await.status(), 200);
    for _ in 0..3 {
        let retry = adjust(&app, "IDEM", 5, Some("req-1")).await;
        assert_eq!(retry.status(), 200);
        assert_eq!(retry.headers()["Idempotent-Replayed"], "true");
        let body: Value = retry.json().await.unwrap();
        assert_eq!(body, first, "the stored reply, byte for byte the same JSON");
    }
    assert_eq!(stock(&app, "IDEM").await, (6, 2), "applied once each");

    let reused = adjust(&app, "IDEM", 7, Some("req-1")).await;
    assert_eq!(reused.status(), 422);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    let elsewhere = adjust(&app, "OTHER", 5, Some("req-1")).await;
    assert_eq!(
        elsewhere.status(),
        422,
        "a key names one request, target included"
    );
    assert_eq!(stock(&app, "IDEM").await, (6, 2));

    let too_long = "k".repeat(300);
    let bad = adjust(&app, "IDEM", 1, Some(&too_long)).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");

    // Without a key every request is a new command.
    adjust(&app, "IDEM", 1, None).await;
    adjust(&app, "IDEM", 1, None).await;
    assert_eq!(stock(&app, "IDEM").await, (8, 4));
}

#[actix_web::test]
async fn a_command_that_outlives_its_wait_answers_504_and_its_retry_applies_nothing_twice() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.ask_timeout_ms = 1_500;
            s.database.commit_timeout_ms = 1_000;
            // The reply comes after the wait gave up, as a lost reply would. The processor
            // holds it that long, and the retry queues behind it: 1.8 s leaves the retry over
            // a second of its own 1.5 s wait even when the first commit is slow (at 2.5 s a
            // loaded machine made the retry time out too).
            s.faults.delay_command_reply_ms = 1_800;
        }),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let res = adjust(&app, "SLOW", 5, Some("slow-1")).await;
    assert_eq!(res.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2_400));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "outcome_unknown");
    assert_eq!(
        stock(&app, "SLOW").await,
        (5, 1),
        "it did commit, after the wait"
    );

    let retry = adjust(&app, "SLOW", 5, Some("slow-1")).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["Idempotent-Replayed"], "true");
    let body: Value = retry.json().await.unwrap();
    assert_eq!(
        (body["on_hand"].as_i64(), body["version"].as_i64()),
        (Some(5), Some(1))
    );
    assert_eq!(stock(&app, "SLOW").await, (5, 1), "applied once");
}
