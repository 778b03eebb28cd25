//! Carts: what a customer is about to buy. Items are added over HTTP, a cart left alone for
//! 30 minutes is abandoned (a durable timer), and checking out emits `cart.checked_out` for
//! whoever takes orders. Plain Rust: no actix, Redis or diesel.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::domain::{Context, Domain, DomainError, Subscription, TimerId};

/// How long a cart may sit untouched before it is abandoned.
pub const ABANDON_AFTER: Duration = Duration::from_secs(30 * 60);

/// Most units of one SKU a cart may hold.
pub const MAX_QUANTITY: u32 = 99;

/// Most distinct SKUs a cart may hold: the state, and the `cart.checked_out` event that
/// carries its lines, stay small.
pub const MAX_LINES: usize = 100;

/// One cart, keyed by its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Units per SKU.
    pub lines: BTreeMap<String, u32>,
    /// Where the cart is in its life.
    pub status: CartStatus,
    /// The pending abandonment, while the cart is open and not empty.
    pub abandon_timer: Option<TimerId>,
}

/// Where a cart is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    /// Items can be added.
    #[default]
    Open,
    /// Bought: nothing changes any more.
    CheckedOut,
    /// Left alone for too long.
    Abandoned,
}

/// Events carts consume, from `carts.input`, keyed by cart.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum CartInput {
    /// Support emptied the cart.
    #[serde(rename = "cart.cleared")]
    Cleared {
        /// Why, for the record.
        reason: String,
    },
}

/// Events carts emit, on `carts.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum CartOutput {
    /// The customer bought what the cart holds.
    #[serde(rename = "cart.checked_out")]
    CheckedOut {
        /// Units per SKU.
        lines: BTreeMap<String, u32>,
    },
    /// The cart sat untouched for [`ABANDON_AFTER`].
    #[serde(rename = "cart.abandoned")]
    Abandoned {
        /// What it held.
        lines: BTreeMap<String, u32>,
    },
}

/// What a durable timer of this domain carries.
#[derive(Debug, Serialize, Deserialize)]
pub enum CartTimer {
    /// Abandon the cart if it is still open.
    Abandon,
}

/// Commands carts answer over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartCommand {
    /// Put `quantity` more units of `sku` in the cart.
    AddItem {
        /// The product.
        sku: String,
        /// Units to add, 1 to [`MAX_QUANTITY`].
        quantity: u32,
    },
    /// Buy what the cart holds.
    CheckOut,
}

/// The carts domain.
pub struct Carts;

impl Domain for Carts {
    type State = Cart;
    type Event = CartInput;
    type Output = CartOutput;
    type Timer = CartTimer;
    type Command = CartCommand;
    type Reply = Cart;

