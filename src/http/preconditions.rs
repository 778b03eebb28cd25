//! Optimistic concurrency over HTTP: a read answers the entity's version as its `ETag`
//! (`"3"`), and a write may send it back as `If-Match`; the domain compares it with the
//! version in the same step as the change ([`crate::domain::Context::version`]), so a stale
//! write is refused (412 `version_mismatch`) and never lands on top of one it did not see.

use actix_web::HttpRequest;
use actix_web::http::header::{ETAG, HeaderValue, IF_MATCH};

use super::ApiError;

/// The `ETag` of an entity at `version`: the version as a strong entity tag.
pub fn etag(version: u64) -> (actix_web::http::header::HeaderName, String) {
    (ETAG, format!("\"{version}\""))
}

/// The version an `If-Match` header names: `"3"` (as [`etag`] answers it) or `3`. `None`
/// without the header, and for `*` (any version). Anything else is 400 `invalid_if_match`: a
/// list of tags, or a weak tag (`W/"3"`), would claim a match the write cannot check.
pub fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let mut values = req.headers().get_all(IF_MATCH);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    parse(value)
}

fn parse(value: &HeaderValue) -> Result<Option<u64>, ApiError> {
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let unquoted = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    // At most 19 digits, as the API documents: every such number fits a u64.
    if unquoted.is_empty() || unquoted.len() > 19 || !unquoted.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    unquoted.parse().map(Some).map_err(|_| invalid())
}

fn invalid() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_if_match",
        message: "If-Match must be one entity tag as the ETag header gave it (\"3\"), or *".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<Option<u64>, String> {
        parse(&HeaderValue::from_str(raw).unwrap()).map_err(|e| e.code().to_owned())
    }

    #[test]
    fn tags_as_the_etag_gives_them_parse() {
        assert_eq!(parsed("\"3\""), Ok(Some(3)));
        assert_eq!(parsed("17"), Ok(Some(17)));
        assert_eq!(parsed("*"), Ok(None));
        assert_eq!(
            parsed("\"9999999999999999999\""),
            Ok(Some(9_999_999_999_999_999_999))
        );
        for bad in [
            "",
            "\"\"",
            "W/\"3\"",
            "\"3\", \"4\"",
            "-1",
            "3.0",
            "\"18446744073709551616\"",
            "\"10000000000000000000\"",
            "abc",
        ] {
            assert_eq!(parsed(bad), Err("invalid_if_match".to_owned()), "{bad:?}");
        }
    }
}
