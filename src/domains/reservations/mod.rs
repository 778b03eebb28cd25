//! Reservations: inventory's coordinator per order. It makes an order's stock all or nothing
//! although its SKUs live in different partitions (and could live on different instances),
//! where the inventory domain itself only ever touches one SKU at a time.
//!
//! For a placed order (`order.placed`) it asks inventory to hold each line
//! (`stock.hold_requested` on `reservations.requests`, keyed by SKU) and collects the answers
//! (`stock.held`, `stock.short`). When every line is held it emits `stock.reserved`; when any is
//! short it emits `stock.rejected` naming the short SKUs and releases the lines that were held.
//! It then follows the order's end: on `order.confirmed` the holds are committed (the units
//! leave the stock), on `order.rejected` they are released, on `order.cancelled` they are
//! released, or restocked if they were already committed. An order that ends while its holds
//! are still being answered releases each hold as it comes in and never reports `stock.reserved`.
//!
//! While answers are outstanding the held units are unavailable to other orders: an order
//! that will be rejected can make a concurrent one short. Nothing is ever oversold.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Context, Domain, DomainError, NoEvents, Subscription};

/// Where the stock requests go (inventory consumes it).
pub const REQUESTS_STREAM: &str = "reservations.requests";

/// The reservations domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reservations;

/// One order's reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Who ordered.
    pub customer_id: String,
    /// The order's total, passed on to payments with `stock.reserved`.
    pub total_cents: i64,
    /// Each line by SKU.
    pub lines: BTreeMap<String, Line>,
    /// Where the reservation stands.
    pub phase: Phase,
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Units.
    pub quantity: i64,
    /// What inventory answered.
    pub hold: Hold,
}

/// What inventory answered for a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Asked, no answer yet.
    Asked,
    /// Held.
    Held,
    /// Not enough stock.
    Short,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No `order.placed` seen yet.
    #[default]
    Unknown,
    /// Holds asked, answers outstanding.
    Holding,
    /// Every line held; `stock.reserved` emitted.
    Reserved,
    /// Some line short; `stock.rejected` emitted, holds released.
    Rejected,
    /// The order ended while answers were outstanding: holds are released as they come.
    Abandoned,
    /// The order was confirmed: holds committed.
    Committed,
    /// Holds released (the order was rejected or cancelled before confirmation).
    Released,
    /// The confirmed order was cancelled: the committed units came back.
    Restocked,
}

/// Events reservations consumes, from `orders.events` and `inventory.events` (other types
/// there are skipped). Only the fields it uses are read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum ReservationsInput {
    /// An order to reserve stock for.
    #[serde(rename = "order.placed")]
    OrderPlaced(PlacedOrder),
    /// The order was confirmed: commit its holds.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed(EndedOrder),
    /// The order was rejected: release its holds.
    #[serde(rename = "order.rejected")]
    OrderRejected(EndedOrder),
    /// The order was cancelled: release, or restock what was committed.
    #[serde(rename = "order.cancelled")]
    OrderCancelled(EndedOrder),
    /// Inventory held a line.
    #[serde(rename = "stock.held")]
    Held(LineAnswer),
    /// Inventory could not hold a line.
    #[serde(rename = "stock.short")]
    Short(LineAnswer),
}

/// What reservations reads of `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct PlacedOrder {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Its lines.
    pub items: Vec<PlacedLine>,
    /// Its total.
    pub total_cents: i64,
}

/// A line of `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct PlacedLine {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
}

/// What reservations reads of the other order events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct EndedOrder {
    /// The order.
    pub order_id: String,
}

/// What reservations reads of `stock.held` and `stock.short`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct LineAnswer {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
}

/// Events reservations emits: the outcomes on `reservations.events` (keyed by order), the
/// stock requests on `reservations.requests` (keyed by SKU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum ReservationsOutput {
    /// Every line of the order is held.
    #[serde(rename = "stock.reserved")]
    Reserved(StockReserved),
    /// Some line could not be held; nothing stays held.
    #[serde(rename = "stock.rejected")]
    Rejected(StockRejected),
    /// Hold a line (to inventory).
    #[serde(rename = "stock.hold_requested")]
    HoldRequested(LineRequest),
    /// Release what the order holds of a SKU (to inventory).
    #[serde(rename = "stock.release_requested")]
    ReleaseRequested(LineRequest),
    /// Commit what the order holds of a SKU (to inventory).
    #[serde(rename = "stock.commit_requested")]
    CommitRequested(LineRequest),
    /// Put back what the order bought of a SKU (to inventory).
    #[serde(rename = "stock.restock_requested")]
    RestockRequested(LineRequest),
}

