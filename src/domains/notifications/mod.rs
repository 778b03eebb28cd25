//! Notifications: the orders' and payments' events turned into messages for the customer,
//! kept per customer (newest first through the API) and published on `notifications.events`
//! for real-time delivery.
//!
//! Each order status change (`order.placed`, `order.confirmed`, `order.rejected`,
//! `order.cancelled`) makes exactly one notification, and so does each payment event: inputs
//! are applied once, and a notification's id is the id of the event it came from.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Context, Domain, DomainError, NoEvents, Subscription};

/// Notifications kept per customer; older ones are dropped.
pub const KEPT: usize = 200;

/// The notifications domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

/// One customer's notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// The latest [`KEPT`], oldest first.
    pub notifications: Vec<CustomerNotification>,
    /// How many this customer ever got: the next one's `seq` is this plus one.
    pub count: u64,
}

/// A message for a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerNotification {
    /// Unique: the id of the event it came from.
    pub id: String,
    /// Its place among the customer's notifications, from 1.
    pub seq: u64,
    /// What happened.
    pub kind: NotificationKind,
    /// The order concerned.
    pub order_id: String,
    /// For people.
    pub message: String,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The order was placed and is pending.
    OrderPending,
    /// The order is confirmed.
    OrderConfirmed,
    /// The order was rejected.
    OrderRejected,
    /// The order was cancelled.
    OrderCancelled,
    /// The order's total was charged.
    PaymentCaptured,
    /// The order's payment was declined.
    PaymentDeclined,
    /// The order's total was refunded.
    PaymentRefunded,
}

impl NotificationKind {
    /// Whether it reports a status change of the order.
    pub fn is_status_change(self) -> bool {
        matches!(
            self,
            NotificationKind::OrderPending
                | NotificationKind::OrderConfirmed
                | NotificationKind::OrderRejected
                | NotificationKind::OrderCancelled
        )
    }
}

/// Events notifications consumes, from `orders.events` and `payments.events`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum NotificationsInput {
    /// See the orders domain.
    #[serde(rename = "order.placed")]
    OrderPlaced(Happened),
    /// See the orders domain.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed(Happened),
    /// See the orders domain.
    #[serde(rename = "order.rejected")]
    OrderRejected(Happened),
    /// See the orders domain.
    #[serde(rename = "order.cancelled")]
    OrderCancelled(Happened),
    /// See the payments domain.
    #[serde(rename = "payment.captured")]
    PaymentCaptured(Happened),
    /// See the payments domain.
    #[serde(rename = "payment.declined")]
    PaymentDeclined(Happened),
    /// See the payments domain.
    #[serde(rename = "payment.refunded")]
    PaymentRefunded(Happened),
}

/// What notifications reads of the events it consumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct Happened {
    /// The order.
    pub order_id: String,
    /// Whose.
    pub customer_id: String,
    /// For orders.
    pub total_cents: Option<i64>,
    /// For payments.
    pub amount_cents: Option<i64>,
    /// For rejections and declines.
    pub reason: Option<String>,
}

/// Events notifications emits on `notifications.events`, keyed by customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum NotificationsOutput {
    /// A notification for a customer.
    #[serde(rename = "notification.created")]
    Created(NotificationCreated),
}

/// The data of `notification.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationCreated {
    /// For whom.
    pub customer_id: String,
    /// The notification.
    pub notification: CustomerNotification,
}

impl Domain for Notifications {
    type State = Inbox;
    type Event = NotificationsInput;
    type Output = NotificationsOutput;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "notifications"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        ["orders.events", "payments.events"]
            .into_iter()
            .map(|stream| Subscription::new(stream).skipping_other_types())
            .collect()
    }

    fn topic_kinds(&self) -> &'static [&'static str] {
        &["customer", "order"]
    }

    fn topics(&self, _key: &str, event: &NotificationsOutput) -> Vec<String> {
        let NotificationsOutput::Created(created) = event;
        vec![
            format!("customer:{}", created.customer_id),
            format!("order:{}", created.notification.order_id),
        ]
    }

    fn entity_key<'a>(&self, _: &'a str, event: &'a NotificationsInput) -> Cow<'a, str> {
        Cow::Borrowed(&happened(event).1.customer_id)
    }

    fn handle(
        &self,
        inbox: &mut Inbox,
        event: NotificationsInput,
        ctx: &mut Context<NotificationsOutput>,
    ) -> Result<(), DomainError> {
        let (kind, what) = happened(&event);
        let message = message(kind, what);
        inbox.count += 1;
        let notification = CustomerNotification {
            id: ctx.input().id.clone(),
            seq: inbox.count,
            kind,
            order_id: what.order_id.clone(),
            message,
            at: ctx.input().timestamp,
        };
        let customer_id = ctx.key().to_owned();
        ctx.emit(NotificationsOutput::Created(NotificationCreated {
            customer_id,
            notification: notification.clone(),
        }));
        inbox.notifications.push(notification);
        let excess = inbox.notifications.len().saturating_sub(KEPT);
        inbox.notifications.drain(..excess);
        Ok(())
    }
}

