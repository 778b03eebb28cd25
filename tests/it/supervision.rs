//! A user's own domain on the runtime's public API: a handler that panics on one chosen entry.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe::actors::runtime::start_domain;
use troupe::domain::{Context, Domain, DomainError, NoEvents, Subscription};
use troupe::streams::RedisClients;

use crate::helpers::{Adjustment, AppOptions, eventually, spawn_app, spawn_app_with};

/// Counts events per key; panics on an event whose data says `"boom": true`.
struct Tally;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
enum TallyEvent {
    #[serde(rename = "tally.hit")]
    Hit { boom: bool },
}

impl Domain for Tally {
    type State = Count;
    type Event = TallyEvent;
    type Output = NoEvents;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "tally"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("tally.hits")]
    }

    fn handle(
        &self,
        state: &mut Count,
        event: TallyEvent,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        let TallyEvent::Hit { boom } = event;
        assert!(!boom, "boom requested");
        state.n += 1;
        Ok(())
    }

    fn execute(
        &self,
        _: &mut Count,
        command: Self::Command,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        match command {}
    }
}

#[actix_web::test]
async fn a_panicking_handler_is_retried_in_process_then_dead_lettered() {
    let app = spawn_app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let tally = start_domain(Tally, &app.settings, &redis).await.unwrap();

    for i in 0..20 {
        let boom = if i == 7 { "true" } else { "false" };
        let data = format!(r#"{{"boom":{boom}}}"#);
        let key = format!("k{}", i % 4);
        app.xadd(
            "tally.hits",
            &[
                ("id", &format!("h{i}")),
                ("type", "tally.hit"),
                ("key", &key),
                ("data", &data),
            ],
        )
        .await;
    }
    eventually(
        Duration::from_secs(30),
        "the panicking entry dead-lettered",
        || async {
            app.xlen("tally.hits.dlq").await == 1 && app.pending("tally.hits", "tally").await == 0
        },
    )
    .await;

    let total = app.sql_i64("SELECT SUM((state->>'n')::int8)::int8 AS v FROM troupe_entity_state WHERE domain = 'tally'").await;
    assert_eq!(total, 19, "every other entry applied exactly once");
    let k3 = tally.handle.get("k3").await.unwrap().unwrap();
    assert_eq!(k3.state.n, 4, "k3 lost only the poison entry");

    let letters: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(app.key("tally.hits.dlq"))
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let letter = &letters[0].1;
    assert!(
        letter["dlq_error"].contains("boom requested"),
        "the panic message is the recorded error: {letter:?}"
    );
    assert_eq!(letter["dlq_reason"], "max_deliveries");
    assert_eq!(
        letter["dlq_deliveries"], "5",
        "retried up to max_deliveries"
    );
    let metrics = troupe::telemetry::metrics::recorder().render();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("troupe_actor_restarts_total{")
                && l.contains(r#"domain="tally""#)),
        "retries restart no actor: the restart budget is for real crashes\n{metrics}"
    );
    assert!(tally.handle.status().is_ok());
    tally.abort();
}

#[actix_web::test]
async fn too_many_restarts_fail_the_domain_visibly_in_readiness() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.max_deliveries = 1_000;
            s.runtime.max_restarts = 3;
            s.runtime.backoff_initial_ms = 10;
            s.runtime.backoff_max_ms = 20;
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    app.write_adjustments(&[Adjustment {
        id: "x1".into(),
        sku: "X",
        delta: 1,
    }])
    .await;
    eventually(Duration::from_secs(20), "the domain applies", || async {
        app.get("/api/v1/inventory/X").await.status() == 200
    })
    .await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    // An operator's mistake the reader cannot get past: the stream's key replaced by a string.
    // Every read fails (WRONGTYPE, not an outage), and every restart fails again.
    let stream = app.key("inventory.adjustments");
    let _: () = redis::pipe()
        .atomic()
        .del(&stream)
        .set(&stream, "not a stream")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "readiness reports the failed domain",
        || async { app.get("/health/ready").await.status() == 503 },
    )
    .await;
    let body: Value = app.get("/health/ready").await.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("domain inventory"),
        "{body}"
    );
    assert_eq!(
        body["error"]["details"]["checks"]["domains"]["inventory"]["ok"],
        false
    );
    // (`troupe_domain_up` is not asserted here: in-process tests share one metrics recorder,
    // and every other test's inventory domain sets the same series to 1 when it starts.)
    let url = format!("{}/api/v1/inventory/Y/adjustments", app.address);
    let res = app
        .client
        .post(url)
        .json(&serde_json::json!({"delta": 1, "warehouse": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "a failed domain refuses commands");
    assert_eq!(
        app.get("/health/live").await.status(),
        503,
        "liveness fails too, so that an orchestrator restarts the process"
    );
}

#[actix_web::test]
async fn recovery_keeps_a_keys_order_behind_a_failing_entry() {
    // One entry per batch, so recovery re-reads the pending entries in several chunks.
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.read_count = 1;
            s.runtime.max_deliveries = 3;
        }),
        ..Default::default()
    })
    .await;
    // o2 overflows while on_hand is 5; it would apply after o3 (on_hand -5). In order, o2
    // fails on every delivery, is dead-lettered, and only then o3 applies.
    let adjustment = |id: &str, delta| Adjustment {
        id: id.into(),
        sku: "ORD",
        delta,
    };
    app.write_adjustments(&[
        adjustment("o1", 5),
        adjustment("o2", i64::MAX),
        adjustment("o3", -10),
    ])
    .await;
    eventually(
        Duration::from_secs(30),
        "o2 dead-lettered and nothing pending",
        || async {
            app.xlen("inventory.adjustments.dlq").await == 1
                && app.pending("inventory.adjustments", "inventory").await == 0
        },
    )
    .await;
    let body: Value = app.get("/api/v1/inventory/ORD").await.json().await.unwrap();
    assert_eq!(
        (body["on_hand"].as_i64(), body["version"].as_i64()),
        (Some(-5), Some(2)),
        "o3 applied after o2 gave up, never before it: {body}"
    );
}
