//! Request bodies checked field by field: a body that is JSON but not what the operation takes
//! is answered 422 `validation_failed` with every problem found, each naming its field
//! (`items[2].quantity`), so a client can show the error next to the input that caused it.
//!
//! Two passes: the shape (types, required and unknown fields) by serde, which stops at the
//! first problem, then the rules (lengths, ranges, formats) by [`Problems`], which collects
//! them all.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::domain::DomainError;

/// One field's problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field in the body (`name`, `items[0].sku`); empty for the body itself.
    pub field: String,
    /// For people.
    pub message: String,
}

/// `body` as `T`, or 422 naming the first field whose type or presence is wrong (and every
/// unknown field, as `T` should refuse them with `#[serde(deny_unknown_fields)]`).
pub fn shape<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    shape_at("", body)
}

/// Like [`shape`] for a value found at `at` in the body (`items[2]`): the fields it names are
/// prefixed with `at`. A list of objects is taken as `Vec<Value>` and each element shaped
/// with this, because serde would fill a struct from an array too, field by position.
pub fn shape_at<T: DeserializeOwned>(at: &str, mut value: Value) -> Result<T, ApiError> {
    integral_numbers(&mut value);
    if !value.is_object() {
        return Err(ApiError::Validation(vec![FieldError {
            field: at.to_owned(),
            message: "must be a JSON object".into(),
        }]));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let inner = match message.strip_prefix("missing field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or_default();
                join(&path, name)
            }
            None => path_or_body(&path),
        };
        let field = match (at, inner.as_str()) {
            ("", inner) => inner.to_owned(),
            (at, "") => at.to_owned(),
            (at, inner) if inner.starts_with('[') => format!("{at}{inner}"),
            (at, inner) => format!("{at}.{inner}"),
        };
        ApiError::Validation(vec![FieldError { field, message }])
    })
}

/// JSON Schema's `integer` is a mathematical integer, so `5.0` is one; serde's `i64` would
/// refuse it. Numbers with no fraction that an `i64` holds exactly become integers.
fn integral_numbers(value: &mut Value) {
    /// Integers up to 2^53 are exact in an f64; beyond, "integral" says nothing.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

fn path_or_body(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_owned()
    }
}

fn join(parent: &str, name: &str) -> String {
    match path_or_body(parent).as_str() {
        "" => name.to_owned(),
        parent => format!("{parent}.{name}"),
    }
}

/// The rule violations of one body, collected.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// No problem yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` against `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Runs a domain's rule for `field` (`check_email`, say) and records its refusal.
    pub fn check(&mut self, field: &str, rule: Result<(), DomainError>) {
        if let Err(e) = rule {
            let message = match e {
                DomainError::Invalid(message) => message,
                other => other.to_string(),
            };
            self.add(field, message);
        }
    }

    /// Records a problem unless `min <= value <= max`.
    pub fn range(&mut self, field: &str, value: i64, min: i64, max: i64) {
        if !(min..=max).contains(&value) {
            self.add(field, format!("must be between {min} and {max}"));
        }
    }

    /// `Ok` when nothing was recorded, else 422 listing every problem.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        customer_id: String,
        items: Vec<Line>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i64,
    }

    fn fields(body: Value) -> Vec<String> {
        match shape::<Order>(body) {
            Err(ApiError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        use serde_json::json;
        assert_eq!(fields(json!({"items": []})), ["customer_id"]);
        assert_eq!(
            fields(
                json!({"customer_id": "c", "items": [{"sku": "a", "quantity": 1}, {"sku": "b"}]})
            ),
            ["items[1].quantity"]
        );
        assert_eq!(
            fields(json!({"customer_id": "c", "items": [{"sku": "a", "quantity": "1"}]})),
            ["items[0].quantity"]
        );
        assert_eq!(
            fields(json!({"customer_id": 7, "items": []})),
            ["customer_id"]
        );
        assert_eq!(fields(json!(["c", []])), [""], "not by position");
        assert_eq!(fields(json!("text")), [""]);
        let whole: Line = shape_at("", json!({"sku": "a", "quantity": 5.0})).unwrap();
        assert_eq!(whole.quantity, 5, "5.0 is an integer");
        assert!(shape_at::<Line>("", json!({"sku": "a", "quantity": 5.5})).is_err());
        assert!(shape_at::<Line>("", json!({"sku": "a", "quantity": 1e300})).is_err());
        let nested = shape_at::<Line>("items[3]", json!({"sku": "a"}));
        assert!(
            matches!(&nested, Err(ApiError::Validation(e)) if e[0].field == "items[3].quantity"),
            "{nested:?}"
        );
        let positional = shape_at::<Line>("items[0]", json!(["a", 1]));
        assert!(
            matches!(&positional, Err(ApiError::Validation(e)) if e[0].field == "items[0]"),
            "{positional:?}"
        );
        let unknown = shape::<Order>(json!({"customer_id": "c", "items": [], "x": 1}));
        assert!(
            format!("{unknown:?}").contains("unknown field `x`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn problems_are_all_reported() {
        let mut problems = Problems::new();
        problems.range("quantity", 0, 1, 10);
        problems.range("price", 5, 1, 10);
        problems.check("name", Err(DomainError::Invalid("too long".into())));
        match problems.finish() {
            Err(ApiError::Validation(errors)) => assert_eq!(
                errors,
                [
                    FieldError {
                        field: "quantity".into(),
                        message: "must be between 1 and 10".into()
                    },
                    FieldError {
                        field: "name".into(),
                        message: "too long".into()
                    }
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(Problems::new().finish().is_ok());
    }
}
