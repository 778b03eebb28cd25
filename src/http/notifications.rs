//! The notifications API: a customer's notifications, newest first.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::customers::valid_id;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::domains::notifications::{CustomerNotification, KEPT, NotificationKind, Notifications};
use crate::registry::DomainRoutes;

const DEFAULT_LIMIT: usize = 50;

/// A page of notifications.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<CustomerNotification>,
    /// Pass as `before` to get older ones; absent on the last page.
    pub next_before: Option<u64>,
}

/// Query of the list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// Only notifications with a `seq` below this (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The notifications domain's HTTP face, as registered in [`crate::shop::registry`].
pub struct Routes;

impl DomainRoutes for Routes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(list_notifications);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        NotificationsApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(list_notifications),
    components(schemas(NotificationPage, CustomerNotification, NotificationKind)),
    tags((name = "notifications", description = "What customers are told"))
)]
struct NotificationsApi;

/// `GET /api/v1/customers/{id}/notifications?limit=&before=`: the customer's latest
/// notifications (the last 200 are kept), newest first. A customer with none, or unknown,
/// has an empty list.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/notifications",
    tag = "notifications",
    params(("id" = String, Path, format = "uuid", description = "The customer's id"), NotificationQuery),
    responses(
        (status = 200, description = "A page of notifications, newest first", body = NotificationPage),
        (status = 400, description = "The id is not a UUID (`invalid_id`), or a bad limit or query (`invalid_query`)", body = ErrorBody),
        (status = 503, description = "The notifications domain or Postgres is unavailable", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/{id}/notifications")]
pub async fn list_notifications(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<NotificationQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valid_id(&id)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=KEPT).contains(&limit) || query.before.is_some_and(|before| before < 1) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {KEPT}, before at least 1"),
        });
    }
    let inbox = super::domain::<Notifications>(&state)?
        .get(&id)
        .await?
        .map(|entity| entity.state)
        .unwrap_or_default();
    let before = query
        .before
        .map_or(u64::MAX, |before| before.unsigned_abs());
    let mut items: Vec<CustomerNotification> = inbox
        .notifications
        .into_iter()
        .rev()
        .filter(|n| n.seq < before)
        .take(limit + 1)
        .collect();
    let next_before = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|n| n.seq)
    });
    Ok(HttpResponse::Ok().json(NotificationPage {
        items,
        next_before: next_before.flatten(),
    }))
}
