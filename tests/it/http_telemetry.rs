//! Request ids, metrics and JSON errors at the HTTP edge.

use serde_json::Value;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/health/live", app.address))
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42");

    let res = app.get("/health/live").await;
    let generated = res.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[actix_web::test]
async fn metrics_show_http_series_by_route_template() {
    let app = spawn_app().await;
    app.get("/health/live").await;
    app.get("/no/such/path/12345").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let requests = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(r#"route="/health/live""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no http_requests_total series for /health/live:\n{text}"));
    let count: f64 = requests.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0);
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="unmatched""#),
        "unmatched paths must share one label"
    );
    assert!(
        !text.contains("/no/such/path"),
        "raw paths must never become labels"
    );
}

#[actix_web::test]
async fn unknown_routes_get_a_json_error() {
    let app = spawn_app().await;
    let res = app.get("/nope").await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
}

#[actix_web::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/inventory/{sku}",
        "/api/v1/inventory",
        "/health/ready",
        "/admin/dead-letters/{stream}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let ui = app.get("/docs/").await;
    assert_eq!(ui.status(), 200);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI is served offline"
    );
}

#[actix_web::test]
async fn server_errors_carry_a_generic_message_and_the_request_id() {
    let app = crate::helpers::spawn_app_with(crate::helpers::AppOptions {
        database_proxy: true,
        ..Default::default()
    })
    .await;
    app.database_proxy.as_ref().unwrap().cut().await;
    let res = app
        .inventory()
        .adjust("SKU-1", 1)
        .header("X-Request-Id", "req-5xx")
        .send()
        .await;
    assert!(res.status().is_server_error(), "{}", res.status());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "req-5xx", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for internal in ["127.0.0.1", "connection", "postgres", "pool", "refused"] {
        assert!(
            !message.to_lowercase().contains(internal),
            "internal detail {internal:?} in {body}"
        );
    }
}
