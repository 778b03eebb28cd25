//! The release `troupe serve` running the whole shop on a fresh database, seeded with customers
//! and stock, for the benchmarks that drive it through its API.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::support::fresh_database;

/// Customers seeded, each with credit to spare.
pub const CUSTOMERS: usize = 200;
/// SKUs seeded (`SKU-0`…), each with stock to spare.
pub const SKUS: usize = 100;

/// A running shop.
pub struct Shop {
    /// The service process (killed on drop).
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// An HTTP client with `concurrency` idle connections.
    pub http: reqwest::Client,
    /// The Redis server.
    pub redis_url: String,
    /// The service's key prefix.
    pub prefix: String,
    /// The seeded customers' ids.
    pub customers: Vec<String>,
}

impl Shop {
    /// Starts the shop on database `name` (dropped and created) and seeds it; `extra` are
    /// environment variables for the service.
    pub async fn start(name: &str, concurrency: usize, extra: &[(&str, &str)]) -> Result<Self> {
        let redis_url =
            std::env::var("TROUPE__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let admin_url = std::env::var("TROUPE__DATABASE__URL")
            .unwrap_or_else(|_| "postgres://troupe:troupe@127.0.0.1:5432/troupe".into());
        let db_url = fresh_database(&admin_url, name).await?;
        let prefix = format!("{name}-{}:", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
        command
            .arg("serve")
            .arg("--config-dir")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
            .env_remove("TROUPE_ENV")
            .env("TROUPE__DATABASE__URL", db_url.as_str())
            .env("TROUPE__REDIS__URL", &redis_url)
            .env("TROUPE__REDIS__KEY_PREFIX", &prefix)
            .env("TROUPE__INSTANCE__ID", name)
            .env("TROUPE__HTTP__PORT", port.to_string())
            .env(
                "TROUPE__TELEMETRY__LOG_FILTER",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().context("troupe serve")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(30))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200)
        {
            if Instant::now() > deadline {
                bail!("troupe serve did not become ready");
            }
            if let Some(status) = child.try_wait()? {
                bail!("troupe serve exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let customers = seed(&http, &base).await?;
        Ok(Self {
            child,
            base,
            http,
            redis_url,
            prefix,
            customers,
        })
    }

    /// The body of order `n`: two lines of seeded SKUs, always in stock and paid for.
    pub fn order(&self, n: usize) -> Value {
        json!({"customer_id": self.customers[n % self.customers.len()], "items": [
            {"sku": format!("SKU-{}", n % SKUS), "quantity": 1, "unit_price_cents": 100},
            {"sku": format!("SKU-{}", (n + 1) % SKUS), "quantity": 2, "unit_price_cents": 50}]})
    }

    /// POSTs order `n`; its id.
    pub async fn place(&self, n: usize) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/api/v1/orders", self.base))
            .json(&self.order(n))
            .send()
            .await?;
        if response.status() != 202 {
            bail!(
                "order {n}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        let order: Value = response.json().await?;
        Ok(order["id"].as_str().context("order id")?.to_owned())
    }

    /// Stops the service.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Customers with credit to spare and SKUs with stock to spare, so every order confirms; waits
/// for the last wallet to open.
async fn seed(http: &reqwest::Client, base: &str) -> Result<Vec<String>> {
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for n in 0..CUSTOMERS {
        let response = http
            .post(format!("{base}/api/v1/customers"))
            .json(
                &json!({"name": format!("Bench {n}"), "email": format!("bench{n}@example.com"),
                          "credit_cents": 1_000_000_000_000_i64}),
            )
            .send()
            .await?;
        let body: Value = response.json().await?;
        customers.push(body["id"].as_str().context("customer id")?.to_owned());
    }
    for n in 0..SKUS {
        http.put(format!("{base}/api/v1/inventory/SKU-{n}"))
            .json(&json!({"on_hand": 1_000_000_000}))
            .send()
            .await?
            .error_for_status()?;
    }
    let last = customers.last().context("customers")?.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/api/v1/customers/{last}/wallet"))
        .send()
        .await?
        .status()
        != 200
    {
        if Instant::now() > deadline {
            bail!("wallets did not open");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(customers)
}
