//! The one oracle for inventory totals: what a sequence of `stock.adjusted` inputs must
//! produce, written and then checked against the service (every SKU's stock and version, and
//! every emitted event on the output stream exactly once).

use std::collections::HashMap;
use std::time::Duration;

use super::{Adjustment, Isolation, TestApp, eventually};

/// The inventory domain's input stream.
pub const STREAM: &str = "inventory.adjustments";

/// What the inputs so far must produce: per SKU (on_hand, version), and how many events
/// inventory emits (a `stock.changed` per adjustment, and one more each time a SKU's
/// available stock crosses zero).
#[derive(Default)]
pub struct Expected {
    /// Per SKU: on_hand and version.
    pub skus: HashMap<String, (i64, i64)>,
    /// Events inventory emits for these inputs.
    pub emitted: u64,
}

impl Expected {
    /// Counts one applied adjustment of `sku` by `delta`: inventory emits `stock.changed`,
    /// and an event when it moves the SKU's available stock across zero, either way.
    pub fn add(&mut self, sku: &str, delta: i64) {
        let e = self.skus.entry(sku.to_owned()).or_default();
        let was = e.0 > 0;
        e.0 += delta;
        e.1 += 1;
        self.emitted += 1;
        if was != (e.0 > 0) {
            self.emitted += 1;
        }
    }

    /// How many inputs `sku` has had so far.
    pub fn version(&self, sku: &str) -> i64 {
        self.skus.get(sku).map_or(0, |e| e.1)
    }

    /// How many inputs all SKUs have had.
    pub fn inputs(&self) -> i64 {
        self.skus.values().map(|e| e.1).sum()
    }
}

/// Inputs `from..to` (ids `o<i>`, 40 SKUs, deltas summing to zero per cycle of 7 so stock keeps
/// crossing zero and events are emitted all along the load), counted into
/// `expected`.
pub fn adjustments(from: usize, to: usize, expected: &mut Expected) -> Vec<(String, String, i64)> {
    (from..to)
        .map(|i| {
            let sku = format!("O{:02}", i % 40);
            let delta = [3, -1, -1, -2, 2, -3, 2][(i / 40) % 7];
            expected.add(&sku, delta);
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
        let stock = app.inventory().stock(sku).await.expect("the SKU exists");
        assert_eq!(
            (stock.on_hand, stock.version as i64),
            (*on_hand, *version),
            "{sku}"
        );
    }
}

/// Waits until `inputs` inputs are applied and nothing is pending, then checks every SKU's row
/// in Postgres: for a service without an HTTP client at hand (a child process).
pub async fn assert_stored(iso: &Isolation, expected: &Expected, inputs: i64) {
    wait_applied(iso, inputs).await;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        key: String,
        #[diesel(sql_type = diesel::sql_types::Int8)]
        on_hand: i64,
        #[diesel(sql_type = diesel::sql_types::Int8)]
        version: i64,
    }
    use diesel_async::RunQueryDsl;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT key, (state->>'on_hand')::int8 AS on_hand, version FROM troupe_entity_state \
         WHERE domain = 'inventory'",
    )
    .load(&mut iso.db().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), expected.skus.len(), "one row per SKU, no other");
    for row in rows {
        assert_eq!(
            expected.skus[&row.key],
            (row.on_hand, row.version),
            "SKU {}",
            row.key
        );
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
