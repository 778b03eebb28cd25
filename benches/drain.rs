//! Drain benchmark (see BENCHMARKS.md): writes one load of adjustments into two fresh streams,
//! drains one with the hand-written baseline consumer (`drain/baseline.rs`) and the other with
//! the release `troupe serve`, each into its own fresh database, and reports both rates, their
//! ratio, and whether each ended with exactly the expected totals.
//!
//! `scripts/dev.sh bench` runs it; settings via environment: BENCH_EVENTS (200000),
//! BENCH_SKUS (10000), BENCH_ORDER (`baseline-first` or `troupe-first`), and any TROUPE__*
//! variable for the service under test. The service binary is the `troupe` that cargo builds
//! with this bench (`CARGO_BIN_EXE_troupe`: `<target dir>/release/troupe`, wherever
//! `CARGO_TARGET_DIR` puts the target dir, `target/` by default).

#[path = "drain/baseline.rs"]
mod baseline;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use redis::aio::MultiplexedConnection;

use support::{env_or, fresh_database};

/// Expected totals per SKU: (`on_hand`, `version` = number of events).
type Totals = HashMap<String, (i64, i64)>;

#[derive(diesel::QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    on_hand: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    version: i64,
}

/// The settings of one bench run.
struct Bench {
    events: usize,
    skus: usize,
    redis_url: String,
    admin_url: String,
    binary: &'static Path,
    /// Key prefix of the service under test.
    troupe_prefix: String,
    /// Key prefix of the baseline's copy of the load.
    baseline_prefix: String,
}

/// The load, generated once and written to both streams.
struct Load {
    /// (SKU, delta) per entry, in stream order.
    entries: Vec<(String, i64)>,
    expected: Totals,
}

/// What one consumer's drain measured.
struct Drain {
    seconds: f64,
    /// SKUs found in its database.
    skus: usize,
    exact: bool,
    /// Peak RSS of the consumer's process, where it has one of its own (Troupe).
    peak_rss_mib: Option<f64>,
}

