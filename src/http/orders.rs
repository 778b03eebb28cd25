//! The orders API: place, read, list and cancel orders. Placing answers 202: the order is
//! pending until the saga settles it (reservations, payments, or its timeout).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::OpenApi;

use super::customers::valid_id;
use super::error::ErrorBody;
use super::idempotency::{IDEMPOTENT_REPLAYED, idempotency, new_entity_id};
use super::inventory::valid_sku;
use super::preconditions::etag;
use super::validation::{Problems, shape, shape_at};
use super::{ApiError, AppState};
use crate::actors::handle::DomainHandle;
use crate::domain::Entity;
use crate::domains::orders::{
    MAX_LINES, MAX_QUANTITY, MAX_UNIT_PRICE_CENTS, NewOrder, Order, OrderCommand, OrderLine,
    OrderStatus, Orders, RejectReason, StatusChange, total,
};
use crate::registry::DomainRoutes;

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderView {
    /// The order's id.
    #[schema(format = "uuid")]
    pub id: String,
    /// Who ordered.
    #[schema(format = "uuid")]
    pub customer_id: String,
    /// Where it stands.
    pub status: OrderStatus,
    /// What.
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price.
    pub total_cents: i64,
    /// Why it was rejected; null unless rejected.
    pub reason: Option<RejectReason>,
    /// For `out_of_stock`: the SKUs that were short.
    pub short_skus: Vec<String>,
    /// Every status it took, oldest first.
    pub timeline: Vec<StatusChange>,
    /// Inputs applied to the order.
    pub version: u64,
}

impl OrderView {
    fn new(id: String, order: Order, version: u64) -> Self {
        Self {
            id,
            customer_id: order.customer_id,
            status: order.status,
            items: order.items,
            total_cents: order.total_cents,
            reason: order.reason,
            short_skus: order.short_skus,
            timeline: order.timeline,
            version,
        }
    }

    fn of(id: String, entity: Entity<Option<Order>>) -> Option<Self> {
        Some(Self::new(id, entity.state?, entity.version))
    }
}

/// A page of orders.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// Orders in id order.
    pub items: Vec<OrderView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[schema(format = "uuid")]
    pub next_after: Option<String>,
}

/// Body of `POST /api/v1/orders`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderRequest {
    /// Who orders.
    #[schema(format = "uuid")]
    pub customer_id: String,
    /// 1 to 100 lines, each SKU on one line only.
    #[schema(value_type = Vec<OrderLineRequest>, min_items = 1, max_items = 100)]
    pub items: Vec<Value>,
}

/// A line of [`NewOrderRequest`].
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    /// The SKU: 1 to 64 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$"
    )]
    pub sku: String,
    /// Units.
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
    /// Price of one unit, in cents.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub unit_price_cents: i64,
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// Only this customer's orders.
    #[param(format = "uuid")]
    pub customer_id: Option<String>,
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Last id of the previous page.
    #[param(format = "uuid")]
    pub after: Option<String>,
}

/// The orders domain's HTTP face, as registered in [`crate::shop::registry`].
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(list_orders)
            .service(place_order)
            .service(get_order)
            .service(cancel_order);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut document = OrdersApi::openapi();
        lines_are_unique(&mut document);
        document
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(place_order, get_order, list_orders, cancel_order),
    components(schemas(
        OrderView,
        OrderPage,
        NewOrderRequest,
        OrderLineRequest,
        OrderLine,
        OrderStatus,
        RejectReason,
        StatusChange
    )),
    tags((name = "orders", description = "Orders and their saga"))
)]
struct OrdersApi;

/// An order names each SKU on one line: identical lines are refused, which `uniqueItems`
/// says (utoipa has no attribute for it). Lines that differ with the same SKU are refused
/// too, which JSON Schema cannot say; the description does.
fn lines_are_unique(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;
    let Some(components) = &mut document.components else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(order))) = components.schemas.get_mut("NewOrderRequest")
        && let Some(RefOr::T(Schema::Array(items))) = order.properties.get_mut("items")
    {
        items.unique_items = true;
    }
}

fn orders(state: &AppState) -> Result<&DomainHandle<Orders>, ApiError> {
    super::domain::<Orders>(state)
}

