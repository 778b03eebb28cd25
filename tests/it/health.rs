//! Liveness and readiness against real and interrupted dependencies.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::oracle::{Expected, adjustments, assert_applied, write};
use crate::helpers::{AppOptions, eventually, spawn_app, spawn_app_with};

#[actix_web::test]
async fn liveness_answers() {
    let app = spawn_app().await;
    let res = app.get("/health/live").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "alive");
}

#[actix_web::test]
async fn ready_when_redis_and_postgres_answer() {
    let app = spawn_app().await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["redis"]["ok"], true);
    assert_eq!(body["checks"]["postgres"]["ok"], true);
}

#[actix_web::test]
async fn not_ready_while_postgres_is_unreachable_then_ready_again() {
    let app = spawn_app_with(AppOptions {
        database_proxy: true,
        ..Default::default()
    })
    .await;
    let proxy = app.database_proxy.as_ref().unwrap();
    assert_eq!(app.get("/health/ready").await.status(), 200);

    proxy.cut().await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["checks"]["postgres"]["ok"], false);
    assert_eq!(body["error"]["details"]["checks"]["redis"]["ok"], true);

    proxy.restore();
    // The pool replaces its broken connections on checkout; no restart of the service.
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/health/ready").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "readiness did not recover after Postgres came back"
    );
}

#[actix_web::test]
async fn a_blocked_handler_makes_the_domain_stalled_and_not_ready_until_it_moves_again() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.stall_timeout_seconds = 2;
            s.faults.block_handler_key = Some("O07".into());
            s.faults.block_handler_ms = 8_000;
        }),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 400, &mut expected)).await;

    // The body of the same 503 that reported the stall (the handler unblocks a few seconds on).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let stalled_body: Value = loop {
        let res = app.get("/health/ready").await;
        if res.status() == 503 {
            break res.json().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never reported the stall"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = stalled_body["error"]["details"]["checks"]["domains"]["inventory"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("stalled"), "{stalled_body}");
    assert!(
        reason.contains("\"O07\""),
        "names the key in the handler: {stalled_body}"
    );
    assert!(
        stalled_body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("domain inventory"),
        "{stalled_body}"
    );
    // Liveness is not readiness: a stall may pass, so the process is not restarted for it.
    assert_eq!(app.get("/health/live").await.status(), 200);

    // The handler returns; the domain applies everything, exactly once, and is ready again.
    assert_applied(&app, &expected, 400).await;
    eventually(Duration::from_secs(20), "ready again", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
}
