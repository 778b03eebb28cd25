//! WebSocket benchmark (see BENCHMARKS.md): the release `troupe serve` with the whole shop, and
//! real WebSocket clients (tokio-tungstenite) in this process.
//!
//! 1. Latency: one client per seeded customer (200), subscribed to `customer:<id>`; orders
//!    offered at BENCH_RATE per second (500) for BENCH_SECONDS (10). Per order, from sending its
//!    POST to (a) its `order.confirmed` reaching `orders.events` (the saga settled: the
//!    baseline, measured in the same run as `scripts/dev.sh bench saga` does) and (b) its
//!    customer's client receiving the `order_confirmed` notification; p50, p99, max of both.
//! 2. Fan-out: BENCH_CLIENTS (5000) clients subscribed to `sku:FAN`; BENCH_FANOUT_EVENTS (200)
//!    adjustments of FAN written to `inventory.adjustments` at once; frames delivered per second
//!    from the first write until every client has every `stock.changed`.
//!
//! `scripts/dev.sh bench ws` runs it.

#[path = "support/shop.rs"]
mod shop;
#[path = "support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use redis::AsyncCommands as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use shop::Shop;
use support::env_or;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[actix_rt::main]
async fn main() -> Result<()> {
    let rate = env_or("BENCH_RATE", 500);
    let seconds = env_or("BENCH_SECONDS", 10);
    let clients = env_or("BENCH_CLIENTS", 5000);
    let fanout_events = env_or("BENCH_FANOUT_EVENTS", 200);
    let shop = Rc::new(Shop::start("troupe_bench_ws", 64, &[]).await?);
    let ws_url = format!("{}/ws", shop.base.replacen("http://", "ws://", 1));

    // 1. Latency.
    let notified: Rc<RefCell<HashMap<String, Instant>>> = Rc::default();
    let mut readers = Vec::new();
    for customer in &shop.customers {
        let mut socket = subscribed(&ws_url, &format!("customer:{customer}")).await?;
        let notified = notified.clone();
        readers.push(actix_rt::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let now = Instant::now();
                let Ok(event) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let notification = &event["data"]["notification"];
                if matches!(
                    notification["kind"].as_str(),
                    Some("order_confirmed" | "order_rejected")
                ) && let Some(order) = notification["order_id"].as_str()
                {
                    notified.borrow_mut().insert(order.to_owned(), now);
                }
            }
        }));
    }
    let settled: Rc<RefCell<HashMap<String, Instant>>> = Rc::default();
    let watcher = actix_rt::spawn(watch_settled(
        shop.redis_url.clone(),
        format!("{}orders.events", shop.prefix),
        settled.clone(),
    ));
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    let offered = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        let shop = shop.clone();
        tasks.push(actix_rt::spawn(async move {
            let sent = Instant::now();
            shop.place(n).await.map(|id| (id, sent))
        }));
    }
    let offered_for = offered.elapsed().as_secs_f64();
    let mut sent = Vec::with_capacity(total);
    let mut refused = 0;
    for task in tasks {
        match task.await? {
            Ok(order) => sent.push(order),
            Err(e) => {
                refused += 1;
                if refused == 1 {
                    println!("ws: first refused order: {e:#}");
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent
        .iter()
        .any(|(id, _)| !notified.borrow().contains_key(id) || !settled.borrow().contains_key(id))
    {
        if Instant::now() > deadline {
            let missing = sent
                .iter()
                .filter(|(id, _)| !notified.borrow().contains_key(id))
                .count();
            bail!("{missing} orders' terminal notifications did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quantiles = |at: &HashMap<String, Instant>| {
        let mut ms: Vec<f64> = sent
            .iter()
            .map(|(id, sent)| at[id].saturating_duration_since(*sent).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let q = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        (q(0.5), q(0.99), q(1.0))
    };
    let (s50, s99, smax) = quantiles(&settled.borrow());
    let (n50, n99, nmax) = quantiles(&notified.borrow());
    println!(
        "ws: latency at {rate} orders/s offered ({total} orders over {offered_for:.1} s, {} accepted, {refused} refused): POST to settled on orders.events p50 {s50:.1} ms, p99 {s99:.1} ms, max {smax:.1} ms; POST to the WebSocket client receiving the terminal notification p50 {n50:.1} ms, p99 {n99:.1} ms, max {nmax:.1} ms",
        sent.len()
    );
    watcher.abort();
    for reader in readers {
        reader.abort();
    }

    // 2. Fan-out.
    let connect_started = Instant::now();
    let sockets: Vec<Socket> = futures_util::stream::iter(0..clients)
        .map(|_| subscribed(&ws_url, "sku:FAN"))
        .buffer_unordered(100)
        .collect::<Vec<Result<Socket>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    println!(
        "ws: fan-out: {clients} clients connected and subscribed in {:.1} s",
        connect_started.elapsed().as_secs_f64()
    );
    let done: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let mut readers = Vec::with_capacity(clients);
    for mut socket in sockets {
        let done = done.clone();
        readers.push(actix_rt::spawn(async move {
            let mut changes = 0;
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Text(text) = frame
                    && text.contains(r#""type":"stock.changed""#)
                {
                    changes += 1;
                    if changes == fanout_events {
                        done.borrow_mut().push(Instant::now());
                        break;
                    }
                }
            }
        }));
    }
    let mut redis = redis::Client::open(shop.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("{}inventory.adjustments", shop.prefix);
    let mut pipe = redis::pipe();
    for n in 0..fanout_events {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("fan-{n}"))
            .arg("type")
            .arg("stock.adjusted")
            .arg("key")
            .arg("FAN")
            .arg("data")
            .arg(json!({"delta": 1, "warehouse": "w1"}).to_string())
            .ignore();
    }
    let written = Instant::now();
    let () = pipe.query_async(&mut redis).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.borrow().len() < clients {
        if Instant::now() > deadline {
            bail!(
                "{} of {clients} clients got every event",
                done.borrow().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = *done.borrow().iter().max().context("clients")?;
    let first = *done.borrow().iter().min().context("clients")?;
    let elapsed = last.duration_since(written).as_secs_f64();
    let frames = clients * fanout_events;
    println!(
        "ws: fan-out: {fanout_events} events to each of {clients} clients ({frames} frames) in {elapsed:.2} s from the first write: {:.0} frames/s (first client complete after {:.2} s)",
        frames as f64 / elapsed,
        first.duration_since(written).as_secs_f64()
    );
    drop(readers);
    if let Ok(shop) = Rc::try_unwrap(shop) {
        shop.stop().await;
    }
    Ok(())
}

/// A client connected to `url` and subscribed to `topic`.
async fn subscribed(url: &str, topic: &str) -> Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("websocket connect")?;
    socket
        .send(Message::text(
            json!({"op": "subscribe", "topic": topic}).to_string(),
        ))
        .await?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.contains(r#""op":"subscribed""#) => Ok(socket),
        other => bail!("subscribing to {topic}: {other:?}"),
    }
}

/// Records when each order's settling event reaches `stream` (read with XREAD from the start).
async fn watch_settled(
    redis_url: String,
    stream: String,
    settled: Rc<RefCell<HashMap<String, Instant>>>,
) -> Result<()> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut from = "0".to_owned();
    loop {
        let reply: redis::streams::StreamReadReply = conn
            .xread_options(
                &[&stream],
                &[&from],
                &redis::streams::StreamReadOptions::default()
                    .block(100)
                    .count(5_000),
            )
            .await?;
        let now = Instant::now();
        for key in reply.keys {
            for entry in key.ids {
                from = entry.id.clone();
                let field = |name: &str| -> Option<String> {
                    entry
                        .map
                        .get(name)
                        .and_then(|v| redis::from_redis_value(v.clone()).ok())
                };
                if let (Some(kind), Some(order)) = (field("type"), field("key"))
                    && matches!(kind.as_str(), "order.confirmed" | "order.rejected")
                {
                    settled.borrow_mut().insert(order, now);
                }
            }
        }
    }
}
