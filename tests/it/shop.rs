//! The reference shop end to end through its REST API, on real Redis and Postgres: each saga
//! outcome, and the shop's invariants after every scenario (helpers/shop.rs).

use std::time::Duration;

use serde_json::json;
use troupe::domains::orders::{OrderStatus, RejectReason};

use crate::helpers::shop::{Ledger, SHOP, spawn_shop};

const SETTLE: Duration = Duration::from_secs(20);

#[actix_web::test]
async fn an_order_with_stock_and_funds_is_confirmed() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let alice = ledger.customer(&shop, "Alice", 10_000).await;
    ledger.stock(&shop, "A-1", 10).await;
    ledger.stock(&shop, "B-1", 5).await;
    let placed = ledger
        .order(&shop, &alice, &[("A-1", 2, 1_500), ("B-1", 1, 1_000)])
        .await;
    assert_eq!(placed.status, OrderStatus::Pending);
    assert_eq!(placed.total_cents, 4_000);
    let settled = ledger.assert_invariants(&shop, SETTLE).await;
    let order = &settled[0];
    assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
    let wallet = app.customers().wallet(&alice).await.unwrap();
    assert_eq!(wallet.balance_cents, 6_000);
    let stock = app.inventory().stock("A-1").await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved), (8, 0));
}

#[actix_web::test]
async fn a_short_line_rejects_the_whole_order_and_releases_the_rest() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let bob = ledger.customer(&shop, "Bob", 100_000).await;
    ledger.stock(&shop, "A-2", 10).await;
    ledger.stock(&shop, "B-2", 1).await;
    ledger
        .order(&shop, &bob, &[("A-2", 3, 100), ("B-2", 2, 100)])
        .await;
    let settled = ledger.assert_invariants(&shop, SETTLE).await;
    let order = &settled[0];
    assert_eq!(
        (order.status, order.reason),
        (OrderStatus::Rejected, Some(RejectReason::OutOfStock))
    );
    assert_eq!(order.short_skus, ["B-2"]);
    assert_eq!(
        app.customers().wallet(&bob).await.unwrap().balance_cents,
        100_000
    );
}

#[actix_web::test]
async fn a_declined_payment_releases_the_stock() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let carol = ledger.customer(&shop, "Carol", 500).await;
    ledger.stock(&shop, "A-3", 4).await;
    ledger.order(&shop, &carol, &[("A-3", 2, 300)]).await;
    let settled = ledger.assert_invariants(&shop, SETTLE).await;
    assert_eq!(
        (settled[0].status, settled[0].reason),
        (OrderStatus::Rejected, Some(RejectReason::PaymentDeclined))
    );
    let stock = app.inventory().stock("A-3").await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved), (4, 0));
}

#[actix_web::test]
async fn a_cancelled_confirmed_order_is_refunded_and_restocked() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let dave = ledger.customer(&shop, "Dave", 1_000).await;
    ledger.stock(&shop, "A-4", 3).await;
    let placed = ledger.order(&shop, &dave, &[("A-4", 3, 200)]).await;
    let settled = ledger.settled(&shop, SETTLE).await;
    assert_eq!(settled[0].status, OrderStatus::Confirmed);
    let cancelled = app.orders().cancel(&placed.id).await;
    assert_eq!(cancelled.status(), 200);
    let again = app.orders().cancel(&placed.id).await;
    assert_eq!(again.status(), 409);
    let settled = ledger.assert_invariants(&shop, SETTLE).await;
    let statuses: Vec<_> = settled[0].timeline.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Cancelled
        ]
    );
    assert_eq!(
        app.customers().wallet(&dave).await.unwrap().balance_cents,
        1_000
    );
    assert_eq!(app.inventory().stock("A-4").await.unwrap().on_hand, 3);
}

