//! Typed emission to more than one stream: a domain publishes on `<name>.events` and on the
//! extra streams it declares, each event once, and an event for a stream it did not declare
//! fails its input instead of being published anywhere.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe::domain::{Context, Domain, DomainError, NoEvents, Subscription};
use troupe::registry::{Registry, RegistryError};

use crate::helpers::{AppOptions, TestApp, eventually, spawn_app_with};

/// Posts amounts per account; large ones also raise an alert on `ledger.alerts`.
struct Ledger;

const ALERTS: &str = "ledger.alerts";

#[derive(Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
enum LedgerInput {
    #[serde(rename = "ledger.post")]
    Post {
        amount: i64,
        /// Where to send the alert, for the undeclared-stream case; `None`: `ledger.alerts`.
        alert_stream: Option<String>,
    },
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
enum LedgerOutput {
    #[serde(rename = "ledger.posted")]
    Posted { balance: i64 },
    #[serde(rename = "ledger.large_amount")]
    LargeAmount { amount: i64 },
}

impl Domain for Ledger {
    type State = Account;
    type Event = LedgerInput;
    type Output = LedgerOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "ledger"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("ledger.input")]
    }

    fn extra_outputs(&self) -> Vec<&'static str> {
        vec![ALERTS]
    }

    fn handle(
        &self,
        state: &mut Account,
        event: LedgerInput,
        ctx: &mut Context<LedgerOutput>,
    ) -> Result<(), DomainError> {
        let LedgerInput::Post {
            amount,
            alert_stream,
        } = event;
        state.balance = state
            .balance
            .checked_add(amount)
            .ok_or_else(|| DomainError::Invalid("balance overflows".into()))?;
        ctx.emit(LedgerOutput::Posted {
            balance: state.balance,
        });
        if amount >= 100 {
            let key = ctx.key().to_owned();
            let stream = alert_stream.unwrap_or_else(|| ALERTS.to_owned());
            ctx.emit_to(&stream, &key, LedgerOutput::LargeAmount { amount });
        }
        Ok(())
    }
}

async fn ledger_app() -> TestApp {
    spawn_app_with(AppOptions {
        registry: Some(Registry::new().domain(Ledger)),
        configure: Some(|s| s.domains.enabled = vec!["ledger".into()]),
        ..Default::default()
    })
    .await
}

async fn post(app: &TestApp, id: &str, key: &str, data: &str) {
    app.xadd(
        "ledger.input",
        &[
            ("id", id),
            ("type", "ledger.post"),
            ("key", key),
            ("data", data),
        ],
    )
    .await;
}

#[actix_web::test]
async fn events_go_to_the_declared_stream_they_were_emitted_to_each_once() {
    let app = ledger_app().await;
    let amounts = [5, 150, 20, 300, 100, 1];
    for (i, amount) in amounts.iter().enumerate() {
        let key = if i % 2 == 0 { "a" } else { "b" };
        post(
            &app,
            &format!("p-{i}"),
            key,
            &format!(r#"{{"amount":{amount}}}"#),
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "every posting and alert is published",
        || async { app.xlen("ledger.events").await == 6 && app.xlen(ALERTS).await == 3 },
    )
    .await;
    let alerts = app.stream_entries(ALERTS).await;
    let alerted: Vec<(String, Value)> = alerts
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "ledger.large_amount", "{e:?}");
            (e["key"].clone(), serde_json::from_str(&e["data"]).unwrap())
        })
        .collect();
    // Per key in the order applied (keys of different partitions interleave freely).
    let of = |key: &str| -> Vec<Value> {
        alerted
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(
        of("b"),
        [
            serde_json::json!({"amount": 150}),
            serde_json::json!({"amount": 300})
        ]
    );
    assert_eq!(of("a"), [serde_json::json!({"amount": 100})]);
    let posted = app.stream_entries("ledger.events").await;
    assert!(
        posted.iter().all(|e| e["type"] == "ledger.posted"),
        "{posted:?}"
    );
    // One outbox sequence for both streams: every event has its own id, none twice.
    let mut ids: Vec<&String> = posted.iter().chain(&alerts).map(|e| &e["id"]).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
    assert_eq!(
        app.sql_i64("SELECT count(*)::int8 AS v FROM troupe_outbox WHERE stream = 'ledger.alerts'")
            .await,
        3
    );
    // Nothing is left for the relay, so nothing is published twice later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (app.xlen("ledger.events").await, app.xlen(ALERTS).await),
        (6, 3)
    );

    let catalogue: Value = app
        .get("/api-docs/asyncapi.json")
        .await
        .json()
        .await
        .unwrap();
    let alert_channel = &catalogue["channels"][ALERTS];
    assert_eq!(alert_channel["address"], ALERTS, "{catalogue}");
    assert!(
        alert_channel["messages"]["ledger.large_amount"].is_object(),
        "{catalogue}"
    );
    assert_eq!(
        catalogue["operations"]["ledger.send.ledger.alerts"]["action"], "send",
        "{catalogue}"
    );
}

