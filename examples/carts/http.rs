//! The carts domain's HTTP face: parse, ask the domain through its typed handle, map.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use troupe::domain::validate_key;
use troupe::http::error::ErrorBody;
use troupe::http::idempotency::idempotency;
use troupe::http::{ApiError, AppState};
use troupe::registry::DomainRoutes;
use utoipa::OpenApi;

use super::domain::{Cart, CartCommand, CartStatus, Carts};

/// Registered with `.serve(Carts, Routes)`.
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(get_cart).service(add_item).service(check_out);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        CartsApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(get_cart, add_item, check_out),
    components(schemas(CartView, NewItem)),
    tags((name = "carts", description = "Shopping carts"))
)]
struct CartsApi;

/// A cart as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartView {
    /// The cart's id.
    pub id: String,
    /// Units per SKU.
    pub lines: BTreeMap<String, u32>,
    /// `open`, `checked_out` or `abandoned`.
    pub status: String,
    /// Inputs applied to this cart.
    pub version: u64,
}

impl CartView {
    fn new(id: String, cart: &Cart, version: u64) -> Self {
        let status = match cart.status {
            CartStatus::Open => "open",
            CartStatus::CheckedOut => "checked_out",
            CartStatus::Abandoned => "abandoned",
        };
        Self {
            id,
            lines: cart.lines.clone(),
            status: status.into(),
            version,
        }
    }
}

/// Body of `POST /api/v1/carts/{id}/items`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// The product, 1 to 64 bytes.
    pub sku: String,
    /// Units to add, 1 to 99 in all per SKU.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: u32,
}

/// A cart id is an entity key: checked where it enters.
fn cart_id(state: &AppState, id: web::Path<String>) -> Result<String, ApiError> {
    let id = id.into_inner();
    validate_key(&id, state.settings.runtime.max_key_bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_key",
        message: format!("the cart id {e}"),
    })?;
    Ok(id)
}

/// `GET /api/v1/carts/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/carts/{id}",
    tag = "carts",
    params(("id" = String, Path, description = "The cart")),
    responses(
        (status = 200, description = "The cart", body = CartView),
        (status = 400, description = "Not a valid cart id (`invalid_key`)", body = ErrorBody),
        (status = 404, description = "No such cart", body = ErrorBody),
        (status = 503, description = "The domain is not running here or Postgres did not answer", body = ErrorBody),
    )
)]
#[get("/api/v1/carts/{id}")]
pub async fn get_cart(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&state, id)?;
    match troupe::http::domain::<Carts>(&state)?.get(&id).await? {
        Some(cart) => Ok(HttpResponse::Ok().json(CartView::new(id, &cart.state, cart.version))),
        None => Err(ApiError::NotFound { what: "cart", id }),
    }
}

/// `POST /api/v1/carts/{id}/items`: answers once the change is committed.
#[utoipa::path(
    post,
    path = "/api/v1/carts/{id}/items",
    tag = "carts",
    params(
        ("id" = String, Path, description = "The cart"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: it gets the first reply and applies nothing"),
    ),
    request_body = NewItem,
    responses(
        (status = 200, description = "Committed; the cart", body = CartView),
        (status = 400, description = "Malformed body or cart id", body = ErrorBody),
        (status = 409, description = "The cart is closed or holds 100 SKUs already (`cart_closed`, `cart_full`)", body = ErrorBody),
        (status = 422, description = "Bad SKU or quantity, or a reused Idempotency-Key", body = ErrorBody),
        (status = 503, description = "Not committed: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown: retry with the same Idempotency-Key", body = ErrorBody),
    )
)]
#[post("/api/v1/carts/{id}/items")]
pub async fn add_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<NewItem>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&state, id)?;
    let body = body.into_inner();
    let idempotency = idempotency(&state, &req, &body)?;
    let NewItem { sku, quantity } = body;
    let command = CartCommand::AddItem { sku, quantity };
    let committed = troupe::http::domain::<Carts>(&state)?
        .execute(&id, command, idempotency)
        .await?;
    Ok(HttpResponse::Ok().json(CartView::new(id, &committed.reply, committed.version)))
}

/// `POST /api/v1/carts/{id}/checkout`.
#[utoipa::path(
    post,
    path = "/api/v1/carts/{id}/checkout",
    tag = "carts",
    params(
        ("id" = String, Path, description = "The cart"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry after a 504 safe: it gets the first reply"),
    ),
    responses(
        (status = 200, description = "Checked out; `cart.checked_out` is on `carts.events`", body = CartView),
        (status = 400, description = "Not a valid cart id", body = ErrorBody),
        (status = 409, description = "Closed or empty (`cart_closed`, `cart_empty`)", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for another request", body = ErrorBody),
        (status = 503, description = "Not committed: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown", body = ErrorBody),
    )
)]
#[post("/api/v1/carts/{id}/checkout")]
pub async fn check_out(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&state, id)?;
    // The request has no body: the key is bound to the cart it checks out.
    let idempotency = idempotency(&state, &req, &id)?;
    let committed = troupe::http::domain::<Carts>(&state)?
        .execute(&id, CartCommand::CheckOut, idempotency)
        .await?;
    Ok(HttpResponse::Ok().json(CartView::new(id, &committed.reply, committed.version)))
}
