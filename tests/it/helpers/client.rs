//! Typed clients of the shop's APIs, over the server's own request and response types, so
//! tests say what they ask (`inventory().stock("A-1")`) and a changed contract fails to compile
//! rather than to parse.

use serde::Serialize;
use troupe::http::customers::{CustomerPage, CustomerView, NewCustomerRequest};
use troupe::http::inventory::{AdjustmentRequest, StockCountRequest, StockPage, StockView};
use troupe::http::notifications::NotificationPage;
use troupe::http::orders::{OrderPage, OrderView};
use troupe::http::payments::WalletView;

/// The inventory API of one running service.
#[derive(Clone)]
pub struct InventoryClient {
    client: reqwest::Client,
    base: String,
}

impl InventoryClient {
    /// A client of the service at `base` (`http://127.0.0.1:<port>`).
    pub fn new(client: reqwest::Client, base: &str) -> Self {
        Self {
            client,
            base: base.to_owned(),
        }
    }

    /// `GET /api/v1/inventory/{sku_path}` as it answers (`sku_path` is put in the URL as
    /// given, so tests can send percent-escapes).
    pub async fn get(&self, sku_path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/v1/inventory/{sku_path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// The stock of `sku`; `None` on 404. Panics on any other status, with the body.
    pub async fn stock(&self, sku: &str) -> Option<StockView> {
        let response = self.get(sku).await;
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("a StockView")),
            404 => None,
            status => panic!(
                "GET {sku}: {status} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    /// One page of the list endpoint; panics unless it answers 200.
    pub async fn page(&self, limit: usize, after: Option<&str>) -> StockPage {
        let mut request = self
            .client
            .get(format!("{}/api/v1/inventory", self.base))
            .query(&[("limit", limit)]);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200, "list page");
        response.json().await.expect("a StockPage")
    }

    /// `PUT /api/v1/inventory/{sku}` with `on_hand`; panics unless it answers 200.
    pub async fn set(&self, sku: &str, on_hand: i64) -> StockView {
        let response = self
            .client
            .put(format!("{}/api/v1/inventory/{sku}", self.base))
            .json(&StockCountRequest { on_hand })
            .send()
            .await
            .expect("request sent");
        assert_eq!(
            response.status(),
            200,
            "PUT {sku}: {}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("a StockView")
    }

    /// `PUT /api/v1/inventory/{sku}` with `body`, as it answers; add headers on the builder.
    pub fn put(&self, sku: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.client
            .put(format!("{}/api/v1/inventory/{sku}", self.base))
            .json(body)
    }

    /// `POST /api/v1/inventory/{sku_path}/adjustments` with `delta` from warehouse `w1`;
    /// add headers on the returned request, then [`Adjust::send`] or [`Adjust::committed`].
    pub fn adjust(&self, sku_path: &str, delta: i64) -> Adjust {
        let body = AdjustmentRequest {
            delta,
            warehouse: "w1".into(),
        };
        Adjust(
            self.client
                .post(format!(
                    "{}/api/v1/inventory/{sku_path}/adjustments",
                    self.base
                ))
                .json(&body),
        )
    }
}

/// An adjustment on its way.
pub struct Adjust(reqwest::RequestBuilder);

impl Adjust {
    /// Sends it with `Idempotency-Key: key`.
    pub fn idempotency_key(self, key: &str) -> Self {
        Self(self.0.header("Idempotency-Key", key))
    }

    /// Sends it with `name: value`.
    pub fn header(self, name: &str, value: &str) -> Self {
        Self(self.0.header(name, value))
    }

    /// The response, whatever its status.
    pub async fn send(self) -> reqwest::Response {
        self.0.send().await.expect("request sent")
    }

    /// The committed stock; panics unless it answers 200.
    pub async fn committed(self) -> StockView {
        let response = self.send().await;
        let status = response.status();
        assert_eq!(
            status,
            200,
            "adjustment not committed: {}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("a StockView")
    }
}

/// The customers API of one running service.
#[derive(Clone)]
pub struct CustomersClient {
    client: reqwest::Client,
    base: String,
}

impl CustomersClient {
    /// A client of the service at `base`.
    pub fn new(client: reqwest::Client, base: &str) -> Self {
        Self {
            client,
            base: base.to_owned(),
        }
    }

    /// `POST /api/v1/customers` with `body` (any JSON, so tests can send bad ones); add
    /// headers on the returned builder.
    pub fn post(&self, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/api/v1/customers", self.base))
            .json(body)
    }

    /// Registers `name` with `credit_cents` (email `<name>@example.com`); panics unless 201.
    pub async fn register(&self, name: &str, credit_cents: i64) -> CustomerView {
        let body = NewCustomerRequest {
            name: name.into(),
            email: format!("{}@example.com", name.to_lowercase()),
            credit_cents,
        };
        let response = self.post(&body).send().await.expect("request sent");
        assert_eq!(
            response.status(),
            201,
            "register {name}: {}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("a CustomerView")
    }

    /// `GET /api/v1/customers/{id_path}` as it answers.
    pub async fn get(&self, id_path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/v1/customers/{id_path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// `PATCH /api/v1/customers/{id_path}` with `body`; add headers (`If-Match`) on the
    /// returned builder.
    pub fn patch(&self, id_path: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.client
            .patch(format!("{}/api/v1/customers/{id_path}", self.base))
            .json(body)
    }

    /// The customer's wallet; `None` while it is not open (404). Panics on other statuses.
    pub async fn wallet(&self, id: &str) -> Option<WalletView> {
        let response = self
            .client
            .get(format!("{}/api/v1/customers/{id}/wallet", self.base))
            .send()
            .await
            .expect("request sent");
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("a WalletView")),
            404 => None,
            status => panic!(
                "GET wallet {id}: {status} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    /// A page of the customer's notifications, newest first; panics unless 200.
    pub async fn notifications(
        &self,
        id: &str,
        limit: usize,
        before: Option<u64>,
    ) -> NotificationPage {
        let mut request = self
            .client
            .get(format!("{}/api/v1/customers/{id}/notifications", self.base))
            .query(&[("limit", limit)]);
        if let Some(before) = before {
            request = request.query(&[("before", before)]);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200, "notifications of {id}");
        response.json().await.expect("a NotificationPage")
    }

    /// One page of the list endpoint; panics unless it answers 200.
    pub async fn page(&self, limit: usize, after: Option<&str>) -> CustomerPage {
        let mut request = self
            .client
            .get(format!("{}/api/v1/customers", self.base))
            .query(&[("limit", limit)]);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200, "list page");
        response.json().await.expect("a CustomerPage")
    }
}

/// The orders API of one running service.
#[derive(Clone)]
pub struct OrdersClient {
    client: reqwest::Client,
    base: String,
}

impl OrdersClient {
    /// A client of the service at `base`.
    pub fn new(client: reqwest::Client, base: &str) -> Self {
        Self {
            client,
            base: base.to_owned(),
        }
    }

    /// `POST /api/v1/orders` with `body` (any JSON); add headers on the returned builder.
    pub fn post(&self, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/api/v1/orders", self.base))
            .json(body)
    }

    /// Places an order of `lines` (sku, quantity, unit price) for `customer`; panics unless
    /// 202.
    pub async fn place(&self, customer: &str, lines: &[(&str, i64, i64)]) -> OrderView {
        let items: Vec<_> = lines
            .iter()
            .map(|(sku, quantity, price)| {
                serde_json::json!({"sku": sku, "quantity": quantity, "unit_price_cents": price})
            })
            .collect();
        let body = serde_json::json!({"customer_id": customer, "items": items});
        let response = self.post(&body).send().await.expect("request sent");
        assert_eq!(
            response.status(),
            202,
            "place {body}: {}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("an OrderView")
    }

    /// `GET /api/v1/orders/{id_path}` as it answers.
    pub async fn get(&self, id_path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/v1/orders/{id_path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// The order `id`; panics unless 200.
    pub async fn order(&self, id: &str) -> OrderView {
        let response = self.get(id).await;
        assert_eq!(response.status(), 200, "GET order {id}");
        response.json().await.expect("an OrderView")
    }

    /// `POST /api/v1/orders/{id}/cancel` as it answers.
    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/orders/{id}/cancel", self.base))
            .send()
            .await
            .expect("request sent")
    }

    /// One page of the list endpoint with `query` pairs; panics unless 200.
    pub async fn page(&self, query: &[(&str, &str)]) -> OrderPage {
        let response = self
            .client
            .get(format!("{}/api/v1/orders", self.base))
            .query(query)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200, "list orders {query:?}");
        response.json().await.expect("an OrderPage")
    }
}
