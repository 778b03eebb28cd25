//! Building and running the application: what `troupe serve` does, and what integration tests
//! start on a random port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::http::{self, AppState, request_telemetry};
use crate::settings::Settings;
use crate::store::{self, StoreError};
use crate::streams::{RedisClients, StreamError};
use crate::telemetry;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Migrations or the pool failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis could not be reached.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A built application, listening but not yet serving until [`Application::run_until_stopped`].
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Runs the migrations, connects to Redis and Postgres, and binds the HTTP listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let applied = store::migrations::run(&settings.database.url).await?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        let db = store::pool::build(&settings.database)?;
        let redis = RedisClients::connect(&settings.redis).await?;
        let metrics = telemetry::metrics::recorder();
        spawn_metrics_upkeep(metrics.clone());

        let address = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();

        let state = web::Data::new(AppState {
            settings: settings.clone(),
            redis,
            db,
            metrics,
        });
        let json_limit = settings.http.json_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_telemetry::track))
                .app_data(state.clone())
                .configure(|cfg| http::configure(cfg, json_limit))
        })
        .shutdown_timeout(settings.http.shutdown_grace_seconds)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            address: format!("port {port}"),
            source,
        })?;
        if settings.http.workers > 0 {
            server = server.workers(settings.http.workers);
        }
        tracing::info!(
            port,
            instance.id = %settings.instance.id,
            domains = ?settings.domains.enabled,
            "troupe is listening"
        );
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    /// The bound HTTP port (useful when the configured port is 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then stops accepting connections and lets in-flight
    /// requests finish within `http.shutdown_grace_seconds`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        tracing::info!("troupe stopped");
        Ok(())
    }
}

fn spawn_metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}
