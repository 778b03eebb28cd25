//! The OpenAPI document (`/api-docs/openapi.json`) and Swagger UI (`/docs/`), generated from the
//! handlers' annotations so they cannot drift from the code: the runtime's own operations here,
//! each registered domain's merged in from its [`crate::registry::DomainRoutes`].

use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorDetail};
use super::{dead_letters, health};
use crate::registry::Registry;

/// The runtime's own operations (health, dead letters) and the shared error schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe",
        description = "The reference shop on the Troupe runtime. Every error is JSON: \
                       `{\"error\": {\"code\", \"message\", \"details\"}}`."
    ),
    paths(
        health::live,
        health::ready,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags((name = "operations", description = "Health and dead letters"))
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`] with every registered domain's paths.
pub fn document(registry: &Registry) -> utoipa::openapi::OpenApi {
    registry.openapi(ApiDoc::openapi())
}
