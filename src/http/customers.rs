//! The customers API: register, read, change and list customers.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::idempotency::{IDEMPOTENT_REPLAYED, idempotency, new_entity_id};
use super::preconditions::{etag, if_match};
use super::validation::{Problems, shape};
use super::{ApiError, AppState};
use crate::actors::handle::DomainHandle;
use crate::domain::Entity;
use crate::domains::customers::{
    Customer, CustomerCommand, Customers, MAX_CREDIT_CENTS, ProfileChange, Registration,
    check_email, check_name,
};
use crate::registry::DomainRoutes;

/// A customer as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerView {
    /// The customer's id.
    #[schema(format = "uuid")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// The credit the wallet opened with.
    pub credit_cents: i64,
    /// When the customer registered.
    pub registered_at: DateTime<Utc>,
    /// When the profile last changed.
    pub updated_at: DateTime<Utc>,
    /// Changes applied to this customer; send it back as `If-Match` (also the `ETag`).
    #[schema(minimum = 1)]
    pub version: u64,
}

impl CustomerView {
    fn new(id: String, customer: Customer, version: u64) -> Self {
        Self {
            id,
            name: customer.name,
            email: customer.email,
            credit_cents: customer.credit_cents,
            registered_at: customer.registered_at,
            updated_at: customer.updated_at,
            version,
        }
    }

    fn of(id: String, entity: Entity<Option<Customer>>) -> Option<Self> {
        Some(Self::new(id, entity.state?, entity.version))
    }
}

/// A page of customers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustomerPage {
    /// Customers in id order.
    pub items: Vec<CustomerView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[schema(format = "uuid")]
    pub next_after: Option<String>,
}

/// Body of `POST /api/v1/customers`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomerRequest {
    /// Display name: not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Contact address (`local@example.com`).
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    pub email: String,
    /// Opening credit of the wallet, in cents.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub credit_cents: i64,
}

/// Body of `PATCH /api/v1/customers/{id}`: the fields to change, at least one.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct CustomerChangeRequest {
    /// New display name.
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    /// New contact address.
    #[schema(
        nullable = false,
        min_length = 3,
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    pub email: Option<String>,
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Last id of the previous page.
    #[param(format = "uuid")]
    pub after: Option<String>,
}

/// The customers domain's HTTP face, as registered in [`crate::shop::registry`].
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(list_customers)
            .service(register_customer)
            .service(get_customer)
            .service(update_customer);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        CustomersApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(register_customer, get_customer, update_customer, list_customers),
    components(schemas(CustomerView, CustomerPage, NewCustomerRequest, CustomerChangeRequest)),
    tags((name = "customers", description = "Who may order, and their opening credit"))
)]
struct CustomersApi;

fn customers(state: &AppState) -> Result<&DomainHandle<Customers>, ApiError> {
    super::domain::<Customers>(state)
}

/// Ids are UUIDs in their hyphenated form; anything else cannot name a customer.
pub fn valid_id(id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::try_parse(id) {
        Ok(parsed) if parsed.hyphenated().to_string() == id => Ok(()),
        _ => Err(ApiError::BadRequest {
            code: "invalid_id",
            message: "the id is not a UUID in lowercase hyphenated form".into(),
        }),
    }
}

/// `POST /api/v1/customers`: registers a customer; payments opens its wallet with
/// `credit_cents`. With an `Idempotency-Key`, a retry answers the customer the first request
/// registered and registers no second one.
#[utoipa::path(
    post,
    path = "/api/v1/customers",
    tag = "customers",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry with the same key and body answers the first reply and registers no other customer; the same key with another body is a 422 (`idempotency_key_reused`).", pattern = r"^[!-~]{1,256}$"),
    ),
    request_body = NewCustomerRequest,
    responses(
        (status = 201, description = "Registered", body = CustomerView,
         headers(("Location" = String, description = "The customer's URL"), ("ETag" = String, description = "The version"))),
        (status = 400, description = "Not JSON (`invalid_body`), or a bad Idempotency-Key (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of its rules (`validation_failed`, with details.fields), or the Idempotency-Key was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): retry with the same Idempotency-Key", body = ErrorBody),
    )
)]
#[post("/api/v1/customers")]
pub async fn register_customer(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: NewCustomerRequest = shape(body.into_inner())?;
    let mut problems = Problems::new();
    problems.check("name", check_name(&body.name));
    problems.check("email", check_email(&body.email));
    problems.range("credit_cents", body.credit_cents, 0, MAX_CREDIT_CENTS);
    problems.finish()?;
    let idempotency = idempotency(&state, &req, &body)?;
    let id = new_entity_id(&req, idempotency.as_ref());
    let NewCustomerRequest {
        name,
        email,
        credit_cents,
    } = body;
    let command = CustomerCommand::Register(Registration {
        name,
        email,
        credit_cents,
    });
    let committed = customers(&state)?
        .execute(&id, command, idempotency)
        .await?;
    let mut response = HttpResponse::Created();
    response
        .insert_header(("Location", format!("/api/v1/customers/{id}")))
        .insert_header(etag(committed.version));
    if committed.replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(CustomerView::new(id, committed.reply, committed.version)))
}

