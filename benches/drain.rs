//! Drain benchmark (see BENCHMARKS.md): loads adjustments into a fresh stream, starts the
//! release `troupe serve`, and measures how fast it drains them with exactly-once effects.
//!
//! `scripts/dev.sh bench` runs it; settings via environment: BENCH_EVENTS (200000),
//! BENCH_SKUS (10000), and any TROUPE__* variable for the service under test.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(diesel::QueryableByName)]
struct Totals {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    on_hand: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    version: i64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let events = env_or("BENCH_EVENTS", 200_000);
    let skus = env_or("BENCH_SKUS", 10_000);
    let redis_url =
        std::env::var("TROUPE__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let admin_url = std::env::var("TROUPE__DATABASE__URL")
        .unwrap_or_else(|_| "postgres://troupe:troupe@127.0.0.1:5432/troupe".into());
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/troupe");
    if !binary.exists() {
        bail!(
            "{} not found: run `cargo build --release` first",
            binary.display()
        );
    }

    // A fresh database and key prefix.
    let db_name = "troupe_bench";
    let mut admin = AsyncPgConnection::establish(&admin_url)
        .await
        .context("postgres")?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    diesel::sql_query(format!("CREATE DATABASE {db_name}"))
        .execute(&mut admin)
        .await?;
    let mut db_url = url::Url::parse(&admin_url)?;
    db_url.set_path(db_name);
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let stream = format!("{prefix}inventory.adjustments");

    // Load the stream.
    let client = redis::Client::open(redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut expected: HashMap<String, (i64, i64)> = HashMap::new();
    let load_started = Instant::now();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk_start in (0..events).step_by(5_000) {
        let mut pipe = redis::pipe();
        for n in chunk_start..(chunk_start + 5_000).min(events) {
            // xorshift: a fixed pseudo-random spread of SKUs and deltas.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let sku = format!("SKU-{:05}", state % skus as u64);
            let delta = (state >> 32) as i64 % 21 - 10;
            let e = expected.entry(sku.clone()).or_default();
            e.0 += delta;
            e.1 += 1;
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("id")
                .arg(format!("b{n}"))
                .arg("type")
                .arg("stock.adjusted")
                .arg("key")
                .arg(&sku)
                .arg("data")
                .arg(format!(r#"{{"delta":{delta},"warehouse":"w1"}}"#))
                .ignore();
        }
        pipe.exec_async(&mut redis).await?;
    }
    println!(
        "loaded {events} entries over {skus} SKUs in {:.1?}",
        load_started.elapsed()
    );

    // Start the service under test, on a port we know so its metrics can be read at the end.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(&binary)
        .arg("serve")
        .arg("--config-dir")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .env("TROUPE__DATABASE__URL", db_url.as_str())
        .env("TROUPE__REDIS__URL", &redis_url)
        .env("TROUPE__REDIS__KEY_PREFIX", &prefix)
        .env("TROUPE__INSTANCE__ID", "bench-1")
        .env("TROUPE__HTTP__PORT", port.to_string())
        .env(
            "TROUPE__TELEMETRY__LOG_FILTER",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;

    // Wait for the first read, then until everything is acknowledged.
    let group_state = |mut conn: redis::aio::MultiplexedConnection, stream: String| async move {
        let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        info.groups
            .into_iter()
            .find(|g| g.name == "inventory")
            .map(|g| (g.entries_read.unwrap_or(0), g.lag, g.pending))
    };
    let wait_started = Instant::now();
    let first_read = loop {
        if let Some((read, _, _)) = group_state(redis.clone(), stream.clone()).await
            && read > 0
        {
            break Instant::now();
        }
        if wait_started.elapsed() > Duration::from_secs(60) {
            bail!("the service read nothing within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let drained = loop {
        if let Some((read, lag, pending)) = group_state(redis.clone(), stream.clone()).await
            && read >= events
            && lag == Some(0)
            && pending == 0
        {
            break Instant::now();
        }
        if first_read.elapsed() > Duration::from_secs(600) {
            bail!("not drained within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let cpu_seconds = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // After the command name: state, ppid, … utime (12th), stime (13th), in clock ticks
            // (100 per second on Linux).
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0);
    child.start_kill()?;
    let _ = child.wait().await;

    // Exact totals.
    let mut conn = AsyncPgConnection::establish(db_url.as_str()).await?;
    let rows: Vec<Totals> = diesel::sql_query(
        "SELECT key, (state->>'on_hand')::int8 AS on_hand, version FROM troupe_entity_state WHERE domain = 'inventory'",
    )
    .load(&mut conn)
    .await?;
    let exact = rows.len() == expected.len()
        && rows
            .iter()
            .all(|r| expected.get(&r.key) == Some(&(r.on_hand, r.version)));
    let seconds = drained.duration_since(first_read).as_secs_f64();
    println!(
        "drained {events} events in {seconds:.2} s: {:.0} events/s",
        events as f64 / seconds
    );
    println!(
        "peak RSS of troupe serve: {:.1} MiB",
        peak_rss_kb as f64 / 1024.0
    );
    println!("CPU time of troupe serve (start-up to drained): {cpu_seconds:.2} s");
    println!(
        "exact totals ({} SKUs, versions = event counts): {}",
        rows.len(),
        if exact { "yes" } else { "NO" }
    );
    for (name, what) in [
        ("troupe_persist_seconds", "commit per batch"),
        ("troupe_handle_seconds", "handler per event"),
        ("troupe_batch_size", "entries per batch"),
    ] {
        let value = |suffix: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("{name}_{suffix}{{")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let (sum, count) = (value("sum"), value("count"));
        if count > 0.0 {
            println!("{what}: mean {:.6} over {count} ({name})", sum / count);
        }
    }
    // Leave nothing behind in Redis: every key under this run's prefix.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await?;
    }
    if !exact {
        bail!("totals differ from what was written");
    }
    Ok(())
}
