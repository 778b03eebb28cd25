//! The envelope: an input event as the domain contract knows it (`docs/events.md`), and why an
//! input is refused. How a Redis stream entry's fields decode into one is the stream adapter's
//! business (`crate::streams::envelope`).

use serde::Serialize;

use super::keys::InvalidKey;

/// A decoded stream entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// Unique event id, chosen by the writer.
    pub id: String,
    /// Event type (`stock.adjusted`).
    pub event_type: String,
    /// Entity key.
    pub key: String,
    /// Payload, JSON text.
    pub data: String,
    /// When the event happened, RFC 3339, if the writer said.
    pub ts: Option<String>,
    /// W3C trace context of the writer, if any.
    pub traceparent: Option<String>,
}

impl Envelope {
    /// `ts` as a time, if the writer set it (checked when the envelope was decoded).
    pub fn happened_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let ts = self.ts.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(ts)
            .ok()
            .map(|t| t.to_utc())
    }
}

/// Why an entry is not a valid envelope; the reason goes with it to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEntry {
    /// A required field is absent or empty.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is not UTF-8.
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(String),
    /// `data` is not JSON.
    #[error("field `data` is not valid JSON: {0}")]
    InvalidJson(String),
    /// `ts` is not RFC 3339.
    #[error("field `ts` is not an RFC 3339 timestamp: {0}")]
    InvalidTimestamp(String),
    /// The type is not one the domain handles on this stream.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// `data` does not fit the event type.
    #[error("data does not fit event type {event_type:?}: {reason}")]
    InvalidData {
        /// The event type.
        event_type: String,
        /// The decoder's message.
        reason: String,
    },
    /// The entry was deleted from the stream (trimmed) while pending.
    #[error("entry was deleted from the stream before it was processed")]
    Deleted,
    /// The entity key (the envelope's, or the one `entity_key` routed to) cannot be stored.
    #[error("entity key {0}")]
    InvalidKey(#[source] InvalidKey),
    /// The envelope id cannot be recorded for deduplication.
    #[error("envelope id {0}")]
    InvalidId(#[source] InvalidKey),
    /// The entry is larger than `runtime.max_entry_bytes`.
    #[error("entry is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size (field names and values).
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

impl MalformedEntry {
    /// Stable reason code for the dead-letter entry and the metrics.
    pub fn code(&self) -> &'static str {
        match self {
            MalformedEntry::MissingField(_) => "missing_field",
            MalformedEntry::NotUtf8(_) => "not_utf8",
            MalformedEntry::InvalidJson(_) => "invalid_json",
            MalformedEntry::InvalidTimestamp(_) => "invalid_timestamp",
            MalformedEntry::UnknownType(_) => "unknown_type",
            MalformedEntry::InvalidData { .. } => "invalid_data",
            MalformedEntry::Deleted => "deleted",
            MalformedEntry::InvalidKey(_) => "invalid_key",
            MalformedEntry::InvalidId(_) => "invalid_id",
            MalformedEntry::TooLarge { .. } => "too_large",
        }
    }
}
