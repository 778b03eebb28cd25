//! Operator endpoints for dead letters: list, replay, discard.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::streams::dead_letter::{self, Replayed};
use crate::streams::entry::EntryId;

/// Query of the list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Last dead-letter id of the previous page.
    pub after: Option<String>,
}

fn known_stream(state: &AppState, stream: &str) -> Result<(), ApiError> {
    if state.domains.streams().iter().any(|s| s == stream) {
        return Ok(());
    }
    Err(ApiError::NotFound {
        what: "stream",
        id: stream.to_owned(),
    })
}

fn entry_id(raw: &str) -> Result<EntryId, ApiError> {
    raw.parse().map_err(|e: String| ApiError::BadRequest {
        code: "invalid_path",
        message: e,
    })
}

/// `GET /admin/dead-letters/{stream}?limit=&after=`.
#[utoipa::path(
    get,
    path = "/admin/dead-letters/{stream}",
    tag = "operations",
    params(("stream" = String, Path, description = "A consumed stream, e.g. inventory.adjustments"), DeadLetterQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first, with their dlq_* fields"),
        (status = 400, description = "Bad limit, after or query (`invalid_query`)", body = ErrorBody),
        (status = 404, description = "No running domain consumes this stream", body = ErrorBody),
    )
)]
#[get("/admin/dead-letters/{stream}")]
pub async fn list(
    state: web::Data<AppState>,
    stream: web::Path<String>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    known_stream(&state, &stream)?;
    let limit = super::paging::limit(query.limit)?;
    let after = query.after.as_deref().map(entry_id).transpose()?;
    let mut redis = state.redis.manager();
    let items = dead_letter::list(
        &mut redis,
        &state.redis.keys().dead_letters(&stream),
        after,
        limit,
    )
    .await?;
    let next_after = if items.len() == limit {
        items.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_after": next_after })))
}

/// `POST /admin/dead-letters/{stream}/{id}/replay`: puts the entry back on its stream.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/{stream}/{id}/replay",
    tag = "operations",
    params(("stream" = String, Path), ("id" = String, Path, description = "Id in the dead-letter stream")),
    responses(
        (status = 200, description = "Back on its stream as `replayed_as`"),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "The dead letter keeps no original fields to replay", body = ErrorBody),
    )
)]
#[post("/admin/dead-letters/{stream}/{id}/replay")]
pub async fn replay(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (stream, id) = path.into_inner();
    known_stream(&state, &stream)?;
    let keys = state.redis.keys();
    let mut redis = state.redis.manager();
    match dead_letter::replay(
        &mut redis,
        &keys.dead_letters(&stream),
        &keys.stream(&stream),
        entry_id(&id)?,
    )
    .await?
    {
        Replayed::As(new_id) => {
            tracing::info!(stream, dead_letter.id = id, new_id, "dead letter replayed");
            Ok(HttpResponse::Ok().json(json!({ "replayed_as": new_id })))
        }
        Replayed::NotFound => Err(ApiError::NotFound {
            what: "dead letter",
            id,
        }),
        Replayed::NothingToReplay => Err(ApiError::Conflict {
            code: "nothing_to_replay",
            message: format!(
                "dead letter {id} keeps no original fields (the entry was deleted from its \
                 stream before it was read); discard it instead"
            ),
        }),
    }
}

/// `DELETE /admin/dead-letters/{stream}/{id}`: discards the entry.
#[utoipa::path(
    delete,
    path = "/admin/dead-letters/{stream}/{id}",
    tag = "operations",
    params(("stream" = String, Path), ("id" = String, Path, description = "Id in the dead-letter stream")),
    responses(
        (status = 204, description = "Discarded"),
        (status = 404, description = "No such dead letter", body = ErrorBody),
    )
)]
#[delete("/admin/dead-letters/{stream}/{id}")]
pub async fn discard(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (stream, id) = path.into_inner();
    known_stream(&state, &stream)?;
    let mut redis = state.redis.manager();
    if dead_letter::discard(
        &mut redis,
        &state.redis.keys().dead_letters(&stream),
        entry_id(&id)?,
    )
    .await?
    {
        tracing::info!(stream, dead_letter.id = id, "dead letter discarded");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound {
            what: "dead letter",
            id,
        })
    }
}
