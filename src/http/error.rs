//! The HTTP layer's one error type and its mapping to JSON responses.
//!
//! Every error a client can see has the body
//! `{"error": {"code": "<stable_snake_case>", "message": "<for people>", "details": <JSON or null>}}`.
//! Codes are part of the API contract; messages are not. Errors of the lower layers are
//! converted into an [`ApiError`] in exactly one place (the `From` impls here), and internal
//! failures are logged with their cause chain while the client sees an opaque 500.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use super::request_telemetry::current_request_id;
use crate::actors::handle::DomainUnavailable;
use crate::actors::processor::CommandError;
use crate::domain::DomainError;
use crate::streams::StreamError;
use crate::telemetry::error_chain;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The addressed resource does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Kind of resource (`sku`).
        what: &'static str,
        /// The identifier asked for.
        id: String,
    },
    /// No route matches the request path.
    #[error("no route for {path}")]
    NoRoute {
        /// The request path.
        path: String,
    },
    /// The path exists, but not with this method.
    #[error("this path takes {}", allow.join(", "))]
    MethodNotAllowed {
        /// The methods it takes.
        allow: Vec<&'static str>,
    },
    /// The request is malformed (body, query string or path parameter).
    #[error("{message}")]
    BadRequest {
        /// Stable code (`invalid_body`, `invalid_query`, `invalid_path`).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than `http.json_limit_bytes`.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("expected a body with content type application/json")]
    UnsupportedMediaType,
    /// A business rule refused the request.
    #[error("{message}")]
    Conflict {
        /// Stable code from the domain (`insufficient_stock`).
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The request is well-formed but not acceptable.
    #[error("{message}")]
    Unprocessable {
        /// What is wrong.
        message: String,
    },
    /// A dependency needed to answer is down.
    #[error("{message}")]
    Unavailable {
        /// Stable code (`not_ready`).
        code: &'static str,
        /// What is down.
        message: String,
        /// Structured detail, e.g. the result of each readiness check.
        details: Option<Value>,
    },
    /// The body is JSON but not what the operation takes: each problem names its field.
    #[error("the request body is not valid; see details.fields")]
    Validation(Vec<super::validation::FieldError>),
    /// The request's `If-Match` names a version the entity is no longer at.
    #[error("the entity changed since version {expected}: it is at version {current}")]
    PreconditionFailed {
        /// The version the request expected.
        expected: u64,
        /// The entity's version.
        current: u64,
    },
    /// The `Idempotency-Key` was used before for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    /// A command was submitted but whether it committed is unknown.
    #[error("the outcome of the command is unknown; retry it with the same Idempotency-Key")]
    OutcomeUnknown,
    /// Anything else: logged in full, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::NoRoute { .. } => "route_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable { code, .. } => code,
            ApiError::Conflict { code, .. } => code,
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::PreconditionFailed { .. } => "version_mismatch",
            ApiError::Validation(_) => "validation_failed",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::OutcomeUnknown => "outcome_unknown",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Unavailable {
                details: Some(d), ..
            } => d.clone(),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::PreconditionFailed { current, .. } => json!({ "current_version": current }),
            ApiError::Validation(fields) => json!({ "fields": fields }),
            _ => Value::Null,
        }
    }
}

/// The body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, part of the API contract.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// Structured detail, or null.
    #[schema(value_type = Option<Object>)]
    pub details: Value,
    /// The request's id (its `X-Request-Id`), to find the detail in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Unprocessable { .. }
            | ApiError::Validation(_)
            | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = %error_chain(cause.as_ref()), "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((actix_web::http::header::ALLOW, allow.join(", ")));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                details: self.details(),
                request_id: current_request_id(),
            },
        })
    }
}

impl From<JsonPayloadError> for ApiError {
    fn from(e: JsonPayloadError) -> Self {
        match e {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
            JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) => ApiError::BadRequest {
                code: "invalid_body",
                message: format!("invalid JSON body: {e}"),
            },
            other => ApiError::BadRequest {
                code: "invalid_body",
                message: other.to_string(),
            },
        }
    }
}

/// What a client is told about an entity whose stored state does not load.
const UNLOADABLE_MESSAGE: &str =
    "this entity's stored state cannot be loaded; an operator must repair it";