impl Drain {
    fn rate(&self, events: usize) -> f64 {
        events as f64 / self.seconds
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let bench = Bench {
        events: env_or("BENCH_EVENTS", 200_000),
        skus: env_or("BENCH_SKUS", 10_000),
        redis_url: std::env::var("TROUPE__REDIS__URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        admin_url: std::env::var("TROUPE__DATABASE__URL")
            .unwrap_or_else(|_| "postgres://troupe:troupe@127.0.0.1:5432/troupe".into()),
        binary: Path::new(env!("CARGO_BIN_EXE_troupe")),
        troupe_prefix: format!("bench:{run}:"),
        baseline_prefix: format!("bench-baseline:{run}:"),
    };
    if !bench.binary.exists() {
        bail!(
            "{} not found: run the bench with `cargo bench --bench drain`, which builds it",
            bench.binary.display()
        );
    }
    // Which build is measured: in a checkout edited while the bench runs, compare this with
    // the history of the sources.
    let built: chrono::DateTime<chrono::Utc> = std::fs::metadata(bench.binary)?.modified()?.into();
    println!(
        "troupe binary: {} (linked {})",
        bench.binary.display(),
        built.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let client = redis::Client::open(bench.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let result = run_bench(&bench, &redis).await;
    // Leave nothing behind in Redis: every key under this run's prefixes.
    for prefix in [&bench.troupe_prefix, &bench.baseline_prefix] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await?;
        }
    }
    result
}

/// Loads both streams, drains them in the order BENCH_ORDER names and prints the comparison.
async fn run_bench(bench: &Bench, redis: &MultiplexedConnection) -> Result<()> {
    let troupe_first = match std::env::var("BENCH_ORDER").as_deref() {
        Err(_) | Ok("baseline-first") => false,
        Ok("troupe-first") => true,
        Ok(other) => bail!("BENCH_ORDER={other}: expected baseline-first or troupe-first"),
    };
    let load = generate(bench.events, bench.skus);
    let troupe_stream = format!("{}inventory.adjustments", bench.troupe_prefix);
    let baseline_stream = format!("{}inventory.adjustments", bench.baseline_prefix);
    let load_started = Instant::now();
    for stream in [&baseline_stream, &troupe_stream] {
        write_load(redis.clone(), stream, &load).await?;
    }
    println!(
        "loaded {} entries over {} SKUs into two streams in {:.1?} (order: {})",
        bench.events,
        bench.skus,
        load_started.elapsed(),
        if troupe_first {
            "troupe first"
        } else {
            "baseline first"
        }
    );

    let (troupe, base) = if troupe_first {
        let troupe = run_troupe(bench, redis, &troupe_stream, &load.expected).await?;
        let base = run_baseline(bench, redis, &baseline_stream, &load.expected).await?;
        (troupe, base)
    } else {
        let base = run_baseline(bench, redis, &baseline_stream, &load.expected).await?;
        let troupe = run_troupe(bench, redis, &troupe_stream, &load.expected).await?;
        (troupe, base)
    };

    println!("---");
    for (name, drain) in [("baseline", &base), ("troupe", &troupe)] {
        println!(
            "{name:<8} drained {} events in {:.2} s: {:.0} events/s; exact totals ({} SKUs): {}{}",
            bench.events,
            drain.seconds,
            drain.rate(bench.events),
            drain.skus,
            if drain.exact { "yes" } else { "NO" },
            drain
                .peak_rss_mib
                .map(|mib| format!("; peak RSS {mib:.1} MiB"))
                .unwrap_or_default()
        );
    }
    println!(
        "ratio troupe/baseline: {:.3}",
        troupe.rate(bench.events) / base.rate(bench.events)
    );
    if !base.exact || !troupe.exact {
        bail!("totals differ from what was written");
    }
    Ok(())
}

/// A fixed pseudo-random spread of SKUs and deltas (−10..=10), and the totals it must produce.
fn generate(events: usize, skus: usize) -> Load {
    let mut entries = Vec::with_capacity(events);
    let mut expected = Totals::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..events {
        // xorshift
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let sku = format!("SKU-{:05}", state % skus as u64);
        let delta = (state >> 32) as i64 % 21 - 10;
        let e = expected.entry(sku.clone()).or_default();
        e.0 += delta;
        e.1 += 1;
        entries.push((sku, delta));
    }
    Load { entries, expected }
}

/// Writes the load as `stock.adjusted` envelopes (docs/events.md) into `stream`.
async fn write_load(mut redis: MultiplexedConnection, stream: &str, load: &Load) -> Result<()> {
    for (chunk_no, chunk) in load.entries.chunks(5_000).enumerate() {
        let mut pipe = redis::pipe();
        for (i, (sku, delta)) in chunk.iter().enumerate() {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("id")
                .arg(format!("b{}", chunk_no * 5_000 + i))
                .arg("type")
                .arg("stock.adjusted")
                .arg("key")
                .arg(sku)
                .arg("data")
                .arg(format!(r#"{{"delta":{delta},"warehouse":"w1"}}"#))
                .ignore();
        }
        pipe.exec_async(&mut redis).await?;
    }
    Ok(())
}

/// (entries read, lag, pending) of consumer group `group` of `stream`, if it exists yet.
async fn group_state(
    mut conn: MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Option<(usize, Option<usize>, usize)> {
    let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.groups
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| (g.entries_read.unwrap_or(0), g.lag, g.pending))
}

/// The drain as seen from outside, identically for both consumers: polls the group until it
/// has read something (every 2 ms), then until it has read all `events` entries with none left
/// pending (every 5 ms). Returns the two instants.
async fn wait_drained(
    redis: &MultiplexedConnection,
    stream: &str,
    group: &str,
    events: usize,
) -> Result<(Instant, Instant)> {
    let wait_started = Instant::now();
    let first_read = loop {
        if let Some((read, _, _)) = group_state(redis.clone(), stream, group).await
            && read > 0
        {
            break Instant::now();
        }
        if wait_started.elapsed() > Duration::from_secs(60) {
            bail!("group {group} read nothing within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let drained = loop {
        if let Some((read, lag, pending)) = group_state(redis.clone(), stream, group).await
            && read >= events
            && lag == Some(0)
            && pending == 0
        {
            break Instant::now();
        }
        if first_read.elapsed() > Duration::from_secs(600) {
            bail!("group {group} not drained within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok((first_read, drained))
}

/// CPU time (user + system) of a process from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // After the command name: state, ppid, … utime (12th), stime (13th), in clock ticks
            // (100 per second on Linux).
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Drains the baseline's stream with the baseline consumer into `troupe_bench_baseline`.
async fn run_baseline(
    bench: &Bench,
    redis: &MultiplexedConnection,
    stream: &str,
    expected: &Totals,
) -> Result<Drain> {
    let db_url = fresh_database(&bench.admin_url, "troupe_bench_baseline").await?;
    let target = baseline::Target {
        redis_url: &bench.redis_url,
        stream,
        group: "baseline",
        database_url: db_url.as_str(),
        events: bench.events,
    };
    baseline::prepare(&target).await?;
    let cpu_before = cpu_seconds("self");
    let (commits, (first_read, drained)) = tokio::try_join!(
        baseline::run(&target),
        wait_drained(redis, stream, target.group, bench.events)
    )?;
    let cpu = cpu_seconds("self") - cpu_before;
    let found = baseline::totals(target.database_url).await?;
    let drain = Drain {
        seconds: drained.duration_since(first_read).as_secs_f64(),
        skus: found.len(),
        exact: &found == expected,
        peak_rss_mib: None,
    };
    println!(
        "baseline: drained {} events in {:.2} s: {:.0} events/s",
        bench.events,
        drain.seconds,
        drain.rate(bench.events)
    );
    println!(
        "baseline: CPU time of the bench process while it ran (baseline + poller): {cpu:.2} s"
    );
    println!(
        "baseline: commit per batch: mean {:.6} over {} (BEGIN, upsert, COMMIT)",
        commits.mean_seconds, commits.batches
    );
    Ok(drain)
}

/// Starts the release `troupe serve` on the Troupe stream's prefix with database
/// `troupe_bench`, measures its drain, its peak RSS and CPU time, then stops it.
async fn run_troupe(
    bench: &Bench,
    redis: &MultiplexedConnection,
    stream: &str,
    expected: &Totals,
) -> Result<Drain> {
    let db_url = fresh_database(&bench.admin_url, "troupe_bench").await?;
    // A port we know, so its metrics can be read at the end.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(bench.binary)
        .arg("serve")
        .arg("--config-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .env("TROUPE__DATABASE__URL", db_url.as_str())
        .env("TROUPE__REDIS__URL", &bench.redis_url)
        .env("TROUPE__REDIS__KEY_PREFIX", &bench.troupe_prefix)
        .env("TROUPE__INSTANCE__ID", "bench-1")
        .env("TROUPE__HTTP__PORT", port.to_string())
        .env(
            "TROUPE__TELEMETRY__LOG_FILTER",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?.to_string();

    let (first_read, drained) = tokio::select! {
        timing = wait_drained(redis, stream, "inventory", bench.events) => timing?,
        status = child.wait() => bail!("troupe serve exited during the drain: {}", status?),
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
    let cpu = cpu_seconds(&pid);
    child.start_kill()?;
    let _ = child.wait().await;

    // Exact totals.
    let mut conn = AsyncPgConnection::establish(db_url.as_str()).await?;
    let rows: Vec<TotalsRow> = diesel::sql_query(
        "SELECT key, (state->>'on_hand')::int8 AS on_hand, version FROM troupe_entity_state WHERE domain = 'inventory'",
    )
    .load(&mut conn)
    .await?;
    let found: Totals = rows
        .into_iter()
        .map(|r| (r.key, (r.on_hand, r.version)))
        .collect();
    let drain = Drain {
        seconds: drained.duration_since(first_read).as_secs_f64(),
        skus: found.len(),
        exact: &found == expected,
        peak_rss_mib: Some(peak_rss_kb as f64 / 1024.0),
    };
    println!(
        "troupe: drained {} events in {:.2} s: {:.0} events/s",
        bench.events,
        drain.seconds,
        drain.rate(bench.events)
    );
    println!(
        "troupe: peak RSS of troupe serve: {:.1} MiB",
        peak_rss_kb as f64 / 1024.0
    );
    println!("troupe: CPU time of troupe serve (start-up to drained): {cpu:.2} s");
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
            println!(
                "troupe: {what}: mean {:.6} over {count} ({name})",
                sum / count
            );
        }
    }
    Ok(drain)
}
