//! The customers API on real Redis and Postgres: registration with its event, optimistic
//! concurrency with `If-Match`, idempotent creation, field-level validation and pagination.

use serde_json::{Value, json};
use troupe::http::customers::CustomerView;

use crate::helpers::{AppOptions, TestApp, eventually, spawn_app_with};

async fn shop() -> TestApp {
    spawn_app_with(AppOptions {
        configure: Some(|s| s.domains.enabled = vec!["customers".into()]),
        ..Default::default()
    })
    .await
}

#[actix_web::test]
async fn a_registered_customer_reads_back_and_is_announced() {
    let app = shop().await;
    let customers = app.customers();
    let response = customers
        .post(&json!({"name": "Alice", "email": "alice@example.com", "credit_cents": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let created: CustomerView = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/customers/{}", created.id));
    assert_eq!(
        (created.name.as_str(), created.credit_cents, created.version),
        ("Alice", 5000, 1)
    );

    let read = customers.get(&created.id).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");
    assert_eq!(read.json::<CustomerView>().await.unwrap(), created);

    eventually(
        std::time::Duration::from_secs(10),
        "customer.registered published",
        || async { app.xlen("customers.events").await > 0 },
    )
    .await;
    let events = app.stream_entries("customers.events").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "customer.registered");
    assert_eq!(events[0]["key"], created.id);
    let data: Value = serde_json::from_str(&events[0]["data"]).unwrap();
    assert_eq!(data["credit_cents"], 5000);
    assert_eq!(data["customer_id"], created.id.as_str());
}

#[actix_web::test]
async fn a_change_based_on_a_stale_read_is_refused() {
    let app = shop().await;
    let customers = app.customers();
    let alice = customers.register("Alice", 100).await;

    let renamed = customers
        .patch(&alice.id, &json!({"name": "Alicia"}))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.headers()["etag"], "\"2\"");
    let renamed: CustomerView = renamed.json().await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.version), ("Alicia", 2));
    assert_eq!(
        renamed.email, alice.email,
        "an absent field keeps its value"
    );

    let stale = customers
        .patch(&alice.id, &json!({"email": "other@example.com"}))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_mismatch");
    assert_eq!(body["error"]["details"]["current_version"], 2);
    let now: CustomerView = customers.get(&alice.id).await.json().await.unwrap();
    assert_eq!(
        (now.email.as_str(), now.version),
        (alice.email.as_str(), 2),
        "nothing applied"
    );

    let unconditional = customers
        .patch(&alice.id, &json!({"email": "other@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unconditional.status(), 200);

    let cleared = customers
        .patch(&alice.id, &json!({"name": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 422, "null does not mean keep, nor clear");
    let body: Value = cleared.json().await.unwrap();
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "name");

    let bad_tag = customers
        .patch(&alice.id, &json!({"name": "B"}))
        .header("If-Match", "W/\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_tag.status(), 400);
    assert_eq!(
        bad_tag.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_if_match"
    );
}

#[actix_web::test]
async fn a_retried_registration_creates_one_customer() {
    let app = shop().await;
    let customers = app.customers();
    let body = json!({"name": "Bob", "email": "bob@example.com", "credit_cents": 7});
    let first = customers
        .post(&body)
        .header("Idempotency-Key", "signup-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: CustomerView = first.json().await.unwrap();
    let retry = customers
        .post(&body)
        .header("Idempotency-Key", "signup-1")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<CustomerView>().await.unwrap(), first);

    let other = customers
        .post(&json!({"name": "Eve", "email": "eve@example.com", "credit_cents": 7}))
        .header("Idempotency-Key", "signup-1")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );
    let page = customers.page(10, None).await;
    assert_eq!(page.items, [first]);
    assert_eq!(
        app.sql_i64("SELECT count(*) AS v FROM troupe_entity_state WHERE domain = 'customers'")
            .await,
        1
    );
}

/// 422 with the field named, for each kind of bad body; 400 for what is not JSON.
#[actix_web::test]
async fn bad_bodies_are_refused_field_by_field() {
    let app = shop().await;
    let customers = app.customers();
    let long_name = "n".repeat(201);
    let long_email = format!("{}@example.com", "a".repeat(250));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"email": "a@example.com", "credit_cents": 1}), "name"),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": 1, "admin": true}),
            "admin",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": "1"}),
            "credit_cents",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": 1.5}),
            "credit_cents",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": -1}),
            "credit_cents",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": i64::MAX}),
            "credit_cents",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "credit_cents": 18446744073709551615u64}),
            "credit_cents",
        ),
        (
            json!({"name": long_name, "email": "a@example.com", "credit_cents": 1}),
            "name",
        ),
        (
            json!({"name": "A\u{0}B", "email": "a@example.com", "credit_cents": 1}),
            "name",
        ),
        (
            json!({"name": "A", "email": "not-an-email", "credit_cents": 1}),
            "email",
        ),
        (
            json!({"name": "A", "email": long_email, "credit_cents": 1}),
            "email",
        ),
        (
            json!({"name": null, "email": "a@example.com", "credit_cents": 1}),
            "name",
        ),
        (json!(["A", "a@example.com", 1]), ""),
    ];
    for (body, field) in cases {
        let response = customers.post(&body).send().await.unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed", "{body}");
        let fields = error["error"]["details"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == field),
            "{body}: expected a problem with {field:?}, got {error}"
        );
    }
    // Several rule problems are reported together.
    let response = customers
        .post(&json!({"name": " ", "email": "x", "credit_cents": -5}))
        .send()
        .await
        .unwrap();
    let error: Value = response.json().await.unwrap();
    let fields: Vec<&str> = error["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email", "credit_cents"]);

    let not_json = app
        .client
        .post(format!("{}/api/v1/customers", app.address))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let huge =
        json!({"name": "x".repeat(2 * 1024 * 1024), "email": "a@example.com", "credit_cents": 1});
    assert_eq!(customers.post(&huge).send().await.unwrap().status(), 413);
    let empty_change = customers
        .patch(&uuid::Uuid::now_v7().to_string(), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_change.status(), 422);
    assert_eq!(
        app.sql_i64("SELECT count(*) AS v FROM troupe_entity_state WHERE domain = 'customers'")
            .await,
        0,
        "nothing registered"
    );
}

