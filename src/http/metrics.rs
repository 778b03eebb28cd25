//! `GET /metrics` in the Prometheus text format.

use actix_web::{HttpResponse, get, web};

use super::AppState;

/// Renders every metric of the process.
#[get("/metrics")]
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
