//! The event catalogue: `/api-docs/asyncapi.json` is a valid AsyncAPI 3.0 document that lists
//! every event type every registered domain declares, on its stream, and `/docs/events` browses
//! it offline.

use serde_json::Value;
use troupe::domain::EventCatalogue;
use troupe::domains::inventory::Inventory;

use crate::guide::{domain::Carts, http::Routes as CartRoutes};
use crate::helpers::{AppOptions, spawn_app_with};

/// The official AsyncAPI 3.0.0 JSON schema (asyncapi/spec-json-schemas, Apache-2.0), vendored
/// so the check runs offline.
const ASYNCAPI_3_SCHEMA: &str = include_str!("../fixtures/asyncapi-3.0.0-without-id.json");

fn validate(doc: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(ASYNCAPI_3_SCHEMA).unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the AsyncAPI schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn message_types(doc: &Value, stream: &str) -> Vec<String> {
    doc["channels"][stream]["messages"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_catalogue_is_valid_asyncapi_and_lists_every_declared_event_type() {
    let app = spawn_app_with(AppOptions {
        registry: Some(troupe::shop::registry().serve(Carts, CartRoutes)),
        ..Default::default()
    })
    .await;
    let response = app.get("/api-docs/asyncapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    let errors = validate(&doc);
    assert!(
        errors.is_empty(),
        "not valid AsyncAPI 3.0:\n{}",
        errors.join("\n")
    );
    // The schema does not resolve references: every one must point into the document.
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 10, "{found:?}");
    for (at, reference) in found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: {reference} resolves to nothing"
        );
    }

    for (catalogue, inputs, output) in [
        (
            EventCatalogue::of::<Inventory>().unwrap(),
            vec!["inventory.adjustments"],
            "inventory.events",
        ),
        (
            EventCatalogue::of::<Carts>().unwrap(),
            vec!["carts.input"],
            "carts.events",
        ),
        // The shop's domains read each other's output streams, which carry the writer's
        // types only.
        (
            EventCatalogue::of::<troupe::domains::customers::Customers>().unwrap(),
            vec![],
            "customers.events",
        ),
        (
            EventCatalogue::of::<troupe::domains::payments::Payments>().unwrap(),
            vec![],
            "payments.events",
        ),
        (
            EventCatalogue::of::<troupe::domains::orders::Orders>().unwrap(),
            vec![],
            "orders.events",
        ),
    ] {
        for stream in inputs {
            let mut listed = message_types(&doc, stream);
            listed.sort();
            let mut declared: Vec<String> =
                catalogue.inputs.iter().map(|t| t.to_string()).collect();
            declared.sort();
            assert_eq!(listed, declared, "{stream}");
        }
        let mut listed = message_types(&doc, output);
        listed.sort();
        let mut declared: Vec<String> = catalogue.outputs.iter().map(|t| t.to_string()).collect();
        declared.sort();
        assert_eq!(listed, declared, "{output}");
    }
    // The payload is the envelope with the type's own data schema.
    let adjusted = &doc["channels"]["inventory.adjustments"]["messages"]["stock.adjusted"];
    assert_eq!(
        adjusted["payload"]["properties"]["type"]["const"],
        "stock.adjusted"
    );
    let data = adjusted["payload"]["properties"]["data"].to_string();
    assert!(data.contains("StockAdjustment"), "{data}");
    let schema = &doc["components"]["schemas"]["StockAdjustment"];
    assert!(schema["properties"]["delta"].is_object(), "{schema}");
    assert!(schema["properties"]["warehouse"].is_object(), "{schema}");
    // Reservations' types each have one home: outcomes on its own stream, requests on the other.
    let mut outcomes = message_types(&doc, "reservations.events");
    outcomes.sort();
    assert_eq!(outcomes, ["stock.rejected", "stock.reserved"]);
    let mut requests = message_types(&doc, "reservations.requests");
    requests.sort();
    assert_eq!(
        requests,
        [
            "stock.commit_requested",
            "stock.hold_requested",
            "stock.release_requested",
            "stock.restock_requested"
        ]
    );
    // Payments reads two of the orders' types; it adds none of its own to their stream.
    let receive = &doc["operations"]["payments.receive.orders.events"]["messages"];
    let mut read: Vec<&str> = receive
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["$ref"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    read.sort();
    assert_eq!(read, ["order.cancelled", "order.rejected"]);
    assert!(doc["operations"]["inventory.send"].is_object());
    assert!(doc["operations"]["carts.receive.carts.input"].is_object());

    // The WebSocket protocol: the client's messages, the server's, and the topic kinds.
    let ws = &doc["channels"]["websocket"];
    assert_eq!(ws["address"], "/ws");
    let mut ws_messages: Vec<&str> = ws["messages"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    ws_messages.sort();
    assert_eq!(
        ws_messages,
        [
            "error",
            "event",
            "ping",
            "pong",
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed"
        ]
    );
    let topic = ws["messages"]["subscribe"]["payload"]["properties"]["topic"]["description"]
        .as_str()
        .unwrap();
    for kind in ["`sku:<id>`", "`customer:<id>`", "`order:<id>`"] {
        assert!(topic.contains(kind), "{topic}");
    }
    assert_eq!(doc["operations"]["websocket.send"]["action"], "send");
    assert_eq!(doc["operations"]["websocket.receive"]["action"], "receive");
    let stock = message_types(&doc, "inventory.events");
    assert!(stock.contains(&"stock.changed".to_owned()), "{stock:?}");
}

#[actix_web::test]
async fn the_catalogue_page_is_served_without_outside_assets() {
    let app = spawn_app_with(AppOptions::default()).await;
    let response = app.get("/docs/events").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/api-docs/asyncapi.json"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside assets"
    );
}

#[test]
fn a_document_that_breaks_the_spec_is_caught() {
    // The check itself can fail: a channel without its required shape is refused.
    let bad = serde_json::json!({"asyncapi": "3.0.0", "info": {"title": "x"}, "channels": {"s": {"messages": 5}}});
    assert!(!validate(&bad).is_empty());
}
