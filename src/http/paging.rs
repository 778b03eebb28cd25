//! Keyset pages: the `limit` every list endpoint takes, checked the same way.

use super::ApiError;

/// Page size when the query gives none.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page.
pub const MAX_LIMIT: usize = 1000;

/// The page size `requested` asks for (`DEFAULT_LIMIT` when absent), or 400 `invalid_query`
/// outside 1 to `MAX_LIMIT`.
pub fn limit(requested: Option<usize>) -> Result<usize, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    Ok(limit)
}
