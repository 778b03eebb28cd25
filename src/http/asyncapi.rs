//! The event catalogue over HTTP: the AsyncAPI 3.0 document (`/api-docs/asyncapi.json`) and a
//! page that browses it (`/docs/events`), served with no outside assets.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, get, web};

/// The document, built once from the registry at start-up ([`super::Documents`]).
pub struct AsyncApiDocument(pub serde_json::Value);

/// `GET /api-docs/asyncapi.json`.
#[get("/api-docs/asyncapi.json")]
pub async fn document(doc: web::Data<AsyncApiDocument>) -> HttpResponse {
    HttpResponse::Ok().json(&doc.0)
}

/// `GET /docs/events`: the catalogue as a page.
#[get("/docs/events")]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(PAGE)
}

const PAGE: &str = include_str!("asyncapi.html");
