//! Inventory: stock per SKU, fed by `stock.adjusted` events on `inventory.adjustments` and by
//! the orders' stock requests on `reservations.requests`.
//!
//! Emits `stock.depleted` when a SKU's available stock drops to zero or below and
//! `stock.replenished` when it rises above zero again, with the time of the change that
//! crossed zero (`at`: the producer's `ts`, else when it reached the stream; for the API, when
//! the request came), and notifies `inventory/<sku>` on every change.
//!
//! For orders it holds stock line by line: a hold is granted only from what is available
//! (`stock.held`, else `stock.short`, both keyed by the order), so available never goes
//! negative through orders, whatever the partition count. Holds are kept per order, so a
//! release or commit takes back exactly what that order held, once. Whether an order gets all
//! of its lines or none is decided per order by the reservations domain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Configurable, Context, Domain, DomainError, NoEvents, Subscription};

/// The input stream.
pub const ADJUSTMENTS_STREAM: &str = "inventory.adjustments";
/// Where the reservations domain asks for holds, releases, commits and restocks.
pub use crate::domains::reservations::REQUESTS_STREAM;

/// Longest SKU the shop's API takes, in characters (well inside the runtime's key limit).
pub const MAX_SKU_CHARS: usize = 64;

/// A SKU is 1 to [`MAX_SKU_CHARS`] characters without control characters.
pub fn check_sku(sku: &str) -> Result<(), DomainError> {
    let chars = sku.chars().count();
    if chars == 0 || chars > MAX_SKU_CHARS {
        return Err(DomainError::Invalid(format!(
            "a SKU has 1 to {MAX_SKU_CHARS} characters"
        )));
    }
    if sku.chars().any(char::is_control) {
        return Err(DomainError::Invalid(
            "a SKU has no control characters".into(),
        ));
    }
    Ok(())
}

/// Longest warehouse name, in characters.
pub const MAX_WAREHOUSE_CHARS: usize = 200;

/// A warehouse is named by 1 to [`MAX_WAREHOUSE_CHARS`] characters, not all blank, without
/// control characters.
pub fn check_warehouse(warehouse: &str) -> Result<(), DomainError> {
    if warehouse.trim().is_empty() {
        return Err(DomainError::Invalid("warehouse must not be empty".into()));
    }
    if warehouse.chars().count() > MAX_WAREHOUSE_CHARS || warehouse.chars().any(char::is_control) {
        return Err(DomainError::Invalid(format!(
            "warehouse has at most {MAX_WAREHOUSE_CHARS} characters and no control characters"
        )));
    }
    Ok(())
}

/// The inventory domain.
#[derive(Debug, Clone, Copy)]
pub struct Inventory {
    /// Emit `stock.changed` on every change (see [`InventorySettings`]).
    publish_levels: bool,
}

impl Default for Inventory {
    /// As an empty `[domains.inventory]` configures it: levels published.
    fn default() -> Self {
        Self {
            publish_levels: true,
        }
    }
}

/// `[domains.inventory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySettings {
    /// Emit `stock.changed` (the level after every adjustment, count, hold, release, sale and
    /// restock) on `inventory.events`, which `sku:<sku>` WebSocket subscribers receive. Off, a
    /// SKU's watchers get only its crossings of zero (`stock.depleted`, `stock.replenished`),
    /// and each input commits and publishes one event fewer (see BENCHMARKS.md for the cost).
    #[serde(default = "yes")]
    pub publish_stock_levels: bool,
}

fn yes() -> bool {
    true
}

impl Configurable for Inventory {
    type Settings = InventorySettings;

    fn from_settings(settings: InventorySettings) -> Result<Self, String> {
        Ok(Self {
            publish_levels: settings.publish_stock_levels,
        })
    }
}

/// Stock of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Units physically present.
    pub on_hand: i64,
    /// Units promised to orders and not yet shipped: the sum of `holds`.
    pub reserved: i64,
    /// Units held per order.
    #[serde(default)]
    pub holds: BTreeMap<String, i64>,
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
    /// Hold `quantity` for an order, if available.
    #[serde(rename = "stock.hold_requested")]
    HoldRequested(StockRequest),
    /// Give back what an order holds.
    #[serde(rename = "stock.release_requested")]
    ReleaseRequested(StockRequest),
    /// What an order holds is sold: it leaves the stock.
    #[serde(rename = "stock.commit_requested")]
    CommitRequested(StockRequest),
    /// Units an order bought come back (the order was cancelled after it was confirmed).
    #[serde(rename = "stock.restock_requested")]
    RestockRequested(StockRequest),
}

