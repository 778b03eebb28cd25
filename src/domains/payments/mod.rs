//! Payments: a wallet per customer, opened from `customer.registered` with its credit.
//!
//! When an order's stock is reserved (`stock.reserved`) it captures the order's total, or
//! declines when the wallet is short or does not exist. When an order it captured for ends
//! other than confirmed and kept (`order.cancelled`, `order.rejected` after a capture that
//! came too late), it refunds. Every wallet keeps one record per order, so a capture never
//! follows the end of its order, whichever of the two streams delivers first, and nothing is
//! captured or refunded twice.
//!
//! Money is conserved per wallet: `credit = balance + captured − refunded`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Context, Domain, DomainError, NoEvents, Subscription};

/// Movements a wallet keeps for the API, newest last; older ones are dropped.
pub const RECENT_MOVEMENTS: usize = 50;

/// The payments domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payments;

/// One customer's wallet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Whether `customer.registered` opened it; a wallet never opened declines everything.
    pub opened: bool,
    /// The credit it opened with.
    pub credit_cents: i64,
    /// What is left to spend.
    pub balance_cents: i64,
    /// Sum of all captures.
    pub captured_cents: i64,
    /// Sum of all refunds.
    pub refunded_cents: i64,
    /// What became of each order this wallet heard of.
    pub orders: BTreeMap<String, OrderPayment>,
    /// The latest movements, oldest first, at most [`RECENT_MOVEMENTS`].
    pub movements: Vec<Movement>,
}

/// What became of one order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderPayment {
    /// Its total was taken from the balance.
    Captured {
        /// How much.
        amount_cents: i64,
    },
    /// Refused; nothing taken.
    Declined,
    /// Captured, then given back.
    Refunded {
        /// How much.
        amount_cents: i64,
    },
    /// The order ended before its stock was reserved: nothing may be captured for it later.
    Closed,
}

/// A change of balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Movement {
    /// `credit`, `capture` or `refund`.
    pub kind: MovementKind,
    /// The order it was for; none for the opening credit.
    pub order_id: Option<String>,
    /// Signed change of the balance.
    pub amount_cents: i64,
    /// The balance after it.
    pub balance_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// Kinds of [`Movement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// The opening credit.
    Credit,
    /// An order's total taken.
    Capture,
    /// An order's total given back.
    Refund,
}

/// Events payments consumes, from `customers.events`, `reservations.events` and
/// `orders.events` (other types there are skipped). Only the fields payments uses are read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum PaymentsInput {
    /// Opens the wallet.
    #[serde(rename = "customer.registered")]
    CustomerRegistered(RegisteredCustomer),
    /// An order's stock is held: capture its total.
    #[serde(rename = "stock.reserved")]
    StockReserved(OrderCharge),
    /// An order was cancelled: refund what was captured.
    #[serde(rename = "order.cancelled")]
    OrderCancelled(OrderEnded),
    /// An order was rejected: refund a capture that came too late (a timeout).
    #[serde(rename = "order.rejected")]
    OrderRejected(OrderEnded),
}

/// What payments reads of `customer.registered`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct RegisteredCustomer {
    /// The customer.
    pub customer_id: String,
    /// The opening credit.
    pub credit_cents: i64,
}

/// What payments reads of `stock.reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct OrderCharge {
    /// The order.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// How much.
    pub total_cents: i64,
}

/// What payments reads of `order.cancelled` and `order.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct OrderEnded {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
}

/// Events payments emits on `payments.events`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum PaymentsOutput {
    /// The order's total was taken.
    #[serde(rename = "payment.captured")]
    Captured(PaymentOutcome),
    /// The order cannot be paid.
    #[serde(rename = "payment.declined")]
    Declined(PaymentDeclined),
    /// The order's total was given back.
    #[serde(rename = "payment.refunded")]
    Refunded(PaymentOutcome),
}

