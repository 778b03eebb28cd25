//! Liveness and readiness.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use serde_json::json;

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// The result of one dependency check.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    /// Whether the dependency answered in time.
    pub ok: bool,
    /// How long the check took.
    pub latency_ms: u64,
    /// Why it failed: `timeout` or `unavailable` for a server (its error text goes to the log,
    /// not the body: it can name hosts and users), the runtime's reason for a domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckResult {
    fn from_outcome<E: std::error::Error + 'static>(
        dependency: &'static str,
        started: Instant,
        timeout: Duration,
        outcome: Result<(), E>,
    ) -> Self {
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => Self {
                ok: true,
                latency_ms,
                error: None,
            },
            Err(e) => {
                tracing::warn!(dependency, error = %crate::telemetry::error_chain(&e), "readiness check failed");
                let timed_out = started.elapsed() >= timeout;
                Self {
                    ok: false,
                    latency_ms,
                    error: Some(if timed_out { "timeout" } else { "unavailable" }.into()),
                }
            }
        }
    }
}

/// `GET /health/live`: 200 while the process runs; 503 once a domain has failed for good
/// (restart intensity exceeded), so that an orchestrator restarts the process, unless
/// `health.live_fails_with_domain` is off.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses(
        (status = 200, description = "The process runs"),
        (status = 503, description = "A domain has failed for good; restart the process", body = ErrorBody),
    )
)]
#[get("/health/live")]
pub async fn live(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.settings.health.live_fails_with_domain {
        let failed: Vec<&str> = state
            .domains
            .statuses()
            .into_iter()
            .filter_map(|(name, status)| status.is_err().then_some(name))
            .collect();
        if !failed.is_empty() {
            tracing::error!(domains = ?failed, "not live: domains failed for good");
            return Err(ApiError::Unavailable {
                code: "domain_failed",
                message: format!("failed for good: {}", failed.join(", ")),
                details: Some(json!({ "failed_domains": failed })),
            });
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "alive" })))
}

/// `GET /health/ready`: 200 when Redis and Postgres both answer within
/// `health.check_timeout_ms` and no domain has failed, otherwise 503 naming what failed.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Redis, Postgres and every domain are fine; one result per check"),
        (status = 503, description = "Something failed; `details.checks` says what", body = ErrorBody),
    )
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let timeout: Duration = state.settings.health.check_timeout();
    let (redis, postgres) = tokio::join!(
        async {
            let started = Instant::now();
            CheckResult::from_outcome("redis", started, timeout, state.redis.ping(timeout).await)
        },
        async {
            let started = Instant::now();
            let outcome = crate::store::ping(&state.db, timeout).await;
            CheckResult::from_outcome("postgres", started, timeout, outcome)
        },
    );
    let mut failed: Vec<String> = [("redis", &redis), ("postgres", &postgres)]
        .into_iter()
        .filter(|(_, check)| !check.ok)
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut domains = serde_json::Map::new();
    for (name, status) in state.domains.readiness() {
        let check = match status {
            Ok(()) => CheckResult {
                ok: true,
                latency_ms: 0,
                error: None,
            },
            Err(reason) => {
                failed.push(format!("domain {name}"));
                CheckResult {
                    ok: false,
                    latency_ms: 0,
                    error: Some(reason),
                }
            }
        };
        domains.insert(name.to_owned(), json!(check));
    }
    let checks = json!({ "redis": redis, "postgres": postgres, "domains": domains });
    if failed.is_empty() {
        return Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks })));
    }
    tracing::warn!(failed = ?failed, checks = %checks, "not ready");
    Err(ApiError::Unavailable {
        code: "not_ready",
        message: format!("not ready: {} unavailable", failed.join(", ")),
        details: Some(json!({ "checks": checks })),
    })
}