/// The data of `stock.reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// What to capture.
    pub total_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `stock.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockRejected {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
    /// The SKUs that were short, in order.
    pub short_skus: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of the stock requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units of the line.
    pub quantity: i64,
}

impl Domain for Reservations {
    type State = Reservation;
    type Event = ReservationsInput;
    type Output = ReservationsOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "reservations"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        ["orders.events", "inventory.events"]
            .into_iter()
            .map(|stream| Subscription::new(stream).skipping_other_types())
            .collect()
    }

    fn extra_outputs(&self) -> Vec<&'static str> {
        vec![REQUESTS_STREAM]
    }

    /// Outcomes for the order's domains on `reservations.events`, requests for inventory on
    /// `reservations.requests`.
    fn output_stream_of(&self, event_type: &str) -> Option<String> {
        Some(match event_type {
            "stock.reserved" | "stock.rejected" => crate::domain::output_stream(self.name()),
            _ => REQUESTS_STREAM.to_owned(),
        })
    }

    /// One reservation per order: inventory's answers are keyed by order already, and so are
    /// the order events; routing by the field makes it so whatever the envelope says.
    fn entity_key<'a>(&self, _: &'a str, event: &'a ReservationsInput) -> Cow<'a, str> {
        Cow::Borrowed(match event {
            ReservationsInput::OrderPlaced(order) => &order.order_id,
            ReservationsInput::OrderConfirmed(order)
            | ReservationsInput::OrderRejected(order)
            | ReservationsInput::OrderCancelled(order) => &order.order_id,
            ReservationsInput::Held(answer) | ReservationsInput::Short(answer) => &answer.order_id,
        })
    }

    fn handle(
        &self,
        reservation: &mut Reservation,
        event: ReservationsInput,
        ctx: &mut Context<ReservationsOutput>,
    ) -> Result<(), DomainError> {
        match event {
            ReservationsInput::OrderPlaced(order) => place(reservation, order, ctx),
            ReservationsInput::Held(answer) => answered(reservation, &answer.sku, Hold::Held, ctx),
            ReservationsInput::Short(answer) => {
                answered(reservation, &answer.sku, Hold::Short, ctx)
            }
            ReservationsInput::OrderConfirmed(_) => {
                if reservation.phase == Phase::Reserved {
                    request_all(reservation, ctx, ReservationsOutput::CommitRequested);
                    reservation.phase = Phase::Committed;
                }
                Ok(())
            }
            ReservationsInput::OrderRejected(_) => {
                end_before_confirmation(reservation, ctx);
                Ok(())
            }
            ReservationsInput::OrderCancelled(_) => {
                if reservation.phase == Phase::Committed {
                    request_all(reservation, ctx, ReservationsOutput::RestockRequested);
                    reservation.phase = Phase::Restocked;
                } else {
                    end_before_confirmation(reservation, ctx);
                }
                Ok(())
            }
        }
    }
}

fn place(
    reservation: &mut Reservation,
    order: PlacedOrder,
    ctx: &mut Context<ReservationsOutput>,
) -> Result<(), DomainError> {
    if reservation.phase != Phase::Unknown {
        return Err(DomainError::Invalid(format!(
            "order {} was placed already",
            order.order_id
        )));
    }
    if order.items.is_empty() {
        return Err(DomainError::Invalid("an order without lines".into()));
    }
    reservation.customer_id = order.customer_id;
    reservation.total_cents = order.total_cents;
    for line in order.items {
        if line.quantity <= 0 || reservation.lines.contains_key(&line.sku) {
            return Err(DomainError::Invalid(format!(
                "line {} is repeated or not positive",
                line.sku
            )));
        }
        reservation.lines.insert(
            line.sku,
            Line {
                quantity: line.quantity,
                hold: Hold::Asked,
            },
        );
    }
    reservation.phase = Phase::Holding;
    request_all(reservation, ctx, ReservationsOutput::HoldRequested);
    Ok(())
}

fn answered(
    reservation: &mut Reservation,
    sku: &str,
    hold: Hold,
    ctx: &mut Context<ReservationsOutput>,
) -> Result<(), DomainError> {
    let order_id = ctx.key().to_owned();
    let Some(line) = reservation.lines.get_mut(sku) else {
        return Err(DomainError::Invalid(format!(
            "order {order_id} has no line {sku}"
        )));
    };
    if line.hold != Hold::Asked {
        return Ok(());
    }
    line.hold = hold;
    let quantity = line.quantity;
    match reservation.phase {
        Phase::Holding => {}
        Phase::Abandoned | Phase::Rejected => {
            // The order's fate is settled: a late hold goes straight back.
            if hold == Hold::Held {
                release(ctx, &order_id, sku, quantity);
            }
            return Ok(());
        }
        _ => return Ok(()),
    }
    if reservation.lines.values().any(|l| l.hold == Hold::Asked) {
        return Ok(());
    }
    let at = ctx.input().timestamp;
    let short_skus: Vec<String> = reservation
        .lines
        .iter()
        .filter(|(_, l)| l.hold == Hold::Short)
        .map(|(sku, _)| sku.clone())
        .collect();
    if short_skus.is_empty() {
        reservation.phase = Phase::Reserved;
        ctx.emit(ReservationsOutput::Reserved(StockReserved {
            order_id,
            customer_id: reservation.customer_id.clone(),
            total_cents: reservation.total_cents,
            at,
        }));
    } else {
        reservation.phase = Phase::Rejected;
        for (sku, line) in &reservation.lines {
            if line.hold == Hold::Held {
                release(ctx, &order_id, sku, line.quantity);
            }
        }
        ctx.emit(ReservationsOutput::Rejected(StockRejected {
            order_id,
            customer_id: reservation.customer_id.clone(),
            short_skus,
            at,
        }));
    }
    Ok(())
}

/// The order was rejected or cancelled before it was confirmed: give back what is held.
fn end_before_confirmation(reservation: &mut Reservation, ctx: &mut Context<ReservationsOutput>) {
    match reservation.phase {
        Phase::Holding => {
            let order_id = ctx.key().to_owned();
            for (sku, line) in &reservation.lines {
                if line.hold == Hold::Held {
                    release(ctx, &order_id, sku, line.quantity);
                }
            }
            reservation.phase = Phase::Abandoned;
        }
        Phase::Reserved => {
            request_all(reservation, ctx, ReservationsOutput::ReleaseRequested);
            reservation.phase = Phase::Released;
        }
        // Nothing held (rejected for stock, never placed here, already ended).
        _ => {}
    }
}

fn release(ctx: &mut Context<ReservationsOutput>, order_id: &str, sku: &str, quantity: i64) {
    ctx.emit_to(
        REQUESTS_STREAM,
        sku,
        ReservationsOutput::ReleaseRequested(LineRequest {
            order_id: order_id.to_owned(),
            sku: sku.to_owned(),
            quantity,
        }),
    );
}

fn request_all(
    reservation: &Reservation,
    ctx: &mut Context<ReservationsOutput>,
    request: fn(LineRequest) -> ReservationsOutput,
) {
    let order_id = ctx.key().to_owned();
    for (sku, line) in &reservation.lines {
        ctx.emit_to(
            REQUESTS_STREAM,
            sku,
            request(LineRequest {
                order_id: order_id.clone(),
                sku: sku.clone(),
                quantity: line.quantity,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::testkit::{TestEvent, TestKit, event};

    fn placed(order: &str, lines: &[(&str, i64)]) -> TestEvent {
        let items: Vec<_> = lines
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q, "unit_price_cents": 100}))
            .collect();
        event(
            order,
            "order.placed",
            json!({"order_id": order, "customer_id": "c1", "items": items, "total_cents": 500,
                   "at": "2026-01-01T00:00:00Z"}),
        )
    }

    fn answer(kind: &str, order: &str, sku: &str) -> TestEvent {
        event(
            order,
            kind,
            json!({"order_id": order, "sku": sku, "quantity": 1, "requested": 1, "available": 0}),
        )
    }

    fn order(kind: &str, order: &str) -> TestEvent {
        event(order, kind, json!({"order_id": order, "customer_id": "c1"}))
    }

    fn kinds(effects: &crate::domain::Effects) -> Vec<(String, String)> {
        effects
            .emitted
            .iter()
            .map(|e| (e.event_type.clone(), e.key.clone()))
            .collect()
    }

    fn pair(kind: &str, key: &str) -> (String, String) {
        (kind.to_owned(), key.to_owned())
    }

    #[test]
    fn a_placed_order_asks_for_every_line_and_reserves_when_all_are_held() {
        let mut kit = TestKit::new(Reservations);
        let effects = kit.when(placed("o1", &[("A", 1), ("B", 2)])).unwrap();
        assert_eq!(
            kinds(&effects),
            [
                pair("stock.hold_requested", "A"),
                pair("stock.hold_requested", "B")
            ]
        );
        assert!(
            effects
                .emitted
                .iter()
                .all(|e| e.stream.as_deref() == Some(REQUESTS_STREAM))
        );
        assert!(
            kit.when(answer("stock.held", "o1", "A"))
                .unwrap()
                .emitted
                .is_empty()
        );
        let effects = kit.when(answer("stock.held", "o1", "B")).unwrap();
        assert_eq!(kinds(&effects), [pair("stock.reserved", "o1")]);
        assert_eq!(effects.emitted[0].stream, None);
        assert_eq!(effects.emitted[0].data["total_cents"], 500);
        let effects = kit.when(order("order.confirmed", "o1")).unwrap();
        assert_eq!(
            kinds(&effects),
            [
                pair("stock.commit_requested", "A"),
                pair("stock.commit_requested", "B")
            ]
        );
        let effects = kit.when(order("order.cancelled", "o1")).unwrap();
        assert_eq!(
            kinds(&effects),
            [
                pair("stock.restock_requested", "A"),
                pair("stock.restock_requested", "B")
            ]
        );
    }

    #[test]
    fn one_short_line_rejects_the_order_and_releases_the_others() {
        let mut kit = TestKit::new(Reservations);
        kit.given([
            placed("o1", &[("A", 1), ("B", 2), ("C", 1)]),
            answer("stock.held", "o1", "A"),
            answer("stock.short", "o1", "B"),
        ]);
        let effects = kit.when(answer("stock.held", "o1", "C")).unwrap();
        assert_eq!(
            kinds(&effects),
            [
                pair("stock.release_requested", "A"),
                pair("stock.release_requested", "C"),
                pair("stock.rejected", "o1")
            ]
        );
        assert_eq!(effects.emitted[2].data["short_skus"], json!(["B"]));
        // The order's rejection that follows releases nothing more.
        assert!(
            kit.when(order("order.rejected", "o1"))
                .unwrap()
                .emitted
                .is_empty()
        );
    }

    #[test]
    fn an_order_that_ends_while_holding_releases_each_hold_once() {
        let mut kit = TestKit::new(Reservations);
        kit.given([
            placed("o1", &[("A", 1), ("B", 1)]),
            answer("stock.held", "o1", "A"),
        ]);
        let effects = kit.when(order("order.rejected", "o1")).unwrap();
        assert_eq!(kinds(&effects), [pair("stock.release_requested", "A")]);
        let effects = kit.when(answer("stock.held", "o1", "B")).unwrap();
        assert_eq!(
            kinds(&effects),
            [pair("stock.release_requested", "B")],
            "a late hold goes back, and no stock.reserved"
        );
        assert_eq!(kit.state("o1").unwrap().phase, Phase::Abandoned);
    }

    #[test]
    fn a_reserved_order_that_is_declined_releases_everything() {
        let mut kit = TestKit::new(Reservations);
        kit.given([placed("o1", &[("A", 1)]), answer("stock.held", "o1", "A")]);
        let effects = kit.when(order("order.rejected", "o1")).unwrap();
        assert_eq!(kinds(&effects), [pair("stock.release_requested", "A")]);
        assert!(
            kit.when(order("order.cancelled", "o1"))
                .unwrap()
                .emitted
                .is_empty()
        );
    }

    /// Reservations with one mistake: it sends its outcome to the requests stream.
    struct Misrouting;

    impl Domain for Misrouting {
        type State = Reservation;
        type Event = ReservationsInput;
        type Output = ReservationsOutput;
        type Timer = NoEvents;
        type Command = std::convert::Infallible;
        type Reply = ();

        fn name(&self) -> &'static str {
            Reservations.name()
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            Reservations.subscriptions()
        }
        fn extra_outputs(&self) -> Vec<&'static str> {
            Reservations.extra_outputs()
        }
        fn output_stream_of(&self, event_type: &str) -> Option<String> {
            Reservations.output_stream_of(event_type)
        }
        fn handle(
            &self,
            _: &mut Reservation,
            _: ReservationsInput,
            ctx: &mut Context<ReservationsOutput>,
        ) -> Result<(), DomainError> {
            let order_id = ctx.key().to_owned();
            ctx.emit_to(
                REQUESTS_STREAM,
                "A",
                ReservationsOutput::Reserved(StockReserved {
                    order_id,
                    customer_id: "c1".into(),
                    total_cents: 1,
                    at: ctx.input().timestamp,
                }),
            );
            Ok(())
        }
    }

    #[test]
    fn a_type_emitted_away_from_its_home_stream_fails_its_input() {
        let mut kit = TestKit::new(Misrouting);
        let failed = kit.when(placed("o1", &[("A", 1)]));
        assert!(
            matches!(
                &failed,
                Err(crate::domain::testkit::TestFailure::Failed(
                    crate::domain::Failure::Unstorable(why)
                )) if why.contains("reservations.events")
            ),
            "{failed:?}"
        );
        assert!(kit.state("o1").is_none(), "nothing applied");
    }

    #[test]
    fn malformed_orders_are_refused() {
        let mut kit = TestKit::new(Reservations);
        assert!(kit.when(placed("o1", &[])).is_err());
        assert!(kit.when(placed("o2", &[("A", 1), ("A", 2)])).is_err());
        assert!(kit.when(placed("o3", &[("A", 0)])).is_err());
        kit.when(placed("o4", &[("A", 1)])).unwrap();
        assert!(kit.when(placed("o4", &[("A", 1)])).is_err(), "placed twice");
        assert!(kit.when(answer("stock.held", "o4", "Z")).is_err());
    }
}
