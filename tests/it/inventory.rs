//! The inventory domain end to end: stream in, state in memory and Postgres, API out.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::oracle::{Expected, assert_stored};
use crate::helpers::{Adjustment, eventually, spawn_app};

const STREAM: &str = "inventory.adjustments";

#[actix_web::test]
async fn exact_totals_after_50_000_events_over_1_000_skus() {
    let app = spawn_app().await;
    let skus: Vec<String> = (0..1000).map(|i| format!("SKU-{i:04}")).collect();
    let mut expected = Expected::default();
    let mut adjustments = Vec::with_capacity(50_000);
    for n in 0..50_000usize {
        let sku = skus[(n * 7919) % skus.len()].as_str();
        let delta = (n % 11) as i64 - 4;
        expected.add(sku, delta);
        adjustments.push(Adjustment {
            id: format!("evt-{n}"),
            sku,
            delta,
        });
    }
    app.write_adjustments(&adjustments).await;

    // Postgres holds exactly the expected totals and versions, one row per SKU.
    assert_stored(&app, &expected, 50_000).await;

    // The API serves the same from memory, page by page, with nothing missing.
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = app.inventory().page(333, after.as_deref()).await;
        for item in &page.items {
            let (delta, count) = expected.skus[&item.sku];
            assert_eq!(item.on_hand, delta, "{item:?}");
            assert_eq!(item.version, count as u64, "{item:?}");
            assert_eq!(item.available, delta);
            seen += 1;
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 1000);

    // Lag and pending are exported per domain and stream once measured; the handle, persist and
    // batch-size histograms as soon as batches run.
    eventually(Duration::from_secs(10), "consumer metrics", || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        [
            "troupe_consumer_lag{",
            "troupe_consumer_pending{",
            "troupe_consumer_oldest_pending_seconds{",
            "troupe_outbox_backlog{",
            "troupe_handle_seconds_bucket{",
            "troupe_persist_seconds_bucket{",
            "troupe_batch_size_bucket{",
        ]
        .iter()
        .all(|name| text.lines().any(|l| l.starts_with(name)))
            && text.lines().any(|l| {
                l.starts_with("troupe_events_total{") && l.contains(r#"outcome="applied""#)
            })
    })
    .await;
}

#[actix_web::test]
async fn unknown_sku_is_a_json_404_and_a_known_one_is_served() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/inventory/NOPE").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    app.write_adjustments(&[Adjustment {
        id: "e1".into(),
        sku: "A-1",
        delta: 5,
    }])
    .await;
    eventually(Duration::from_secs(10), "A-1 applied", || async {
        app.inventory().stock("A-1").await.is_some()
    })
    .await;
    // The wire form exactly, not only what the typed client reads.
    let body: Value = app.inventory().get("A-1").await.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sku": "A-1", "on_hand": 5, "reserved": 0, "available": 5, "version": 1})
    );
}

