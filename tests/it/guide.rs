//! docs/guide.md works as written: its code is the compiled example's (`examples/carts/`), and
//! the domain it builds runs end to end on real Redis and Postgres through one registry line.

#[path = "../../examples/carts/domain.rs"]
pub mod domain;
#[path = "../../examples/carts/http.rs"]
pub mod http;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{AppOptions, eventually, spawn_app_with};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The contents of the guide's ```rust blocks.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

#[test]
fn every_code_block_of_the_guide_is_the_compiled_examples_code() {
    let guide = read("docs/guide.md");
    let code = ["domain.rs", "http.rs", "main.rs"]
        .map(|f| read(&format!("examples/carts/{f}")))
        .join("\n");
    let blocks = rust_blocks(&guide);
    assert!(blocks.len() >= 10, "the guide has {} blocks", blocks.len());
    for block in blocks {
        assert!(
            code.contains(&block),
            "this block of docs/guide.md is not in examples/carts/:\n{block}"
        );
    }
}

#[actix_web::test]
async fn the_guides_domain_runs_end_to_end_once_registered() {
    let app = spawn_app_with(AppOptions {
        registry: Some(troupe::shop::registry().serve(domain::Carts, http::Routes)),
        configure: Some(|s| s.domains.enabled = vec!["inventory".into(), "carts".into()]),
        ..Default::default()
    })
    .await;
    let post = |path: &str, body: Value| {
        app.client
            .post(format!("{}{path}", app.address))
            .json(&body)
            .send()
    };
    let added = post(
        "/api/v1/carts/c-1/items",
        json!({"sku": "SKU-1", "quantity": 2}),
    )
    .await
    .unwrap();
    assert_eq!(added.status(), 200);
    let refused = post(
        "/api/v1/carts/c-1/items",
        json!({"sku": "SKU-1", "quantity": 98}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 422, "over 99 units of one SKU");
    let checked_out = post("/api/v1/carts/c-1/checkout", json!(null))
        .await
        .unwrap();
    assert_eq!(checked_out.status(), 200);
    let view: Value = checked_out.json().await.unwrap();
    assert_eq!(view["status"], "checked_out");
    assert_eq!(view["lines"], json!({"SKU-1": 2}));
    let again = post("/api/v1/carts/c-1/checkout", json!(null))
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cart_closed");

    let got: Value = app.get("/api/v1/carts/c-1").await.json().await.unwrap();
    assert_eq!(
        (got["status"].clone(), got["version"].clone()),
        (json!("checked_out"), json!(2))
    );
    assert_eq!(app.get("/api/v1/carts/nobody").await.status(), 404);
    eventually(
        Duration::from_secs(20),
        "cart.checked_out published",
        || async {
            let events = app.stream_entries("carts.events").await;
            events
                .iter()
                .map(|e| e["type"].as_str())
                .collect::<Vec<_>>()
                == ["cart.checked_out"]
        },
    )
    .await;
    // The timer scheduled by the first command was cancelled by the checkout.
    assert_eq!(
        app.sql_i64("SELECT count(*)::int8 AS v FROM troupe_timer")
            .await,
        0
    );
}
