//! The OpenAPI document (`/api-docs/openapi.json`) and Swagger UI (`/docs/`), generated from the
//! handlers' annotations so they cannot drift from the code: the runtime's own operations here,
//! each registered domain's merged in from its [`crate::registry::DomainRoutes`].

use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorDetail};
use super::{dead_letters, health, ws};
use crate::registry::Registry;

/// The runtime's own operations (health, dead letters) and the shared error schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Troupe",
        description = "The reference shop on the Troupe runtime. Every error is JSON: \
                       `{\"error\": {\"code\", \"message\", \"details\"}}`."
    ),
    paths(
        health::live,
        health::ready,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
        ws::upgrade,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "operations", description = "Health and dead letters"),
        (name = "realtime", description = "WebSocket notifications")
    )
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`] with every registered domain's paths.
pub fn document(registry: &Registry) -> utoipa::openapi::OpenApi {
    let mut document = registry.openapi(ApiDoc::openapi());
    headers_are_never_null(&mut document);
    document
}

/// An optional header (`Option<String>` in an annotation) is absent or a string: HTTP has no
/// null header, so the `null` utoipa adds to its type would invite clients to send `null`.
fn headers_are_never_null(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else {
                    continue;
                };
                if !matches!(parameter.parameter_in, ParameterIn::Header) {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(object))) = &mut parameter.schema
                    && let SchemaType::Array(types) = &object.schema_type
                {
                    let types: Vec<Type> = types
                        .iter()
                        .filter(|t| !matches!(t, Type::Null))
                        .cloned()
                        .collect();
                    if let [only] = types.as_slice() {
                        object.schema_type = SchemaType::Type(only.clone());
                    }
                }
            }
        }
    }
}
