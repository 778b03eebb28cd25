//! A domain that consumes another domain's output stream: it routes events by a field of their
//! data rather than the envelope key, and skips the types it does not handle.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::actors::runtime::start_domain;
use troupe::domain::testkit::{TestKit, event};
use troupe::domain::{Context, Domain, DomainError, Effects, NoEvents, Subscription};
use troupe::streams::RedisClients;

use crate::helpers::{eventually, spawn_app};

/// Totals what each customer paid, from `orders.events` keyed by order.
struct Ledger;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Paid {
    total: i64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
enum LedgerEvent {
    #[serde(rename = "order.paid")]
    Paid { customer: String, amount: i64 },
}

impl Domain for Ledger {
    type State = Paid;
    type Event = LedgerEvent;
    type Output = NoEvents;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "ledger"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("orders.events").skipping_other_types()]
    }

    fn entity_key<'a>(&self, _: &'a str, event: &'a LedgerEvent) -> Cow<'a, str> {
        let LedgerEvent::Paid { customer, .. } = event;
        Cow::Borrowed(customer)
    }

    fn handle(
        &self,
        state: &mut Paid,
        event: LedgerEvent,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        let LedgerEvent::Paid { amount, .. } = event;
        state.total += amount;
        Ok(())
    }

    fn execute(
        &self,
        _: &mut Paid,
        command: Self::Command,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        match command {}
    }
}

#[test]
fn the_test_kit_routes_and_skips_like_the_runtime() {
    let mut kit = TestKit::new(Ledger);
    kit.given([
        event(
            "o1",
            "order.paid",
            serde_json::json!({"customer": "c1", "amount": 5}),
        ),
        event(
            "o2",
            "order.paid",
            serde_json::json!({"customer": "c1", "amount": 7}),
        ),
    ]);
    let skipped = kit.when(event("o3", "order.placed", serde_json::json!({})));
    assert_eq!(skipped, Ok(Effects::default()));
    assert_eq!(kit.state("c1").map(|p| p.total), Some(12));
    assert_eq!(kit.entity("c1").map(|e| e.version), Some(2));
    assert!(kit.state("o1").is_none() && kit.state("o3").is_none());
}

#[actix_web::test]
async fn events_route_by_their_data_and_unhandled_types_are_skipped() {
    let app = spawn_app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let ledger = start_domain(Ledger, &app.settings, &redis).await.unwrap();

    let orders = [("o1", "c1", 5), ("o2", "c1", 7), ("o3", "c2", 1)];
    for (order, customer, amount) in orders {
        app.xadd(
            "orders.events",
            &[
                ("id", &format!("{order}-placed")),
                ("type", "order.placed"),
                ("key", order),
                ("data", "{}"),
            ],
        )
        .await;
        app.xadd(
            "orders.events",
            &[
                ("id", &format!("{order}-paid")),
                ("type", "order.paid"),
                ("key", order),
                (
                    "data",
                    &format!(r#"{{"customer":"{customer}","amount":{amount}}}"#),
                ),
            ],
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "everything acknowledged",
        || async {
            // Entities first: once they exist, so does the group `pending` asks about.
            app.sql_i64("SELECT COUNT(*) AS v FROM troupe_entity_state WHERE domain = 'ledger'")
                .await
                == 2
                && app.pending("orders.events", "ledger").await == 0
        },
    )
    .await;

    let c1 = ledger.handle.get("c1").await.unwrap().unwrap();
    assert_eq!((c1.state.total, c1.version), (12, 2), "both of c1's orders");
    let c2 = ledger.handle.get("c2").await.unwrap().unwrap();
    assert_eq!((c2.state.total, c2.version), (1, 1));
    assert!(
        ledger.handle.get("o1").await.unwrap().is_none(),
        "no entity per order"
    );
    assert_eq!(
        app.xlen("orders.events.dlq").await,
        0,
        "skipped, not dead-lettered"
    );
    let metrics = troupe::telemetry::metrics::recorder().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("troupe_events_total{")
                && l.contains(r#"domain="ledger""#)
                && l.contains(r#"outcome="skipped""#)
                && l.ends_with(" 3")),
        "{metrics}"
    );
    ledger.abort();
}
