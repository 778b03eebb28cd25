//! Test helpers: spawn the app on a random port with isolated data.

pub mod child;
pub mod client;
pub mod database;
pub mod oracle;
pub mod proxy;
pub mod redis_server;
pub mod shop;
pub mod streams;
pub mod ws;

use std::collections::HashMap;
use std::path::PathBuf;

use troupe::registry::Registry;
use troupe::settings::Settings;
use troupe::startup::{Application, Stopper};

pub use database::TestDatabase;
pub use proxy::TcpProxy;
pub use streams::{Adjustment, eventually};

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Settings from `config/test.toml` plus the process's `TROUPE__*` variables (the server URLs
/// that `scripts/dev.sh` exports), before per-test isolation is applied.
pub fn base_settings() -> Settings {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TROUPE__"))
        .collect();
    Settings::load_from(&config_dir(), Some("test"), Some(env)).expect("test settings load")
}

/// Options for [`spawn_app_with`].
#[derive(Default)]
pub struct AppOptions {
    /// Route the app's Postgres traffic through a proxy the test can cut.
    pub database_proxy: bool,
    /// Use this Redis server instead of the shared one.
    pub redis_url: Option<String>,
    /// Adjusts the settings before the app starts.
    pub configure: Option<fn(&mut Settings)>,
    /// The domains the app can run (default: the shop's, [`troupe::shop::registry`]).
    pub registry: Option<Registry>,
}

/// A running application with its own database and key prefix.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The test's isolated settings and database.
    pub isolation: Isolation,
    /// The proxy in front of Postgres, when asked for.
    pub database_proxy: Option<TcpProxy>,
    stopper: Stopper,
}

impl std::ops::Deref for TestApp {
    type Target = Isolation;
    fn deref(&self) -> &Isolation {
        &self.isolation
    }
}

/// A test's own data: settings with a fresh database, Redis key prefix and instance id.
pub struct Isolation {
    /// Settings pointing at the test's own data.
    pub settings: Settings,
    /// The test's own database (dropped at the end of the test).
    pub database: TestDatabase,
}

impl Isolation {
    /// Creates the database and picks a unique key prefix and instance id.
    pub async fn new() -> Self {
        init_test_tracing();
        let mut settings = base_settings();
        let database = TestDatabase::create(&settings.database.url).await;
        settings.database.url = database.url.clone();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        settings.redis.key_prefix = format!("test:{unique}:");
        settings.instance.id = format!("test-{unique}");
        Self { settings, database }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the domains' threads before the database goes away under them.
        self.stopper.abort();
    }
}

impl TestApp {
    /// The typed client of the inventory API.
    pub fn inventory(&self) -> client::InventoryClient {
        client::InventoryClient::new(self.client.clone(), &self.address)
    }

    /// The typed client of the customers API.
    pub fn customers(&self) -> client::CustomersClient {
        client::CustomersClient::new(self.client.clone(), &self.address)
    }

    /// The typed client of the orders API.
    pub fn orders(&self) -> client::OrdersClient {
        client::OrdersClient::new(self.client.clone(), &self.address)
    }

    /// One series of `/metrics` (see [`series_value`]). The recorder is the test process's:
    /// counters add up what every app in it did.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        series_value(&text, series)
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }
}

/// The value of one series in a `/metrics` exposition, named with its labels as the
/// exposition writes them (`troupe_entities_in_memory{domain="inventory"}`); 0 when absent.
pub fn series_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Spawns the app with default options.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Logs of the app under test go to the test's output (shown for failing tests), filtered by
/// `RUST_LOG` (default: warnings).
fn init_test_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    });
}

/// Spawns the app on a random port, with a fresh database and Redis key prefix.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    spawn_app_on(Isolation::new().await, options).await
}

/// Spawns the app over `isolation`, for tests that prepare data before the app starts.
pub async fn spawn_app_on(mut isolation: Isolation, options: AppOptions) -> TestApp {
    if let Some(url) = options.redis_url {
        isolation.settings.redis.url = url;
    }
    if let Some(configure) = options.configure {
        configure(&mut isolation.settings);
    }
    let mut settings = isolation.settings.clone();
    let database_proxy = if options.database_proxy {
        let proxy = TcpProxy::start(&isolation.database.url).await;
        settings.database.url = proxy.rewrite_url(&isolation.database.url);
        Some(proxy)
    } else {
        None
    };

    let registry = options.registry.unwrap_or_else(troupe::shop::registry);
    let app = Application::build(settings.clone(), registry)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        isolation,
        database_proxy,
        stopper,
    }
}
