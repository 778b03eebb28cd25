//! Inventory: stock per SKU, fed by `stock.adjusted` events on `inventory.adjustments`.
//!
//! Emits `stock.depleted` when a SKU's available stock drops to zero or below and
//! `stock.replenished` when it rises above zero again, with the time of the adjustment that
//! crossed zero (`at`: the producer's `ts`, else when it reached the stream; for the API, when
//! the request came), and notifies `inventory/<sku>` on every change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{Context, Domain, DomainError, NoEvents, Subscription};

/// The input stream.
pub const ADJUSTMENTS_STREAM: &str = "inventory.adjustments";

/// The inventory domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory;

/// Stock of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Units physically present.
    pub on_hand: i64,
    /// Units promised to orders and not yet shipped.
    pub reserved: i64,
}

impl Stock {
    /// Units that can still be promised.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Events inventory consumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum InventoryEvent {
    /// Stock counted, received, lost or corrected in a warehouse.
    #[serde(rename = "stock.adjusted")]
    StockAdjusted(StockAdjustment),
}

/// The data of `stock.adjusted`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    /// Change in units; may be negative.
    pub delta: i64,
    /// Warehouse the change happened in.
    pub warehouse: String,
}

/// Events inventory emits on `inventory.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum InventoryOutput {
    /// A SKU's available stock dropped to zero or below.
    #[serde(rename = "stock.depleted")]
    StockDepleted(StockLevel),
    /// A SKU's available stock rose above zero again.
    #[serde(rename = "stock.replenished")]
    StockReplenished(StockLevel),
}

/// The data of `stock.depleted` and `stock.replenished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units on hand after the adjustment.
    pub on_hand: i64,
    /// When the adjustment that crossed zero happened.
    pub at: DateTime<Utc>,
}

/// Commands inventory answers from HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryCommand {
    /// The same adjustment as the event, made through the API.
    Adjust(StockAdjustment),
}

impl Domain for Inventory {
    type State = Stock;
    type Event = InventoryEvent;
    type Output = InventoryOutput;
    type Timer = NoEvents;
    type Command = InventoryCommand;
    type Reply = Stock;

    fn name(&self) -> &'static str {
        "inventory"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new(ADJUSTMENTS_STREAM)]
    }

    fn handle(
        &self,
        stock: &mut Stock,
        event: InventoryEvent,
        ctx: &mut Context<InventoryOutput>,
    ) -> Result<(), DomainError> {
        let InventoryEvent::StockAdjusted(adjustment) = event;
        adjust(stock, &adjustment, ctx)
    }

    fn execute(
        &self,
        stock: &mut Stock,
        command: InventoryCommand,
        ctx: &mut Context<InventoryOutput>,
    ) -> Result<Stock, DomainError> {
        let InventoryCommand::Adjust(adjustment) = command;
        if adjustment.warehouse.trim().is_empty() {
            return Err(DomainError::Invalid("warehouse must not be empty".into()));
        }
        adjust(stock, &adjustment, ctx)?;
        Ok(stock.clone())
    }
}

