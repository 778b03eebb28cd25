//! WebSocket delivery (`GET /ws`) with a real client: topics, resume, fan-out across
//! instances, slow clients, limits and malformed frames.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::child::ChildService;
use crate::helpers::shop::{SHOP, spawn_shop};
use crate::helpers::ws::{Ended, WsClient};
use crate::helpers::{AppOptions, Isolation, eventually, spawn_app, spawn_app_with};

/// `on_hand` of a `stock.changed` event frame.
fn on_hand(event: &Value) -> i64 {
    assert_eq!(event["type"], "stock.changed", "{event}");
    event["data"]["on_hand"].as_i64().expect("on_hand")
}

/// The `stock.changed` frames among `events` (a crossing of zero adds a `stock.replenished`).
fn changes(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e["type"] == "stock.changed")
        .collect()
}

/// Reads event frames until `n` `stock.changed` ones came.
async fn next_changes(client: &mut WsClient, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(changes(client.events(1).await));
    }
    out
}

#[actix_web::test]
async fn an_order_is_seen_pending_then_confirmed_on_its_customer_and_order_topics() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let customer = shop.customers.register("Ada", 10_000).await.id;
    shop.inventory.set("WS-1", 5).await;
    eventually(Duration::from_secs(10), "the wallet opens", || async {
        shop.customers.wallet(&customer).await.is_some()
    })
    .await;
    let mut watcher = WsClient::connect(&app.address).await;
    watcher
        .subscribe(&format!("customer:{customer}"), None)
        .await;

    let order = shop.orders.place(&customer, &[("WS-1", 2, 150)]).await;
    let mut order_watcher = WsClient::connect(&app.address).await;
    order_watcher
        .subscribe(&format!("order:{}", order.id), Some("0-0"))
        .await;

    // pending, the capture, confirmed: in the order they happened, each once.
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "notification.created");
                assert_eq!(e["data"]["notification"]["order_id"], order.id.as_str());
                e["data"]["notification"]["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let events = watcher.events(3).await;
    assert_eq!(
        kinds(&events),
        ["order_pending", "payment_captured", "order_confirmed"]
    );
    assert!(
        events
            .iter()
            .all(|e| e["topic"] == format!("customer:{customer}"))
    );
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]));
    // The order's own topic, subscribed after the order was placed, replayed from the start.
    let on_order = order_watcher.events(3).await;
    assert_eq!(kinds(&on_order), kinds(&events));
    assert_eq!(on_order[0]["id"], events[0]["id"]);
    watcher.assert_quiet(Duration::from_millis(500)).await;
}

#[actix_web::test]
async fn a_resumed_subscription_gets_exactly_what_it_missed_then_live_events() {
    let app = spawn_app().await;
    let inventory = app.inventory();
    let mut client = WsClient::connect(&app.address).await;
    client.subscribe("sku:R-1", None).await;
    for _ in 0..3 {
        inventory.adjust("R-1", 1).committed().await;
    }
    let seen = next_changes(&mut client, 3).await;
    assert_eq!(seen.iter().map(on_hand).collect::<Vec<_>>(), [1, 2, 3]);
    let last = seen[2]["id"].as_str().unwrap().to_owned();
    drop(client);

    // Missed while away; then more arrive while the client resumes.
    for _ in 0..4 {
        inventory.adjust("R-1", 1).committed().await;
    }
    let writer = {
        let inventory = inventory.clone();
        actix_web::rt::spawn(async move {
            for _ in 0..40 {
                inventory.adjust("R-1", 1).committed().await;
            }
        })
    };
    let mut client = WsClient::connect(&app.address).await;
    client.subscribe("sku:R-1", Some(&last)).await;
    writer.await.unwrap();
    let resumed = next_changes(&mut client, 44).await;
    // No gap, no duplicate, in order: exactly 4..=47.
    assert_eq!(
        resumed.iter().map(on_hand).collect::<Vec<_>>(),
        (4..=47).collect::<Vec<_>>()
    );
    client.assert_quiet(Duration::from_millis(500)).await;
}