/// `GET /api/v1/customers/{id}`: the committed profile.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, format = "uuid", description = "The customer's id")),
    responses(
        (status = 200, description = "The customer", body = CustomerView,
         headers(("ETag" = String, description = "The version, for If-Match"))),
        (status = 400, description = "The id is not a UUID (`invalid_id`)", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
        (status = 503, description = "The customers domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/{id}")]
pub async fn get_customer(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let found = customers(&state)?.get(&id).await?;
    match found.and_then(|entity| CustomerView::of(id.clone(), entity)) {
        Some(view) => Ok(HttpResponse::Ok()
            .insert_header(etag(view.version))
            .json(view)),
        None => Err(ApiError::NotFound {
            what: "customer",
            id,
        }),
    }
}

/// `PATCH /api/v1/customers/{id}`: changes name or email. With `If-Match` (the `ETag` of a
/// read), refused with 412 when the customer changed since.
#[utoipa::path(
    patch,
    path = "/api/v1/customers/{id}",
    tag = "customers",
    params(
        ("id" = String, Path, format = "uuid", description = "The customer's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the read this change is based on (`\"3\"`)", pattern = r#"^(\*|"[0-9]{1,19}"|[0-9]{1,19})$"#),
    ),
    request_body = CustomerChangeRequest,
    responses(
        (status = 200, description = "Changed", body = CustomerView,
         headers(("ETag" = String, description = "The new version"))),
        (status = 400, description = "Not JSON (`invalid_body`), a bad id (`invalid_id`) or If-Match (`invalid_if_match`)", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
        (status = 412, description = "The customer changed since the If-Match version (`version_mismatch`, details.current_version)", body = ErrorBody),
        (status = 413, description = "Body over http.json_limit_bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "A field is unknown, of the wrong type or out of its rules, or none is given (`validation_failed`)", body = ErrorBody),
        (status = 503, description = "Not committed, nothing took effect: safe to retry", body = ErrorBody),
        (status = 504, description = "Outcome unknown (`outcome_unknown`): read the customer before retrying", body = ErrorBody),
    )
)]
#[patch("/api/v1/customers/{id}")]
pub async fn update_customer(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let expected_version = if_match(&req)?;
    let body = body.into_inner();
    let mut problems = Problems::new();
    // A field given as null would say "clear it", which no field allows: absent means keep.
    for (field, value) in body.as_object().into_iter().flatten() {
        if value.is_null() {
            problems.add(field.clone(), "must be a string, or left out");
        }
    }
    problems.finish()?;
    let body: CustomerChangeRequest = shape(body)?;
    let mut problems = Problems::new();
    if body.name.is_none() && body.email.is_none() {
        problems.add("", "give name, email or both");
    }
    if let Some(name) = &body.name {
        problems.check("name", check_name(name));
    }
    if let Some(email) = &body.email {
        problems.check("email", check_email(email));
    }
    problems.finish()?;
    let command = CustomerCommand::Update(ProfileChange {
        expected_version,
        name: body.name,
        email: body.email,
    });
    let committed = customers(&state)?.execute(&id, command, None).await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(committed.version))
        .json(CustomerView::new(id, committed.reply, committed.version)))
}

/// `GET /api/v1/customers?limit=&after=`: keyset pagination by id.
#[utoipa::path(
    get,
    path = "/api/v1/customers",
    tag = "customers",
    params(CustomerQuery),
    responses(
        (status = 200, description = "A page of customers in id order", body = CustomerPage),
        (status = 400, description = "Bad limit, after or query (`invalid_query`, `invalid_id`)", body = ErrorBody),
        (status = 503, description = "The customers domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/customers")]
pub async fn list_customers(
    state: web::Data<AppState>,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::paging::limit(query.limit)?;
    if let Some(after) = &query.after {
        valid_id(after)?;
    }
    let page = customers(&state)?
        .list(query.after.as_deref(), limit)
        .await?;
    let items = page
        .entities
        .into_iter()
        .filter_map(|(id, entity)| CustomerView::of(id, entity))
        .collect();
    Ok(HttpResponse::Ok().json(CustomerPage {
        items,
        next_after: page.next_after,
    }))
}
