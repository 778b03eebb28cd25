//! `GET /ws`: the WebSocket upgrade. The session itself is [`crate::ws::connection`].

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, get, web};

use super::ApiError;
use super::error::ErrorBody;
use crate::ws::{Hub, connection};

/// Upgrades to a WebSocket session (protocol in `docs/websocket.md`). 400 `not_websocket`
/// without a valid upgrade handshake; 503 `too_many_connections` at `ws.max_connections`.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "realtime",
    description = "Upgrades to a WebSocket of JSON text frames: subscribe to `customer:<id>`, \
                   `order:<id>` or `sku:<sku>` and receive their events live, resuming with \
                   `since` after a dropped connection. The messages are in the AsyncAPI document \
                   (`/api-docs/asyncapi.json`, channel `websocket`) and docs/websocket.md.",
    params(
        ("Upgrade" = String, Header, description = "`websocket`", pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$"),
        ("Connection" = String, Header, description = "Includes `Upgrade`", pattern = "(?i)upgrade"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes in base64 (RFC 6455)", pattern = "^[A-Za-z0-9+/]{22}==$"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`", pattern = "^13$"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade (`not_websocket`)", body = ErrorBody),
        (status = 503, description = "This instance serves `ws.max_connections` already (`too_many_connections`)", body = ErrorBody),
    )
)]
#[get("/ws")]
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
            code: "not_websocket",
            message: format!("GET /ws takes a WebSocket upgrade: {e}"),
        })?;
    let hub = hub.get_ref().clone();
    let Some(registration) = hub.connect() else {
        return Err(ApiError::Unavailable {
            code: "too_many_connections",
            message:
                "this instance serves as many WebSocket connections as it may; try another or later"
                    .into(),
            details: None,
        });
    };
    actix_web::rt::spawn(connection::serve(hub, registration, session, stream));
    Ok(response)
}