/// Payments is not running, so nothing settles the order: its durable timer rejects it and
/// the stock it held comes back.
#[actix_web::test]
async fn an_order_nothing_settles_times_out_and_releases_its_stock() {
    let app = spawn_shop(&["inventory", "customers", "reservations", "orders"], |s| {
        s.domains
            .sections
            .insert("orders".into(), json!({"order_timeout_seconds": 2}));
    })
    .await;
    let customer = app.customers().register("Erin", 1_000).await;
    app.inventory().set("A-5", 2).await;
    let placed = app.orders().place(&customer.id, &[("A-5", 2, 10)]).await;
    let inventory = app.inventory();
    crate::helpers::eventually(SETTLE, "the stock is held", || async {
        inventory.stock("A-5").await.unwrap().reserved == 2
    })
    .await;
    let orders = app.orders();
    crate::helpers::eventually(SETTLE, "the order times out", || async {
        orders.order(&placed.id).await.status == OrderStatus::Rejected
    })
    .await;
    let order = orders.order(&placed.id).await;
    assert_eq!(order.reason, Some(RejectReason::TimedOut));
    crate::helpers::eventually(SETTLE, "the hold is released", || async {
        inventory.stock("A-5").await.unwrap().reserved == 0
    })
    .await;
}

#[actix_web::test]
async fn a_retried_order_is_placed_once() {
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let frank = ledger.customer(&shop, "Frank", 1_000).await;
    ledger.stock(&shop, "A-6", 10).await;
    let body = json!({"customer_id": frank, "items": [{"sku": "A-6", "quantity": 1, "unit_price_cents": 100}]});
    let orders = app.orders();
    let first = orders
        .post(&body)
        .header("Idempotency-Key", "cart-42")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: troupe::http::orders::OrderView = first.json().await.unwrap();
    let retry = orders
        .post(&body)
        .header("Idempotency-Key", "cart-42")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: troupe::http::orders::OrderView = retry.json().await.unwrap();
    assert_eq!(retry.id, first.id);
    ledger.orders.insert(first.id.clone());
    ledger.assert_invariants(&shop, SETTLE).await;
    let page = orders.page(&[("customer_id", frank.as_str())]).await;
    assert_eq!(page.items.len(), 1, "one order, not two");
    assert_eq!(app.inventory().stock("A-6").await.unwrap().on_hand, 9);
}