/// The data of `payment.captured` and `payment.refunded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentOutcome {
    /// The order.
    pub order_id: String,
    /// Whose wallet.
    pub customer_id: String,
    /// How much.
    pub amount_cents: i64,
    /// The balance after it.
    pub balance_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `payment.declined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentDeclined {
    /// The order.
    pub order_id: String,
    /// Whose wallet.
    pub customer_id: String,
    /// How much was asked.
    pub amount_cents: i64,
    /// `insufficient_funds` or `unknown_customer`.
    pub reason: DeclineReason,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a payment was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The balance is below the total.
    InsufficientFunds,
    /// No wallet was opened for the customer.
    UnknownCustomer,
}

impl Domain for Payments {
    type State = Wallet;
    type Event = PaymentsInput;
    type Output = PaymentsOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "payments"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        ["customers.events", "reservations.events", "orders.events"]
            .into_iter()
            .map(|stream| Subscription::new(stream).skipping_other_types())
            .collect()
    }

    /// A wallet per customer: every input names its customer.
    fn entity_key<'a>(&self, _: &'a str, event: &'a PaymentsInput) -> Cow<'a, str> {
        Cow::Borrowed(match event {
            PaymentsInput::CustomerRegistered(c) => &c.customer_id,
            PaymentsInput::StockReserved(charge) => &charge.customer_id,
            PaymentsInput::OrderCancelled(ended) | PaymentsInput::OrderRejected(ended) => {
                &ended.customer_id
            }
        })
    }

    fn handle(
        &self,
        wallet: &mut Wallet,
        event: PaymentsInput,
        ctx: &mut Context<PaymentsOutput>,
    ) -> Result<(), DomainError> {
        match event {
            PaymentsInput::CustomerRegistered(customer) => open(wallet, &customer, ctx),
            PaymentsInput::StockReserved(charge) => capture(wallet, charge, ctx),
            PaymentsInput::OrderCancelled(ended) | PaymentsInput::OrderRejected(ended) => {
                refund(wallet, &ended, ctx)
            }
        }
    }
}

fn open(
    wallet: &mut Wallet,
    customer: &RegisteredCustomer,
    ctx: &mut Context<PaymentsOutput>,
) -> Result<(), DomainError> {
    if wallet.opened {
        // customer.registered is emitted once per customer; a second one is a producer's bug.
        return Err(DomainError::Invalid(format!(
            "wallet of {} is already open",
            customer.customer_id
        )));
    }
    if customer.credit_cents < 0 {
        return Err(DomainError::Invalid("credit_cents is negative".into()));
    }
    wallet.opened = true;
    wallet.credit_cents = customer.credit_cents;
    wallet.balance_cents = customer.credit_cents;
    record(
        wallet,
        MovementKind::Credit,
        None,
        customer.credit_cents,
        ctx,
    );
    Ok(())
}

fn capture(
    wallet: &mut Wallet,
    charge: OrderCharge,
    ctx: &mut Context<PaymentsOutput>,
) -> Result<(), DomainError> {
    if wallet.orders.contains_key(&charge.order_id) {
        // Captured, declined or closed already: stock.reserved comes once per order, and an
        // order that ended first must not be charged.
        return Ok(());
    }
    if charge.total_cents <= 0 {
        return Err(DomainError::Invalid("total_cents must be positive".into()));
    }
    let at = ctx.input().timestamp;
    let reason = if !wallet.opened {
        Some(DeclineReason::UnknownCustomer)
    } else if wallet.balance_cents < charge.total_cents {
        Some(DeclineReason::InsufficientFunds)
    } else {
        None
    };
    let OrderCharge {
        order_id,
        customer_id,
        total_cents,
    } = charge;
    if let Some(reason) = reason {
        wallet
            .orders
            .insert(order_id.clone(), OrderPayment::Declined);
        ctx.emit_for(
            &order_id.clone(),
            PaymentsOutput::Declined(PaymentDeclined {
                order_id,
                customer_id,
                amount_cents: total_cents,
                reason,
                at,
            }),
        );
        return Ok(());
    }
    wallet.balance_cents -= total_cents;
    wallet.captured_cents = add(wallet.captured_cents, total_cents)?;
    wallet.orders.insert(
        order_id.clone(),
        OrderPayment::Captured {
            amount_cents: total_cents,
        },
    );
    record(
        wallet,
        MovementKind::Capture,
        Some(&order_id),
        -total_cents,
        ctx,
    );
    ctx.emit_for(
        &order_id.clone(),
        PaymentsOutput::Captured(PaymentOutcome {
            order_id,
            customer_id,
            amount_cents: total_cents,
            balance_cents: wallet.balance_cents,
            at,
        }),
    );
    Ok(())
}

fn refund(
    wallet: &mut Wallet,
    ended: &OrderEnded,
    ctx: &mut Context<PaymentsOutput>,
) -> Result<(), DomainError> {
    match wallet.orders.get(&ended.order_id).copied() {
        Some(OrderPayment::Captured { amount_cents }) => {
            wallet.balance_cents = add(wallet.balance_cents, amount_cents)?;
            wallet.refunded_cents = add(wallet.refunded_cents, amount_cents)?;
            wallet.orders.insert(
                ended.order_id.clone(),
                OrderPayment::Refunded { amount_cents },
            );
            record(
                wallet,
                MovementKind::Refund,
                Some(&ended.order_id),
                amount_cents,
                ctx,
            );
            ctx.emit_for(
                &ended.order_id,
                PaymentsOutput::Refunded(PaymentOutcome {
                    order_id: ended.order_id.clone(),
                    customer_id: ended.customer_id.clone(),
                    amount_cents,
                    balance_cents: wallet.balance_cents,
                    at: ctx.input().timestamp,
                }),
            );
        }
        Some(OrderPayment::Declined | OrderPayment::Refunded { .. } | OrderPayment::Closed) => {}
        None => {
            wallet
                .orders
                .insert(ended.order_id.clone(), OrderPayment::Closed);
        }
    }
    Ok(())
}

fn add(a: i64, b: i64) -> Result<i64, DomainError> {
    a.checked_add(b)
        .ok_or_else(|| DomainError::Invalid("amount overflows the wallet".into()))
}

fn record(
    wallet: &mut Wallet,
    kind: MovementKind,
    order_id: Option<&str>,
    amount_cents: i64,
    ctx: &Context<PaymentsOutput>,
) {
    wallet.movements.push(Movement {
        kind,
        order_id: order_id.map(str::to_owned),
        amount_cents,
        balance_cents: wallet.balance_cents,
        at: ctx.input().timestamp,
    });
    let excess = wallet.movements.len().saturating_sub(RECENT_MOVEMENTS);
    wallet.movements.drain(..excess);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::EventCatalogue;
    use crate::domain::testkit::{TestEvent, TestKit, event};

    fn registered(customer: &str, credit: i64) -> TestEvent {
        event(
            customer,
            "customer.registered",
            json!({"customer_id": customer, "name": "N", "email": "n@example.com",
                   "credit_cents": credit, "at": "2026-01-01T00:00:00Z"}),
        )
    }

    fn reserved(order: &str, customer: &str, total: i64) -> TestEvent {
        event(
            order,
            "stock.reserved",
            json!({"order_id": order, "customer_id": customer, "total_cents": total}),
        )
    }

    fn ended(kind: &str, order: &str, customer: &str) -> TestEvent {
        event(
            order,
            kind,
            json!({"order_id": order, "customer_id": customer, "reason": "timed_out"}),
        )
    }

    fn conserved(wallet: &Wallet) {
        assert_eq!(
            wallet.credit_cents,
            wallet.balance_cents + wallet.captured_cents - wallet.refunded_cents
        );
    }

    #[test]
    fn a_reserved_order_is_captured_then_refunded_on_cancel() {
        let mut kit = TestKit::new(Payments);
        kit.given([registered("c1", 1000)]);
        let effects = kit.when(reserved("o1", "c1", 300)).unwrap();
        assert_eq!(effects.emitted[0].event_type, "payment.captured");
        assert_eq!(effects.emitted[0].key, "o1");
        assert_eq!(kit.state("c1").unwrap().balance_cents, 700);
        let effects = kit.when(ended("order.cancelled", "o1", "c1")).unwrap();
        assert_eq!(effects.emitted[0].event_type, "payment.refunded");
        let wallet = kit.state("c1").unwrap();
        assert_eq!(wallet.balance_cents, 1000);
        conserved(wallet);
        let kinds: Vec<_> = wallet.movements.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MovementKind::Credit,
                MovementKind::Capture,
                MovementKind::Refund
            ]
        );
        // A second cancellation refunds nothing more.
        let again = kit.when(ended("order.cancelled", "o1", "c1")).unwrap();
        assert!(again.emitted.is_empty());
    }

    #[test]
    fn short_funds_and_unknown_customers_are_declined() {
        let mut kit = TestKit::new(Payments);
        kit.given([registered("c1", 100)]);
        let effects = kit.when(reserved("o1", "c1", 101)).unwrap();
        let declined: PaymentsOutput = effects.emitted[0].decode().unwrap();
        assert!(matches!(
            declined,
            PaymentsOutput::Declined(PaymentDeclined {
                reason: DeclineReason::InsufficientFunds,
                ..
            })
        ));
        assert_eq!(kit.state("c1").unwrap().balance_cents, 100);
        let effects = kit.when(reserved("o2", "ghost", 1)).unwrap();
        let declined: PaymentsOutput = effects.emitted[0].decode().unwrap();
        assert!(matches!(
            declined,
            PaymentsOutput::Declined(PaymentDeclined {
                reason: DeclineReason::UnknownCustomer,
                ..
            })
        ));
        // A declined order that is then rejected refunds nothing.
        assert!(
            kit.when(ended("order.rejected", "o1", "c1"))
                .unwrap()
                .emitted
                .is_empty()
        );
    }

    #[test]
    fn an_order_that_ended_first_is_never_captured() {
        let mut kit = TestKit::new(Payments);
        kit.given([registered("c1", 100), ended("order.rejected", "o1", "c1")]);
        let effects = kit.when(reserved("o1", "c1", 50)).unwrap();
        assert!(effects.emitted.is_empty());
        assert_eq!(kit.state("c1").unwrap().balance_cents, 100);
    }

    #[test]
    fn a_late_capture_is_refunded_when_the_order_times_out() {
        let mut kit = TestKit::new(Payments);
        kit.given([registered("c1", 100), reserved("o1", "c1", 60)]);
        let effects = kit.when(ended("order.rejected", "o1", "c1")).unwrap();
        assert_eq!(effects.emitted[0].event_type, "payment.refunded");
        conserved(kit.state("c1").unwrap());
        assert_eq!(kit.state("c1").unwrap().balance_cents, 100);
    }

    #[test]
    fn movements_are_bounded() {
        let mut kit = TestKit::new(Payments);
        kit.given([registered("c1", 1_000_000)]);
        for n in 0..(RECENT_MOVEMENTS + 10) {
            kit.when(reserved(&format!("o{n}"), "c1", 1)).unwrap();
        }
        let wallet = kit.state("c1").unwrap();
        assert_eq!(wallet.movements.len(), RECENT_MOVEMENTS);
        assert_eq!(
            wallet.movements.last().unwrap().order_id.as_deref(),
            Some("o59")
        );
        conserved(wallet);
    }

    #[test]
    fn the_catalogue_reads_the_enums() {
        let catalogue = EventCatalogue::of::<Payments>().unwrap();
        assert_eq!(
            catalogue.inputs,
            [
                "customer.registered",
                "stock.reserved",
                "order.cancelled",
                "order.rejected"
            ]
        );
        assert_eq!(
            catalogue.outputs,
            ["payment.captured", "payment.declined", "payment.refunded"]
        );
    }
}