#[actix_web::test]
async fn unknown_and_malformed_ids_are_told_apart() {
    let app = shop().await;
    let customers = app.customers();
    let unknown = uuid::Uuid::now_v7().to_string();
    let response = customers.get(&unknown).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let change = customers
        .patch(&unknown, &json!({"name": "Ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 404);
    for bad in [
        "nope",
        "%00",
        "0190A2B4-0000-7000-8000-000000000000",
        &"a".repeat(3000),
    ] {
        let response = customers.get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_id"
        );
    }
    assert_eq!(
        app.sql_i64("SELECT count(*) AS v FROM troupe_entity_state WHERE domain = 'customers'")
            .await,
        0,
        "a refused change stores no entity"
    );
}

#[actix_web::test]
async fn customers_page_by_id() {
    let app = shop().await;
    let customers = app.customers();
    let mut ids = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        ids.push(customers.register(name, 1).await.id);
    }
    ids.sort();
    let first = customers.page(2, None).await;
    let second = customers.page(2, first.next_after.as_deref()).await;
    let third = customers.page(2, second.next_after.as_deref()).await;
    let listed: Vec<String> = [first.items, second.items, third.items]
        .into_iter()
        .flatten()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(third.next_after, None);
    let bad = app.get("/api/v1/customers?limit=0").await;
    assert_eq!(bad.status(), 400);
    let bad = app.get("/api/v1/customers?after=x").await;
    assert_eq!(bad.status(), 400);
}

#[actix_web::test]
async fn registering_opens_a_wallet_with_the_credit() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.domains.enabled = vec!["customers".into(), "payments".into()]),
        ..Default::default()
    })
    .await;
    let customers = app.customers();
    let alice = customers.register("Alice", 2500).await;
    eventually(
        std::time::Duration::from_secs(10),
        "the wallet opens",
        || async { customers.wallet(&alice.id).await.is_some() },
    )
    .await;
    let wallet = customers.wallet(&alice.id).await.unwrap();
    assert_eq!(
        (
            wallet.balance_cents,
            wallet.credit_cents,
            wallet.movements.len()
        ),
        (2500, 2500, 1)
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert!(customers.wallet(&unknown).await.is_none());
}
