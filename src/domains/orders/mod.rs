//! Orders: the saga's owner. An order is placed by command, then settled by what the other
//! domains report: `stock.rejected` (reservations) rejects it as `out_of_stock`,
//! `payment.declined` as `payment_declined`, `payment.captured` confirms it, and a durable
//! timer rejects it as `timed_out` when nothing settled it within `order_timeout_seconds`
//! (also across restarts: the timer is stored with the order). A pending or confirmed order
//! can be cancelled.
//!
//! Orders never undoes another domain's work itself: reservations and payments follow the
//! order's events (`order.confirmed`, `order.rejected`, `order.cancelled`) and release, commit,
//! restock or refund what they hold for it. Events that arrive after the order is settled (a
//! capture after the timeout) change nothing here; their domain compensates.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{Configurable, Context, Domain, DomainError, Subscription, TimerId};

/// Default of `[domains.orders] order_timeout_seconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Most lines an order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: i64 = 10_000;
/// Highest unit price, in cents.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// The orders domain.
#[derive(Debug, Clone, Copy)]
pub struct Orders {
    timeout: Duration,
}

impl Default for Orders {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
        }
    }
}

impl Orders {
    /// Orders that time out after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self { timeout }
    }
}

/// `[domains.orders]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersSettings {
    /// Seconds an order may stay pending before it is rejected as `timed_out` (1 to 604800).
    #[serde(default = "default_timeout")]
    pub order_timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}

impl Configurable for Orders {
    type Settings = OrdersSettings;

    fn from_settings(settings: OrdersSettings) -> Result<Self, String> {
        let seconds = settings.order_timeout_seconds;
        if !(1..=604_800).contains(&seconds) {
            return Err(format!(
                "order_timeout_seconds must be between 1 and 604800 (a week), not {seconds}"
            ));
        }
        Ok(Self::with_timeout(Duration::from_secs(seconds)))
    }
}

/// An order. The entity's state is `Option<Order>`: `None` until placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price.
    pub total_cents: i64,
    /// Where it stands.
    pub status: OrderStatus,
    /// Why it was rejected.
    pub reason: Option<RejectReason>,
    /// The SKUs that were short, for `out_of_stock`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_skus: Vec<String>,
    /// Every status it took, with when.
    pub timeline: Vec<StatusChange>,
    /// The pending timeout, cancelled once the order is settled.
    pub timeout: Option<TimerId>,
}

/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Price of one unit, in cents.
    pub unit_price_cents: i64,
}

/// Status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, not settled.
    Pending,
    /// Stock reserved and payment captured.
    Confirmed,
    /// Refused (see the reason).
    Rejected,
    /// Cancelled by the customer.
    Cancelled,
}

impl OrderStatus {
    /// The status as the API and the stored state spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Some line could not be reserved.
    OutOfStock,
    /// The payment was declined.
    PaymentDeclined,
    /// Not settled within the timeout.
    TimedOut,
}

/// One status an order took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    /// The status.
    pub status: OrderStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// For `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
}

/// Placing an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Who orders.
    pub customer_id: String,
    /// What: 1 to [`MAX_LINES`] lines of distinct SKUs.
    pub items: Vec<OrderLine>,
}

/// Commands of the orders API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Places the order under the command's key.
    Place(NewOrder),
    /// Cancels a pending or confirmed order.
    Cancel,
}

/// Events orders consumes, from `reservations.events` and `payments.events` (other types
/// there are skipped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrdersInput {
    /// Some line could not be reserved.
    #[serde(rename = "stock.rejected")]
    StockRejected(StockShort),
    /// The total was captured.
    #[serde(rename = "payment.captured")]
    PaymentCaptured(PaymentResult),
    /// The payment was declined.
    #[serde(rename = "payment.declined")]
    PaymentDeclined(PaymentResult),
}

