//! Entities come and go: start-up loads nothing, a key is loaded from Postgres the first time
//! a unit needs it, idle entities and the least recently used past the cap leave memory, and a
//! key that left is loaded back with its committed value.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::child::ChildService;
use crate::helpers::oracle::{Expected, adjustments, assert_stored, write};
use crate::helpers::{Isolation, eventually};

const IN_MEMORY: &str = r#"troupe_entities_in_memory{domain="inventory"}"#;
const LOADS: &str = r#"troupe_entity_loads_total{domain="inventory"}"#;
const EVICTED_IDLE: &str = r#"troupe_entity_evictions_total{domain="inventory",reason="idle"}"#;
const EVICTED_CAPACITY: &str =
    r#"troupe_entity_evictions_total{domain="inventory",reason="capacity"}"#;

/// Stores `n` SKUs (`S-000001` …, `on_hand` = its number, version 1) as a previous run would
/// have left them.
async fn seed(iso: &Isolation, n: i64) {
    troupe::store::migrations::run(&iso.settings.database.url)
        .await
        .expect("migrations");
    let inserted = iso
        .sql_i64(&format!(
            "WITH i AS (INSERT INTO troupe_entity_state (domain, key, state, version) \
             SELECT 'inventory', 'S-' || lpad(n::text, 6, '0'), \
                    jsonb_build_object('on_hand', n, 'reserved', 0), 1 \
             FROM generate_series(1, {n}) AS n RETURNING 1) \
             SELECT count(*)::int8 AS v FROM i"
        ))
        .await;
    assert_eq!(inserted, n);
}

#[actix_web::test]
async fn start_up_loads_nothing_and_a_key_loads_on_first_use() {
    let iso = Isolation::new().await;
    seed(&iso, 20_000).await;
    let child = ChildService::serving(&iso, &[]).await;
    eventually(Duration::from_secs(30), "ready", || async {
        child.get("/health/ready").await.status() == 200
    })
    .await;
    assert_eq!(
        child.metric(IN_MEMORY).await,
        0.0,
        "nothing loaded at start-up"
    );

    // A read of a key not in memory answers from Postgres and loads nothing.
    let stored = child.inventory().stock("S-000042").await.unwrap();
    assert_eq!((stored.on_hand, stored.version), (42, 1));
    assert_eq!(child.metric(IN_MEMORY).await, 0.0, "a read does not load");
    let page = child.inventory().page(3, None).await;
    assert_eq!(page.items.len(), 3, "{page:?}");
    assert_eq!(
        page.items[0].sku, "S-000001",
        "pages come from Postgres: {page:?}"
    );

    // An input for a stored key applies on top of its stored value: loaded first.
    iso.xadd(
        "inventory.adjustments",
        &[
            ("id", "r-1"),
            ("type", "stock.adjusted"),
            ("key", "S-000042"),
            ("data", r#"{"delta":-2,"warehouse":"w1"}"#),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the adjustment applied",
        || async { child.inventory().stock("S-000042").await.unwrap().version == 2 },
    )
    .await;
    assert_eq!(
        child.inventory().stock("S-000042").await.unwrap().on_hand,
        40
    );
    assert_eq!(child.metric(IN_MEMORY).await, 1.0);
    assert_eq!(child.metric(LOADS).await, 1.0);
    child.kill().await;
}

#[actix_web::test]
async fn idle_entities_leave_memory_and_come_back_with_their_committed_value() {
    let iso = Isolation::new().await;
    let child = ChildService::serving(&iso, &[("TROUPE__RUNTIME__ENTITY_IDLE_SECONDS", "1")]).await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 300, &mut expected)).await;
    assert_stored(&iso, &expected, 300).await;
    eventually(Duration::from_secs(10), "idle entities evicted", || async {
        child.metric(IN_MEMORY).await == 0.0
    })
    .await;
    let loads = child.metric(LOADS).await;
    assert!(loads >= 40.0, "each of the 40 SKUs was loaded ({loads})");
    assert_eq!(
        child.metric(EVICTED_IDLE).await,
        loads,
        "and each left memory"
    );

    // The same keys again: loaded back, applied on their committed values.
    write(&iso, &adjustments(300, 600, &mut expected)).await;
    assert_stored(&iso, &expected, 600).await;
    let again = child.metric(LOADS).await - loads;
    assert!(again >= 40.0, "every SKU loaded again ({again})");
    child.kill().await;
}

#[actix_web::test]
async fn past_the_cap_the_least_recently_used_leave_memory_and_totals_stay_exact() {
    let iso = Isolation::new().await;
    // 2 partitions: 5 entities each at most after a commit, for a load over 40 SKUs.
    let cap = [("TROUPE__RUNTIME__MAX_ENTITIES_IN_MEMORY", "10")];
    let child = ChildService::serving(&iso, &cap).await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 4_000, &mut expected)).await;
    assert_stored(&iso, &expected, 4_000).await;
    assert_eq!(expected.skus.len(), 40);
    let held = child.metric(IN_MEMORY).await;
    assert!(held <= 10.0, "{held} entities in memory, over the cap");
    assert!(child.metric(EVICTED_CAPACITY).await > 0.0);
    assert!(
        child.metric(LOADS).await > 40.0,
        "evicted keys were loaded again"
    );
    child.kill().await;
}

#[actix_web::test]
async fn pages_move_past_a_stored_state_that_does_not_load() {
    let app = crate::helpers::spawn_app().await;
    let inserted = app
        .sql_i64(
            "WITH i AS (INSERT INTO troupe_entity_state (domain, key, state, version) VALUES \
             ('inventory', 'P-1', '{\"on_hand\": 1, \"reserved\": 0}', 1), \
             ('inventory', 'P-2', '{\"on_hand\": \"broken\"}', 1), \
             ('inventory', 'P-3', '{\"on_hand\": 3, \"reserved\": 0}', 1) RETURNING 1) \
             SELECT count(*)::int8 AS v FROM i",
        )
        .await;
    assert_eq!(inserted, 3);
    let page = |after: &str| {
        let path = format!("/api/v1/inventory?limit=1{after}");
        let app = &app;
        async move {
            let res = app.get(&path).await;
            assert_eq!(res.status(), 200, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    let first = page("").await;
    assert_eq!(first["items"][0]["sku"], "P-1");
    let second = page("&after=P-1").await;
    assert_eq!(
        second["items"],
        serde_json::json!([]),
        "the broken row is left out"
    );
    assert_eq!(second["next_after"], "P-2", "but the cursor moves past it");
    let third = page("&after=P-2").await;
    assert_eq!(third["items"][0]["sku"], "P-3");
}
