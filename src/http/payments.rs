//! The payments API: a customer's wallet.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::customers::valid_id;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::domains::payments::{Movement, MovementKind, Payments, Wallet};
use crate::registry::DomainRoutes;

/// A wallet as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletView {
    /// Whose.
    #[schema(format = "uuid")]
    pub customer_id: String,
    /// What is left to spend.
    pub balance_cents: i64,
    /// The credit it opened with.
    pub credit_cents: i64,
    /// Sum of all captures.
    pub captured_cents: i64,
    /// Sum of all refunds.
    pub refunded_cents: i64,
    /// The latest movements, newest first (at most 50).
    pub movements: Vec<Movement>,
    /// Inputs applied to the wallet.
    pub version: u64,
}

impl WalletView {
    fn new(customer_id: String, wallet: Wallet, version: u64) -> Self {
        let mut movements = wallet.movements;
        movements.reverse();
        Self {
            customer_id,
            balance_cents: wallet.balance_cents,
            credit_cents: wallet.credit_cents,
            captured_cents: wallet.captured_cents,
            refunded_cents: wallet.refunded_cents,
            movements,
            version,
        }
    }
}

/// The payments domain's HTTP face, as registered in [`crate::shop::registry`].
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(get_wallet);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        PaymentsApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(get_wallet),
    components(schemas(WalletView, Movement, MovementKind)),
    tags((name = "payments", description = "A wallet per customer"))
)]
struct PaymentsApi;

/// `GET /api/v1/customers/{id}/wallet`: balance and recent movements. A wallet opens shortly
/// after its customer registers (payments reads `customer.registered`); until then, 404.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/wallet",
    tag = "payments",
    params(("id" = String, Path, format = "uuid", description = "The customer's id")),
    responses(
        (status = 200, description = "The wallet", body = WalletView),
        (status = 400, description = "The id is not a UUID (`invalid_id`)", body = ErrorBody),
        (status = 404, description = "No wallet is open for this customer (yet)", body = ErrorBody),
        (status = 503, description = "The payments domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/{id}/wallet")]
pub async fn get_wallet(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let found = super::domain::<Payments>(&state)?.get(&id).await?;
    match found.filter(|entity| entity.state.opened) {
        Some(entity) => {
            Ok(HttpResponse::Ok().json(WalletView::new(id, entity.state, entity.version)))
        }
        None => Err(ApiError::NotFound { what: "wallet", id }),
    }
}