/// What orders reads of `stock.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct StockShort {
    /// The order.
    pub order_id: String,
    /// The SKUs that were short.
    pub short_skus: Vec<String>,
}

/// What orders reads of the payment events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct PaymentResult {
    /// The order.
    pub order_id: String,
}

/// The durable timer of a pending order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderTimer {
    /// Reject the order if it is still pending.
    Timeout,
}

/// Events orders emits on `orders.events`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrdersOutput {
    /// An order was placed (pending).
    #[serde(rename = "order.placed")]
    Placed(OrderPlaced),
    /// Stock reserved and payment captured.
    #[serde(rename = "order.confirmed")]
    Confirmed(OrderSettled),
    /// Refused.
    #[serde(rename = "order.rejected")]
    Rejected(OrderRejected),
    /// Cancelled.
    #[serde(rename = "order.cancelled")]
    Cancelled(OrderCancelled),
}

/// The data of `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub items: Vec<OrderLine>,
    /// The total.
    pub total_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `order.confirmed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderSettled {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
    /// The total.
    pub total_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `order.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRejected {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
    /// Why.
    pub reason: RejectReason,
    /// For `out_of_stock`: the SKUs that were short.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_skus: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `order.cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
    /// `pending` or `confirmed`: what it was when cancelled.
    pub was: OrderStatus,
    /// When.
    pub at: DateTime<Utc>,
}

type Ctx = Context<OrdersOutput, OrderTimer>;

impl Domain for Orders {
    type State = Option<Order>;
    type Event = OrdersInput;
    type Output = OrdersOutput;
    type Timer = OrderTimer;
    type Command = OrderCommand;
    type Reply = Order;

    fn name(&self) -> &'static str {
        "orders"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        ["reservations.events", "payments.events"]
            .into_iter()
            .map(|stream| Subscription::new(stream).skipping_other_types())
            .collect()
    }

    fn entity_key<'a>(&self, _: &'a str, event: &'a OrdersInput) -> Cow<'a, str> {
        Cow::Borrowed(match event {
            OrdersInput::StockRejected(short) => &short.order_id,
            OrdersInput::PaymentCaptured(order) | OrdersInput::PaymentDeclined(order) => {
                &order.order_id
            }
        })
    }

    fn handle(
        &self,
        state: &mut Option<Order>,
        event: OrdersInput,
        ctx: &mut Ctx,
    ) -> Result<(), DomainError> {
        let Some(order) = state else {
            // Every saga event follows order.placed, which follows the order's commit.
            return Err(DomainError::Invalid(format!(
                "no order {} to settle",
                ctx.key()
            )));
        };
        if order.status != OrderStatus::Pending {
            // Settled already; the domain that reported compensates on its own.
            return Ok(());
        }
        match event {
            OrdersInput::StockRejected(short) => {
                reject(order, RejectReason::OutOfStock, short.short_skus, ctx)
            }
            OrdersInput::PaymentDeclined(_) => {
                reject(order, RejectReason::PaymentDeclined, Vec::new(), ctx)
            }
            OrdersInput::PaymentCaptured(_) => {
                settle(order, OrderStatus::Confirmed, None, ctx);
                ctx.emit(OrdersOutput::Confirmed(OrderSettled {
                    order_id: ctx.key().to_owned(),
                    customer_id: order.customer_id.clone(),
                    total_cents: order.total_cents,
                    at: ctx.input().timestamp,
                }));
            }
        }
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut Option<Order>,
        OrderTimer::Timeout: OrderTimer,
        ctx: &mut Ctx,
    ) -> Result<(), DomainError> {
        if let Some(order) = state
            && order.status == OrderStatus::Pending
        {
            order.timeout = None;
            reject(order, RejectReason::TimedOut, Vec::new(), ctx);
        }
        Ok(())
    }

    fn execute(
        &self,
        state: &mut Option<Order>,
        command: OrderCommand,
        ctx: &mut Ctx,
    ) -> Result<Order, DomainError> {
        match command {
            OrderCommand::Place(new) => self.place(state, new, ctx),
            OrderCommand::Cancel => cancel(state, ctx),
        }
    }
}

