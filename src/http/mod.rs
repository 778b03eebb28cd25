//! The HTTP edge: the actix-web app, its routes, request telemetry and the error mapping.
//!
//! Handlers are thin: parse, ask a domain actor or the store, map the result.

pub mod asyncapi;
pub mod customers;
pub mod dead_letters;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod inventory;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod orders;
pub mod paging;
pub mod payments;
pub mod preconditions;
pub mod request_telemetry;
pub mod routes;
pub mod validation;
pub mod ws;

pub use error::ApiError;

use std::sync::Arc;

use actix_web::{HttpRequest, web};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::registry::{Registry, RunningDomains};
use crate::settings::Settings;
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

/// The API's two descriptions, built once from the registry and shared by every worker.
#[derive(Clone)]
pub struct Documents {
    openapi: utoipa::openapi::OpenApi,
    asyncapi: web::Data<asyncapi::AsyncApiDocument>,
    routes: web::Data<routes::KnownRoutes>,
}

impl Documents {
    /// The OpenAPI and AsyncAPI documents of the runtime and `registry`'s domains.
    pub fn new(registry: &Registry) -> Self {
        let openapi = openapi::document(registry);
        Self {
            routes: web::Data::new(routes::KnownRoutes::of(&openapi)),
            openapi,
            asyncapi: web::Data::new(asyncapi::AsyncApiDocument(registry.asyncapi())),
        }
    }
}

/// Registers every route — the runtime's own and each registered domain's — and the extractor
/// configuration (body limit, JSON error bodies).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    json_limit_bytes: usize,
    registry: &Registry,
    documents: &Documents,
) {
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
    .service(ws::upgrade)
    .service(dead_letters::list)
    .service(dead_letters::replay)
    .service(dead_letters::discard)
    .app_data(documents.asyncapi.clone())
    .app_data(documents.routes.clone())
    .service(asyncapi::document)
    // Before Swagger UI, whose `/docs/{_:.*}` would take this path too.
    .service(asyncapi::page)
    .configure(|cfg| registry.configure(cfg))
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/api-docs/openapi.json", documents.openapi.clone()),
    )
    .default_service(web::to(no_route));
}

/// The handle on domain `D`, or 503 `domain_not_enabled` when this instance does not run it.
pub fn domain<D: crate::domain::Domain>(
    state: &AppState,
) -> Result<&crate::actors::handle::DomainHandle<D>, ApiError> {
    state
        .domains
        .handle::<D>()
        .ok_or_else(|| ApiError::Unavailable {
            code: "domain_not_enabled",
            message: "this domain is not enabled on this instance".into(),
            details: None,
        })
}

async fn no_route(
    req: HttpRequest,
    routes: web::Data<routes::KnownRoutes>,
) -> Result<actix_web::HttpResponse, ApiError> {
    Err(routes.unrouted(&req))
}
