//! Topics: what a WebSocket client subscribes to (`customer:42`), which domain publishes each
//! kind, and how an entry of that domain's `<name>.events` stream maps to topics.

use std::fmt;
use std::sync::Arc;

use crate::domain::{Domain, Envelope, decode_tagged, output_stream, validate_key};

/// Longest topic kind, in bytes.
pub const MAX_KIND_BYTES: usize = 32;

/// A topic a client asked for that cannot be subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not `<kind>:<id>`, or the id is not a valid key.
    #[error(
        "a topic is <kind>:<id> with a non-empty id of at most {max_key_bytes} bytes, without control characters: {problem}"
    )]
    Malformed {
        /// What is wrong.
        problem: String,
        /// The id limit (`runtime.max_key_bytes`).
        max_key_bytes: usize,
    },
    /// No domain publishes this kind.
    #[error("no domain publishes topics of kind {kind:?}; known kinds: {known}")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The kinds this service knows, comma-separated.
        known: String,
    },
}

/// Checks a topic kind a domain declares: lower-case ASCII letters, digits, `_` and `-`.
pub fn check_kind(kind: &str) -> Result<(), String> {
    if kind.is_empty() || kind.len() > MAX_KIND_BYTES {
        return Err(format!("must be 1 to {MAX_KIND_BYTES} bytes long"));
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("may hold only a-z, 0-9, '_' and '-'".into());
    }
    Ok(())
}

/// The topic kinds one domain publishes, the stream that holds their history, and how an
/// entry of it maps to topics. Built by the registry from [`Domain::topic_kinds`] and
/// [`Domain::topics`].
#[derive(Clone)]
pub struct TopicSource {
    domain: &'static str,
    stream: String,
    kinds: &'static [&'static str],
    topics: Arc<TopicsOf>,
}

/// Maps an entry of a domain's stream to the topics it concerns.
type TopicsOf = dyn Fn(&Envelope) -> Vec<String> + Send + Sync;

impl fmt::Debug for TopicSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicSource")
            .field("domain", &self.domain)
            .field("stream", &self.stream)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl TopicSource {
    /// `domain`'s topics, or `None` when it declares no kinds.
    pub fn of<D: Domain>(domain: Arc<D>) -> Option<Self> {
        let kinds = domain.topic_kinds();
        if kinds.is_empty() {
            return None;
        }
        let name = domain.name();
        let topics = move |envelope: &Envelope| {
            match decode_tagged::<D::Output>(&envelope.event_type, &envelope.data) {
                Ok(event) => domain.topics(&envelope.key, &event),
                Err(e) => {
                    // Not one of the domain's types: someone else wrote to its stream.
                    tracing::debug!(domain = name, entry.id = %envelope.id, error = %e,
                        "entry of an unknown shape on a topic stream; no topic gets it");
                    Vec::new()
                }
            }
        };
        Some(Self {
            domain: name,
            stream: output_stream(name),
            kinds,
            topics: Arc::new(topics),
        })
    }

    /// The publishing domain.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// The logical stream the topics' events are read from (`<domain>.events`).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The kinds it publishes.
    pub fn kinds(&self) -> &'static [&'static str] {
        self.kinds
    }

    /// The topics `envelope` concerns; topics of a kind this source does not declare are
    /// dropped (with a warning), so one domain cannot write into another's topics.
    pub fn topics_of(&self, envelope: &Envelope) -> Vec<String> {
        let mut topics = (self.topics)(envelope);
        topics.retain(|topic| {
            let declared = topic
                .split_once(':')
                .is_some_and(|(kind, id)| self.kinds.contains(&kind) && !id.is_empty());
            if !declared {
                tracing::warn!(
                    domain = self.domain,
                    topic,
                    "a domain named a topic of a kind it does not declare; ignored"
                );
            }
            declared
        });
        topics.dedup();
        topics
    }
}

/// Parses a topic a client sent, `<kind>:<id>`, against the kinds `sources` publish; returns
/// the index of the source that publishes it.
pub fn resolve(
    topic: &str,
    sources: &[TopicSource],
    max_key_bytes: usize,
) -> Result<usize, TopicError> {
    let malformed = |problem: String| TopicError::Malformed {
        problem,
        max_key_bytes,
    };
    let Some((kind, id)) = topic.split_once(':') else {
        return Err(malformed("no ':' in it".into()));
    };
    validate_key(id, max_key_bytes).map_err(|e| malformed(e.to_string()))?;
    sources
        .iter()
        .position(|s| s.kinds.contains(&kind))
        .ok_or_else(|| TopicError::UnknownKind {
            kind: kind.chars().take(MAX_KIND_BYTES).collect(),
            known: sources
                .iter()
                .flat_map(|s| s.kinds.iter().copied())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::inventory::Inventory;
    use crate::domains::notifications::Notifications;

    fn sources() -> Vec<TopicSource> {
        vec![
            TopicSource::of(Arc::new(Inventory::default())).unwrap(),
            TopicSource::of(Arc::new(Notifications)).unwrap(),
        ]
    }

    fn envelope(event_type: &str, key: &str, data: &str) -> Envelope {
        Envelope {
            id: "e1".into(),
            event_type: event_type.into(),
            key: key.into(),
            data: data.into(),
            ts: None,
            traceparent: None,
        }
    }

    #[test]
    fn topics_resolve_to_the_domain_that_publishes_their_kind() {
        let sources = sources();
        assert_eq!(resolve("sku:A-1", &sources, 256), Ok(0));
        assert_eq!(resolve("customer:c1", &sources, 256), Ok(1));
        assert_eq!(resolve("order:o1", &sources, 256), Ok(1));
        assert!(matches!(
            resolve("user:1", &sources, 256),
            Err(TopicError::UnknownKind { known, .. }) if known == "sku, customer, order"
        ));
        for bad in ["sku", "sku:", "sku:a\u{0}b", "customer:\n"] {
            assert!(
                matches!(
                    resolve(bad, &sources, 256),
                    Err(TopicError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        let long = format!("sku:{}", "x".repeat(257));
        assert!(resolve(&long, &sources, 256).is_err());
    }

    #[test]
    fn entries_map_to_the_topics_their_domain_names() {
        let sources = sources();
        let changed = envelope(
            "stock.changed",
            "A",
            r#"{"sku":"A","on_hand":3,"reserved":1,"available":2,"change":"hold"}"#,
        );
        assert_eq!(sources[0].topics_of(&changed), ["sku:A"]);
        let held = envelope(
            "stock.held",
            "o1",
            r#"{"order_id":"o1","sku":"A","quantity":1}"#,
        );
        assert!(sources[0].topics_of(&held).is_empty());
        let junk = envelope("stock.changed", "A", r#"{"sku":1}"#);
        assert!(sources[0].topics_of(&junk).is_empty());
        let created = envelope(
            "notification.created",
            "c1",
            r#"{"customer_id":"c1","notification":{"id":"n","seq":1,"kind":"order_pending",
                "order_id":"o1","message":"m","at":"2026-01-01T00:00:00Z"}}"#,
        );
        assert_eq!(sources[1].topics_of(&created), ["customer:c1", "order:o1"]);
    }

    #[test]
    fn kinds_are_short_lower_case_words() {
        assert!(check_kind("sku").is_ok());
        assert!(check_kind("order-line_2").is_ok());
        for bad in ["", "SKU", "a:b", "a b", &"k".repeat(33)] {
            assert!(check_kind(bad).is_err(), "{bad:?}");
        }
    }
}