impl Orders {
    fn place(
        &self,
        state: &mut Option<Order>,
        new: NewOrder,
        ctx: &mut Ctx,
    ) -> Result<Order, DomainError> {
        if state.is_some() {
            return Err(DomainError::Rejected {
                code: "already_placed",
                message: format!("order {} exists already", ctx.key()),
            });
        }
        let total_cents = total(&new.items)?;
        let at = ctx.input().timestamp;
        let timeout = ctx.schedule(self.timeout, OrderTimer::Timeout);
        let order = Order {
            customer_id: new.customer_id,
            items: new.items,
            total_cents,
            status: OrderStatus::Pending,
            reason: None,
            short_skus: Vec::new(),
            timeline: vec![StatusChange {
                status: OrderStatus::Pending,
                at,
                reason: None,
            }],
            timeout: Some(timeout),
        };
        ctx.emit(OrdersOutput::Placed(OrderPlaced {
            order_id: ctx.key().to_owned(),
            customer_id: order.customer_id.clone(),
            items: order.items.clone(),
            total_cents,
            at,
        }));
        notify(&order, ctx);
        *state = Some(order.clone());
        Ok(order)
    }
}

/// The order's total, refusing what this domain does not take: no lines, too many, a SKU
/// twice, quantities or prices out of range, a sum that overflows.
pub fn total(items: &[OrderLine]) -> Result<i64, DomainError> {
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(DomainError::Invalid(format!(
            "an order has 1 to {MAX_LINES} lines"
        )));
    }
    let mut skus: Vec<&str> = items.iter().map(|line| line.sku.as_str()).collect();
    skus.sort_unstable();
    if skus.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(DomainError::Invalid("a SKU appears on two lines".into()));
    }
    items.iter().try_fold(0i64, |sum, line| {
        if !(1..=MAX_QUANTITY).contains(&line.quantity)
            || !(1..=MAX_UNIT_PRICE_CENTS).contains(&line.unit_price_cents)
        {
            return Err(DomainError::Invalid(format!(
                "line {}: quantity 1 to {MAX_QUANTITY}, unit price 1 to {MAX_UNIT_PRICE_CENTS}",
                line.sku
            )));
        }
        line.quantity
            .checked_mul(line.unit_price_cents)
            .and_then(|amount| sum.checked_add(amount))
            .ok_or_else(|| DomainError::Invalid("the total overflows".into()))
    })
}

fn cancel(state: &mut Option<Order>, ctx: &mut Ctx) -> Result<Order, DomainError> {
    let Some(order) = state else {
        return Err(DomainError::NotFound {
            what: "order",
            id: ctx.key().to_owned(),
        });
    };
    let was = order.status;
    if !matches!(was, OrderStatus::Pending | OrderStatus::Confirmed) {
        return Err(DomainError::Rejected {
            code: "not_cancellable",
            message: format!("a {} order cannot be cancelled", was.as_str()),
        });
    }
    settle(order, OrderStatus::Cancelled, None, ctx);
    ctx.emit(OrdersOutput::Cancelled(OrderCancelled {
        order_id: ctx.key().to_owned(),
        customer_id: order.customer_id.clone(),
        was,
        at: ctx.input().timestamp,
    }));
    Ok(order.clone())
}

fn reject(order: &mut Order, reason: RejectReason, short_skus: Vec<String>, ctx: &mut Ctx) {
    order.short_skus.clone_from(&short_skus);
    settle(order, OrderStatus::Rejected, Some(reason), ctx);
    ctx.emit(OrdersOutput::Rejected(OrderRejected {
        order_id: ctx.key().to_owned(),
        customer_id: order.customer_id.clone(),
        reason,
        short_skus,
        at: ctx.input().timestamp,
    }));
}

