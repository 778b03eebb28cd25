//! The reference shop: the domains this binary runs, one line each.

use crate::domains::customers::Customers;
use crate::domains::inventory::Inventory;
use crate::domains::notifications::Notifications;
use crate::domains::orders::Orders;
use crate::domains::payments::Payments;
use crate::domains::reservations::Reservations;
use crate::http;
use crate::registry::Registry;

/// Every domain `troupe serve` can run (`domains.enabled` picks among them).
pub fn registry() -> Registry {
    Registry::new()
        .serve_configured::<Inventory>(http::inventory::Routes)
        .serve(Customers, http::customers::Routes)
        .serve(Payments, http::payments::Routes)
        .domain(Reservations)
        .serve_configured::<Orders>(http::orders::Routes)
        .serve(Notifications, http::notifications::Routes)
}
