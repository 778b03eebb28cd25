//! The shop demo: against a running service (`scripts/dev.sh run`), seeds customers and
//! products, then places a steady stream of orders — most confirmed, some short of stock, some
//! declined for want of funds or from unknown customers, some confirmed and then cancelled —
//! and prints every second what happened, so the saga and `/metrics` visibly move.
//!
//! `scripts/dev.sh demo [--url http://127.0.0.1:8080] [--rate 20] [--seconds 0]`
//! (`--seconds 0`: until Ctrl-C).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

struct Options {
    url: String,
    rate: u32,
    seconds: u64,
}

fn options() -> Result<Options> {
    let mut options = Options {
        url: "http://127.0.0.1:8080".into(),
        rate: 20,
        seconds: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => options.url = value()?,
            "--rate" => options.rate = value()?.parse().context("--rate: orders per second")?,
            "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
            "-h" | "--help" => {
                println!(
                    "shop demo: --url URL (http://127.0.0.1:8080) --rate N (20/s) --seconds S (0: forever)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if options.rate == 0 {
        bail!("--rate must be at least 1");
    }
    Ok(options)
}

/// The service's API, as a client sees it.
struct Shop {
    http: reqwest::Client,
    url: String,
}

impl Shop {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let response = request
            .send()
            .await
            .context("the service does not answer")?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.send(self.http.put(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn customer(&self, name: &str, credit_cents: i64) -> Result<String> {
        let email = format!("{}@demo.example", name.to_lowercase());
        let (status, body) = self
            .post(
                "/api/v1/customers",
                json!({"name": name, "email": email, "credit_cents": credit_cents}),
            )
            .await?;
        if status != 201 {
            bail!("registering {name}: {status} {body}");
        }
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    }
}

/// A kind of order the demo places, and how often (out of 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// In stock, paid: confirmed.
    Good,
    /// Confirmed, then cancelled: refunded and restocked.
    Cancelled,
    /// A SKU that is nearly always out: out_of_stock.
    Scarce,
    /// A customer with almost no credit: payment_declined.
    Broke,
    /// A customer nobody registered: payment_declined (unknown_customer).
    Stranger,
}

fn kind_of(n: u64) -> Kind {
    match n % 20 {
        0 => Kind::Scarce,
        1 => Kind::Broke,
        2 => Kind::Stranger,
        3 => Kind::Cancelled,
        _ => Kind::Good,
    }
}

const PRODUCTS: &[(&str, i64)] = &[
    ("TEE-S", 1_500),
    ("TEE-M", 1_500),
    ("MUG", 900),
    ("CAP", 1_200),
    ("SOCKS", 600),
];
const SCARCE: &str = "SIGNED-VINYL";

#[actix_rt::main]
async fn main() -> Result<()> {
    let options = options()?;
    let shop = Shop {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        url: options.url.trim_end_matches('/').to_owned(),
    };
    let (status, _) = shop.get("/health/ready").await?;
    if status != 200 {
        bail!(
            "{}/health/ready answers {status}: start the service first (scripts/dev.sh run)",
            shop.url
        );
    }
    println!("seeding products and customers at {}", shop.url);
    for (sku, _) in PRODUCTS {
        shop.put(
            &format!("/api/v1/inventory/{sku}"),
            json!({"on_hand": 1_000}),
        )
        .await?;
    }
    shop.put(
        &format!("/api/v1/inventory/{SCARCE}"),
        json!({"on_hand": 1}),
    )
    .await?;
    let mut customers = Vec::new();
    for n in 0..20 {
        customers.push(shop.customer(&format!("Buyer{n}"), 10_000_000).await?);
    }
    let broke = shop.customer("Broke", 100).await?;
    let stranger = uuid::Uuid::now_v7().to_string();
    // Wallets open a moment after registration (payments reads customer.registered).
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "placing {} orders/s; Ctrl-C stops (the service's /metrics and /docs/events show the rest)",
        options.rate
    );
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / options.rate);
    let mut pending: Vec<(String, Kind)> = Vec::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut placed = 0u64;
    let mut last_report = Instant::now();
    loop {
        ticker.tick().await;
        let kind = kind_of(placed);
        let customer = match kind {
            Kind::Broke => &broke,
            Kind::Stranger => &stranger,
            _ => &customers[(placed as usize) % customers.len()],
        };
        let (sku, price) = match kind {
            Kind::Scarce => (SCARCE, 5_000),
            _ => PRODUCTS[(placed as usize) % PRODUCTS.len()],
        };
        let body = json!({"customer_id": customer,
                          "items": [{"sku": sku, "quantity": 1 + (placed % 3) as i64, "unit_price_cents": price}]});
        match shop.post("/api/v1/orders", body).await {
            Ok((202, order)) => {
                pending.push((order["id"].as_str().unwrap_or_default().to_owned(), kind));
                placed += 1;
            }
            Ok((status, body)) => println!("order refused: {status} {body}"),
            Err(e) => println!("{e:#}"),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            settle(&shop, &mut pending, &mut outcomes).await;
            restock(&shop).await;
            let summary: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "[{:>4}s] placed {placed}, pending {} | {}",
                started.elapsed().as_secs(),
                pending.len(),
                summary.join(", ")
            );
        }
        if options.seconds > 0 && started.elapsed() >= Duration::from_secs(options.seconds) {
            return Ok(());
        }
    }
}

/// Reads the pending orders; records the settled ones, and cancels the confirmed ones meant
/// to be cancelled.
async fn settle(
    shop: &Shop,
    pending: &mut Vec<(String, Kind)>,
    outcomes: &mut BTreeMap<String, u64>,
) {
    let mut still = Vec::with_capacity(pending.len());
    for (id, kind) in pending.drain(..) {
        let Ok((200, order)) = shop.get(&format!("/api/v1/orders/{id}")).await else {
            still.push((id, kind));
            continue;
        };
        let status = order["status"].as_str().unwrap_or_default().to_owned();
        match (status.as_str(), kind) {
            ("pending", _) => still.push((id, kind)),
            ("confirmed", Kind::Cancelled) => {
                let _ = shop
                    .post(&format!("/api/v1/orders/{id}/cancel"), json!({}))
                    .await;
                *outcomes.entry("cancelled".into()).or_default() += 1;
            }
            ("rejected", _) => {
                let reason = order["reason"].as_str().unwrap_or("?");
                *outcomes.entry(format!("rejected:{reason}")).or_default() += 1;
            }
            (other, _) => *outcomes.entry(other.to_owned()).or_default() += 1,
        }
    }
    *pending = still;
}

/// Tops up the products that run low, as a warehouse would.
async fn restock(shop: &Shop) {
    for (sku, _) in PRODUCTS {
        if let Ok((200, stock)) = shop.get(&format!("/api/v1/inventory/{sku}")).await
            && stock["available"].as_i64().unwrap_or(0) < 200
        {
            let on_hand = stock["on_hand"].as_i64().unwrap_or(0) + 1_000;
            let _ = shop
                .put(
                    &format!("/api/v1/inventory/{sku}"),
                    json!({"on_hand": on_hand}),
                )
                .await;
        }
    }
}
