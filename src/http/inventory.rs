//! The inventory API: stock per SKU, read from the inventory domain's in-memory state.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::actors::handle::DomainHandle;
use crate::domain::Entity;
use crate::domains::inventory::{Inventory, InventoryCommand, Stock, StockAdjustment};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const MAX_SKU_LEN: usize = 128;

/// Stock of one SKU as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StockView {
    /// The SKU.
    pub sku: String,
    /// Units present.
    pub on_hand: i64,
    /// Units promised.
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// Inputs applied to this SKU.
    pub version: u64,
}

impl StockView {
    fn new(sku: String, stock: &Stock, version: u64) -> Self {
        Self {
            sku,
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            available: stock.available(),
            version,
        }
    }

    fn from_entity(sku: String, entity: &Entity<Stock>) -> Self {
        Self::new(sku, &entity.state, entity.version)
    }
}

/// A page of SKUs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockPage {
    /// SKUs in key order.
    pub items: Vec<StockView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// Last SKU of the previous page.
    pub after: Option<String>,
}

fn inventory(state: &AppState) -> Result<&DomainHandle<Inventory>, ApiError> {
    state
        .domains
        .inventory
        .as_ref()
        .ok_or(ApiError::Unavailable {
            code: "domain_not_enabled",
            message: "the inventory domain is not enabled on this instance".into(),
            details: None,
        })
}

fn valid_sku(sku: &str) -> Result<(), ApiError> {
    if sku.is_empty() || sku.len() > MAX_SKU_LEN {
        return Err(ApiError::BadRequest {
            code: "invalid_path",
            message: format!("a SKU has 1 to {MAX_SKU_LEN} bytes"),
        });
    }
    Ok(())
}

/// `GET /api/v1/inventory/{sku}`: stock of one SKU, from memory.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/{sku}",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    responses(
        (status = 200, description = "Stock of the SKU", body = StockView),
        (status = 404, description = "No input ever touched this SKU", body = ErrorBody),
        (status = 503, description = "The inventory domain is not running", body = ErrorBody),
    )
)]
#[get("/api/v1/inventory/{sku}")]
pub async fn get_stock(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku.into_inner();
    valid_sku(&sku)?;
    match inventory(&state)?.get(&sku).await? {
        Some(entity) => Ok(HttpResponse::Ok().json(StockView::from_entity(sku, &entity))),
        None => Err(ApiError::NotFound {
            what: "sku",
            id: sku,
        }),
    }
}

/// `GET /api/v1/inventory?limit=&after=`: keyset pagination by SKU.
#[utoipa::path(
    get,
    path = "/api/v1/inventory",
    tag = "inventory",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of SKUs in key order", body = StockPage),
        (status = 400, description = "Bad limit or query", body = ErrorBody),
    )
)]
#[get("/api/v1/inventory")]
pub async fn list_stock(
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    let page = inventory(&state)?
        .list(query.after.as_deref(), limit)
        .await?;
    let next_after = if page.len() == limit {
        page.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let items = page
        .into_iter()
        .map(|(sku, e)| StockView::from_entity(sku, &e))
        .collect();
    Ok(HttpResponse::Ok().json(StockPage { items, next_after }))
}

/// Body of `POST /api/v1/inventory/{sku}/adjustments`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Change in units.
    pub delta: i64,
    /// Warehouse.
    pub warehouse: String,
}

/// `POST /api/v1/inventory/{sku}/adjustments`: adjusts stock through the domain; answers once the
/// change is committed.
#[utoipa::path(
    post,
    path = "/api/v1/inventory/{sku}/adjustments",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = AdjustmentRequest,
    responses(
        (status = 200, description = "Committed; the new stock", body = StockView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 422, description = "Refused by the domain", body = ErrorBody),
        (status = 503, description = "Not committed (database down, domain failed)", body = ErrorBody),
    )
)]
#[post("/api/v1/inventory/{sku}/adjustments")]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Json<AdjustmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku.into_inner();
    valid_sku(&sku)?;
    let AdjustmentRequest { delta, warehouse } = body.into_inner();
    let command = InventoryCommand::Adjust(StockAdjustment { delta, warehouse });
    let committed = inventory(&state)?.execute(&sku, command).await?;
    Ok(HttpResponse::Ok().json(StockView::new(sku, &committed.reply, committed.version)))
}
