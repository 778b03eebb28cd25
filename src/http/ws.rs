//! `GET /ws`: the WebSocket upgrade. The session itself is [`crate::ws::connection`].

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, get, web};

use super::ApiError;
use crate::ws::{Hub, connection};

/// Upgrades to a WebSocket session (protocol in `docs/websocket.md`). 400 `not_websocket`
/// without a valid upgrade handshake; 503 `too_many_connections` at `ws.max_connections`.
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