/// The data of the stock requests on `reservations.requests`, keyed by SKU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct StockRequest {
    /// The order asking.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units (for a hold and a restock; a release and a commit take what the order holds).
    pub quantity: i64,
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
    /// A SKU's stock changed: every adjustment, count, hold, release, sale and restock
    /// (keyed by the SKU; what `sku:<sku>` WebSocket subscribers receive).
    #[serde(rename = "stock.changed")]
    StockChanged(StockChanged),
    /// A hold was granted (keyed by the order).
    #[serde(rename = "stock.held")]
    Held(LineHeld),
    /// A hold was refused: not enough available (keyed by the order).
    #[serde(rename = "stock.short")]
    Short(LineShort),
}

/// The data of `stock.held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineHeld {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units held.
    pub quantity: i64,
}

/// The data of `stock.short`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineShort {
    /// The order.
    pub order_id: String,
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: i64,
    /// Units that were available.
    pub available: i64,
}

/// The data of `stock.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChanged {
    /// The SKU.
    pub sku: String,
    /// Units on hand now.
    pub on_hand: i64,
    /// Units held for orders now.
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// What changed it.
    pub change: StockChange,
}

/// What changed a SKU's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockChange {
    /// `stock.adjusted` or `POST …/adjustments`.
    Adjustment,
    /// `PUT /api/v1/inventory/{sku}`.
    Count,
    /// Units held for an order.
    Hold,
    /// An order's hold given back.
    Release,
    /// An order's hold sold.
    Commit,
    /// Units of a cancelled order back in stock.
    Restock,
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
    /// Sets the units on hand (a stock count), if the SKU is still at `expected_version`.
    SetOnHand {
        /// The new count.
        on_hand: i64,
        /// The version the client read (`If-Match`); `None` for any.
        expected_version: Option<u64>,
    },
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
        vec![
            Subscription::new(ADJUSTMENTS_STREAM),
            Subscription::new(REQUESTS_STREAM),
        ]
    }

    fn topic_kinds(&self) -> &'static [&'static str] {
        &["sku"]
    }

    fn topics(&self, _key: &str, event: &InventoryOutput) -> Vec<String> {
        match event {
            InventoryOutput::StockChanged(StockChanged { sku, .. })
            | InventoryOutput::StockDepleted(StockLevel { sku, .. })
            | InventoryOutput::StockReplenished(StockLevel { sku, .. }) => {
                vec![format!("sku:{sku}")]
            }
            // Keyed by the order: the order's own notifications tell its watchers.
            InventoryOutput::Held(_) | InventoryOutput::Short(_) => Vec::new(),
        }
    }

    fn handle(
        &self,
        stock: &mut Stock,
        event: InventoryEvent,
        ctx: &mut Context<InventoryOutput>,
    ) -> Result<(), DomainError> {
        match event {
            InventoryEvent::StockAdjusted(adjustment) => {
                adjust(stock, &adjustment, self.publish_levels, ctx)
            }
            InventoryEvent::HoldRequested(request) => {
                hold(stock, request, self.publish_levels, ctx)
            }
            InventoryEvent::ReleaseRequested(request) => changing(
                stock,
                ctx,
                (StockChange::Release, self.publish_levels),
                |stock| {
                    if let Some(held) = stock.holds.remove(&request.order_id) {
                        stock.reserved -= held;
                    }
                    Ok(())
                },
            ),
            InventoryEvent::CommitRequested(request) => changing(
                stock,
                ctx,
                (StockChange::Commit, self.publish_levels),
                |stock| {
                    if let Some(held) = stock.holds.remove(&request.order_id) {
                        stock.reserved -= held;
                        stock.on_hand -= held;
                    }
                    Ok(())
                },
            ),
            InventoryEvent::RestockRequested(request) => {
                positive(request.quantity)?;
                changing(
                    stock,
                    ctx,
                    (StockChange::Restock, self.publish_levels),
                    |stock| {
                        stock.on_hand =
                            stock.on_hand.checked_add(request.quantity).ok_or_else(|| {
                                DomainError::Invalid("restock overflows on_hand".into())
                            })?;
                        Ok(())
                    },
                )
            }
        }
    }

    fn execute(
        &self,
        stock: &mut Stock,
        command: InventoryCommand,
        ctx: &mut Context<InventoryOutput>,
    ) -> Result<Stock, DomainError> {
        match command {
            InventoryCommand::Adjust(adjustment) => {
                check_warehouse(&adjustment.warehouse)?;
                adjust(stock, &adjustment, self.publish_levels, ctx)?;
            }
            InventoryCommand::SetOnHand {
                on_hand,
                expected_version,
            } => {
                if let Some(expected) = expected_version
                    && expected != ctx.version()
                {
                    return Err(DomainError::Stale {
                        expected,
                        current: ctx.version(),
                    });
                }
                if on_hand < 0 {
                    return Err(DomainError::Invalid("on_hand must not be negative".into()));
                }
                if on_hand < stock.reserved {
                    return Err(DomainError::Rejected {
                        code: "below_reserved",
                        message: format!(
                            "{} units are reserved for orders; on_hand cannot go below that",
                            stock.reserved
                        ),
                    });
                }
                changing(
                    stock,
                    ctx,
                    (StockChange::Count, self.publish_levels),
                    |stock| {
                        stock.on_hand = on_hand;
                        Ok(())
                    },
                )?;
            }
        }
        Ok(stock.clone())
    }
}

