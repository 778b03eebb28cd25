//! The OpenAPI document (`/api-docs/openapi.json`) and Swagger UI (`/docs/`), generated from the
//! handlers' annotations so they cannot drift from the code.

use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorDetail};
use super::inventory::{AdjustmentRequest, StockPage, StockView};
use super::{dead_letters, health, inventory};

/// The API description.
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
        inventory::get_stock,
        inventory::list_stock,
        inventory::adjust_stock,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
    ),
    components(schemas(StockView, StockPage, AdjustmentRequest, ErrorBody, ErrorDetail)),
    tags(
        (name = "inventory", description = "Stock per SKU"),
        (name = "operations", description = "Health and dead letters"),
    )
)]
pub struct ApiDoc;
