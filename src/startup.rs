//! Building and running the application: what `troupe serve` does, and what integration tests
//! start on a random port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::http::{self, AppState, request_telemetry};
use crate::registry::{Registry, RegistryError, RunningDomains};
use crate::settings::Settings;
use crate::store::{self, StoreError};
use crate::streams::{RedisClients, StreamError};
use crate::telemetry;
use crate::ws::Hub;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Migrations or the pool failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis could not be reached.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// `domains.enabled` names an unknown domain, or a domain did not start.
    #[error(transparent)]
    Domains(#[from] RegistryError),
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
    domains: Arc<RunningDomains>,
    hub: Arc<Hub>,
    grace: Duration,
}

impl Application {
    /// Runs the migrations, connects to Redis and Postgres, starts the domains of
    /// `registry` that `domains.enabled` names, and binds the HTTP listener.
    pub async fn build(settings: Settings, registry: Registry) -> Result<Self, StartupError> {
        // Before anything is touched: a name that is not registered is a configuration error.
        registry.check(&settings.domains)?;
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

        let domains = Arc::new(registry.start(&settings, &redis).await?);
        let hub = match Hub::start(registry.topic_sources(), &settings, redis.clone()).await {
            Ok(hub) => hub,
            Err(e) => {
                domains.abort();
                return Err(e.into());
            }
        };
        let hub_data = web::Data::new(hub.clone());
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            redis,
            db,
            metrics,
            domains: domains.clone(),
        });
        let json_limit = settings.http.json_limit_bytes;
        let documents = http::Documents::new(&registry);
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_telemetry::track))
                .app_data(state.clone())
                .app_data(hub_data.clone())
                .configure(|cfg| http::configure(cfg, json_limit, &registry, &documents))
        })
        .shutdown_timeout(settings.http.shutdown_grace_seconds)
        // actix-server's own handlers stop the whole actix System 300 ms after a signal, taking
        // the domains' arbiters down before their in-flight batches commit, and treat SIGINT as
        // a forced stop. `run_until_stopped` handles both signals as a graceful stop instead.
        .disable_signals()
        .listen(listener)
        .map_err(|source| {
            // The domains started already; without a server they would run on, headless.
            domains.abort();
            StartupError::Bind {
                address: format!("port {port}"),
                source,
            }
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
        let grace = Duration::from_secs(settings.http.shutdown_grace_seconds);
        Ok(Self {
            port,
            server: server.run(),
            domains,
            hub,
            grace,
        })
    }

    /// A handle that stops the application from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            domains: self.domains.clone(),
            hub: self.hub.clone(),
        }
    }

    /// The bound HTTP port (useful when the configured port is 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then shuts down in order: stop accepting HTTP and finish
    /// in-flight requests, stop the readers, let the batches in flight commit, publish the
    /// outbox, stop the domains — each step within `http.shutdown_grace_seconds`. A second signal
    /// exits at once (status 130).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        let served = tokio::select! {
            // Stopped from inside (a `Stopper`), or the server failed.
            served = &mut server => served,
            signal = stop_signal() => {
                let signal = signal?;
                tracing::info!(signal, "stop signal received; finishing in-flight requests");
                // A second signal (Ctrl-C twice) means: now. Unacknowledged work is redelivered
                // on the next start, so nothing is lost.
                actix_web::rt::spawn(async {
                    if let Ok(signal) = stop_signal().await {
                        tracing::warn!(signal, "second stop signal; exiting without waiting");
                        std::process::exit(130);
                    }
                });
                // WebSocket sessions never finish by themselves: close them (1001) first, so
                // the graceful stop below does not wait out its grace for them.
                self.hub.shutdown();
                // The command is sent on the call; the server future, polled here, carries it out.
                drop(handle.stop(true));
                server.await
            }
        };
        tracing::info!("http server stopped; stopping domains");
        self.domains.shutdown(self.grace).await;
        tracing::info!("troupe stopped");
        served
    }
}

/// Stops a running [`Application`] from outside it.
pub struct Stopper {
    server: actix_web::dev::ServerHandle,
    domains: Arc<RunningDomains>,
    hub: Arc<Hub>,
}

impl Stopper {
    /// Stops at once, as a crash would (used by tests when they end).
    pub fn abort(&self) {
        self.hub.shutdown();
        drop(self.server.stop(false));
        self.domains.abort();
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
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
