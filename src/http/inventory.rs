//! The inventory API: stock per SKU, read from the inventory domain's in-memory state.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::idempotency::{IDEMPOTENT_REPLAYED, idempotency};
use super::preconditions::{etag, if_match};
use super::validation::{Problems, shape};
use super::{ApiError, AppState};
use crate::actors::handle::DomainHandle;
use crate::domain::{Entity, validate_key};
use crate::domains::inventory::{
    Inventory, InventoryCommand, Stock, StockAdjustment, check_sku, check_warehouse,
};
use crate::registry::DomainRoutes;

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
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Last SKU of the previous page.
    pub after: Option<String>,
}

/// The inventory domain's HTTP face, as registered in [`crate::shop::registry`].
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(list_stock)
            .service(get_stock)
            .service(set_stock)
            .service(adjust_stock);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        InventoryApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(get_stock, list_stock, set_stock, adjust_stock),
    components(schemas(StockView, StockPage, AdjustmentRequest, StockCountRequest)),
    tags((name = "inventory", description = "Stock per SKU"))
)]
struct InventoryApi;

fn inventory(state: &AppState) -> Result<&DomainHandle<Inventory>, ApiError> {
    super::domain::<Inventory>(state)
}

/// A SKU is an entity key: checked here, where it enters, so that nothing Postgres cannot
/// store reaches a commit; and a SKU by the shop's rule (`check_sku`), as the document says.
pub fn valid_sku(state: &AppState, sku: &str) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::BadRequest {
        code: "invalid_key",
        message,
    };
    validate_key(sku, state.settings.runtime.max_key_bytes)
        .map_err(|e| invalid(format!("the SKU {e}")))?;
    check_sku(sku).map_err(|e| invalid(e.to_string()))
}

/// `GET /api/v1/inventory/{sku}`: the committed stock of one SKU, from its partition's
/// committed view when the SKU is in memory, else from Postgres (a read loads nothing).
#[utoipa::path(
    get,
    path = "/api/v1/inventory/{sku}",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU: 1 to 64 characters, no control characters", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$")),
    responses(
        (status = 200, description = "Stock of the SKU", body = StockView,
         headers(("ETag" = String, description = "The version, for If-Match"))),
        (status = 400, description = "The SKU is not a valid key (`invalid_key`: empty, over `runtime.max_key_bytes`, or holding a control character)", body = ErrorBody),
        (status = 404, description = "No input ever touched this SKU", body = ErrorBody),
        (status = 503, description = "The inventory domain is not running or Postgres did not answer (`domain_unavailable`), or this SKU's stored state cannot be loaded (`entity_unavailable`)", body = ErrorBody),
    )
)]
#[get("/api/v1/inventory/{sku}")]
pub async fn get_stock(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku.into_inner();
    valid_sku(&state, &sku)?;
    match inventory(&state)?.get(&sku).await? {
        Some(entity) => Ok(HttpResponse::Ok()
            .insert_header(etag(entity.version))
            .json(StockView::from_entity(sku, &entity))),
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
        (status = 200, description = "A page of SKUs in key order, from the committed state in Postgres", body = StockPage),
        (status = 400, description = "Bad limit or query", body = ErrorBody),
        (status = 503, description = "Postgres did not answer (`domain_unavailable`): retry later", body = ErrorBody),
    )
)]
#[get("/api/v1/inventory")]
pub async fn list_stock(
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::paging::limit(query.limit)?;
    let page = inventory(&state)?
        .list(query.after.as_deref(), limit)
        .await?;
    let next_after = page.next_after;
    let items = page
        .entities
        .into_iter()
        .map(|(sku, e)| StockView::from_entity(sku, &e))
        .collect();
    Ok(HttpResponse::Ok().json(StockPage { items, next_after }))
}

/// Largest count `PUT /api/v1/inventory/{sku}` takes.
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;

/// Body of `PUT /api/v1/inventory/{sku}`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockCountRequest {
    /// Units on hand, counted.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub on_hand: i64,
}

