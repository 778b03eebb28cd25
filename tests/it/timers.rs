//! Durable timers on real Redis and Postgres: a test-only domain whose events schedule and
//! cancel timers, and whose timers count their firings.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::actors::runtime::start_domain;
use troupe::domain::{Context, Domain, DomainError, NoEvents, Subscription, TimerId};
use troupe::store::StoreError;
use troupe::store::batch::{BatchCommit, commit};
use troupe::store::entities::EntityWrite;
use troupe::streams::RedisClients;

use crate::helpers::child::ChildService;
use crate::helpers::{AppOptions, Isolation, TestApp, eventually, spawn_app_with};

/// Schedules `count` timers per `reminder.set`; counts the firings per key.
pub struct Reminders;

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Reminder {
    pending: Vec<TimerId>,
    rings: u64,
    ring_ids: Vec<String>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum ReminderEvent {
    #[serde(rename = "reminder.set")]
    Set {
        after_ms: u64,
        #[serde(default = "one")]
        count: u32,
        #[serde(default)]
        fail: bool,
    },
    #[serde(rename = "reminder.cancel")]
    Cancel {},
}

#[derive(Serialize, Deserialize)]
pub struct Ring {
    fail: bool,
}

impl Domain for Reminders {
    type State = Reminder;
    type Event = ReminderEvent;
    type Output = NoEvents;
    type Timer = Ring;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "reminders"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("reminders.input")]
    }

    fn handle(
        &self,
        state: &mut Reminder,
        event: ReminderEvent,
        ctx: &mut Context<NoEvents, Ring>,
    ) -> Result<(), DomainError> {
        match event {
            ReminderEvent::Set {
                after_ms,
                count,
                fail,
            } => {
                for _ in 0..count {
                    let id = ctx.schedule(Duration::from_millis(after_ms), Ring { fail });
                    state.pending.push(id);
                }
            }
            ReminderEvent::Cancel {} => {
                for id in state.pending.drain(..) {
                    ctx.cancel(&id);
                }
            }
        }
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut Reminder,
        timer: Ring,
        ctx: &mut Context<NoEvents, Ring>,
    ) -> Result<(), DomainError> {
        if timer.fail {
            return Err(DomainError::Failed("this ring always fails".into()));
        }
        let id = ctx.input().id.clone();
        state.pending.retain(|pending| pending.as_str() != id);
        state.rings += 1;
        state.ring_ids.push(id);
        Ok(())
    }
}

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.timer_poll_ms = 50;
            s.runtime.max_deliveries = 3;
            s.runtime.backoff_initial_ms = 20;
            s.runtime.backoff_max_ms = 100;
        }),
        ..Default::default()
    })
    .await
}

async fn set(app: &Isolation, id: &str, key: &str, data: &str) {
    app.xadd(
        "reminders.input",
        &[
            ("id", id),
            ("type", "reminder.set"),
            ("key", key),
            ("data", data),
        ],
    )
    .await;
}

async fn rings(app: &Isolation) -> i64 {
    app.sql_i64(
        "SELECT COALESCE(SUM((state->>'rings')::int8), 0)::int8 AS v FROM troupe_entity_state \
         WHERE domain = 'reminders'",
    )
    .await
}

async fn stored_timers(app: &Isolation) -> i64 {
    app.sql_i64("SELECT count(*)::int8 AS v FROM troupe_timer WHERE domain = 'reminders'")
        .await
}

#[actix_web::test]
async fn a_timer_fires_once_also_when_the_process_dies_between_schedule_and_fire() {
    let app = app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let first = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    set(&app, "s1", "r1", r#"{"after_ms": 3000}"#).await;
    eventually(Duration::from_secs(10), "the timer stored", || async {
        stored_timers(&app).await == 1
    })
    .await;
    assert_eq!(rings(&app).await, 0, "not due yet");
    // Dies before the timer is due: nothing of the first instance runs any more.
    first.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let second = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the timer fired", || async {
        rings(&app).await == 1
    })
    .await;
    assert_eq!(stored_timers(&app).await, 0, "a fired timer is removed");
    let r1 = second.handle.get("r1").await.unwrap().unwrap();
    assert!(r1.state.pending.is_empty());
    let [timer_id] = r1.state.ring_ids.as_slice() else {
        panic!("{:?}", r1.state.ring_ids);
    };
    let recorded = app
        .sql_i64(&format!(
            "SELECT count(*)::int8 AS v FROM troupe_applied_input \
             WHERE domain = 'reminders' AND input_id = '{timer_id}'"
        ))
        .await;
    assert_eq!(recorded, 1, "the firing is recorded like any applied input");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rings(&app).await, 1, "fired once");
    second.abort();
}