#[actix_web::test]
async fn an_event_for_an_undeclared_stream_fails_its_input_and_publishes_nothing() {
    let app = ledger_app().await;
    post(&app, "ok-1", "c", r#"{"amount":1}"#).await;
    post(
        &app,
        "bad-1",
        "c",
        r#"{"amount":500,"alert_stream":"inventory.events"}"#,
    )
    .await;
    post(&app, "ok-2", "c", r#"{"amount":2}"#).await;
    eventually(
        Duration::from_secs(20),
        "the input emitting to an undeclared stream is dead-lettered",
        || async { app.xlen("ledger.input.dlq").await == 1 },
    )
    .await;
    assert_eq!(
        app.dead_letter_field("ledger.input.dlq", "reason").await,
        ["unstorable"]
    );
    assert!(
        app.dead_letter_field("ledger.input.dlq", "error").await[0].contains("does not declare"),
        "{:?}",
        app.dead_letter_field("ledger.input.dlq", "error").await
    );
    eventually(
        Duration::from_secs(20),
        "the inputs around it are applied",
        || async { app.xlen("ledger.events").await == 2 },
    )
    .await;
    let balances: Vec<Value> = app
        .stream_entries("ledger.events")
        .await
        .iter()
        .map(|e| serde_json::from_str(&e["data"]).unwrap())
        .collect();
    // The failed input changed nothing: the balance goes 1, then 3.
    assert_eq!(
        balances,
        [
            serde_json::json!({"balance": 1}),
            serde_json::json!({"balance": 3})
        ]
    );
    assert_eq!(app.xlen("inventory.events").await, 0);
    assert_eq!(app.xlen(ALERTS).await, 0);
}

#[actix_web::test]
async fn a_stream_key_of_the_wrong_type_publishes_nothing_until_it_is_fixed() {
    let app = ledger_app().await;
    let mut redis = app.redis().await;
    // Someone wrote a plain string where the alerts stream should be.
    let _: () = redis::cmd("SET")
        .arg(app.key(ALERTS))
        .arg("not a stream")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Emits ledger.posted (ledger.events), then ledger.large_amount (ledger.alerts).
    post(&app, "p-1", "a", r#"{"amount":500}"#).await;
    eventually(
        Duration::from_secs(20),
        "the posting is applied",
        || async {
            app.sql_i64("SELECT count(*)::int8 AS v FROM troupe_outbox")
                .await
                == 2
        },
    )
    .await;
    // The relay retries for a while: it must not append the first event again on each try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.xlen("ledger.events").await,
        0,
        "a partial publish was kept"
    );
    let _: () = redis::cmd("DEL")
        .arg(app.key(ALERTS))
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "both events are published once the key is fixed",
        || async { app.xlen(ALERTS).await == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (app.xlen("ledger.events").await, app.xlen(ALERTS).await),
        (1, 1)
    );
}

/// Declares another domain's stream as its own.
struct Squatter;

impl Domain for Squatter {
    type State = Account;
    type Event = NoEvents;
    type Output = LedgerOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "squatter"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        Vec::new()
    }

    fn extra_outputs(&self) -> Vec<&'static str> {
        vec!["ledger.events"]
    }

    fn handle(
        &self,
        _: &mut Account,
        event: NoEvents,
        _: &mut Context<LedgerOutput>,
    ) -> Result<(), DomainError> {
        match event {}
    }
}

#[test]
fn a_stream_has_one_writer_and_a_valid_name() {
    let clash = Registry::new().domain(Ledger).domain(Squatter);
    match clash.check(&Default::default()) {
        Err(RegistryError::Output { domain, stream, .. }) => {
            assert_eq!((domain, stream.as_str()), ("squatter", "ledger.events"))
        }
        other => panic!("two writers of ledger.events were accepted: {other:?}"),
    }
    assert!(
        Registry::new()
            .domain(Ledger)
            .check(&Default::default())
            .is_ok()
    );
    for stream in [
        "ledger.input",
        "ledger.input.dlq",
        "troupe:relay:x",
        "a\u{0}b",
        "",
    ] {
        let stream: &'static str = Box::leak(stream.to_owned().into_boxed_str());
        let refused = Registry::new()
            .domain(Declaring(stream))
            .check(&Default::default());
        assert!(
            matches!(refused, Err(RegistryError::Output { .. })),
            "{stream:?} accepted: {refused:?}"
        );
    }
}

/// A ledger-like domain declaring the extra output it is given.
struct Declaring(&'static str);

impl Domain for Declaring {
    type State = Account;
    type Event = LedgerInput;
    type Output = LedgerOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "declaring"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("ledger.input")]
    }

    fn extra_outputs(&self) -> Vec<&'static str> {
        vec![self.0]
    }

    fn handle(
        &self,
        _: &mut Account,
        _: LedgerInput,
        _: &mut Context<LedgerOutput>,
    ) -> Result<(), DomainError> {
        Ok(())
    }
}
