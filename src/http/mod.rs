//! The HTTP edge: the actix-web app, its routes, request telemetry and the error mapping.
//!
//! Handlers are thin: parse, ask a domain actor or the store, map the result.

pub mod dead_letters;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod inventory;
pub mod metrics;
pub mod openapi;
pub mod request_telemetry;

pub use error::ApiError;

use std::sync::Arc;

use actix_web::{HttpRequest, web};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::settings::Settings;
use crate::startup::RunningDomains;
use crate::store::DbPool;
use crate::streams::RedisClients;

/// What handlers share.
pub struct AppState {
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Redis clients.
    pub redis: RedisClients,
    /// Postgres pool.
    pub db: DbPool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Handles on the domains this instance runs.
    pub domains: Arc<RunningDomains>,
}

/// Registers every route and the extractor configuration (body limit, JSON error bodies).
pub fn configure(cfg: &mut web::ServiceConfig, json_limit_bytes: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(json_limit_bytes)
            .error_handler(|e, _| ApiError::from(e).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::from(e).into()))
    .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::from(e).into()))
    .service(health::live)
    .service(health::ready)
    .service(metrics::render)
    .service(inventory::list_stock)
    .service(inventory::get_stock)
    .service(inventory::adjust_stock)
    .service(dead_letters::list)
    .service(dead_letters::replay)
    .service(dead_letters::discard)
    .service(utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").url(
        "/api-docs/openapi.json",
        <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
    ))
    .default_service(web::to(no_route));
}

async fn no_route(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        path: req.path().to_owned(),
    })
}
