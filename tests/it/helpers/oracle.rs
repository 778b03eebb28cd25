//! The one oracle for inventory totals: what a sequence of `stock.adjusted` inputs must
//! produce, written and then checked against the service (every SKU's stock and version, and
//! every emitted event on the output stream exactly once).

use std::collections::HashMap;
use std::time::Duration;

use super::{Adjustment, Isolation, TestApp, eventually};

/// The inventory domain's input stream.
pub const STREAM: &str = "inventory.adjustments";

/// What the inputs so far must produce: per SKU (on_hand, version), and how many events
/// inventory emits (one each time a SKU's available stock crosses zero).
#[derive(Default)]
pub struct Expected {
    /// Per SKU: on_hand and version.
    pub skus: HashMap<String, (i64, i64)>,
    /// Events inventory emits for these inputs.
    pub emitted: u64,
}

/// Inputs `from..to` (ids `o<i>`, 40 SKUs, deltas summing to zero per cycle of 7 so stock keeps
/// crossing zero and events are emitted all along the load), counted into
/// `expected`.
pub fn adjustments(from: usize, to: usize, expected: &mut Expected) -> Vec<(String, String, i64)> {
    (from..to)
        .map(|i| {
            let sku = format!("O{:02}", i % 40);
            let delta = [3, -1, -1, -2, 2, -3, 2][(i / 40) % 7];
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

/// XADDs the inputs to the inventory stream.
pub async fn write(app: &Isolation, batch: &[(String, String, i64)]) {
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

/// Waits until `inputs` inputs are applied (the versions add up to it) and nothing is pending.
async fn wait_applied(iso: &Isolation, inputs: i64) {
    eventually(
        Duration::from_secs(60),
        "every entry applied once and acknowledged",
        || async {
            iso.sql_i64("SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state")
                .await
                == inputs
                && iso.pending(STREAM, "inventory").await == 0
        },
    )
    .await;
}

/// Waits until `inputs` inputs are applied and nothing is pending, then checks every SKU and
/// that the output stream holds each emitted event exactly once.
pub async fn assert_totals(app: &TestApp, expected: &Expected, inputs: i64) {
    assert_applied(app, expected, inputs).await;
    assert_published(app, expected).await;
}

/// Waits until `inputs` inputs are applied and nothing is pending, then checks every SKU's
/// stock and version.
pub async fn assert_applied(app: &TestApp, expected: &Expected, inputs: i64) {
    wait_applied(app, inputs).await;
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

/// Waits until `inputs` inputs are applied and nothing is pending, then checks every SKU's row
/// in Postgres: for a service without an HTTP client at hand (a child process).
pub async fn assert_stored(iso: &Isolation, expected: &Expected, inputs: i64) {
    wait_applied(iso, inputs).await;
    for (sku, (on_hand, version)) in &expected.skus {
        let stored = |column: &str| {
            format!(
                "SELECT {column} AS v FROM troupe_entity_state \
                 WHERE domain = 'inventory' AND key = '{sku}'"
            )
        };
        let found = (
            iso.sql_i64(&stored("(state->>'on_hand')::int8")).await,
            iso.sql_i64(&stored("version")).await,
        );
        assert_eq!(found, (*on_hand, *version), "{sku}");
    }
}

/// Waits until the output stream holds each emitted event exactly once (by count, and by
/// envelope id: no id twice).
pub async fn assert_published(app: &Isolation, expected: &Expected) {
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
    let ids = app.output_event_ids().await;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no event id published twice");
}
