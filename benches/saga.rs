//! Saga benchmark (see BENCHMARKS.md): the release `troupe serve` with the whole shop on a fresh
//! database, driven through its REST API.
//!
//! 1. Throughput: BENCH_ORDERS orders (10000) placed by BENCH_CONCURRENCY clients (64) as fast
//!    as they are accepted; orders per second from the first POST to the last order settled.
//! 2. Latency: orders offered at BENCH_RATE per second (500) for BENCH_SECONDS (10); time from
//!    sending each POST to its order settling (p50, p99, max).
//!
//! An order counts as settled when its `order.confirmed` or `order.rejected` reaches
//! `orders.events` (read with XREAD as it is published), so measuring adds no polling load. Every
//! order is in stock and paid for, so every one is confirmed; the run checks that too.
//! `scripts/dev.sh bench saga` runs it.

#[path = "support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use support::{env_or, fresh_database};

const CUSTOMERS: usize = 200;
const SKUS: usize = 100;

/// When each order was sent, and when it settled, by order id.
#[derive(Default)]
struct Clock {
    sent: HashMap<String, Instant>,
    settled: HashMap<String, (Instant, bool)>,
}

#[actix_rt::main]
async fn main() -> Result<()> {
    let orders = env_or("BENCH_ORDERS", 10_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);
    let rate = env_or("BENCH_RATE", 500);
    let seconds = env_or("BENCH_SECONDS", 10);
    let redis_url =
        std::env::var("TROUPE__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let admin_url = std::env::var("TROUPE__DATABASE__URL")
        .unwrap_or_else(|_| "postgres://troupe:troupe@127.0.0.1:5432/troupe".into());
    let db_url = fresh_database(&admin_url, "troupe_bench_saga").await?;
    let prefix = format!("bench-saga-{}:", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("serve")
        .arg("--config-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .env_remove("TROUPE_ENV")
        .env("TROUPE__DATABASE__URL", db_url.as_str())
        .env("TROUPE__REDIS__URL", &redis_url)
        .env("TROUPE__REDIS__KEY_PREFIX", &prefix)
        .env("TROUPE__INSTANCE__ID", "bench-saga")
        .env("TROUPE__HTTP__PORT", port.to_string())
        .env(
            "TROUPE__TELEMETRY__LOG_FILTER",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("troupe serve")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200)
    {
        if Instant::now() > deadline {
            bail!("troupe serve did not become ready");
        }
        if let Some(status) = child.try_wait()? {
            bail!("troupe serve exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Customers with credit to spare and SKUs with stock to spare: every order confirms.
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for n in 0..CUSTOMERS {
        let response = http
            .post(format!("{base}/api/v1/customers"))
            .json(
                &json!({"name": format!("Bench {n}"), "email": format!("bench{n}@example.com"),
                          "credit_cents": 1_000_000_000_000_i64}),
            )
            .send()
            .await?;
        let body: Value = response.json().await?;
        customers.push(body["id"].as_str().context("customer id")?.to_owned());
    }
    for n in 0..SKUS {
        http.put(format!("{base}/api/v1/inventory/SKU-{n}"))
            .json(&json!({"on_hand": 1_000_000_000}))
            .send()
            .await?
            .error_for_status()?;
    }
    let last = customers.last().context("customers")?.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/api/v1/customers/{last}/wallet"))
        .send()
        .await?
        .status()
        != 200
    {
        if Instant::now() > deadline {
            bail!("wallets did not open");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let clock = Rc::new(RefCell::new(Clock::default()));
    let watcher = actix_rt::spawn(watch_settlements(
        redis_url.clone(),
        format!("{prefix}orders.events"),
        clock.clone(),
    ));
    let place = |n: usize| {
        let http = http.clone();
        let url = format!("{base}/api/v1/orders");
        let customer = customers[n % customers.len()].clone();
        let clock = clock.clone();
        async move {
            let body = json!({"customer_id": customer, "items": [
                {"sku": format!("SKU-{}", n % SKUS), "quantity": 1, "unit_price_cents": 100},
                {"sku": format!("SKU-{}", (n + 1) % SKUS), "quantity": 2, "unit_price_cents": 50}]});
            let sent = Instant::now();
            let response = http.post(&url).json(&body).send().await?;
            if response.status() != 202 {
                bail!(
                    "order {n}: {} {}",
                    response.status(),
                    response.text().await?
                );
            }
            let order: Value = response.json().await?;
            let id = order["id"].as_str().context("order id")?.to_owned();
            clock.borrow_mut().sent.insert(id.clone(), sent);
            Ok::<String, anyhow::Error>(id)
        }
    };

    // 1. Throughput.
    let started = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..orders)
        .map(&place)
        .buffer_unordered(concurrency)
        .collect::<Vec<Result<String>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let accepted = started.elapsed();
    let settled_at = wait_settled(&clock, &ids, Duration::from_secs(300)).await?;
    let elapsed = settled_at.duration_since(started).as_secs_f64();
    let confirmed = count_confirmed(&clock, &ids);
    println!(
        "saga: throughput: {orders} orders from {concurrency} clients accepted in {:.2} s ({:.0}/s), all settled in {elapsed:.2} s: {:.0} orders/s through the saga ({confirmed} confirmed)",
        accepted.as_secs_f64(),
        orders as f64 / accepted.as_secs_f64(),
        orders as f64 / elapsed
    );
    if confirmed != orders {
        bail!(
            "{} of {orders} orders were not confirmed",
            orders - confirmed
        );
    }

    // 2. Latency at a fixed offered rate.
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    let offered = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        tasks.push(actix_rt::spawn(place(orders + n)));
    }
    let offered_for = offered.elapsed().as_secs_f64();
    // Past capacity, commands wait in line until their ask times out (504): counted, not fatal.
    let mut ids = Vec::with_capacity(total);
    let mut refused = 0;
    for task in tasks {
        match task.await? {
            Ok(id) => ids.push(id),
            Err(e) => {
                refused += 1;
                if refused == 1 {
                    println!("saga: first refused order: {e:#}");
                }
            }
        }
    }
    if ids.is_empty() {
        bail!("no order of the latency phase was accepted");
    }
    wait_settled(&clock, &ids, Duration::from_secs(120)).await?;
    let mut latencies: Vec<f64> = {
        let clock = clock.borrow();
        ids.iter()
            .map(|id| {
                let sent = clock.sent[id];
                let (settled, _) = clock.settled[id];
                settled.saturating_duration_since(sent).as_secs_f64() * 1000.0
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "saga: latency at {rate} orders/s offered ({total} orders over {offered_for:.1} s): POST to settled p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} accepted and confirmed, {refused} refused)",
        at(0.50),
        at(0.99),
        at(1.0),
        count_confirmed(&clock, &ids)
    );
    watcher.abort();
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(())
}

/// Reads `stream` from the start with XREAD and records when each order's settling event
/// (`order.confirmed`, `order.rejected`) arrives.
async fn watch_settlements(
    redis_url: String,
    stream: String,
    clock: Rc<RefCell<Clock>>,
) -> Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
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
                let (Some(kind), Some(order)) = (field("type"), field("key")) else {
                    continue;
                };
                match kind.as_str() {
                    "order.confirmed" => clock.borrow_mut().settled.insert(order, (now, true)),
                    "order.rejected" => clock.borrow_mut().settled.insert(order, (now, false)),
                    _ => None,
                };
            }
        }
    }
}

async fn wait_settled(
    clock: &Rc<RefCell<Clock>>,
    ids: &[String],
    limit: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let latest = {
            let clock = clock.borrow();
            ids.iter()
                .map(|id| clock.settled.get(id).map(|(at, _)| *at))
                .collect::<Option<Vec<Instant>>>()
                .and_then(|settled| settled.into_iter().max())
        };
        if let Some(latest) = latest {
            return Ok(latest);
        }
        if Instant::now() > deadline {
            let clock = clock.borrow();
            let open = ids
                .iter()
                .filter(|id| !clock.settled.contains_key(*id))
                .count();
            bail!("{open} orders did not settle within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_confirmed(clock: &Rc<RefCell<Clock>>, ids: &[String]) -> usize {
    let clock = clock.borrow();
    ids.iter()
        .filter(|id| matches!(clock.settled.get(*id), Some((_, true))))
        .count()
}
