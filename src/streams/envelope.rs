//! The wire form of an envelope: the fields of a Redis stream entry, as any client writes them
//! (`redis-cli XADD s '*' id 1 type stock.adjusted key SKU-1 data '{"delta":1}'`): `id` (unique
//! event id), `type`, `key` (entity key), `data` (JSON text), and optionally `ts` (RFC 3339) and
//! `traceparent` (W3C trace context). See `docs/events.md`.

use crate::domain::trace_context::is_traceparent;
use crate::domain::{Envelope, MalformedEntry};

/// Decodes a stream entry's fields into an envelope. Unknown extra fields are ignored, so
/// writers can add their own metadata.
pub fn decode<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Envelope, MalformedEntry> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trace_context::{child_traceparent, trace_id};

    fn parse(fields: &[(&str, &str)]) -> Result<Envelope, MalformedEntry> {
        decode(fields.iter().map(|(k, v)| (*k, v.as_bytes())))
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
