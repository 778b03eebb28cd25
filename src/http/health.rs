//! Liveness and readiness.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use serde_json::json;

use super::{ApiError, AppState};

/// The result of one dependency check.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    /// Whether the dependency answered in time.
    pub ok: bool,
    /// How long the check took.
    pub latency_ms: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckResult {
    fn from_outcome<E: std::fmt::Display>(started: Instant, outcome: Result<(), E>) -> Self {
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => Self {
                ok: true,
                latency_ms,
                error: None,
            },
            Err(e) => Self {
                ok: false,
                latency_ms,
                error: Some(e.to_string()),
            },
        }
    }
}

/// `GET /health/live`: answers while the process runs.
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "alive" }))
}

/// `GET /health/ready`: 200 when Redis and Postgres both answer within
/// `health.check_timeout_ms`, otherwise 503 naming what failed.
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let timeout: Duration = state.settings.health.check_timeout();
    let (redis, postgres) = tokio::join!(
        async {
            let started = Instant::now();
            CheckResult::from_outcome(started, state.redis.ping(timeout).await)
        },
        async {
            let started = Instant::now();
            CheckResult::from_outcome(started, crate::store::ping(&state.db, timeout).await)
        },
    );
    let failed: Vec<&str> = [("redis", &redis), ("postgres", &postgres)]
        .into_iter()
        .filter(|(_, check)| !check.ok)
        .map(|(name, _)| name)
        .collect();
    let checks = json!({ "redis": redis, "postgres": postgres });
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