/// Every firing is recorded once: as many applied-input records as rings, none twice.
async fn assert_each_timer_fired_once(iso: &Isolation, expected: i64) {
    assert_eq!(rings(iso).await, expected, "rings");
    assert_eq!(stored_timers(iso).await, 0, "timers left");
    let distinct = iso
        .sql_i64(
            "SELECT count(DISTINCT id)::int8 AS v FROM troupe_entity_state, \
             jsonb_array_elements_text(state->'ring_ids') AS id WHERE domain = 'reminders'",
        )
        .await;
    assert_eq!(distinct, expected, "every ring by a different timer");
    let recorded = iso
        .sql_i64(
            "SELECT count(*)::int8 AS v FROM troupe_applied_input a WHERE domain = 'reminders' \
             AND EXISTS (SELECT 1 FROM troupe_entity_state s, jsonb_array_elements_text(s.state->'ring_ids') AS id \
                         WHERE s.domain = 'reminders' AND id = a.input_id)",
        )
        .await;
    assert_eq!(recorded, expected, "each firing recorded once");
}

#[actix_web::test]
async fn timers_fire_exactly_once_across_kill_9_of_the_real_process() {
    let iso = Isolation::new().await;
    let env = [("TROUPE__RUNTIME__TIMER_POLL_MS", "50")];
    let first = ChildService::serving_test_domains(&iso, "reminders", &env).await;
    // Killed after the timers are stored and before they are due.
    for i in 0..100 {
        set(
            &iso,
            &format!("a{i}"),
            &format!("a{i}"),
            r#"{"after_ms": 1500}"#,
        )
        .await;
    }
    eventually(Duration::from_secs(30), "100 timers stored", || async {
        stored_timers(&iso).await == 100
    })
    .await;
    first.kill().await;
    assert_eq!(rings(&iso).await, 0, "none was due before the kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rings(&iso).await, 0, "nothing fires without a process");

    let second = ChildService::serving_test_domains(&iso, "reminders", &env).await;
    eventually(
        Duration::from_secs(30),
        "the overdue timers fire",
        || async { rings(&iso).await == 100 },
    )
    .await;
    // Killed while timers fire: 1,000 due together, the process dies once the first rang.
    for i in 0..100 {
        set(
            &iso,
            &format!("b{i}"),
            &format!("b{i}"),
            r#"{"after_ms": 1000, "count": 10}"#,
        )
        .await;
    }
    eventually(
        Duration::from_secs(30),
        "1,000 more timers stored",
        || async { stored_timers(&iso).await == 1_000 },
    )
    .await;
    eventually(Duration::from_secs(30), "firing has begun", || async {
        rings(&iso).await > 100
    })
    .await;
    second.kill().await;
    let rang_before_kill = rings(&iso).await;
    tracing::info!(rang_before_kill, "killed while firing");

    let third = ChildService::serving_test_domains(&iso, "reminders", &env).await;
    eventually(Duration::from_secs(60), "every timer fired", || async {
        rings(&iso).await == 1_100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_timer_fired_once(&iso, 1_100).await;
    third.kill().await;
}

#[actix_web::test]
async fn a_cancelled_timer_does_not_fire() {
    let app = app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let domain = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    set(&app, "s1", "r2", r#"{"after_ms": 1500, "count": 2}"#).await;
    app.xadd(
        "reminders.input",
        &[
            ("id", "c1"),
            ("type", "reminder.cancel"),
            ("key", "r2"),
            ("data", "{}"),
        ],
    )
    .await;
    eventually(Duration::from_secs(10), "the cancel applied", || async {
        app.sql_i64(
            "SELECT count(*)::int8 AS v FROM troupe_applied_input \
             WHERE domain = 'reminders' AND input_id = 'c1'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(stored_timers(&app).await, 0, "cancelled with the input");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rings(&app).await, 0);
    domain.abort();
}

#[actix_web::test]
async fn thousands_of_timers_due_at_once_each_fire_exactly_once() {
    let app = app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let domain = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    let (keys, per_key): (u32, u32) = (50, 20);
    for k in 0..keys {
        let data = format!(r#"{{"after_ms": 1000, "count": {per_key}}}"#);
        set(&app, &format!("s{k}"), &format!("k{k}"), &data).await;
    }
    let total = i64::from(keys * per_key);
    eventually(Duration::from_secs(60), "every timer fired", || async {
        rings(&app).await >= total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rings(&app).await, total, "none fired twice");
    assert_eq!(stored_timers(&app).await, 0);
    let distinct = app
        .sql_i64(
            "SELECT count(DISTINCT id)::int8 AS v FROM troupe_entity_state, \
             jsonb_array_elements_text(state->'ring_ids') AS id WHERE domain = 'reminders'",
        )
        .await;
    assert_eq!(distinct, total, "each firing is another timer");
    let k0 = domain.handle.get("k0").await.unwrap().unwrap();
    assert_eq!(k0.state.rings, u64::from(per_key));
    assert_eq!(k0.version, 1 + u64::from(per_key), "one input per firing");
    domain.abort();
}

#[actix_web::test]
async fn a_timer_that_keeps_failing_is_set_aside_and_the_others_still_fire() {
    let app = app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let domain = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    set(&app, "s1", "bad", r#"{"after_ms": 100, "fail": true}"#).await;
    set(&app, "s2", "good", r#"{"after_ms": 300}"#).await;
    eventually(
        Duration::from_secs(15),
        "the failing timer set aside",
        || async {
            app.sql_i64(
                "SELECT count(*)::int8 AS v FROM troupe_timer \
             WHERE domain = 'reminders' AND dead_reason IS NOT NULL AND attempts = 3",
            )
            .await
                == 1
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the good one fired", || async {
        rings(&app).await == 1
    })
    .await;
    let bad = domain.handle.get("bad").await.unwrap().unwrap();
    assert_eq!(bad.version, 1, "nothing of a failed firing applied");
    assert_eq!(
        stored_timers(&app).await,
        1,
        "the dead one is kept for the operator"
    );
    domain.abort();
}

#[actix_web::test]
async fn firing_a_timer_that_is_gone_commits_nothing() {
    // What a firing racing a cancel (or another instance's firing) meets: the row is gone.
    let app = app().await;
    let mut conn = app.db().await;
    let unit = BatchCommit {
        domain: "reminders",
        applied: vec!["t-gone"],
        entities: vec![EntityWrite {
            key: "r9".into(),
            state_json: r#"{"pending": [], "rings": 1, "ring_ids": ["t-gone"]}"#.into(),
            version: 1,
            expected_version: 0,
        }],
        fired_timers: vec!["t-gone"],
        ..Default::default()
    };
    match commit(&mut conn, &unit).await {
        Err(StoreError::AlreadyApplied(ids)) => assert_eq!(ids, ["t-gone"]),
        other => panic!("expected AlreadyApplied, got {other:?}"),
    }
    let written = app
        .sql_i64("SELECT count(*)::int8 AS v FROM troupe_entity_state WHERE domain = 'reminders'")
        .await;
    assert_eq!(written, 0, "rolled back");
    let recorded = app
        .sql_i64("SELECT count(*)::int8 AS v FROM troupe_applied_input WHERE domain = 'reminders'")
        .await;
    assert_eq!(recorded, 0, "rolled back");
}

#[actix_web::test]
async fn dead_timers_are_pruned_after_the_dead_letter_retention() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.timer_poll_ms = 50;
            s.runtime.max_deliveries = 1;
            s.runtime.dead_letter_retention_seconds = 1;
            s.runtime.stats_interval_ms = 200;
        }),
        ..Default::default()
    })
    .await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let domain = start_domain(Reminders, &app.settings, &redis)
        .await
        .unwrap();
    set(&app, "s1", "bad", r#"{"after_ms": 50, "fail": true}"#).await;
    eventually(Duration::from_secs(10), "the timer set aside", || async {
        app.sql_i64(
            "SELECT count(*)::int8 AS v FROM troupe_applied_input \
             WHERE domain = 'reminders' AND input_id = 's1'",
        )
        .await
            == 1
            && stored_timers(&app).await == 1
    })
    .await;
    eventually(Duration::from_secs(15), "the dead timer pruned", || async {
        stored_timers(&app).await == 0
    })
    .await;
    assert_eq!(rings(&app).await, 0, "it never fired");
    domain.abort();
}