#[actix_web::test]
async fn a_since_older_than_the_kept_history_is_refused_as_too_old() {
    let app = spawn_app().await;
    let inventory = app.inventory();
    let mut client = WsClient::connect(&app.address).await;
    client.subscribe("sku:T-1", None).await;
    for _ in 0..3 {
        inventory.adjust("T-1", 1).committed().await;
    }
    let first = next_changes(&mut client, 3).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Retention trims the stream (as `runtime.output_retention_seconds` would).
    let _: u64 = redis::cmd("XTRIM")
        .arg(app.key("inventory.events"))
        .arg("MAXLEN")
        .arg(1)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let mut late = WsClient::connect(&app.address).await;
    let answer = late.subscribe_answer("sku:T-1", Some(&first)).await;
    assert_eq!(answer["code"], "too_old", "{answer}");
    assert_eq!(answer["topic"], "sku:T-1");
    // Not subscribed: a subscription without since works on the same connection.
    late.subscribe("sku:T-1", None).await;
    inventory.adjust("T-1", 1).committed().await;
    assert_eq!(on_hand(&next_changes(&mut late, 1).await[0]), 4);
}

#[actix_web::test]
async fn clients_of_two_instances_each_get_every_event_of_their_topics() {
    let app = spawn_app().await;
    // The same data, another instance (its own consumer name).
    let instance = format!("{}-b", app.settings.instance.id);
    let second =
        ChildService::serving(&app.isolation, &[("TROUPE__INSTANCE__ID", &instance)]).await;
    let second_address = second.address.clone().unwrap();

    let mut on_first = WsClient::connect(&app.address).await;
    let mut on_second = WsClient::connect(&second_address).await;
    on_first.subscribe("sku:F-1", None).await;
    on_second.subscribe("sku:F-1", None).await;
    on_second.subscribe("sku:F-2", None).await;
    // Writes through both instances (each SKU through one: an entity is written by the
    // instance that holds it).
    for _ in 0..10 {
        app.inventory().adjust("F-1", 1).committed().await;
        second.inventory().adjust("F-2", 1).committed().await;
    }
    let f1_first: Vec<i64> = next_changes(&mut on_first, 10)
        .await
        .iter()
        .map(on_hand)
        .collect();
    assert_eq!(f1_first, (1..=10).collect::<Vec<_>>());
    let on_second_events = next_changes(&mut on_second, 20).await;
    for sku in ["F-1", "F-2"] {
        let levels: Vec<i64> = on_second_events
            .iter()
            .filter(|e| e["topic"] == format!("sku:{sku}"))
            .map(on_hand)
            .collect();
        assert_eq!(levels, (1..=10).collect::<Vec<_>>(), "{sku}");
    }
    on_first.assert_quiet(Duration::from_millis(300)).await;
    second.kill().await;
}

#[actix_web::test]
async fn a_slow_client_is_disconnected_while_a_fast_one_keeps_receiving() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.ws.send_queue = 256;
            s.ws.read_count = 32;
        }),
        ..AppOptions::default()
    })
    .await;
    let mut slow = WsClient::connect_with_small_buffer(&app.address, 4096).await;
    slow.subscribe("sku:S-1", None).await;
    let mut fast = WsClient::connect(&app.address).await;
    fast.subscribe("sku:S-1", None).await;
    // The fast client reads all along; it must see every event, in order, to the last (-1).
    let fast = actix_web::rt::spawn(async move {
        let mut received = 0;
        loop {
            let level = on_hand(&fast.events(1).await[0]);
            if level == -1 {
                return received;
            }
            received += 1;
            assert_eq!(level, received, "the fast client misses nothing");
        }
    });

    // Events as the inventory domain publishes them, written straight to its stream so there
    // are enough to fill the slow client's socket buffers.
    let key = app.key("inventory.events");
    let mut redis = app.redis().await;
    let xadd = |pipe: &mut redis::Pipeline, n: i64| {
        let data = json!({"sku": "S-1", "on_hand": n, "reserved": 0, "available": n,
                          "change": "adjustment"});
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("slow-{n}"))
            .arg("type")
            .arg("stock.changed")
            .arg("key")
            .arg("S-1")
            .arg("data")
            .arg(data.to_string())
            .ignore();
    };
    let mut written = 0i64;
    let dropped = "troupe_ws_dropped_total{reason=\"slow_client\"}";
    // About 10,000 events a second: a pace the fast client keeps up with on a busy machine,
    // while the slow one's socket buffers fill.
    while app.metric(dropped).await < 1.0 {
        assert!(
            written < 400_000,
            "the slow client is dropped before 400,000 events"
        );
        let mut pipe = redis::pipe();
        for _ in 0..250 {
            written += 1;
            xadd(&mut pipe, written);
        }
        let () = pipe.query_async(&mut redis).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The fast one keeps receiving after the slow one is gone.
    let mut pipe = redis::pipe();
    xadd(&mut pipe, -1);
    let () = pipe.query_async(&mut redis).await.unwrap();
    assert_eq!(fast.await.unwrap(), written);
    // The slow one finds, after what it had buffered, a 1008 close (or, if even the close
    // frame could not be queued, the end of the connection).
    let (ended, buffered) = slow.ended(Duration::from_secs(30)).await;
    assert!(
        (buffered as i64) < written,
        "the slow client got {buffered} of {written}"
    );
    match ended {
        Ended::Closed(code, reason) => {
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("too slow"), "{reason}");
        }
        Ended::Dropped => {}
    }
}

