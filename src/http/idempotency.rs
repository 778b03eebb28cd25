//! The `Idempotency-Key` header of commands: what makes a retried request safe.
//!
//! A command sent with a key records its reply with its effects, in one transaction. A retry
//! with the same key and the same request (method, path and body, digested) gets that reply
//! again and applies nothing; the same key with a different request is refused (422
//! `idempotency_key_reused`). Keys follow the rules of entity keys and are kept for
//! `runtime.dedupe_window_seconds`. See `docs/operations.md`.

use actix_web::HttpRequest;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::actors::processor::Idempotency;
use crate::domain::validate_key;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The response header marking a stored reply answered again.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The idempotency of a command request, if it carries a key: the key and a digest of the
/// request it came with (`body` as parsed, so formatting and field order do not matter).
pub fn idempotency(
    state: &AppState,
    req: &HttpRequest,
    body: &impl Serialize,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = |message: String| ApiError::BadRequest {
        code: "invalid_idempotency_key",
        message,
    };
    let key = value
        .to_str()
        .map_err(|_| invalid("the Idempotency-Key header is not visible ASCII".into()))?;
    validate_key(key, state.settings.runtime.max_key_bytes)
        .map_err(|e| invalid(format!("the Idempotency-Key {e}")))?;
    // As documented (`[!-~]{1,256}`): no spaces either, which proxies may fold or trim.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "the Idempotency-Key holds a space; use visible ASCII characters".into(),
        ));
    }
    let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut digest = Sha256::new();
    digest.update(req.method().as_str().as_bytes());
    digest.update(b" ");
    digest.update(req.path().as_bytes());
    digest.update(b"\n");
    digest.update(&body);
    let fingerprint = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(Idempotency {
        key: key.to_owned(),
        fingerprint,
    }))
}

/// The id of the entity a creating request (`POST /api/v1/customers`) makes. Without an
/// idempotency key, a new UUID v7 (unique, roughly time-ordered). With one, a UUID derived
/// from the key and the route (not the body): a retry addresses the same entity, so it gets
/// the first request's stored reply instead of creating a second entity, and a different body
/// under the same key is refused as a reuse.
pub fn new_entity_id(req: &HttpRequest, idempotency: Option<&Idempotency>) -> String {
    let Some(idempotency) = idempotency else {
        return uuid::Uuid::now_v7().to_string();
    };
    let mut digest = Sha256::new();
    digest.update(b"troupe entity id\n");
    digest.update(req.method().as_str().as_bytes());
    digest.update(b" ");
    digest.update(req.path().as_bytes());
    digest.update(b"\n");
    digest.update(idempotency.key.as_bytes());
    let hash = digest.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}
