//! The reference shop under test: the app with the shop's domains, and the one oracle for its
//! invariants (money and stock conserved, every order settled, nothing both confirmed and
//! released), checked through the REST API after every scenario.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use troupe::domains::orders::OrderStatus;
use troupe::http::orders::OrderView;
use troupe::settings::Settings;

use super::client::{CustomersClient, InventoryClient, OrdersClient};
use super::{AppOptions, Isolation, TestApp, eventually, spawn_app_on};

/// Every domain of the shop.
pub const SHOP: &[&str] = &[
    "inventory",
    "customers",
    "payments",
    "reservations",
    "orders",
    "notifications",
];

/// Spawns the app running `domains`, after `configure` adjusts the settings.
pub async fn spawn_shop(domains: &[&str], configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut isolation = Isolation::new().await;
    isolation.settings.domains.enabled = domains.iter().map(|&d| d.to_owned()).collect();
    configure(&mut isolation.settings);
    spawn_app_on(isolation, AppOptions::default()).await
}

/// The shop's typed clients, for a service in this process or a child.
#[derive(Clone)]
pub struct ShopClient {
    /// Customers and their wallets and notifications.
    pub customers: CustomersClient,
    /// Orders.
    pub orders: OrdersClient,
    /// Stock.
    pub inventory: InventoryClient,
}

impl ShopClient {
    /// The clients of the service at `base` (`http://127.0.0.1:<port>`).
    pub fn at(base: &str) -> Self {
        let client = reqwest::Client::new();
        Self {
            customers: CustomersClient::new(client.clone(), base),
            orders: OrdersClient::new(client.clone(), base),
            inventory: InventoryClient::new(client, base),
        }
    }
}

impl TestApp {
    /// The shop's clients of this app.
    pub fn shop(&self) -> ShopClient {
        ShopClient::at(&self.address)
    }
}

/// What a scenario did, for the oracle: customers with their credit, SKUs with their
/// initial stock, and the orders placed.
#[derive(Default)]
pub struct Ledger {
    /// Customer id → opening credit.
    pub customers: BTreeMap<String, i64>,
    /// SKU → on_hand set at the start.
    pub stock: BTreeMap<String, i64>,
    /// Order ids placed.
    pub orders: BTreeSet<String>,
}

impl Ledger {
    /// Registers a customer with `credit` and waits for the wallet.
    pub async fn customer(&mut self, shop: &ShopClient, name: &str, credit: i64) -> String {
        let customer = shop.customers.register(name, credit).await;
        let customers = &shop.customers;
        eventually(Duration::from_secs(10), "the wallet opens", || async {
            customers.wallet(&customer.id).await.is_some()
        })
        .await;
        self.customers.insert(customer.id.clone(), credit);
        customer.id
    }

    /// Sets `sku`'s stock.
    pub async fn stock(&mut self, shop: &ShopClient, sku: &str, on_hand: i64) {
        shop.inventory.set(sku, on_hand).await;
        self.stock.insert(sku.to_owned(), on_hand);
    }

    /// Places an order and records it.
    pub async fn order(
        &mut self,
        shop: &ShopClient,
        customer: &str,
        lines: &[(&str, i64, i64)],
    ) -> OrderView {
        let order = shop.orders.place(customer, lines).await;
        self.orders.insert(order.id.clone());
        order
    }

    /// Waits until every order is settled (not pending), then returns them.
    pub async fn settled(&self, shop: &ShopClient, within: Duration) -> Vec<OrderView> {
        let orders = &shop.orders;
        let mut settled = Vec::with_capacity(self.orders.len());
        for id in &self.orders {
            let last = RefCell::new(None);
            eventually(within, &format!("order {id} settles"), || async {
                let order = orders.order(id).await;
                let done = order.status != OrderStatus::Pending;
                *last.borrow_mut() = Some(order);
                done
            })
            .await;
            settled.push(last.into_inner().expect("read at least once"));
        }
        settled
    }

