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

#[path = "support/shop.rs"]
mod shop;
#[path = "support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use redis::AsyncCommands;

use shop::Shop;
use support::env_or;

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
    let shop = Shop::start("troupe_bench_saga", concurrency, &[]).await?;
    let (redis_url, prefix) = (shop.redis_url.clone(), shop.prefix.clone());

    let clock = Rc::new(RefCell::new(Clock::default()));
    let watcher = actix_rt::spawn(watch_settlements(
        redis_url.clone(),
        format!("{prefix}orders.events"),
        clock.clone(),
    ));
    let shop = Rc::new(shop);
    let place = |n: usize| {
        let shop = shop.clone();
        let clock = clock.clone();
        async move {
            let sent = Instant::now();
            let id = shop.place(n).await?;
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
    if let Ok(shop) = Rc::try_unwrap(shop) {
        shop.stop().await;
    }
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