#[actix_web::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_up() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.ws.max_subscriptions = 2),
        ..AppOptions::default()
    })
    .await;
    let mut client = WsClient::connect(&app.address).await;
    let long_topic = format!("sku:{}", "x".repeat(3000));
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_message"),
        (Message::text("{}"), "invalid_message"),
        (Message::text(r#"{"op":"dance"}"#), "invalid_message"),
        (Message::text(r#"{"op":"subscribe"}"#), "invalid_message"),
        (
            Message::text(r#"{"op":"subscribe","topic":"sku:A","x":1}"#),
            "invalid_message",
        ),
        (Message::binary(vec![0u8, 1, 2]), "invalid_message"),
        (
            Message::text(r#"{"op":"subscribe","topic":"user:1"}"#),
            "unknown_topic",
        ),
        (
            Message::text(r#"{"op":"subscribe","topic":"nocolon"}"#),
            "invalid_topic",
        ),
        (
            Message::text(r#"{"op":"subscribe","topic":"sku:a\u0000b"}"#),
            "invalid_topic",
        ),
        (
            Message::text(json!({"op":"subscribe","topic": long_topic}).to_string()),
            "invalid_topic",
        ),
        (
            Message::text(r#"{"op":"subscribe","topic":"sku:A","since":"yesterday"}"#),
            "invalid_since",
        ),
        (
            Message::text(
                r#"{"op":"subscribe","topic":"sku:A","since":"99999999999999999999999-0"}"#,
            ),
            "invalid_since",
        ),
        (
            Message::text(r#"{"op":"unsubscribe","topic":"sku:A"}"#),
            "not_subscribed",
        ),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        client.send_raw(frame).await;
        let answer = client.next().await.expect("the connection stays open");
        assert_eq!(answer["op"], "error", "{shown}: {answer}");
        assert_eq!(answer["code"], code, "{shown}: {answer}");
        assert!(answer["message"].as_str().unwrap().len() < 1000, "{answer}");
    }
    client.subscribe("sku:A", None).await;
    assert_eq!(
        client.subscribe_answer("sku:A", None).await["code"],
        "already_subscribed"
    );
    client.subscribe("sku:B", None).await;
    assert_eq!(
        client.subscribe_answer("sku:C", None).await["code"],
        "too_many_subscriptions"
    );
    client
        .send(json!({"op": "unsubscribe", "topic": "sku:B"}))
        .await;
    assert_eq!(
        client.next().await.unwrap(),
        json!({"op": "unsubscribed", "topic": "sku:B"})
    );
    client.subscribe("sku:C", None).await;
    client.send(json!({"op": "ping"})).await;
    assert_eq!(client.next().await.unwrap(), json!({"op": "pong"}));
    // Still delivering.
    app.inventory().adjust("A", 2).committed().await;
    assert_eq!(on_hand(&next_changes(&mut client, 1).await[0]), 2);
    assert!(
        app.metric("troupe_ws_dropped_total{reason=\"invalid_message\"}")
            .await
            >= 6.0
    );

    // A frame over ws.max_frame_bytes ends the connection with 1009.
    let huge = json!({"op": "subscribe", "topic": "x".repeat(20_000)}).to_string();
    client.send_raw(Message::text(huge)).await;
    let (ended, _) = client.ended(Duration::from_secs(10)).await;
    assert!(matches!(ended, Ended::Closed(1009, _)), "{ended:?}");
}

#[actix_web::test]
async fn two_thousand_connections_each_receive_their_own_events() {
    let app = spawn_app().await;
    const N: usize = 2000;
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut client = WsClient::connect(&app.address).await;
        client.subscribe(&format!("sku:M-{i}"), None).await;
        clients.push(client);
    }
    let skus: Vec<String> = (0..N).map(|i| format!("M-{i}")).collect();
    let adjustments: Vec<crate::helpers::Adjustment> = skus
        .iter()
        .enumerate()
        .map(|(i, sku)| crate::helpers::Adjustment {
            id: format!("m-{i}"),
            sku,
            delta: i as i64 + 1,
        })
        .collect();
    app.write_adjustments(&adjustments).await;
    let mut readers = Vec::with_capacity(N);
    for (i, mut client) in clients.into_iter().enumerate() {
        readers.push(actix_web::rt::spawn(async move {
            let events = client.events(2).await;
            // Its own SKU only: the crossing of zero, then the level.
            for event in &events {
                assert_eq!(event["topic"], format!("sku:M-{i}"), "{event}");
            }
            assert_eq!(events[0]["type"], "stock.replenished");
            assert_eq!(on_hand(&events[1]), i as i64 + 1);
            client.assert_quiet(Duration::from_millis(200)).await;
        }));
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(app.metric("troupe_ws_messages_sent_total").await >= (2 * N) as f64);
    assert!(app.metric("troupe_ws_delivery_seconds_count").await >= (2 * N) as f64);
}

#[actix_web::test]
async fn connections_past_the_limit_are_refused_with_503() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.ws.max_connections = 2),
        ..AppOptions::default()
    })
    .await;
    let first = WsClient::connect(&app.address).await;
    let _second = WsClient::connect(&app.address).await;
    assert_eq!(WsClient::refused_status(&app.address).await, Some(503));
    drop(first);
    eventually(
        Duration::from_secs(5),
        "a closed connection frees its place",
        || async { WsClient::refused_status(&app.address).await.is_none() },
    )
    .await;
    // Not an upgrade at all: a JSON 400.
    let plain = app.get("/ws").await;
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_websocket", "{body}");
    let post = app
        .client
        .post(format!("{}/ws", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
}

#[actix_web::test]
async fn a_client_that_answers_no_ping_is_closed_after_two_intervals() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.ws.heartbeat_seconds = 1),
        ..AppOptions::default()
    })
    .await;
    let mut silent = WsClient::connect(&app.address).await;
    let mut alive = WsClient::connect(&app.address).await;
    // The silent client reads nothing (so answers no ping) for 4 s; the live one keeps reading
    // (tungstenite answers pings as it reads).
    alive.assert_quiet(Duration::from_secs(4)).await;
    let (ended, _) = silent.ended(Duration::from_secs(5)).await;
    match ended {
        Ended::Closed(code, reason) => {
            assert_eq!(code, 1000);
            assert!(reason.contains("no pong"), "{reason}");
        }
        Ended::Dropped => panic!("expected a close frame"),
    }
    alive.send(json!({"op": "ping"})).await;
    assert_eq!(alive.next().await.unwrap(), json!({"op": "pong"}));
}

#[actix_web::test]
async fn on_shutdown_clients_are_closed_with_1001() {
    let isolation = Isolation::new().await;
    let service = ChildService::serving(&isolation, &[]).await;
    let mut client = WsClient::connect(service.address.as_deref().unwrap()).await;
    client.subscribe("sku:X", None).await;
    // The process's own gauge (in-process apps share one recorder).
    assert_eq!(service.metric("troupe_ws_connections").await, 1.0);
    service.signal("TERM").await;
    let (ended, _) = client.ended(Duration::from_secs(10)).await;
    assert!(matches!(ended, Ended::Closed(1001, _)), "{ended:?}");
    assert!(service.wait().await.success());
}
