//! Timer lateness benchmark (see BENCHMARKS.md): how late durable timers fire, idle and under a
//! full-speed drain, in one run.
//!
//! A bench-only domain (`deadlines`) schedules one timer per `deadline.set` event and records,
//! when it fires, how late it was (`ctx.now()` in `on_timer` minus the due time it stored). Two
//! phases, each in its own fresh database and key prefix, with the release runtime in this
//! process (`start_domain`, default settings plus `TROUPE__*`):
//!
//! - **idle** (the baseline): BENCH_TIMERS timers due at the same instant, nothing else to do;
//! - **loaded**: the same timers, due while the domain drains BENCH_LOAD other events written
//!   right behind them (`load.tick`, each a write to one of 10,000 entities).
//!
//! It prints p50, p99 and max lateness of each phase, their ratio, and checks that every timer
//! fired exactly once. `scripts/dev.sh bench timers` runs it; BENCH_TIMERS (5000), BENCH_LOAD
//! (200000), BENCH_DUE_MS (3000: how long after its scheduling each timer is due).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use troupe::actors::runtime::start_domain;
use troupe::domain::{Context, Domain, DomainError, NoEvents, Subscription};
use troupe::settings::Settings;
use troupe::streams::RedisClients;

use support::{env_or, fresh_database};

struct Deadlines;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Slot {
    /// Load events applied to this entity.
    ticks: u64,
    /// Timers fired on this entity.
    fired: u64,
    /// How late the last one fired, in milliseconds.
    late_ms: i64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
enum Input {
    #[serde(rename = "deadline.set")]
    Set { after_ms: u64 },
    #[serde(rename = "load.tick")]
    Tick {},
}

#[derive(Serialize, Deserialize)]
struct Due {
    at: DateTime<Utc>,
}

impl Domain for Deadlines {
    type State = Slot;
    type Event = Input;
    type Output = NoEvents;
    type Timer = Due;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "deadlines"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("deadlines.input")]
    }

    fn handle(
        &self,
        state: &mut Slot,
        event: Input,
        ctx: &mut Context<NoEvents, Due>,
    ) -> Result<(), DomainError> {
        match event {
            Input::Set { after_ms } => {
                let after = Duration::from_millis(after_ms);
                let at = ctx.now() + chrono::Duration::from_std(after).unwrap_or_default();
                ctx.schedule(after, Due { at });
            }
            Input::Tick {} => state.ticks += 1,
        }
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut Slot,
        timer: Due,
        ctx: &mut Context<NoEvents, Due>,
    ) -> Result<(), DomainError> {
        state.fired += 1;
        state.late_ms = (ctx.now() - timer.at).num_milliseconds();
        Ok(())
    }
}

#[derive(diesel::QueryableByName)]
struct SlotRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    fired: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    late_ms: i64,
}

#[derive(diesel::QueryableByName)]
struct Progress {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    ticks: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    fired: i64,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::Int8)]
    n: i64,
}

/// What one phase measured.
struct Phase {
    p50: i64,
    p99: i64,
    max: i64,
    /// Load still unapplied when the last timer was due (so the timers met the load).
    load_left_at_due: usize,
}

#[actix_web::main]
async fn main() -> Result<()> {
    let timers = env_or("BENCH_TIMERS", 5_000);
    let load = env_or("BENCH_LOAD", 200_000);
    let due_ms = env_or("BENCH_DUE_MS", 3_000) as u64;
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TROUPE__"))
        .collect();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let base = Settings::load_from(&config, None, Some(env)).context("settings")?;
    println!(
        "timers: {timers} due {due_ms} ms after scheduling; loaded phase drains {load} other \
         events behind them; timer_poll_ms = {}, timer_batch = {}",
        base.runtime.timer_poll_ms, base.runtime.timer_batch
    );
    let idle = phase(&base, "idle", timers, 0, due_ms).await?;
    let loaded = phase(&base, "loaded", timers, load, due_ms).await?;
    println!("---");
    for (name, p) in [("idle", &idle), ("loaded", &loaded)] {
        println!(
            "{name:<7} lateness p50 {} ms, p99 {} ms, max {} ms; load events unapplied at the due time: {}",
            p.p50, p.p99, p.max, p.load_left_at_due
        );
    }
    println!(
        "ratio loaded/idle: p50 {:.2}, p99 {:.2}",
        loaded.p50 as f64 / idle.p50.max(1) as f64,
        loaded.p99 as f64 / idle.p99.max(1) as f64
    );
    Ok(())
}

