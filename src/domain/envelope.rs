//! The stream envelope: the contract other services write to. See `docs/events.md`.
//!
//! Fields of a stream entry: `id` (unique event id), `type`, `key` (entity key), `data` (JSON
//! text), and optionally `ts` (RFC 3339) and `traceparent` (W3C trace context). Any client can
//! write it (`redis-cli XADD s '*' id 1 type stock.adjusted key SKU-1 data '{"delta":1}'`).

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

impl Envelope {
    /// Decodes an entry's fields. Unknown extra fields are ignored, so writers can add their
    /// own metadata.
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, MalformedEntry> {
        let (mut id, mut event_type, mut key, mut data, mut ts, mut traceparent) =
            (None, None, None, None, None, None);
        for (name, value) in fields {
            let slot = match name {
                "id" => &mut id,
                "type" => &mut event_type,
                "key" => &mut key,
                "data" => &mut data,
                "ts" => &mut ts,
                "traceparent" => &mut traceparent,
                _ => continue,
            };
            let text =
                std::str::from_utf8(value).map_err(|_| MalformedEntry::NotUtf8(name.to_owned()))?;
            *slot = Some(text.to_owned());
        }
        let required = |v: Option<String>, name| {
            v.filter(|s| !s.is_empty())
                .ok_or(MalformedEntry::MissingField(name))
        };
        let envelope = Envelope {
            id: required(id, "id")?,
            event_type: required(event_type, "type")?,
            key: required(key, "key")?,
            data: required(data, "data")?,
            ts: ts.filter(|s| !s.is_empty()),
            // W3C trace context: a traceparent that does not parse is ignored (the work starts
            // a new trace); it is no reason to refuse the event.
            traceparent: traceparent.filter(|tp| is_traceparent(tp)),
        };
        if let Some(ts) = &envelope.ts {
            chrono::DateTime::parse_from_rfc3339(ts)
                .map_err(|e| MalformedEntry::InvalidTimestamp(e.to_string()))?;
        }
        Ok(envelope)
    }
}

/// `version-traceid-parentid-flags`, lowercase hex of 2-32-16-2 digits, as W3C Trace Context
/// parses it: version `ff` and all-zero ids are invalid; a version above `00` may carry more
/// fields after the flags, version `00` may not.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |p: &str| p.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && !zero(trace)
                && hex(parent, 16)
                && !zero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The trace context for work caused by an input: the input's trace id (a new one when the
/// input carried none) with a new span id, sampled.
pub fn child_traceparent(parent: Option<&str>) -> String {
    let trace_id = parent
        .filter(|p| is_traceparent(p))
        .and_then(|p| p.split('-').nth(1).map(str::to_owned))
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>().max(1)));
    format!("00-{trace_id}-{:016x}-01", rand::random::<u64>().max(1))
}

/// The trace id of a traceparent.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// The span (parent) id of a traceparent.
pub fn span_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &[(&str, &str)]) -> Result<Envelope, MalformedEntry> {
        Envelope::from_fields(fields.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    #[test]
    fn accepts_a_minimal_entry_and_ignores_extra_fields() {
        let e = parse(&[
            ("id", "e1"),
            ("type", "t"),
            ("key", "k"),
            ("data", "{}"),
            ("x-extra", "1"),
        ])
        .unwrap();
        assert_eq!((e.id.as_str(), e.key.as_str(), e.ts), ("e1", "k", None));
    }

    #[test]
    fn child_trace_context_continues_the_parent_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(Some(parent));
        assert!(is_traceparent(&child));
        assert_eq!(trace_id(&child), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child, parent);
        assert!(is_traceparent(&child_traceparent(None)));
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(
            parse(&[("id", "e1"), ("type", "t"), ("data", "{}")]),
            Err(MalformedEntry::MissingField("key"))
        );
        let bad_ts = parse(&[
            ("id", "e"),
            ("type", "t"),
            ("key", "k"),
            ("data", "{}"),
            ("ts", "yesterday"),
        ]);
        assert_eq!(bad_ts.unwrap_err().code(), "invalid_timestamp");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(
            parse(&[
                ("id", "e"),
                ("type", "t"),
                ("key", "k"),
                ("data", "{}"),
                ("traceparent", tp)
            ])
            .is_ok()
        );
    }

    #[test]
    fn an_invalid_traceparent_is_ignored_not_refused() {
        let with_tp = |tp: &str| {
            parse(&[
                ("id", "e"),
                ("type", "t"),
                ("key", "k"),
                ("data", "{}"),
                ("traceparent", tp),
            ])
            .map(|e| e.traceparent)
        };
        assert_eq!(with_tp("x"), Ok(None));
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(with_tp(zero_trace), Ok(None));
        let extra_on_v00 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x";
        assert_eq!(with_tp(extra_on_v00), Ok(None));
        // A later version may add fields; its first four still continue the trace.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(with_tp(future), Ok(Some(future.to_owned())));
        assert_eq!(
            trace_id(&child_traceparent(Some(future))),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