fn positive(quantity: i64) -> Result<(), DomainError> {
    if quantity <= 0 {
        return Err(DomainError::Invalid(format!(
            "quantity must be positive, not {quantity}"
        )));
    }
    Ok(())
}

fn hold(
    stock: &mut Stock,
    request: StockRequest,
    levels: bool,
    ctx: &mut Context<InventoryOutput>,
) -> Result<(), DomainError> {
    positive(request.quantity)?;
    if stock.holds.contains_key(&request.order_id) {
        // One hold per order and SKU: the reservations domain asks once per line.
        return Err(DomainError::Invalid(format!(
            "order {} already holds {}",
            request.order_id, request.sku
        )));
    }
    let available = stock.available();
    let StockRequest {
        order_id,
        sku,
        quantity,
    } = request;
    if available < quantity {
        ctx.emit_for(
            &order_id.clone(),
            InventoryOutput::Short(LineShort {
                order_id,
                sku,
                requested: quantity,
                available,
            }),
        );
        return Ok(());
    }
    changing(stock, ctx, (StockChange::Hold, levels), |stock| {
        stock.holds.insert(order_id.clone(), quantity);
        stock.reserved += quantity;
        Ok(())
    })?;
    ctx.emit_for(
        &order_id.clone(),
        InventoryOutput::Held(LineHeld {
            order_id,
            sku,
            quantity,
        }),
    );
    Ok(())
}

/// Applies `change`, then announces a crossing of zero and the new level.
/// `what` changes the stock; with `levels`, `stock.changed` says so.
fn changing(
    stock: &mut Stock,
    ctx: &mut Context<InventoryOutput>,
    (what, levels): (StockChange, bool),
    change: impl FnOnce(&mut Stock) -> Result<(), DomainError>,
) -> Result<(), DomainError> {
    let was_available = stock.available() > 0;
    change(stock)?;
    announce(stock, was_available, what, levels, ctx);
    Ok(())
}