async fn phase(
    base: &Settings,
    name: &str,
    timers: usize,
    load: usize,
    due_ms: u64,
) -> Result<Phase> {
    let mut settings = base.clone();
    let run = uuid::Uuid::new_v4().simple().to_string();
    settings.redis.key_prefix = format!("bench-timers:{run}:");
    settings.instance.id = format!("bench-timers-{name}");
    let db_name = format!("troupe_bench_timers_{name}");
    let db_url = fresh_database(&base.database.url, &db_name).await?;
    settings.database.url = db_url.to_string();
    troupe::store::migrations::run(&settings.database.url).await?;

    let redis_client = redis::Client::open(settings.redis.url.as_str())?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    let stream = format!("{}deadlines.input", settings.redis.key_prefix);
    // The timers first, then the load right behind them: the domain schedules the timers in
    // its first batches and is still draining the load when they come due.
    let mut entries: Vec<(String, String, String)> = (0..timers)
        .map(|i| {
            (
                format!("t{i}"),
                "deadline.set".to_owned(),
                format!(r#"{{"after_ms":{due_ms}}}"#),
            )
        })
        .collect();
    entries.extend((0..load).map(|i| {
        (
            format!("k{}", i % 10_000),
            "load.tick".to_owned(),
            "{}".to_owned(),
        )
    }));
    for (chunk_no, chunk) in entries.chunks(5_000).enumerate() {
        let mut pipe = redis::pipe();
        for (i, (key, event_type, data)) in chunk.iter().enumerate() {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("id")
                .arg(format!("{name}-{}", chunk_no * 5_000 + i))
                .arg("type")
                .arg(event_type)
                .arg("key")
                .arg(key)
                .arg("data")
                .arg(data)
                .ignore();
        }
        pipe.exec_async(&mut redis).await?;
    }

    let clients = RedisClients::connect(&settings.redis).await?;
    let started = Instant::now();
    let running = start_domain(Deadlines, &settings, &clients).await?;
    let mut db = AsyncPgConnection::establish(db_url.as_str()).await?;
    // The last timer is due at most `due_ms` after the domain took it, which is within the
    // first seconds; sample the load left then.
    let mut load_left_at_due = None;
    let deadline = started + Duration::from_secs(600);
    loop {
        let (ticks, fired) = progress(&mut db).await?;
        if load_left_at_due.is_none() && started.elapsed() >= Duration::from_millis(due_ms) {
            load_left_at_due = Some(load.saturating_sub(usize::try_from(ticks).unwrap_or(0)));
        }
        let pending_timers: Vec<Count> = diesel::sql_query(
            "SELECT count(*)::int8 AS n FROM troupe_timer WHERE domain = 'deadlines'",
        )
        .load(&mut db)
        .await?;
        let pending = pending_timers.into_iter().next().map_or(0, |c| c.n);
        let dead: u64 = redis::cmd("XLEN")
            .arg(format!("{stream}.dlq"))
            .query_async(&mut redis)
            .await?;
        if dead > 0 {
            bail!("{name}: {dead} entries were dead-lettered; the load is wrong");
        }
        if ticks as usize >= load && fired as usize >= timers && pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{name}: not done in 600 s: {fired} of {timers} fired, {ticks} of {load} ticks");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.abort();

    let rows = slots(&mut db).await?;
    let timer_rows: Vec<&SlotRow> = rows.iter().filter(|r| r.key.starts_with('t')).collect();
    let once = timer_rows.len() == timers && timer_rows.iter().all(|r| r.fired == 1);
    if !once {
        bail!("{name}: timers did not fire exactly once each");
    }
    let mut late: Vec<i64> = timer_rows.iter().map(|r| r.late_ms).collect();
    late.sort_unstable();
    let at = |q: f64| late[((late.len() as f64 * q).ceil() as usize).clamp(1, late.len()) - 1];
    let p = Phase {
        p50: at(0.50),
        p99: at(0.99),
        max: *late.last().unwrap_or(&0),
        load_left_at_due: load_left_at_due.unwrap_or(0),
    };
    println!(
        "{name}: {timers} timers fired exactly once; lateness p50 {} ms, p99 {} ms, max {} ms ({:.1} s in all)",
        p.p50,
        p.p99,
        p.max,
        started.elapsed().as_secs_f64()
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", settings.redis.key_prefix))
        .query_async(&mut redis)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await?;
    }
    Ok(p)
}

/// Load events applied and timers fired so far, summed in Postgres.
async fn progress(db: &mut AsyncPgConnection) -> Result<(i64, i64)> {
    let rows: Vec<Progress> = diesel::sql_query(
        "SELECT COALESCE(sum((state->>'ticks')::int8), 0)::int8 AS ticks, \
                COALESCE(sum((state->>'fired')::int8), 0)::int8 AS fired \
         FROM troupe_entity_state WHERE domain = 'deadlines'",
    )
    .load(db)
    .await?;
    Ok(rows
        .into_iter()
        .next()
        .map_or((0, 0), |r| (r.ticks, r.fired)))
}

async fn slots(db: &mut AsyncPgConnection) -> Result<Vec<SlotRow>> {
    Ok(diesel::sql_query(
        "SELECT key, COALESCE((state->>'fired')::int8, 0) AS fired, \
                COALESCE((state->>'late_ms')::int8, 0) AS late_ms \
         FROM troupe_entity_state WHERE domain = 'deadlines'",
    )
    .load(db)
    .await?)
}