impl From<DomainUnavailable> for ApiError {
    fn from(e: DomainUnavailable) -> Self {
        // The reason (a failed domain's last error, an actor's) is for the log, not the client.
        tracing::warn!(error = %error_chain(&e), "domain unavailable");
        if let DomainUnavailable::EntityUnavailable { .. } = e {
            return ApiError::Unavailable {
                code: "entity_unavailable",
                message: UNLOADABLE_MESSAGE.into(),
                details: None,
            };
        }
        ApiError::Unavailable {
            code: "domain_unavailable",
            message: "the domain is not available right now; retry later".into(),
            details: None,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(DomainError::Rejected { code, message }) => {
                ApiError::Conflict { code, message }
            }
            CommandError::Domain(DomainError::Invalid(message)) => {
                ApiError::Unprocessable { message }
            }
            CommandError::Domain(DomainError::NotFound { what, id }) => {
                ApiError::NotFound { what, id }
            }
            CommandError::Domain(DomainError::Stale { expected, current }) => {
                ApiError::PreconditionFailed { expected, current }
            }
            CommandError::Unstorable(detail) => {
                tracing::warn!(error = %detail, "command result cannot be stored");
                ApiError::Unprocessable {
                    message: "the command's result cannot be stored (it would hold a NUL character, a NaN or an invalid key)".into(),
                }
            }
            CommandError::IdempotencyKeyReused(_) => ApiError::IdempotencyKeyReused,
            e @ CommandError::Unloadable(_) => {
                tracing::error!(error = %error_chain(&e), "command on a quarantined entity");
                ApiError::Unavailable {
                    code: "entity_unavailable",
                    message: UNLOADABLE_MESSAGE.into(),
                    details: None,
                }
            }
            e @ CommandError::NotCommitted(_) => {
                tracing::warn!(error = %error_chain(&e), "command not committed");
                ApiError::Unavailable {
                    code: "not_committed",
                    message: "the command was not carried out; it is safe to retry".into(),
                    details: None,
                }
            }
            e @ CommandError::OutcomeUnknown(_) => {
                tracing::warn!(error = %error_chain(&e), "command outcome unknown");
                ApiError::OutcomeUnknown
            }
            e @ (CommandError::Domain(DomainError::Failed(_)) | CommandError::Panicked(_)) => {
                ApiError::Internal(Box::new(e))
            }
        }
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        tracing::warn!(error = %e, "redis unavailable");
        ApiError::Unavailable {
            code: "redis_unavailable",
            message: "redis is unavailable".into(),
            details: None,
        }
    }
}

impl From<QueryPayloadError> for ApiError {
    fn from(e: QueryPayloadError) -> Self {
        ApiError::BadRequest {
            code: "invalid_query",
            message: format!("invalid query string: {e}"),
        }
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        ApiError::BadRequest {
            code: "invalid_path",
            message: format!("invalid path parameter: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body(e: ApiError) -> (StatusCode, Value) {
        let res = e.error_response();
        let status = res.status();
        let bytes = to_bytes(res.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn errors_map_to_status_and_stable_code() {
        let cases = [
            (
                ApiError::NotFound {
                    what: "sku",
                    id: "X".into(),
                },
                404,
                "not_found",
            ),
            (
                ApiError::NoRoute { path: "/x".into() },
                404,
                "route_not_found",
            ),
            (
                JsonPayloadError::Overflow { limit: 10 }.into(),
                413,
                "payload_too_large",
            ),
            (
                JsonPayloadError::ContentType.into(),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::Unavailable {
                    code: "not_ready",
                    message: "redis".into(),
                    details: None,
                },
                503,
                "not_ready",
            ),
            (ApiError::Internal("secret detail".into()), 500, "internal"),
            (
                CommandError::Domain(DomainError::Rejected {
                    code: "insufficient_stock",
                    message: "no".into(),
                })
                .into(),
                409,
                "insufficient_stock",
            ),
            (
                CommandError::Domain(DomainError::Invalid("bad".into())).into(),
                422,
                "unprocessable",
            ),
            (
                CommandError::Domain(DomainError::NotFound {
                    what: "customer",
                    id: "c1".into(),
                })
                .into(),
                404,
                "not_found",
            ),
            (
                CommandError::Domain(DomainError::Stale {
                    expected: 1,
                    current: 2,
                })
                .into(),
                412,
                "version_mismatch",
            ),
            (
                CommandError::NotCommitted("pool: connection refused".into()).into(),
                503,
                "not_committed",
            ),
            (
                CommandError::OutcomeUnknown("timed out".into()).into(),
                504,
                "outcome_unknown",
            ),
            (
                CommandError::IdempotencyKeyReused("k".into()).into(),
                422,
                "idempotency_key_reused",
            ),
        ];
        for (error, status, code) in cases {
            let (got_status, json) = body(error).await;
            assert_eq!(got_status.as_u16(), status);
            assert_eq!(json["error"]["code"], code);
            assert!(json["error"]["message"].is_string());
        }
    }

    #[actix_web::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let (_, json) = body(ApiError::Internal("password=hunter2".into())).await;
        assert_eq!(json["error"]["message"], "internal error");
        let failed = DomainUnavailable::Failed {
            domain: "inventory",
            reason: "relation \"secret_table\" does not exist".into(),
        };
        let (status, json) = body(failed.into()).await;
        assert_eq!(status.as_u16(), 503);
        assert!(!json.to_string().contains("secret_table"), "{json}");
    }
}