fn announce(
    stock: &Stock,
    was_available: bool,
    what: StockChange,
    levels: bool,
    ctx: &mut Context<InventoryOutput>,
) {
    let is_available = stock.available() > 0;
    let level = StockLevel {
        sku: ctx.key().to_owned(),
        on_hand: stock.on_hand,
        at: ctx.input().timestamp,
    };
    if was_available && !is_available {
        ctx.emit(InventoryOutput::StockDepleted(level));
    } else if !was_available && is_available {
        ctx.emit(InventoryOutput::StockReplenished(level));
    }
    if !levels {
        return;
    }
    ctx.emit(InventoryOutput::StockChanged(StockChanged {
        sku: ctx.key().to_owned(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        available: stock.available(),
        change: what,
    }));
}

fn adjust(
    stock: &mut Stock,
    adjustment: &StockAdjustment,
    levels: bool,
    ctx: &mut Context<InventoryOutput>,
) -> Result<(), DomainError> {
    // The same delta could fit a later state: a conflict with this one, not a bad input.
    let on_hand =
        stock
            .on_hand
            .checked_add(adjustment.delta)
            .ok_or_else(|| DomainError::Rejected {
                code: "on_hand_overflow",
                message: format!("delta {} overflows on_hand", adjustment.delta),
            })?;
    changing(stock, ctx, (StockChange::Adjustment, levels), |stock| {
        stock.on_hand = on_hand;
        Ok(())
    })
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
        let mut kit = TestKit::new(Inventory::default());
        kit.given([adjusted("A", 10), adjusted("A", -3), adjusted("B", 1)]);
        assert_eq!(
            kit.state("A"),
            Some(&Stock {
                on_hand: 7,
                ..Stock::default()
            })
        );
        assert_eq!(kit.entity("A").unwrap().version, 2);
        assert_eq!(kit.entity("B").unwrap().version, 1);
        assert!(kit.state("C").is_none());
    }

    #[test]
    fn crossing_zero_emits_depleted_and_replenished() {
        let mut kit = TestKit::new(Inventory::default());
        let effects = kit.when(adjusted("A", 2)).unwrap();
        let types = |effects: &crate::domain::Effects| -> Vec<String> {
            effects
                .emitted
                .iter()
                .map(|e| e.event_type.clone())
                .collect()
        };
        assert_eq!(types(&effects), ["stock.replenished", "stock.changed"]);
        let no_crossing = kit.when(adjusted("A", -1)).unwrap();
        assert_eq!(types(&no_crossing), ["stock.changed"]);
        kit.advance(std::time::Duration::from_secs(60));
        let effects = kit.when(adjusted("A", -1)).unwrap();
        assert_eq!(types(&effects), ["stock.depleted", "stock.changed"]);
        assert_eq!(
            effects.emitted[0].data,
            json!({ "sku": "A", "on_hand": 0, "at": "2026-01-01T00:01:00Z" })
        );
        assert_eq!(
            effects.emitted[1].data,
            json!({ "sku": "A", "on_hand": 0, "reserved": 0, "available": 0,
                    "change": "adjustment" })
        );
    }

    #[test]
    fn without_published_levels_a_sku_announces_only_its_crossings_of_zero() {
        let quiet = Inventory::from_settings(InventorySettings {
            publish_stock_levels: false,
        })
        .unwrap();
        let mut kit = TestKit::new(quiet);
        let types = |effects: &crate::domain::Effects| -> Vec<String> {
            effects
                .emitted
                .iter()
                .map(|e| e.event_type.clone())
                .collect()
        };
        assert_eq!(
            types(&kit.when(adjusted("A", 2)).unwrap()),
            ["stock.replenished"]
        );
        assert!(kit.when(adjusted("A", 1)).unwrap().emitted.is_empty());
        let held = kit
            .when(request("stock.hold_requested", "A", "o1", 3))
            .unwrap();
        assert_eq!(types(&held), ["stock.depleted", "stock.held"]);
        assert_eq!(kit.state("A").unwrap().available(), 0);
    }

    #[test]
    fn every_change_of_a_sku_is_published_on_its_topic() {
        let mut kit = TestKit::new(Inventory::default());
        kit.given([adjusted("A", 5)]);
        let held = kit
            .when(request("stock.hold_requested", "A", "o1", 2))
            .unwrap();
        let topics: Vec<(String, Vec<String>)> = held
            .emitted
            .iter()
            .map(|e| {
                let event = e.decode::<InventoryOutput>().unwrap();
                (
                    e.event_type.clone(),
                    Inventory::default().topics(&e.key, &event),
                )
            })
            .collect();
        assert_eq!(
            topics,
            [
                ("stock.changed".to_owned(), vec!["sku:A".to_owned()]),
                ("stock.held".to_owned(), vec![])
            ]
        );
        assert_eq!(
            held.emitted[0].decode::<InventoryOutput>().unwrap(),
            InventoryOutput::StockChanged(StockChanged {
                sku: "A".into(),
                on_hand: 5,
                reserved: 2,
                available: 3,
                change: StockChange::Hold
            })
        );
        // A refused hold changes nothing: nothing for the SKU's watchers.
        let short = kit
            .when(request("stock.hold_requested", "A", "o2", 9))
            .unwrap();
        assert_eq!(short.emitted.len(), 1);
        assert_eq!(short.emitted[0].event_type, "stock.short");
    }

    #[test]
    fn the_catalogue_is_read_from_the_event_enums() {
        let catalogue = EventCatalogue::of::<Inventory>().unwrap();
        assert_eq!(
            catalogue.inputs,
            [
                STOCK_ADJUSTED,
                "stock.hold_requested",
                "stock.release_requested",
                "stock.commit_requested",
                "stock.restock_requested"
            ]
        );
        assert_eq!(
            catalogue.outputs,
            [
                "stock.depleted",
                "stock.replenished",
                "stock.changed",
                "stock.held",
                "stock.short"
            ]
        );
    }

    #[test]
    fn emitted_events_read_back_as_the_output_enum() {
        let mut kit = TestKit::new(Inventory::default());
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
        let mut kit = TestKit::new(Inventory::default());
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
        let mut kit = TestKit::new(Inventory::default());
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
        let mut kit = TestKit::new(Inventory::default());
        kit.given([adjusted("A", i64::MAX)]);
        let err = kit.when(adjusted("A", 1)).unwrap_err();
        assert!(matches!(
            err,
            TestFailure::Failed(Failure::Handler(DomainError::Rejected {
                code: "on_hand_overflow",
                ..
            }))
        ));
        assert_eq!(kit.state("A").unwrap().on_hand, i64::MAX);
        assert_eq!(kit.entity("A").unwrap().version, 1);
    }

    fn request(
        kind: &str,
        sku: &str,
        order: &str,
        quantity: i64,
    ) -> crate::domain::testkit::TestEvent {
        event(
            sku,
            kind,
            json!({ "order_id": order, "sku": sku, "quantity": quantity }),
        )
    }

    #[test]
    fn holds_are_granted_only_from_what_is_available() {
        let mut kit = TestKit::new(Inventory::default());
        kit.given([adjusted("A", 5)]);
        let effects = kit
            .when(request("stock.hold_requested", "A", "o1", 3))
            .unwrap();
        assert_eq!(effects.emitted[0].event_type, "stock.changed");
        assert_eq!(effects.emitted[1].event_type, "stock.held");
        assert_eq!(effects.emitted[1].key, "o1", "answered to the order");
        let effects = kit
            .when(request("stock.hold_requested", "A", "o2", 3))
            .unwrap();
        assert_eq!(
            effects.emitted[0].decode::<InventoryOutput>().unwrap(),
            InventoryOutput::Short(LineShort {
                order_id: "o2".into(),
                sku: "A".into(),
                requested: 3,
                available: 2
            })
        );
        let stock = kit.state("A").unwrap();
        assert_eq!(
            (stock.on_hand, stock.reserved, stock.available()),
            (5, 3, 2)
        );
        // The last two units: available reaches zero, which is announced.
        let effects = kit
            .when(request("stock.hold_requested", "A", "o3", 2))
            .unwrap();
        let types: Vec<&str> = effects
            .emitted
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(types, ["stock.depleted", "stock.changed", "stock.held"]);
        assert_eq!(kit.state("A").unwrap().available(), 0);
    }

    #[test]
    fn releases_commits_and_restocks_move_exactly_what_an_order_held() {
        let mut kit = TestKit::new(Inventory::default());
        kit.given([
            adjusted("A", 10),
            request("stock.hold_requested", "A", "o1", 4),
            request("stock.hold_requested", "A", "o2", 3),
        ]);
        kit.when(request("stock.release_requested", "A", "o1", 4))
            .unwrap();
        kit.when(request("stock.release_requested", "A", "o1", 4))
            .unwrap();
        let stock = kit.state("A").unwrap().clone();
        assert_eq!((stock.on_hand, stock.reserved), (10, 3), "released once");
        kit.when(request("stock.commit_requested", "A", "o2", 3))
            .unwrap();
        kit.when(request("stock.commit_requested", "A", "o2", 3))
            .unwrap();
        let stock = kit.state("A").unwrap().clone();
        assert_eq!((stock.on_hand, stock.reserved), (7, 0), "committed once");
        assert!(stock.holds.is_empty());
        kit.when(request("stock.restock_requested", "A", "o2", 3))
            .unwrap();
        assert_eq!(kit.state("A").unwrap().on_hand, 10);
        for bad in [0, -1] {
            assert!(
                kit.when(request("stock.hold_requested", "A", "o9", bad))
                    .is_err()
            );
        }
    }

    #[test]
    fn a_count_cannot_go_below_what_is_reserved_nor_land_on_a_stale_read() {
        let mut kit = TestKit::new(Inventory::default());
        kit.given([
            adjusted("A", 10),
            request("stock.hold_requested", "A", "o1", 4),
        ]);
        let set = |on_hand, expected_version| InventoryCommand::SetOnHand {
            on_hand,
            expected_version,
        };
        assert!(matches!(
            kit.command("A", set(3, None)),
            Err(Failure::Handler(DomainError::Rejected {
                code: "below_reserved",
                ..
            }))
        ));
        assert!(matches!(
            kit.command("A", set(20, Some(1))),
            Err(Failure::Handler(DomainError::Stale {
                expected: 1,
                current: 2
            }))
        ));
        let (stock, _) = kit.command("A", set(4, Some(2))).unwrap();
        assert_eq!((stock.on_hand, stock.available()), (4, 0));
    }

    #[test]
    fn the_adjust_command_replies_with_the_new_stock() {
        let mut kit = TestKit::new(Inventory::default());
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
