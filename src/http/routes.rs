//! Which methods each documented path takes, read from the OpenAPI document: a request for a
//! known path with another method is answered 405 with an `Allow` header, not 404, and the
//! document stays the one list of routes.

use actix_web::HttpRequest;

use super::ApiError;

/// The documented paths, as segments (`None` for a `{parameter}`), with their methods.
#[derive(Debug, Clone, Default)]
pub struct KnownRoutes(Vec<(Vec<Option<String>>, Vec<&'static str>)>);

impl KnownRoutes {
    /// The routes of `openapi`.
    pub fn of(openapi: &utoipa::openapi::OpenApi) -> Self {
        let routes = openapi
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .trim_start_matches('/')
                    .split('/')
                    .map(|segment| {
                        (!(segment.starts_with('{') && segment.ends_with('}')))
                            .then(|| segment.to_owned())
                    })
                    .collect();
                let methods = [
                    (&item.get, "GET"),
                    (&item.put, "PUT"),
                    (&item.post, "POST"),
                    (&item.delete, "DELETE"),
                    (&item.patch, "PATCH"),
                ]
                .into_iter()
                .filter(|(operation, _)| operation.is_some())
                .map(|(_, name)| name)
                .collect();
                (segments, methods)
            })
            .collect();
        Self(routes)
    }

    /// The methods `path` takes, if it is a documented path (most specific match first:
    /// `/api/v1/orders/{id}` does not swallow a literal segment another path names).
    pub fn methods(&self, path: &str) -> Option<Vec<&'static str>> {
        let asked: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut matching: Vec<&(Vec<Option<String>>, Vec<&'static str>)> = self
            .0
            .iter()
            .filter(|(segments, _)| {
                segments.len() == asked.len()
                    && segments
                        .iter()
                        .zip(&asked)
                        .all(|(known, asked)| match known {
                            Some(literal) => literal == asked,
                            None => !asked.is_empty(),
                        })
            })
            .collect();
        matching.sort_by_key(|(segments, _)| segments.iter().filter(|s| s.is_none()).count());
        matching.first().map(|(_, methods)| methods.clone())
    }

    /// The error for a request no route took: 405 if its path is known, else 404.
    pub fn unrouted(&self, req: &HttpRequest) -> ApiError {
        match self.methods(req.path()) {
            Some(allow) if !allow.contains(&req.method().as_str()) => {
                ApiError::MethodNotAllowed { allow }
            }
            _ => ApiError::NoRoute {
                path: req.path().to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(paths(get_thing, list_things))]
    struct Doc;

    #[utoipa::path(get, path = "/things/{id}", responses((status = 200)))]
    #[allow(dead_code)]
    fn get_thing() {}

    #[utoipa::path(post, path = "/things/search", responses((status = 200)))]
    #[allow(dead_code)]
    fn list_things() {}

    #[test]
    fn paths_match_by_segment_and_literals_win() {
        let routes = KnownRoutes::of(&Doc::openapi());
        assert_eq!(routes.methods("/things/7"), Some(vec!["GET"]));
        assert_eq!(routes.methods("/things/search"), Some(vec!["POST"]));
        assert_eq!(routes.methods("/things"), None);
        assert_eq!(routes.methods("/things/7/x"), None);
        assert_eq!(routes.methods("/things/"), None);
    }
}
