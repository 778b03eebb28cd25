//! The event type names an event enum declares, read from the enum itself so that no list of
//! type strings is ever written twice.
//!
//! A domain's events in and out are adjacently tagged serde enums
//! (`#[serde(tag = "type", content = "data")]`), whose variant names (after `rename`) are the
//! envelope types. serde's derive hands those names to the deserializer when it reads the tag
//! (`deserialize_enum`), and to [`serde::de::Error::unknown_variant`] when it meets a tag it
//! does not know; [`event_types`] feeds the enum a document of its own and keeps the names it
//! is given. Nothing is parsed from text.

use std::any::TypeId;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Domain;

/// Why a type cannot serve as a domain's event enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{type_name} is not an event enum: declare it as an enum with \
     #[serde(tag = \"type\", content = \"data\")] ({detail})"
)]
pub struct NotAnEventEnum {
    /// The Rust type.
    pub type_name: &'static str,
    /// What the probe met instead.
    pub detail: String,
}

/// The event enum of a domain that emits nothing (`type Output = NoEvents`), or of one fed
/// only by commands (`type Event = NoEvents`, no subscriptions). It has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEvents {}

// For the event catalogue: a domain with no events of a kind lists none.
impl utoipa::PartialSchema for NoEvents {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .description(Some("declares no events"))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for NoEvents {}

impl Serialize for NoEvents {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

impl<'de> Deserialize<'de> for NoEvents {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("this domain declares no events"))
    }
}

/// The event types a domain consumes and emits, read from its `Event` and `Output` enums: what
/// its subscriptions accept, what the catalogue lists, and all a handler can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCatalogue {
    /// The envelope types of `Domain::Event`.
    pub inputs: &'static [&'static str],
    /// The envelope types of `Domain::Output`.
    pub outputs: &'static [&'static str],
}

impl EventCatalogue {
    /// The catalogue of `D`, or why its event types are not adjacently tagged enums (the
    /// runtime refuses to start such a domain, and the test kit to test it).
    pub fn of<D: Domain>() -> Result<Self, NotAnEventEnum> {
        Ok(Self {
            inputs: event_types::<D::Event>()?,
            outputs: event_types::<D::Output>()?,
        })
    }
}

/// The envelope types `E` decodes, in declaration order.
pub fn event_types<E: DeserializeOwned + 'static>()
-> Result<&'static [&'static str], NotAnEventEnum> {
    if TypeId::of::<E>() == TypeId::of::<NoEvents>() {
        return Ok(&[]);
    }
    let refused = |detail: String| NotAnEventEnum {
        type_name: std::any::type_name::<E>(),
        detail,
    };
    match E::deserialize(Probe) {
        Err(ProbeError::Variants(names)) => Ok(names),
        Err(ProbeError::Other(detail)) => Err(refused(detail)),
        Ok(_) => Err(refused("it accepted an unknown type".to_owned())),
    }
}

/// A tag no event type can have.
const PROBE_TAG: &str = "\u{0}troupe-probe";

#[derive(Debug)]
enum ProbeError {
    Variants(&'static [&'static str]),
    Other(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Variants(names) => write!(f, "variants {names:?}"),
            ProbeError::Other(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError::Other(msg.to_string())
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        ProbeError::Variants(expected)
    }
}

/// The document `{"type": PROBE_TAG}` as an adjacently tagged enum reads it.
struct Probe;

impl<'de> de::Deserializer<'de> for Probe {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Other(
            "it is not adjacently tagged (no `tag`/`content`)".to_owned(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        if fields != ["type", "data"] {
            return Err(ProbeError::Other(format!(
                "it reads the fields {fields:?}, not [\"type\", \"data\"]"
            )));
        }
        visitor.visit_map(TagOnly { done: false })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Other("it is externally tagged".to_owned()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

/// A map with the single entry `"type": PROBE_TAG`.
struct TagOnly {
    done: bool,
}

impl<'de> MapAccess<'de> for TagOnly {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Text("type")).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        seed.deserialize(Text(PROBE_TAG))
    }
}

/// A string, however it is asked for.
struct Text(&'static str);

impl<'de> de::Deserializer<'de> for Text {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_str(self.0)
    }

    /// How serde's derive reads an adjacently tagged enum's tag: naming every variant.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Variants(variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", content = "data")]
    #[allow(dead_code)]
    enum Adjacent {
        #[serde(rename = "thing.made")]
        Made {
            size: u32,
        },
        #[serde(rename = "thing.lost")]
        Lost(String),
        Plain,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type")]
    #[allow(dead_code)]
    enum Internal {
        A { x: u32 },
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum External {
        A(u32),
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NotAnEnum {
        r#type: String,
    }

    #[test]
    fn an_adjacently_tagged_enum_names_its_types_as_renamed_in_order() {
        assert_eq!(
            event_types::<Adjacent>(),
            Ok(&["thing.made", "thing.lost", "Plain"][..])
        );
    }

    #[test]
    fn no_events_declares_no_types() {
        assert_eq!(event_types::<NoEvents>(), Ok(&[][..]));
    }

    #[test]
    fn other_shapes_are_refused_with_the_reason() {
        for err in [
            event_types::<Internal>().unwrap_err(),
            event_types::<External>().unwrap_err(),
            event_types::<NotAnEnum>().unwrap_err(),
            event_types::<serde_json::Value>().unwrap_err(),
        ] {
            assert!(
                err.to_string()
                    .contains("#[serde(tag = \"type\", content = \"data\")]"),
                "{err}"
            );
        }
        assert!(
            event_types::<External>()
                .unwrap_err()
                .detail
                .contains("externally")
        );
    }
}