    fn name(&self) -> &'static str {
        "carts"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("carts.input")]
    }

    // WebSocket clients subscribed to `cart:<id>` receive the cart's emitted events.
    fn topic_kinds(&self) -> &'static [&'static str] {
        &["cart"]
    }

    fn topics(&self, key: &str, _event: &CartOutput) -> Vec<String> {
        vec![format!("cart:{key}")]
    }

    fn handle(
        &self,
        cart: &mut Cart,
        event: CartInput,
        ctx: &mut Context<CartOutput, CartTimer>,
    ) -> Result<(), DomainError> {
        let CartInput::Cleared { reason } = event;
        // Bought or abandoned carts do not change; an unknown or empty one has nothing to clear.
        if cart.status != CartStatus::Open || cart.lines.is_empty() {
            return Ok(());
        }
        cart.lines.clear();
        if let Some(timer) = cart.abandon_timer.take() {
            ctx.cancel(&timer);
        }
        // In-process watchers (`DomainHandle::subscribe`) hear of it. Nothing is emitted, so
        // `cart:<id>` WebSocket clients, who receive emitted events, do not.
        let topic = format!("carts/{}", ctx.key());
        ctx.notify(
            &topic,
            serde_json::json!({ "cleared": true, "reason": reason }),
        );
        Ok(())
    }

    fn execute(
        &self,
        cart: &mut Cart,
        command: CartCommand,
        ctx: &mut Context<CartOutput, CartTimer>,
    ) -> Result<Cart, DomainError> {
        if cart.status != CartStatus::Open {
            return Err(DomainError::Rejected {
                code: "cart_closed",
                message: format!("the cart is {:?}", cart.status),
            });
        }
        match command {
            CartCommand::AddItem { sku, quantity } => {
                if sku.is_empty() || sku.len() > 64 || sku.chars().any(char::is_control) {
                    return Err(DomainError::Invalid(
                        "a SKU is 1 to 64 bytes without control characters".into(),
                    ));
                }
                if !cart.lines.contains_key(&sku) && cart.lines.len() >= MAX_LINES {
                    return Err(DomainError::Rejected {
                        code: "cart_full",
                        message: format!("a cart holds at most {MAX_LINES} different SKUs"),
                    });
                }
                let line = cart.lines.get(&sku).copied().unwrap_or(0);
                let total = line
                    .checked_add(quantity)
                    .filter(|&n| quantity > 0 && n <= MAX_QUANTITY)
                    .ok_or_else(|| {
                        DomainError::Invalid(format!(
                            "a cart holds 1 to {MAX_QUANTITY} units of a SKU"
                        ))
                    })?;
                cart.lines.insert(sku, total);
                // Every change restarts the wait: cancel the pending timer, schedule anew.
                if let Some(timer) = cart.abandon_timer.take() {
                    ctx.cancel(&timer);
                }
                cart.abandon_timer = Some(ctx.schedule(ABANDON_AFTER, CartTimer::Abandon));
            }
            CartCommand::CheckOut => {
                if cart.lines.is_empty() {
                    return Err(DomainError::Rejected {
                        code: "cart_empty",
                        message: "there is nothing to check out".into(),
                    });
                }
                cart.status = CartStatus::CheckedOut;
                if let Some(timer) = cart.abandon_timer.take() {
                    ctx.cancel(&timer);
                }
                ctx.emit(CartOutput::CheckedOut {
                    lines: cart.lines.clone(),
                });
            }
        }
        Ok(cart.clone())
    }

    fn on_timer(
        &self,
        cart: &mut Cart,
        timer: CartTimer,
        ctx: &mut Context<CartOutput, CartTimer>,
    ) -> Result<(), DomainError> {
        let CartTimer::Abandon = timer;
        // A cancelled timer never fires; the check is for a cart closed some other way.
        if cart.status == CartStatus::Open {
            cart.status = CartStatus::Abandoned;
            cart.abandon_timer = None;
            ctx.emit(CartOutput::Abandoned {
                lines: cart.lines.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use troupe::domain::testkit::{TestKit, event};

    use super::*;

    fn add(sku: &str, quantity: u32) -> CartCommand {
        CartCommand::AddItem {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn items_add_up_and_checking_out_emits_the_lines() {
        let mut kit = TestKit::new(Carts);
        kit.command("c1", add("SKU-1", 2)).unwrap();
        let (cart, _) = kit.command("c1", add("SKU-1", 1)).unwrap();
        assert_eq!(cart.lines["SKU-1"], 3);

        let (cart, effects) = kit.command("c1", CartCommand::CheckOut).unwrap();
        assert_eq!(cart.status, CartStatus::CheckedOut);
        assert_eq!(effects.emitted[0].event_type, "cart.checked_out");
        assert_eq!(effects.emitted[0].data, json!({ "lines": { "SKU-1": 3 } }));
        assert!(kit.command("c1", add("SKU-2", 1)).is_err(), "closed");
    }

    #[test]
    fn a_cart_left_alone_is_abandoned_once_and_a_change_restarts_the_wait() {
        let mut kit = TestKit::new(Carts);
        kit.command("c1", add("SKU-1", 1)).unwrap();
        kit.advance(ABANDON_AFTER - Duration::from_secs(60));
        kit.command("c1", add("SKU-2", 1)).unwrap(); // restarts the wait
        kit.advance(Duration::from_secs(120));
        assert!(
            kit.fire_due().unwrap().is_empty(),
            "the first timer was cancelled"
        );

        kit.advance(ABANDON_AFTER);
        let fired = kit.fire_due().unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].emitted[0].event_type, "cart.abandoned");
        assert_eq!(kit.state("c1").unwrap().status, CartStatus::Abandoned);
        assert!(kit.timers().is_empty());
    }

    #[test]
    fn checking_out_cancels_the_abandonment() {
        let mut kit = TestKit::new(Carts);
        kit.command("c1", add("SKU-1", 1)).unwrap();
        kit.command("c1", CartCommand::CheckOut).unwrap();
        kit.advance(ABANDON_AFTER * 2);
        assert!(kit.fire_due().unwrap().is_empty());
    }

    #[test]
    fn support_can_clear_a_cart() {
        let mut kit = TestKit::new(Carts);
        kit.command("c1", add("SKU-1", 1)).unwrap();
        let effects = kit
            .when(event("c1", "cart.cleared", json!({ "reason": "fraud" })))
            .unwrap();
        assert_eq!(effects.notifications[0].topic, "carts/c1");
        assert!(kit.state("c1").unwrap().lines.is_empty());
        assert!(kit.timers().is_empty());

        // A bought cart stays as it was; an unknown one stays empty.
        kit.command("c2", add("SKU-1", 1)).unwrap();
        kit.command("c2", CartCommand::CheckOut).unwrap();
        kit.when(event("c2", "cart.cleared", json!({ "reason": "late" })))
            .unwrap();
        assert_eq!(kit.state("c2").unwrap().lines.len(), 1);
        kit.when(event("c3", "cart.cleared", json!({ "reason": "?" })))
            .unwrap();
        assert_eq!(kit.state("c3").map(|c| c.lines.len()), Some(0));
    }

    #[test]
    fn bad_quantities_are_refused_and_change_nothing() {
        let mut kit = TestKit::new(Carts);
        assert!(kit.command("c1", add("SKU-1", 0)).is_err());
        assert!(kit.command("c1", add("SKU-1", MAX_QUANTITY + 1)).is_err());
        assert!(kit.command("c1", add("SKU-1", u32::MAX)).is_err());
        assert!(kit.command("c1", add("SKU\u{0}", 1)).is_err());
        assert!(kit.command("c1", add(&"S".repeat(65), 1)).is_err());
        assert!(kit.state("c1").is_none());
        for i in 0..MAX_LINES {
            kit.command("c1", add(&format!("SKU-{i}"), 1)).unwrap();
        }
        assert!(kit.command("c1", add("one-more", 1)).is_err(), "cart_full");
        kit.command("c1", add("SKU-0", 1)).unwrap(); // an existing line still grows
        assert_eq!(kit.state("c1").unwrap().lines.len(), MAX_LINES);
    }
}