/// The order a body asks for, every problem with it named by field.
fn new_order(state: &AppState, body: NewOrderRequest) -> Result<NewOrder, ApiError> {
    let mut problems = Problems::new();
    if valid_id(&body.customer_id).is_err() {
        problems.add("customer_id", "must be a customer id (a UUID)");
    }
    if body.items.is_empty() || body.items.len() > MAX_LINES {
        problems.add("items", format!("must have 1 to {MAX_LINES} lines"));
    }
    let mut items = Vec::with_capacity(body.items.len());
    for (index, item) in body.items.into_iter().enumerate() {
        let at = format!("items[{index}]");
        let line: OrderLineRequest = shape_at(&at, item)?;
        if let Err(ApiError::BadRequest { message, .. }) = valid_sku(state, &line.sku) {
            problems.add(format!("{at}.sku"), message);
        }
        if items.iter().any(|seen: &OrderLine| seen.sku == line.sku) {
            problems.add(format!("{at}.sku"), "appears on an earlier line");
        }
        problems.range(&format!("{at}.quantity"), line.quantity, 1, MAX_QUANTITY);
        problems.range(
            &format!("{at}.unit_price_cents"),
            line.unit_price_cents,
            1,
            MAX_UNIT_PRICE_CENTS,
        );
        items.push(OrderLine {
            sku: line.sku,
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents,
        });
    }
    problems.finish()?;
    // The domain's own rules, once more, so the two cannot drift apart silently.
    let mut problems = Problems::new();
    problems.check("items", total(&items).map(|_| ()));
    problems.finish()?;
    Ok(NewOrder {
        customer_id: body.customer_id,
        items,
    })
}

/// `POST /api/v1/orders`: places an order. It is pending until its stock is reserved and its
/// payment captured (confirmed), or either fails or it times out (rejected). With an
/// `Idempotency-Key`, a retry answers the order the first request placed and places no other.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry with the same key and body answers the first reply and places no other order; the same key with another body is a 422 (`idempotency_key_reused`).", pattern = r"^[!-~]{1,256}$"),
    ),
    request_body = NewOrderRequest,
    responses(
        (status = 202, description = "Placed, pending", body = OrderView,
         headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Not JSON (`invalid_body`), or a bad Idempotency-Key (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of its rules (`validation_failed`, with details.fields), or the Idempotency-Key was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): retry with the same Idempotency-Key", body = ErrorBody),
    )
)]
#[post("/api/v1/orders")]
pub async fn place_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: NewOrderRequest = shape(body.into_inner())?;
    let idempotency = idempotency(&state, &req, &body)?;
    let new = new_order(&state, body)?;
    let id = new_entity_id(&req, idempotency.as_ref());
    let committed = orders(&state)?
        .execute(&id, OrderCommand::Place(new), idempotency)
        .await?;
    let mut response = HttpResponse::Accepted();
    response
        .insert_header(("Location", format!("/api/v1/orders/{id}")))
        .insert_header(etag(committed.version));
    if committed.replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(OrderView::new(id, committed.reply, committed.version)))
}

/// `GET /api/v1/orders/{id}`: the order, its status and its timeline.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, format = "uuid", description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "The id is not a UUID (`invalid_id`)", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The orders domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/orders/{id}")]
pub async fn get_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let found = orders(&state)?.get(&id).await?;
    match found.and_then(|entity| OrderView::of(id.clone(), entity)) {
        Some(view) => Ok(HttpResponse::Ok()
            .insert_header(etag(view.version))
            .json(view)),
        None => Err(ApiError::NotFound { what: "order", id }),
    }
}

/// `GET /api/v1/orders?customer_id=&status=&limit=&after=`: keyset pagination by id, filtered.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    params(OrderQuery),
    responses(
        (status = 200, description = "A page of orders in id order", body = OrderPage),
        (status = 400, description = "Bad limit, status, id or query (`invalid_query`, `invalid_id`)", body = ErrorBody),
        (status = 503, description = "The orders domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/orders")]
pub async fn list_orders(
    state: web::Data<AppState>,
    query: web::Query<OrderQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::paging::limit(query.limit)?;
    for id in [&query.after, &query.customer_id].into_iter().flatten() {
        valid_id(id)?;
    }
    let mut filter = Map::new();
    if let Some(customer) = &query.customer_id {
        filter.insert("customer_id".into(), Value::String(customer.clone()));
    }
    if let Some(status) = query.status {
        filter.insert("status".into(), Value::String(status.as_str().into()));
    }
    let filter = (!filter.is_empty()).then_some(Value::Object(filter));
    let page = orders(&state)?
        .list_matching(query.after.as_deref(), limit, filter.as_ref())
        .await?;
    let items = page
        .entities
        .into_iter()
        .filter_map(|(id, entity)| OrderView::of(id, entity))
        .collect();
    Ok(HttpResponse::Ok().json(OrderPage {
        items,
        next_after: page.next_after,
    }))
}

/// `POST /api/v1/orders/{id}/cancel`: cancels a pending or confirmed order; what it holds is
/// released, restocked or refunded by the domains that hold it.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = String, Path, format = "uuid", description = "The order's id")),
    responses(
        (status = 200, description = "Cancelled", body = OrderView),
        (status = 400, description = "The id is not a UUID (`invalid_id`)", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Rejected or cancelled already (`not_cancellable`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): read the order before retrying", body = ErrorBody),
    )
)]
#[post("/api/v1/orders/{id}/cancel")]
pub async fn cancel_order(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let committed = orders(&state)?
        .execute(&id, OrderCommand::Cancel, None)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(committed.version))
        .json(OrderView::new(id, committed.reply, committed.version)))
}
