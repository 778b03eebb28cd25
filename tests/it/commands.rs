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

/// Commands that arrive together are committed together (one unit, one transaction): many on
/// one key apply in turn and land as one write with every change; a refused one in their
/// midst changes nothing and stops none of the others; copies of one idempotent request
/// apply once and all get its reply.
#[actix_web::test]
async fn commands_committed_together_each_apply_once_in_order() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let outcomes: Vec<u16> = futures_util::stream::iter(0..120)
        .map(|n| {
            let app = &app;
            async move {
                // Every tenth would overflow on_hand: refused (409), whatever else is in its unit.
                let delta = if n % 10 == 9 { i64::MAX } else { 1 };
                adjust(app, "TOGETHER", delta, None).await.status().as_u16()
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    assert_eq!(outcomes.iter().filter(|&&s| s == 200).count(), 108);
    assert_eq!(outcomes.iter().filter(|&&s| s == 409).count(), 12);
    assert_eq!(stock(&app, "TOGETHER").await, (108, 108));

    let replies: Vec<(u16, bool, Value)> = futures_util::stream::iter(0..30)
        .map(|_| {
            let app = &app;
            async move {
                let response = adjust(app, "ONCE", 7, Some("same-request")).await;
                let status = response.status().as_u16();
                let replayed = response.headers().get("Idempotent-Replayed").is_some();
                (status, replayed, response.json().await.unwrap())
            }
        })
        .buffer_unordered(30)
        .collect()
        .await;
    assert!(
        replies.iter().all(|(status, _, _)| *status == 200),
        "{replies:?}"
    );
    assert_eq!(
        replies.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one applied, the others answered its reply"
    );
    assert!(replies.iter().all(|(_, _, body)| body == &replies[0].2));
    assert_eq!(stock(&app, "ONCE").await, (7, 1));
}

/// Commands are answered while the domain drains a backlog on two streams at once: their
/// units take turns with the stream batches instead of waiting for the mailbox to empty.
#[actix_web::test]
async fn commands_are_answered_while_two_streams_drain_a_backlog() {
    use crate::helpers::{Isolation, spawn_app_on};
    let isolation = Isolation::new().await;
    let mut conn = isolation.redis().await;
    for (stream, kind, data) in [
        (
            "inventory.adjustments",
            "stock.adjusted",
            r#"{"delta":1,"warehouse":"w1"}"#,
        ),
        (
            "reservations.requests",
            "stock.restock_requested",
            r#"{"order_id":"o","sku":"BACKLOG","quantity":1}"#,
        ),
    ] {
        for chunk in 0..30 {
            let mut pipe = redis::pipe();
            for n in 0..1000 {
                pipe.cmd("XADD")
                    .arg(isolation.key(stream))
                    .arg("*")
                    .arg("id")
                    .arg(format!("{stream}-{chunk}-{n}"))
                    .arg("type")
                    .arg(kind)
                    .arg("key")
                    .arg("BACKLOG")
                    .arg("data")
                    .arg(data)
                    .ignore();
            }
            pipe.exec_async(&mut conn).await.unwrap();
        }
    }
    let app = spawn_app_on(isolation, AppOptions::default()).await;
    use futures_util::StreamExt;
    let statuses: Vec<u16> = futures_util::stream::iter(0..20)
        .map(|n| {
            let app = &app;
            async move {
                adjust(app, &format!("CMD-{n}"), 1, None)
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let backlog = app
        .inventory()
        .stock("BACKLOG")
        .await
        .map_or(0, |s| s.on_hand);
    assert!(
        backlog < 60_000,
        "the commands were answered before the backlog drained ({backlog} of 60000 applied)"
    );
}
