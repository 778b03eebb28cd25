//! Poison and malformed entries: dead-lettered with their reasons, never blocking the rest;
//! listed, replayed and discarded by an operator.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Adjustment, AppOptions, TestApp, eventually, spawn_app, spawn_app_with};

const STREAM: &str = "inventory.adjustments";
const DLQ: &str = "inventory.adjustments.dlq";

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/admin/dead-letters/{STREAM}"))
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn malformed_entries_are_dead_lettered_at_once_with_their_reasons() {
    let app = spawn_app().await;
    let ok = r#"{"delta":1,"warehouse":"w"}"#;
    app.xadd(
        STREAM,
        &[("id", "m1"), ("type", "stock.adjusted"), ("data", ok)],
    )
    .await;
    app.xadd(
        STREAM,
        &[
            ("id", "m2"),
            ("type", "stock.adjusted"),
            ("key", "K"),
            ("data", "{oops"),
        ],
    )
    .await;
    app.xadd(
        STREAM,
        &[
            ("id", "m3"),
            ("type", "stock.stolen"),
            ("key", "K"),
            ("data", ok),
        ],
    )
    .await;
    app.xadd(
        STREAM,
        &[
            ("id", "m4"),
            ("type", "stock.adjusted"),
            ("key", "K"),
            ("data", r#"{"delta":1}"#),
        ],
    )
    .await;
    app.xadd(
        STREAM,
        &[
            ("id", "m5"),
            ("type", "stock.adjusted"),
            ("key", "K"),
            ("data", ok),
            ("ts", "noon"),
        ],
    )
    .await;
    app.xadd(
        STREAM,
        &[
            ("id", "m6"),
            ("type", "stock.adjusted"),
            ("key", "K"),
            ("data", ok),
        ],
    )
    .await;

    eventually(
        Duration::from_secs(10),
        "five dead letters and the good entry applied",
        || async {
            app.xlen(DLQ).await == 5 && app.get("/api/v1/inventory/K").await.status() == 200
        },
    )
    .await;
    assert_eq!(
        app.pending(STREAM, "inventory").await,
        0,
        "dead letters are acknowledged"
    );

    let letters = dead_letters(&app).await;
    let reasons: BTreeSet<&str> = letters
        .iter()
        .map(|l| l["fields"]["dlq_reason"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "missing_field",
        "invalid_json",
        "unknown_type",
        "invalid_data",
        "invalid_timestamp",
    ]
    .into();
    assert_eq!(reasons, expected);
    for letter in &letters {
        let fields = &letter["fields"];
        assert_eq!(fields["dlq_group"], "inventory");
        assert_eq!(
            fields["dlq_deliveries"], "1",
            "malformed entries are not retried"
        );
        assert!(fields["dlq_error"].as_str().unwrap().len() > 5, "{letter}");
        assert!(fields["dlq_original_id"].as_str().unwrap().contains('-'));
        assert!(
            fields["id"].as_str().unwrap().starts_with('m'),
            "original fields kept: {letter}"
        );
    }

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("troupe_dead_letters_total{")
                && l.contains(r#"reason="invalid_json""#)),
        "{metrics}"
    );
}

#[actix_web::test]
async fn operators_can_replay_and_discard_dead_letters() {
    let app = spawn_app().await;
    // Missing warehouse: dead-lettered; an operator fixes nothing but replays it, and it comes back.
    app.xadd(
        STREAM,
        &[
            ("id", "r1"),
            ("type", "stock.adjusted"),
            ("key", "R"),
            ("data", r#"{"delta":1}"#),
        ],
    )
    .await;
    app.xadd(
        STREAM,
        &[("id", "r2"), ("type", "nope"), ("key", "R"), ("data", "{}")],
    )
    .await;
    eventually(Duration::from_secs(10), "two dead letters", || async {
        app.xlen(DLQ).await == 2
    })
    .await;
    let letters = dead_letters(&app).await;
    let (first, second) = (
        letters[0]["id"].as_str().unwrap(),
        letters[1]["id"].as_str().unwrap(),
    );

    let url = format!("{}/admin/dead-letters/{STREAM}/{second}", app.address);
    assert_eq!(app.client.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(app.client.delete(&url).send().await.unwrap().status(), 404);

    let before = app.xlen(STREAM).await;
    let replay = format!("{}/admin/dead-letters/{STREAM}/{first}/replay", app.address);
    let res = app.client.post(&replay).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.json::<Value>().await.unwrap()["replayed_as"].is_string());
    assert_eq!(app.xlen(STREAM).await, before + 1, "back on its stream");
    // Still malformed, so it is dead-lettered again, without the old dlq_ fields doubled.
    eventually(Duration::from_secs(10), "dead-lettered again", || async {
        app.xlen(DLQ).await == 1
    })
    .await;
    let again = dead_letters(&app).await;
    assert_eq!(again[0]["fields"]["id"], "r1");
    assert_eq!(
        app.client.post(&replay).send().await.unwrap().status(),
        404,
        "already replayed"
    );
    assert_eq!(
        app.get("/admin/dead-letters/no.such.stream").await.status(),
        404
    );
}

#[actix_web::test]
async fn an_entry_deleted_while_pending_on_a_dead_consumer_is_dead_lettered_when_claimed() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.claim_min_idle_ms = 300),
        ..Default::default()
    })
    .await;
    // The app's reader creates the group as it starts.
    let key = app.key(STREAM);
    eventually(
        Duration::from_secs(10),
        "the consumer group exists",
        || async {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async::<Vec<redis::Value>>(&mut app.redis().await)
                .await
                .is_ok_and(|groups| !groups.is_empty())
        },
    )
    .await;
    // A consumer that then died read the entry, and someone deleted it from the stream. In one
    // transaction, so the app's blocked reader never sees it as new.
    let entry_id = "9000000000000-1";
    let (_, _, deleted): (String, redis::Value, u64) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&key)
        .arg(entry_id)
        .arg("id")
        .arg("gone")
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg("inventory")
        .arg("ghost")
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .cmd("XDEL")
        .arg(&key)
        .arg(entry_id)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    eventually(Duration::from_secs(15), "a dead letter", || async {
        app.xlen(DLQ).await == 1
    })
    .await;
    let letter = &dead_letters(&app).await[0];
    assert_eq!(letter["fields"]["dlq_reason"], "deleted", "{letter}");
    assert_eq!(app.pending(STREAM, "inventory").await, 0);

    // Nothing of it is left to put back: a clear refusal, and discarding works.
    let id = letter["id"].as_str().unwrap();
    let replay = format!("{}/admin/dead-letters/{STREAM}/{id}/replay", app.address);
    let res = app.client.post(&replay).send().await.unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "nothing_to_replay", "{body}");
    let discard = format!("{}/admin/dead-letters/{STREAM}/{id}", app.address);
    assert_eq!(
        app.client.delete(&discard).send().await.unwrap().status(),
        204
    );
}