fn adjust(
    stock: &mut Stock,
    adjustment: &StockAdjustment,
    ctx: &mut Context<InventoryOutput>,
) -> Result<(), DomainError> {
    let was_available = stock.available() > 0;
    stock.on_hand = stock.on_hand.checked_add(adjustment.delta).ok_or_else(|| {
        DomainError::Invalid(format!("delta {} overflows on_hand", adjustment.delta))
    })?;
    let is_available = stock.available() > 0;
    let sku = ctx.key().to_owned();
    let level = || StockLevel {
        sku: sku.clone(),
        on_hand: stock.on_hand,
        at: ctx.input().timestamp,
    };
    if was_available && !is_available {
        let level = level();
        ctx.emit(InventoryOutput::StockDepleted(level));
    } else if !was_available && is_available {
        let level = level();
        ctx.emit(InventoryOutput::StockReplenished(level));
    }
    ctx.notify(
        &format!("inventory/{sku}"),
        json!({ "sku": sku, "on_hand": stock.on_hand, "reserved": stock.reserved,
                "available": stock.available(), "warehouse": adjustment.warehouse }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::testkit::{TestFailure, TestKit, event};
    use crate::domain::{EventCatalogue, Failure, MalformedEntry};

    /// As a producer writes it.
    const STOCK_ADJUSTED: &str = "stock.adjusted";

    fn adjusted(sku: &str, delta: i64) -> crate::domain::testkit::TestEvent {
        event(
            sku,
            STOCK_ADJUSTED,
            json!({ "delta": delta, "warehouse": "w1" }),
        )
    }

    #[test]
    fn adjustments_add_up_and_count_versions() {
        let mut kit = TestKit::new(Inventory);
        kit.given([adjusted("A", 10), adjusted("A", -3), adjusted("B", 1)]);
        assert_eq!(
            kit.state("A"),
            Some(&Stock {
                on_hand: 7,
                reserved: 0
            })
        );
        assert_eq!(kit.entity("A").unwrap().version, 2);
        assert_eq!(kit.entity("B").unwrap().version, 1);
        assert!(kit.state("C").is_none());
    }

    #[test]
    fn crossing_zero_emits_depleted_and_replenished() {
        let mut kit = TestKit::new(Inventory);
        let effects = kit.when(adjusted("A", 2)).unwrap();
        assert_eq!(effects.emitted[0].event_type, "stock.replenished");
        assert!(kit.when(adjusted("A", -1)).unwrap().emitted.is_empty());
        kit.advance(std::time::Duration::from_secs(60));
        let effects = kit.when(adjusted("A", -1)).unwrap();
        assert_eq!(effects.emitted[0].event_type, "stock.depleted");
        assert_eq!(
            effects.emitted[0].data,
            json!({ "sku": "A", "on_hand": 0, "at": "2026-01-01T00:01:00Z" })
        );
        assert_eq!(effects.notifications[0].topic, "inventory/A");
    }

    #[test]
    fn the_catalogue_is_read_from_the_event_enums() {
        let catalogue = EventCatalogue::of::<Inventory>().unwrap();
        assert_eq!(catalogue.inputs, [STOCK_ADJUSTED]);
        assert_eq!(catalogue.outputs, ["stock.depleted", "stock.replenished"]);
    }

    #[test]
    fn emitted_events_read_back_as_the_output_enum() {
        let mut kit = TestKit::new(Inventory);
        let effects = kit.when(adjusted("A", 3)).unwrap();
        assert_eq!(
            effects.emitted[0].decode::<InventoryOutput>().unwrap(),
            InventoryOutput::StockReplenished(StockLevel {
                sku: "A".into(),
                on_hand: 3,
                at: TestKit::<Inventory>::START,
            })
        );
    }

    #[test]
    fn depletion_is_stamped_with_when_the_adjustment_happened() {
        let mut kit = TestKit::new(Inventory);
        let counted = chrono::DateTime::parse_from_rfc3339("2025-12-31T23:00:00Z")
            .unwrap()
            .to_utc();
        let effects = kit.when(adjusted("A", 1).at(counted)).unwrap();
        assert_eq!(effects.emitted[0].data["at"], "2025-12-31T23:00:00Z");
        // A command is stamped with when it came: the kit's clock.
        let (_, effects) = kit
            .command(
                "A",
                InventoryCommand::Adjust(StockAdjustment {
                    delta: -1,
                    warehouse: "w1".into(),
                }),
            )
            .unwrap();
        assert_eq!(effects.emitted[0].data["at"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn malformed_events_are_rejected_with_a_reason() {
        let mut kit = TestKit::new(Inventory);
        let unknown = kit.when(event("A", "stock.stolen", json!({})));
        assert!(matches!(
            unknown,
            Err(TestFailure::Malformed(MalformedEntry::UnknownType(_)))
        ));
        let missing = kit.when(event("A", STOCK_ADJUSTED, json!({ "delta": 1 })));
        assert!(matches!(
            missing,
            Err(TestFailure::Malformed(MalformedEntry::InvalidData { .. }))
        ));
        let wrong_type = kit.when(event(
            "A",
            STOCK_ADJUSTED,
            json!({ "delta": "1", "warehouse": "w" }),
        ));
        assert!(wrong_type.is_err());
        assert!(kit.state("A").is_none(), "nothing applied");
    }

    #[test]
    fn overflow_is_a_handler_error_and_changes_nothing() {
        let mut kit = TestKit::new(Inventory);
        kit.given([adjusted("A", i64::MAX)]);
        let err = kit.when(adjusted("A", 1)).unwrap_err();
        assert!(matches!(
            err,
            TestFailure::Failed(Failure::Handler(DomainError::Invalid(_)))
        ));
        assert_eq!(kit.state("A").unwrap().on_hand, i64::MAX);
        assert_eq!(kit.entity("A").unwrap().version, 1);
    }

    #[test]
    fn the_adjust_command_replies_with_the_new_stock() {
        let mut kit = TestKit::new(Inventory);
        let adj = StockAdjustment {
            delta: 4,
            warehouse: "w1".into(),
        };
        let (reply, _) = kit.command("A", InventoryCommand::Adjust(adj)).unwrap();
        assert_eq!(reply.on_hand, 4);
        let empty = StockAdjustment {
            delta: 4,
            warehouse: " ".into(),
        };
        assert!(kit.command("A", InventoryCommand::Adjust(empty)).is_err());
        assert_eq!(kit.entity("A").unwrap().version, 1);
    }
}