    /// Checks every invariant of the shop once the saga is at rest: each order settled; per
    /// customer, credit = balance + captured − refunded, and captured − refunded is the
    /// total of the orders that stayed confirmed; per SKU, on_hand = initial − sold, with
    /// nothing left reserved and available never negative. Waits for the compensations still
    /// in flight (a refund, a release) to land.
    pub async fn assert_invariants(&self, shop: &ShopClient, within: Duration) -> Vec<OrderView> {
        let settled = self.settled(shop, within).await;
        let kept: Vec<&OrderView> = settled
            .iter()
            .filter(|o| o.status == OrderStatus::Confirmed)
            .collect();
        for order in &settled {
            let statuses: Vec<OrderStatus> = order.timeline.iter().map(|c| c.status).collect();
            assert!(
                statuses.len() >= 2 && statuses[0] == OrderStatus::Pending,
                "order {} timeline {statuses:?}",
                order.id
            );
            assert!(
                !(statuses.contains(&OrderStatus::Rejected)
                    && statuses.contains(&OrderStatus::Confirmed)),
                "order {} both confirmed and rejected: {statuses:?}",
                order.id
            );
        }
        let customers = &shop.customers;
        for (customer, credit) in &self.customers {
            let spent: i64 = kept
                .iter()
                .filter(|o| &o.customer_id == customer)
                .map(|o| o.total_cents)
                .sum();
            let seen = RefCell::new(None);
            eventually(within, &format!("wallet {customer} at rest"), || async {
                let wallet = customers.wallet(customer).await.expect("wallet");
                let ok = wallet.captured_cents - wallet.refunded_cents == spent;
                *seen.borrow_mut() = Some(wallet);
                ok
            })
            .await;
            let wallet = seen.into_inner().expect("read");
            assert_eq!(
                *credit,
                wallet.balance_cents + wallet.captured_cents - wallet.refunded_cents,
                "money conserved for {customer}"
            );
            assert_eq!(wallet.credit_cents, *credit);
            assert!(wallet.balance_cents >= 0);
        }
        // One notification per status change of each order, no more, no fewer.
        for customer in self.customers.keys() {
            let theirs: Vec<&OrderView> = settled
                .iter()
                .filter(|o| &o.customer_id == customer)
                .collect();
            let expected: usize = theirs.iter().map(|o| o.timeline.len()).sum();
            let seen = RefCell::new(Vec::new());
            eventually(within, &format!("notifications of {customer}"), || async {
                let page = customers.notifications(customer, 200, None).await;
                let changes: Vec<_> = page
                    .items
                    .into_iter()
                    .filter(|n| n.kind.is_status_change())
                    .collect();
                let done = changes.len() >= expected;
                *seen.borrow_mut() = changes;
                done
            })
            .await;
            let seen = seen.into_inner();
            for order in theirs {
                let count = seen.iter().filter(|n| n.order_id == order.id).count();
                assert_eq!(
                    count,
                    order.timeline.len(),
                    "notifications of order {} ({:?})",
                    order.id,
                    order.status
                );
            }
            assert_eq!(
                seen.len(),
                expected,
                "no notification without its status change"
            );
        }
        let inventory = &shop.inventory;
        for (sku, initial) in &self.stock {
            let sold: i64 = kept
                .iter()
                .flat_map(|o| o.items.iter())
                .filter(|line| &line.sku == sku)
                .map(|line| line.quantity)
                .sum();
            let seen = RefCell::new(None);
            eventually(within, &format!("stock of {sku} at rest"), || async {
                let stock = inventory.stock(sku).await.expect("stock");
                let ok = stock.reserved == 0 && stock.on_hand == initial - sold;
                *seen.borrow_mut() = Some(stock);
                ok
            })
            .await;
            let stock = seen.into_inner().expect("read");
            assert!(stock.available >= 0, "{sku} oversold: {stock:?}");
        }
        settled
    }
}