/// Moves the order to `status`, cancelling its timeout, and tells its watchers.
fn settle(order: &mut Order, status: OrderStatus, reason: Option<RejectReason>, ctx: &mut Ctx) {
    order.status = status;
    order.reason = reason;
    if let Some(timer) = order.timeout.take() {
        ctx.cancel(&timer);
    }
    order.timeline.push(StatusChange {
        status,
        at: ctx.input().timestamp,
        reason,
    });
    notify(order, ctx);
}

fn notify(order: &Order, ctx: &mut Ctx) {
    let payload = json!({ "order_id": ctx.key(), "status": order.status.as_str(),
                          "reason": order.reason });
    ctx.notify(&format!("order:{}", ctx.key()), payload.clone());
    ctx.notify(&format!("customer:{}", order.customer_id), payload);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::testkit::{TestEvent, TestKit, event};
    use crate::domain::{EventCatalogue, Failure};

    fn line(sku: &str, quantity: i64, price: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_cents: price,
        }
    }

    fn place(kit: &mut TestKit<Orders>, id: &str) -> Order {
        let (order, _) = kit
            .command(
                id,
                OrderCommand::Place(NewOrder {
                    customer_id: "c1".into(),
                    items: vec![line("A", 2, 150), line("B", 1, 100)],
                }),
            )
            .unwrap();
        order
    }

    fn report(kind: &str, order: &str) -> TestEvent {
        event(
            order,
            kind,
            json!({"order_id": order, "customer_id": "c1", "short_skus": ["B"],
                   "amount_cents": 400}),
        )
    }

    fn statuses(order: &Order) -> Vec<OrderStatus> {
        order.timeline.iter().map(|c| c.status).collect()
    }

    #[test]
    fn a_placed_order_is_pending_with_its_total_and_a_timeout() {
        let mut kit = TestKit::new(Orders::default());
        let order = place(&mut kit, "o1");
        assert_eq!(
            (order.status, order.total_cents),
            (OrderStatus::Pending, 400)
        );
        assert_eq!(kit.timers().len(), 1);
        let (_, effects) = kit
            .command(
                "o2",
                OrderCommand::Place(NewOrder {
                    customer_id: "c1".into(),
                    items: vec![line("A", 1, 1)],
                }),
            )
            .unwrap();
        assert_eq!(effects.emitted[0].event_type, "order.placed");
        assert_eq!(effects.emitted[0].data["total_cents"], 1);
    }

    #[test]
    fn a_captured_payment_confirms_and_cancels_the_timeout() {
        let mut kit = TestKit::new(Orders::default());
        place(&mut kit, "o1");
        let effects = kit.when(report("payment.captured", "o1")).unwrap();
        assert_eq!(effects.emitted[0].event_type, "order.confirmed");
        assert_eq!(effects.cancelled.len(), 1);
        let order = kit.state("o1").unwrap().as_ref().unwrap();
        assert_eq!(
            statuses(order),
            [OrderStatus::Pending, OrderStatus::Confirmed]
        );
        // A late decline changes nothing.
        assert!(
            kit.when(report("payment.declined", "o1"))
                .unwrap()
                .emitted
                .is_empty()
        );
    }

    #[test]
    fn stock_and_payment_failures_reject_with_their_reason() {
        let mut kit = TestKit::new(Orders::default());
        place(&mut kit, "o1");
        place(&mut kit, "o2");
        let effects = kit.when(report("stock.rejected", "o1")).unwrap();
        assert_eq!(effects.emitted[0].data["reason"], "out_of_stock");
        assert_eq!(effects.emitted[0].data["short_skus"], json!(["B"]));
        let effects = kit.when(report("payment.declined", "o2")).unwrap();
        assert_eq!(effects.emitted[0].data["reason"], "payment_declined");
        let o1 = kit.state("o1").unwrap().as_ref().unwrap();
        assert_eq!(
            (o1.status, o1.reason),
            (OrderStatus::Rejected, Some(RejectReason::OutOfStock))
        );
    }

    #[test]
    fn an_unsettled_order_times_out_and_a_late_capture_changes_nothing() {
        let mut kit = TestKit::new(Orders::with_timeout(Duration::from_secs(5)));
        place(&mut kit, "o1");
        kit.advance(Duration::from_secs(4));
        assert!(kit.fire_due().unwrap().is_empty());
        kit.advance(Duration::from_secs(1));
        let fired = kit.fire_due().unwrap();
        assert_eq!(fired[0].emitted[0].data["reason"], "timed_out");
        assert!(
            kit.when(report("payment.captured", "o1"))
                .unwrap()
                .emitted
                .is_empty()
        );
        let order = kit.state("o1").unwrap().as_ref().unwrap();
        assert_eq!(order.reason, Some(RejectReason::TimedOut));
    }

    #[test]
    fn pending_and_confirmed_orders_cancel_others_do_not() {
        let mut kit = TestKit::new(Orders::default());
        place(&mut kit, "o1");
        let (cancelled, effects) = kit.command("o1", OrderCommand::Cancel).unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert_eq!(effects.emitted[0].data["was"], "pending");
        assert_eq!(effects.cancelled.len(), 1, "the timeout goes");
        assert!(matches!(
            kit.command("o1", OrderCommand::Cancel),
            Err(Failure::Handler(DomainError::Rejected {
                code: "not_cancellable",
                ..
            }))
        ));
        place(&mut kit, "o2");
        kit.when(report("payment.captured", "o2")).unwrap();
        let (_, effects) = kit.command("o2", OrderCommand::Cancel).unwrap();
        assert_eq!(effects.emitted[0].data["was"], "confirmed");
        assert!(matches!(
            kit.command("o3", OrderCommand::Cancel),
            Err(Failure::Handler(DomainError::NotFound { .. }))
        ));
    }

    #[test]
    fn totals_are_checked() {
        assert_eq!(total(&[line("A", 2, 3), line("B", 1, 4)]), Ok(10));
        for bad in [
            vec![],
            vec![line("A", 1, 1), line("A", 2, 1)],
            vec![line("A", 0, 1)],
            vec![line("A", 1, 0)],
            vec![line("A", MAX_QUANTITY + 1, 1)],
            vec![line("A", 1, i64::MAX)],
            (0..=MAX_LINES)
                .map(|n| line(&format!("S{n}"), 1, 1))
                .collect(),
        ] {
            assert!(total(&bad).is_err(), "{bad:?}");
        }
        let most: Vec<_> = (0..MAX_LINES)
            .map(|n| line(&format!("S{n}"), MAX_QUANTITY, MAX_UNIT_PRICE_CENTS))
            .collect();
        assert_eq!(total(&most), Ok(100 * MAX_QUANTITY * MAX_UNIT_PRICE_CENTS));
    }

    #[test]
    fn the_timeout_comes_from_the_settings() {
        let settings = |seconds| OrdersSettings {
            order_timeout_seconds: seconds,
        };
        assert_eq!(
            Orders::from_settings(settings(7)).unwrap().timeout,
            Duration::from_secs(7)
        );
        assert!(Orders::from_settings(settings(0)).is_err());
        assert!(Orders::from_settings(settings(604_801)).is_err());
    }

    #[test]
    fn the_catalogue_lists_the_saga_events() {
        let catalogue = EventCatalogue::of::<Orders>().unwrap();
        assert_eq!(
            catalogue.inputs,
            ["stock.rejected", "payment.captured", "payment.declined"]
        );
        assert_eq!(
            catalogue.outputs,
            [
                "order.placed",
                "order.confirmed",
                "order.rejected",
                "order.cancelled"
            ]
        );
    }
}