fn happened(event: &NotificationsInput) -> (NotificationKind, &Happened) {
    match event {
        NotificationsInput::OrderPlaced(h) => (NotificationKind::OrderPending, h),
        NotificationsInput::OrderConfirmed(h) => (NotificationKind::OrderConfirmed, h),
        NotificationsInput::OrderRejected(h) => (NotificationKind::OrderRejected, h),
        NotificationsInput::OrderCancelled(h) => (NotificationKind::OrderCancelled, h),
        NotificationsInput::PaymentCaptured(h) => (NotificationKind::PaymentCaptured, h),
        NotificationsInput::PaymentDeclined(h) => (NotificationKind::PaymentDeclined, h),
        NotificationsInput::PaymentRefunded(h) => (NotificationKind::PaymentRefunded, h),
    }
}

fn cents(amount: Option<i64>) -> String {
    let amount = amount.unwrap_or_default();
    format!("{}.{:02}", amount / 100, (amount % 100).abs())
}

fn message(kind: NotificationKind, what: &Happened) -> String {
    let order = &what.order_id;
    let reason = what
        .reason
        .as_deref()
        .unwrap_or("unknown")
        .replace('_', " ");
    match kind {
        NotificationKind::OrderPending => format!(
            "Order {order} received ({}); we are reserving your items.",
            cents(what.total_cents)
        ),
        NotificationKind::OrderConfirmed => format!("Order {order} is confirmed."),
        NotificationKind::OrderRejected => {
            format!("Order {order} could not be completed: {reason}.")
        }
        NotificationKind::OrderCancelled => format!("Order {order} was cancelled."),
        NotificationKind::PaymentCaptured => format!(
            "{} was charged for order {order}.",
            cents(what.amount_cents)
        ),
        NotificationKind::PaymentDeclined => {
            format!("The payment for order {order} was declined: {reason}.")
        }
        NotificationKind::PaymentRefunded => format!(
            "{} was refunded for order {order}.",
            cents(what.amount_cents)
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::EventCatalogue;
    use crate::domain::testkit::{TestEvent, TestKit, event};

    fn order_event(kind: &str, order: &str) -> TestEvent {
        event(
            order,
            kind,
            json!({"order_id": order, "customer_id": "c1", "total_cents": 1234,
                   "amount_cents": 1234, "reason": "out_of_stock", "items": [],
                   "at": "2026-01-01T00:00:00Z"}),
        )
    }

    #[test]
    fn each_event_makes_one_notification_for_its_customer() {
        let mut kit = TestKit::new(Notifications);
        kit.given([order_event("order.placed", "o1")]);
        let effects = kit
            .when(order_event("order.rejected", "o1").with_id("evt-2"))
            .unwrap();
        assert_eq!(effects.emitted[0].event_type, "notification.created");
        assert_eq!(effects.emitted[0].key, "c1");
        let created = effects.emitted[0].decode::<NotificationsOutput>().unwrap();
        assert_eq!(
            Notifications.topics("c1", &created),
            ["customer:c1", "order:o1"]
        );
        let inbox = kit.state("c1").unwrap();
        assert_eq!(inbox.count, 2);
        let last = inbox.notifications.last().unwrap();
        assert_eq!(
            (last.id.as_str(), last.seq, last.kind),
            ("evt-2", 2, NotificationKind::OrderRejected)
        );
        assert_eq!(
            last.message,
            "Order o1 could not be completed: out of stock."
        );
        assert_eq!(
            inbox.notifications[0].message,
            "Order o1 received (12.34); we are reserving your items."
        );
    }

    #[test]
    fn an_inbox_keeps_the_latest() {
        let mut kit = TestKit::new(Notifications);
        for n in 0..(KEPT + 5) {
            kit.when(order_event("payment.captured", &format!("o{n}")))
                .unwrap();
        }
        let inbox = kit.state("c1").unwrap();
        assert_eq!(inbox.notifications.len(), KEPT);
        assert_eq!(inbox.notifications[0].seq, 6);
        assert_eq!(inbox.count, (KEPT + 5) as u64);
    }

    #[test]
    fn the_catalogue_reads_the_enums() {
        let catalogue = EventCatalogue::of::<Notifications>().unwrap();
        assert_eq!(catalogue.inputs.len(), 7);
        assert_eq!(catalogue.outputs, ["notification.created"]);
    }
}