#[actix_web::test]
async fn a_stock_count_checks_its_read_and_never_goes_below_what_is_held() {
    let app = spawn_shop(
        &["inventory", "customers", "reservations", "orders"],
        |_| {},
    )
    .await;
    let inventory = app.inventory();
    let counted = inventory.set("C-1", 5).await;
    let stale = inventory
        .put("C-1", &json!({"on_hand": 9}))
        .header("If-Match", format!("\"{}\"", counted.version - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = inventory
        .put("C-1", &json!({"on_hand": 9}))
        .header("If-Match", format!("\"{}\"", counted.version))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    // Without payments the order stays pending, holding its 4 units.
    let customer = app.customers().register("Gina", 1_000).await;
    app.orders().place(&customer.id, &[("C-1", 4, 1)]).await;
    crate::helpers::eventually(SETTLE, "the stock is held", || async {
        inventory.stock("C-1").await.unwrap().reserved == 4
    })
    .await;
    let below = inventory
        .put("C-1", &json!({"on_hand": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(below.status(), 409);
    assert_eq!(
        below.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "below_reserved"
    );
    for bad in [
        json!({"on_hand": -1}),
        json!({"on_hand": "4"}),
        json!({}),
        json!({"on_hand": 1, "x": 1}),
    ] {
        let response = inventory.put("C-1", &bad).send().await.unwrap();
        assert_eq!(response.status(), 422, "{bad}");
    }
    assert_eq!(inventory.stock("C-1").await.unwrap().on_hand, 9);
}

/// 500 orders of one unit race for the 100 units of one SKU, from 25 customers at once:
/// exactly 100 are confirmed, the rest are short, and nothing is oversold at any point.
#[actix_web::test]
async fn five_hundred_orders_racing_for_a_hundred_units_sell_exactly_a_hundred() {
    use futures_util::StreamExt;
    let app = spawn_shop(SHOP, |_| {}).await;
    let shop = app.shop();
    let mut ledger = Ledger::default();
    let mut customers = Vec::new();
    // 20 orders each: every customer's notifications fit in what an inbox keeps.
    for n in 0..25 {
        customers.push(ledger.customer(&shop, &format!("R{n}"), 1_000_000).await);
    }
    ledger.stock(&shop, "HOT", 100).await;
    let orders = app.orders();
    let placed: Vec<String> = futures_util::stream::iter(0..500)
        .map(|n| {
            let orders = orders.clone();
            let customer = customers[n % customers.len()].clone();
            async move { orders.place(&customer, &[("HOT", 1, 250)]).await.id }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    ledger.orders.extend(placed);
    assert_eq!(ledger.orders.len(), 500);
    let settled = ledger
        .assert_invariants(&shop, Duration::from_secs(60))
        .await;
    let confirmed = settled
        .iter()
        .filter(|o| o.status == OrderStatus::Confirmed)
        .count();
    let short = settled
        .iter()
        .filter(|o| o.reason == Some(RejectReason::OutOfStock))
        .count();
    assert_eq!((confirmed, short), (100, 400));
    let stock = app.inventory().stock("HOT").await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved, stock.available), (0, 0, 0));

    // The list filters by status and customer, and pages through the matches.
    let orders = app.orders();
    let confirmed = orders
        .page(&[("status", "confirmed"), ("limit", "1000")])
        .await;
    assert_eq!(confirmed.items.len(), 100);
    assert!(
        confirmed
            .items
            .iter()
            .all(|o| o.status == OrderStatus::Confirmed)
    );
    let theirs = orders
        .page(&[("customer_id", customers[3].as_str()), ("limit", "7")])
        .await;
    assert_eq!(theirs.items.len(), 7);
    assert!(theirs.items.iter().all(|o| o.customer_id == customers[3]));
    let rest = orders
        .page(&[
            ("customer_id", customers[3].as_str()),
            ("limit", "1000"),
            ("after", theirs.next_after.as_deref().unwrap()),
        ])
        .await;
    assert_eq!(theirs.items.len() + rest.items.len(), 20, "20 orders each");
    assert_eq!(rest.next_after, None);
}

/// The whole saga while the real process is killed with SIGKILL at random moments and
/// restarted: orders are placed throughout, each retried with its Idempotency-Key until it is
/// accepted (as a client would), and once the process stays up every order settles and every
/// invariant holds.
#[actix_web::test]
async fn the_saga_survives_kill_9_at_random_moments() {
    use crate::helpers::Isolation;
    use crate::helpers::child::ChildService;
    use crate::helpers::shop::ShopClient;
    use rand::Rng;

    let isolation = Isolation::new().await;
    let enabled = SHOP.join(",");
    let env = [("TROUPE__DOMAINS__ENABLED", enabled.as_str())];
    let port = ChildService::free_port();
    let mut child = ChildService::serving_on(&isolation, port, &env).await;
    let shop = ShopClient::at(child.address.as_deref().unwrap());
    let mut ledger = Ledger::default();
    let mut customers = Vec::new();
    for (n, credit) in [100_000, 100_000, 100_000, 100_000, 900, 900]
        .into_iter()
        .enumerate()
    {
        customers.push(ledger.customer(&shop, &format!("K{n}"), credit).await);
    }
    ledger.stock(&shop, "K-A", 40).await;
    ledger.stock(&shop, "K-B", 40).await;
    ledger.stock(&shop, "K-C", 6).await;

    const ORDERS: usize = 150;
    let interrupted = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let placing = {
        let orders = shop.orders.clone();
        let customers = customers.clone();
        let interrupted = interrupted.clone();
        actix_web::rt::spawn(async move {
            use futures_util::StreamExt;
            futures_util::stream::iter(0..ORDERS)
                .map(|n| {
                    let orders = orders.clone();
                    let customer = customers[n % customers.len()].clone();
                    let interrupted = interrupted.clone();
                    async move {
                        // Paced, so that placing outlasts the first kill.
                        tokio::time::sleep(Duration::from_millis(40 * (n / 6) as u64)).await;
                        let lines = match n % 3 {
                            0 => json!([{"sku": "K-A", "quantity": 1, "unit_price_cents": 500}]),
                            1 => json!([{"sku": "K-A", "quantity": 1, "unit_price_cents": 300},
                                        {"sku": "K-B", "quantity": 2, "unit_price_cents": 200}]),
                            _ => json!([{"sku": "K-C", "quantity": 1, "unit_price_cents": 100},
                                        {"sku": "K-B", "quantity": 1, "unit_price_cents": 100}]),
                        };
                        let body = json!({"customer_id": customer, "items": lines});
                        let key = format!("kill-order-{n}");
                        let deadline = std::time::Instant::now() + Duration::from_secs(90);
                        loop {
                            let sent = orders
                                .post(&body)
                                .header("Idempotency-Key", &key)
                                .send()
                                .await;
                            match sent {
                                Ok(r) if r.status() == 202 => {
                                    let order: troupe::http::orders::OrderView =
                                        r.json().await.unwrap();
                                    return order.id;
                                }
                                Ok(r) => assert!(
                                    r.status().is_server_error(),
                                    "order {n}: {} {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ),
                                Err(_) => {} // the process is down
                            }
                            interrupted.set(interrupted.get() + 1);
                            assert!(
                                std::time::Instant::now() < deadline,
                                "order {n} never accepted"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
                .buffer_unordered(6)
                .collect::<Vec<String>>()
                .await
        })
    };
    for round in 0..3 {
        // The first kill lands while orders are still being placed, the others anywhere.
        let pause = match round {
            0 => rand::rng().random_range(100..400),
            _ => rand::rng().random_range(300..1500),
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().await;
        child = ChildService::serving_on(&isolation, port, &env).await;
    }
    let placed = placing.await.unwrap();
    assert!(interrupted.get() > 0, "a kill interrupted the placing");
    ledger.orders.extend(placed);
    assert_eq!(ledger.orders.len(), ORDERS, "one order per idempotency key");
    let settled = ledger
        .assert_invariants(&shop, Duration::from_secs(90))
        .await;
    assert!(settled.iter().any(|o| o.status == OrderStatus::Confirmed));
    assert!(settled.iter().any(|o| o.status == OrderStatus::Rejected));
    child.kill().await;
}

/// Bad order bodies are 422 naming the field; unknown ids 404, malformed ones 400; a wrong
/// method on a known path 405 with `Allow`. None is a 5xx.
#[actix_web::test]
async fn bad_orders_and_wrong_methods_are_refused_precisely() {
    let app = spawn_shop(&["customers", "orders"], |_| {}).await;
    let customer = app.customers().register("Hal", 100).await.id;
    let line = |sku: &str, quantity: i64, price: i64| json!({"sku": sku, "quantity": quantity, "unit_price_cents": price});
    let huge_sku = "S".repeat(3 * 1024);
    let cases = [
        (json!({"customer_id": customer, "items": []}), "items"),
        (
            json!({"customer_id": customer, "items": [line("A", 1, 1), line("A", 2, 1)]}),
            "items[1].sku",
        ),
        (
            json!({"customer_id": customer, "items": [line("A", 0, 1)]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": customer, "items": [line("A", 1, 0)]}),
            "items[0].unit_price_cents",
        ),
        (
            json!({"customer_id": customer, "items": [line("A", 1, i64::MAX)]}),
            "items[0].unit_price_cents",
        ),
        (
            json!({"customer_id": customer, "items": [line("A", i64::MAX, i64::MAX)]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": customer, "items": [line(&huge_sku, 1, 1)]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": customer, "items": [line("A\u{0}", 1, 1)]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": customer, "items": [["A", 1, 1]]}),
            "items[0]",
        ),
        (
            json!({"customer_id": customer, "items": [{"sku": "A", "quantity": 1, "unit_price_cents": 1, "discount": 5}]}),
            "items[0].discount",
        ),
        (
            json!({"customer_id": customer, "items": [{"sku": "A", "quantity": 1}]}),
            "items[0].unit_price_cents",
        ),
        (
            json!({"customer_id": "not-a-uuid", "items": [line("A", 1, 1)]}),
            "customer_id",
        ),
        (json!({"customer_id": customer, "items": "A"}), "items"),
        (json!({"items": [line("A", 1, 1)]}), "customer_id"),
    ];
    let orders = app.orders();
    for (body, field) in cases {
        let response = orders.post(&body).send().await.unwrap();
        let status = response.status();
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{body}: {error}");
        let fields = error["error"]["details"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == field),
            "{body}: expected a problem with {field:?}, got {error}"
        );
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(orders.get(&unknown).await.status(), 404);
    assert_eq!(orders.get("nope").await.status(), 400);
    assert_eq!(orders.cancel(&unknown).await.status(), 404);
    let bad_status = app.get("/api/v1/orders?status=lost").await;
    assert_eq!(bad_status.status(), 400);

    for (method, path, allow) in [
        (
            reqwest::Method::DELETE,
            "/api/v1/orders".to_owned(),
            "GET, POST",
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/customers/{customer}"),
            "GET, PATCH",
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/orders/{unknown}/cancel"),
            "POST",
        ),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    assert_eq!(app.get("/api/v1/nothing/here").await.status(), 404);
}