#[actix_web::test]
async fn adjusting_through_the_api_commits_and_publishes_events_exactly_once() {
    let app = spawn_app().await;
    for delta in [3, -3, 2] {
        app.inventory().adjust("B-1", delta).committed().await;
    }
    let stock = app.inventory().stock("B-1").await.unwrap();
    assert_eq!((stock.on_hand, stock.version), (2, 3));
    assert_eq!(
        app.sql_i64("SELECT version AS v FROM troupe_entity_state WHERE key = 'B-1'")
            .await,
        3
    );

    // 3 crosses above zero, -3 back to zero, 2 above again: replenished, depleted, replenished,
    // each with its stock.changed.
    eventually(Duration::from_secs(10), "six events published", || async {
        app.xlen("inventory.events").await == 6
    })
    .await;
    eventually(Duration::from_secs(10), "outbox drained", || async {
        app.sql_i64("SELECT COUNT(*) AS v FROM troupe_outbox WHERE published_at IS NULL")
            .await
            == 0
    })
    .await;
    let entries: redis::Value = redis::cmd("XRANGE")
        .arg(app.key("inventory.events"))
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let text = format!("{entries:?}");
    assert_eq!(text.matches("stock.replenished").count(), 2, "{text}");
    assert_eq!(text.matches("stock.depleted").count(), 1, "{text}");
    assert_eq!(text.matches("stock.changed").count(), 3, "{text}");
    assert!(text.contains("traceparent"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.xlen("inventory.events").await,
        6,
        "nothing published twice"
    );
}

#[actix_web::test]
async fn bad_requests_get_clear_json_errors() {
    let app = spawn_app().await;
    let url = format!("{}/api/v1/inventory/C-1/adjustments", app.address);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.client
                .post(&url)
                .body("{not json")
                .header("content-type", "application/json"),
            400,
            "invalid_body",
        ),
        (
            app.client
                .post(&url)
                .json(&json!({"delta": "x", "warehouse": "w"})),
            422,
            "validation_failed",
        ),
        (
            app.client
                .post(&url)
                .json(&json!({"delta": 1, "warehouse": " "})),
            422,
            "validation_failed",
        ),
        (
            app.client
                .post(&url)
                .body("{}")
                .header("content-type", "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            app.client
                .post(&url)
                .json(&json!({"delta": 1, "warehouse": "w".repeat(70_000)})),
            413,
            "payload_too_large",
        ),
        (
            app.client
                .get(format!("{}/api/v1/inventory?limit=0", app.address)),
            400,
            "invalid_query",
        ),
        (
            app.client
                .get(format!("{}/api/v1/inventory?limit=abc", app.address)),
            400,
            "invalid_query",
        ),
    ];
    for (request, status, code) in cases {
        let res = request.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert_eq!(
        app.get("/api/v1/inventory/C-1").await.status(),
        404,
        "nothing was applied"
    );
}

#[actix_web::test]
async fn keyset_pages_stay_complete_and_ordered_while_events_flow() {
    let app = spawn_app().await;
    let existing: Vec<String> = (0..600).map(|i| format!("P-{i:04}")).collect();
    let first: Vec<Adjustment> = existing
        .iter()
        .enumerate()
        .map(|(i, sku)| Adjustment {
            id: format!("p{i}"),
            sku,
            delta: 1,
        })
        .collect();
    app.write_adjustments(&first).await;
    eventually(Duration::from_secs(30), "600 SKUs applied", || async {
        app.sql_i64("SELECT COUNT(*) AS v FROM troupe_entity_state")
            .await
            == 600
    })
    .await;

    // Meanwhile: more events for existing SKUs and new SKUs between them (`P-0000a` …).
    let writer = {
        let later: Vec<(String, String)> = (0..20_000)
            .map(|i| {
                let sku = if i % 2 == 0 {
                    existing[(i * 7) % 600].clone()
                } else {
                    format!("{}a{}", existing[(i * 13) % 600], i % 5)
                };
                (format!("q{i}"), sku)
            })
            .collect();
        let isolation_key = app.key(STREAM);
        let url = app.settings.redis.url.clone();
        tokio::spawn(async move {
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for chunk in later.chunks(250) {
                let mut pipe = redis::pipe();
                for (id, sku) in chunk {
                    pipe.cmd("XADD")
                        .arg(&isolation_key)
                        .arg("*")
                        .arg("id")
                        .arg(id)
                        .arg("type")
                        .arg("stock.adjusted")
                        .arg("key")
                        .arg(sku)
                        .arg("data")
                        .arg(r#"{"delta":1,"warehouse":"w1"}"#)
                        .ignore();
                }
                let () = pipe.query_async(&mut conn).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut pages = 0;
    let mut keys: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app.inventory().page(37, after.as_deref()).await;
        pages += 1;
        keys.extend(page.items.into_iter().map(|item| item.sku));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !writer.is_finished(),
        "all {pages} pages were read while events were still being written"
    );
    writer.await.unwrap();

    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: no key twice, none out of order"
    );
    let listed: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let missing: Vec<&String> = existing
        .iter()
        .filter(|sku| !listed.contains(sku.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "every SKU that existed throughout is listed: {missing:?}"
    );
}

/// The handler sees when its input happened: the producer's `ts`, else the time Redis gave the
/// entry, and for a command the time it came. Inventory writes it as `at` on the events it
/// emits, so it is visible on the output stream.
#[actix_web::test]
async fn handlers_see_when_their_input_happened() {
    let app = spawn_app().await;
    let adjust = |id: &'static str, delta: i64, ts: Option<&'static str>| {
        let data = json!({ "delta": delta, "warehouse": "w1" }).to_string();
        let app = &app;
        async move {
            let mut fields = vec![
                ("id", id),
                ("type", "stock.adjusted"),
                ("key", "T-1"),
                ("data", data.as_str()),
            ];
            fields.extend(ts.map(|ts| ("ts", ts)));
            app.xadd(STREAM, &fields).await
        }
    };
    adjust("t-1", 2, Some("2026-05-01T10:00:00Z")).await;
    let entry_id = adjust("t-2", -2, None).await;
    // The command comes after both entries are applied, so it crosses zero again.
    eventually(
        Duration::from_secs(10),
        "both entries published",
        || async { app.xlen("inventory.events").await == 4 },
    )
    .await;
    let before = chrono::Utc::now();
    app.inventory().adjust("T-1", 1).committed().await;
    let after = chrono::Utc::now();

    eventually(
        Duration::from_secs(10),
        "three crossings published",
        || async { app.xlen("inventory.events").await == 6 },
    )
    .await;
    let events: Vec<_> = app
        .output_events()
        .await
        .into_iter()
        .filter(|e| e["type"] != "stock.changed")
        .collect();
    let at = |n: usize| -> chrono::DateTime<chrono::Utc> {
        let data: Value = serde_json::from_str(&events[n]["data"]).unwrap();
        let at = data["at"]
            .as_str()
            .unwrap_or_else(|| panic!("no `at` in {data}"));
        chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc()
    };
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        ["stock.replenished", "stock.depleted", "stock.replenished"]
    );
    assert_eq!(
        at(0).to_rfc3339(),
        "2026-05-01T10:00:00+00:00",
        "the producer's ts"
    );
    let entry_ms: i64 = entry_id.split('-').next().unwrap().parse().unwrap();
    assert_eq!(
        at(1).timestamp_millis(),
        entry_ms,
        "no ts: when Redis took the entry"
    );
    assert!(
        (before..=after).contains(&at(2)),
        "a command: when it came ({} not in {before}..{after})",
        at(2)
    );
}