/// `PUT /api/v1/inventory/{sku}`: sets the units on hand (a stock count). With `If-Match`
/// (the `ETag` of a read), refused with 412 when the SKU changed since. A count below what
/// orders hold is refused (409 `below_reserved`): available never goes negative.
#[utoipa::path(
    put,
    path = "/api/v1/inventory/{sku}",
    tag = "inventory",
    params(
        ("sku" = String, Path, description = "The SKU: 1 to 64 characters, no control characters", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the read this count is based on (`\"3\"`)", pattern = r#"^(\*|"[0-9]{1,19}"|[0-9]{1,19})$"#),
    ),
    request_body = StockCountRequest,
    responses(
        (status = 200, description = "Committed; the new stock", body = StockView,
         headers(("ETag" = String, description = "The new version"))),
        (status = 400, description = "Not JSON (`invalid_body`), or an invalid SKU (`invalid_key`) or If-Match (`invalid_if_match`)", body = ErrorBody),
        (status = 409, description = "Below what orders hold (`below_reserved`)", body = ErrorBody),
        (status = 412, description = "The SKU changed since the If-Match version (`version_mismatch`)", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of range (`validation_failed`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): read the SKU before retrying", body = ErrorBody),
    )
)]
#[put("/api/v1/inventory/{sku}")]
pub async fn set_stock(
    state: web::Data<AppState>,
    req: HttpRequest,
    sku: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku.into_inner();
    valid_sku(&state, &sku)?;
    let expected_version = if_match(&req)?;
    let body: StockCountRequest = shape(body.into_inner())?;
    let mut problems = Problems::new();
    problems.range("on_hand", body.on_hand, 0, MAX_ON_HAND);
    problems.finish()?;
    let command = InventoryCommand::SetOnHand {
        on_hand: body.on_hand,
        expected_version,
    };
    let committed = inventory(&state)?.execute(&sku, command, None).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(committed.version))
        .json(StockView::new(sku, &committed.reply, committed.version)))
}

/// Body of `POST /api/v1/inventory/{sku}/adjustments`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Change in units.
    pub delta: i64,
    /// Warehouse: not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub warehouse: String,
}

/// `POST /api/v1/inventory/{sku}/adjustments`: adjusts stock through the domain; answers once the
/// change is committed. With an `Idempotency-Key` header, a retry of the same request returns
/// the first reply (header `Idempotent-Replayed: true`) and applies nothing.
#[utoipa::path(
    post,
    path = "/api/v1/inventory/{sku}/adjustments",
    tag = "inventory",
    params(
        ("sku" = String, Path, description = "The SKU: 1 to 64 characters, no control characters", min_length = 1, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a request with a key used before gets the stored reply of the first one (same status and body) and applies nothing; the same key with a different request is a 422. Keys are kept for `runtime.dedupe_window_seconds`.", pattern = r"^[!-~]{1,256}$"),
    ),
    request_body = AdjustmentRequest,
    responses(
        (status = 200, description = "Committed; the new stock", body = StockView),
        (status = 400, description = "Not JSON (`invalid_body`), or an invalid SKU or Idempotency-Key (`invalid_key`, `invalid_idempotency_key`)", body = ErrorBody),
        (status = 409, description = "The delta would take on_hand past what it can hold (`on_hand_overflow`)", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of its rules (`validation_failed`), or the Idempotency-Key was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect (`not_committed`, `domain_unavailable`; `entity_unavailable`: this SKU's stored state cannot be loaded): safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): the command may have committed; retry with the same Idempotency-Key", body = ErrorBody),
    )
)]
#[post("/api/v1/inventory/{sku}/adjustments")]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    req: HttpRequest,
    sku: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku.into_inner();
    valid_sku(&state, &sku)?;
    let body: AdjustmentRequest = shape(body.into_inner())?;
    let mut problems = Problems::new();
    problems.check("warehouse", check_warehouse(&body.warehouse));
    problems.finish()?;
    let idempotency = idempotency(&state, &req, &body)?;
    let AdjustmentRequest { delta, warehouse } = body;
    let command = InventoryCommand::Adjust(StockAdjustment { delta, warehouse });
    let committed = inventory(&state)?
        .execute(&sku, command, idempotency)
        .await?;
    let mut response = HttpResponse::Ok();
    if committed.replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(StockView::new(sku, &committed.reply, committed.version)))
}
