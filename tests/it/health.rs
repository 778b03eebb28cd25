//! Liveness and readiness against real and interrupted dependencies.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{AppOptions, spawn_app, spawn_app_with};

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