#[actix_web::test]
async fn an_invalid_input_is_dead_lettered_at_once_while_everything_else_applies() {
    let app = spawn_app().await;
    // The second adjustment overflows on_hand: `DomainError::Invalid`, which no retry can fix.
    app.write_adjustments(&[
        Adjustment {
            id: "p1".into(),
            sku: "P",
            delta: i64::MAX,
        },
        Adjustment {
            id: "p2".into(),
            sku: "P",
            delta: 1,
        },
        Adjustment {
            id: "p3".into(),
            sku: "P",
            delta: -1,
        },
        Adjustment {
            id: "q1".into(),
            sku: "Q",
            delta: 4,
        },
    ])
    .await;

    eventually(
        Duration::from_secs(30),
        "the poison entry dead-lettered and the rest applied",
        || async { app.xlen(DLQ).await == 1 && app.pending(STREAM, "inventory").await == 0 },
    )
    .await;
    let letter = &dead_letters(&app).await[0];
    assert_eq!(letter["fields"]["id"], "p2");
    assert_eq!(letter["fields"]["dlq_reason"], "invalid");
    assert_eq!(letter["fields"]["dlq_deliveries"], "1", "not retried");
    assert!(
        letter["fields"]["dlq_error"]
            .as_str()
            .unwrap()
            .contains("overflows"),
        "{letter}"
    );

    // p3 waited behind p2 (same key, order kept) and applied once p2 was out of the way.
    let p: Value = app.get("/api/v1/inventory/P").await.json().await.unwrap();
    assert_eq!(p["on_hand"].as_i64(), Some(i64::MAX - 1));
    assert_eq!(p["version"], 2);
    let q: Value = app.get("/api/v1/inventory/Q").await.json().await.unwrap();
    assert_eq!(q["on_hand"], 4);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let restarts: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("troupe_actor_restarts_total{") && l.contains(r#"actor="reader""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        restarts, 0.0,
        "a bad input restarts nothing: {restarts}\n{metrics}"
    );
}

#[tokio::test]
async fn moving_an_entry_twice_after_a_lost_reply_leaves_one_dead_letter() {
    use troupe::streams::dead_letter::{Reason, move_to_dead_letters};
    use troupe::streams::group::{Consumer, ReadFrom, ensure_group};

    let iso = crate::helpers::Isolation::new().await;
    let mut conn = iso.redis().await;
    let consumer = Consumer {
        stream_key: iso.key("moved.input"),
        group: "g".into(),
        name: "c".into(),
    };
    ensure_group(&mut conn, &consumer.stream_key, "g")
        .await
        .unwrap();
    iso.xadd("moved.input", &[("id", "x1"), ("data", "{}")])
        .await;
    let entries = consumer
        .read(&mut conn, ReadFrom::New, 10, None)
        .await
        .unwrap();
    let reason = Reason {
        code: "invalid_json",
        error: "bad",
        deliveries: 1,
    };
    let dlq = iso.key("moved.input.dlq");
    // The first move's reply is "lost": the caller does it again.
    for expected in [true, false] {
        let moved = move_to_dead_letters(&mut conn, &consumer, &dlq, &entries[0], &reason)
            .await
            .unwrap();
        assert_eq!(moved, expected);
    }
    assert_eq!(iso.xlen("moved.input.dlq").await, 1, "one copy");
    assert_eq!(iso.pending("moved.input", "g").await, 0, "acknowledged");
}

#[actix_web::test]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_and_the_stream_goes_on() {
    let app = spawn_app().await;
    let names: Vec<String> = (0..5_000).map(|i| format!("f{i}")).collect();
    let mut fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    fields.push(("type", "stock.adjusted"));
    app.xadd(STREAM, &fields).await;
    app.write_adjustments(&[Adjustment {
        id: "after-the-wide-one".into(),
        sku: "WIDE-1",
        delta: 3,
    }])
    .await;
    eventually(
        Duration::from_secs(20),
        "the wide entry dead-lettered and the next one applied",
        || async {
            app.get("/api/v1/inventory/WIDE-1").await.status() == 200 && app.xlen(DLQ).await == 1
        },
    )
    .await;
    assert_eq!(
        app.dead_letter_field(DLQ, "fields_dropped").await,
        ["4001"],
        "5,001 fields, the first 1,000 kept"
    );
}
