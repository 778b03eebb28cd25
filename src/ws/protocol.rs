//! The WebSocket protocol's messages (`docs/websocket.md`): what clients send and what the
//! server answers, as JSON text frames.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::Envelope;
use crate::streams::entry::EntryId;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Receive the events of `topic` from now on, after replaying those since `since` (an
    /// event id the client received) when it is given.
    Subscribe {
        /// `<kind>:<id>`.
        topic: String,
        /// The last event id the client saw on this topic.
        #[serde(default)]
        since: Option<String>,
    },
    /// Stop receiving `topic`.
    Unsubscribe {
        /// A topic subscribed to.
        topic: String,
    },
    /// Answered with `pong`.
    Ping,
}

impl ClientMessage {
    /// Parses a text frame; the error says what is wrong, for the client.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            // serde's message without the input echoed back, which could be anything.
            let mut message = e.to_string();
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            message
        })
    }
}

/// Why the server refused a client message; the `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, not a known `op`, a missing or unknown field, or a binary frame.
    InvalidMessage,
    /// The topic is not `<kind>:<id>` with a valid id.
    InvalidTopic,
    /// No domain publishes the topic's kind.
    UnknownTopic,
    /// `since` is not an event id (`<ms>-<seq>`).
    InvalidSince,
    /// Events after `since` are gone (trimmed) or too many to replay: fetch the state over
    /// REST and subscribe without `since`.
    TooOld,
    /// `ws.max_subscriptions` reached.
    TooManySubscriptions,
    /// Subscribed to that topic already.
    AlreadySubscribed,
    /// Unsubscribing from a topic not subscribed to.
    NotSubscribed,
    /// The replay could not be read (Redis is unreachable); try again.
    Unavailable,
}

impl ErrorCode {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::InvalidSince => "invalid_since",
            ErrorCode::TooOld => "too_old",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A message from the server.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ServerMessage<'a> {
    Event {
        topic: &'a str,
        id: String,
        #[serde(rename = "type")]
        event_type: &'a str,
        data: &'a RawValue,
        ts: Option<&'a str>,
    },
    Subscribed {
        topic: &'a str,
    },
    Unsubscribed {
        topic: &'a str,
    },
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
    },
    Pong,
}

fn text(message: &ServerMessage<'_>) -> ByteString {
    // Serializing these borrowed strings and already-valid JSON cannot fail.
    ByteString::from(serde_json::to_string(message).unwrap_or_default())
}

/// `{"op":"event",…}` for `envelope`, read at `id` of its stream, on `topic`; `None` when its
/// `data` is not JSON (nothing a client could parse).
pub fn event(topic: &str, id: EntryId, envelope: &Envelope) -> Option<ByteString> {
    let data: &RawValue = serde_json::from_str(&envelope.data).ok()?;
    Some(text(&ServerMessage::Event {
        topic,
        id: id.to_string(),
        event_type: &envelope.event_type,
        data,
        ts: envelope.ts.as_deref(),
    }))
}

/// `{"op":"subscribed","topic":…}`.
pub fn subscribed(topic: &str) -> ByteString {
    text(&ServerMessage::Subscribed { topic })
}

/// `{"op":"unsubscribed","topic":…}`.
pub fn unsubscribed(topic: &str) -> ByteString {
    text(&ServerMessage::Unsubscribed { topic })
}

/// `{"op":"error","code":…,"message":…}`, naming the topic when the error concerns one.
pub fn error(code: ErrorCode, message: &str, topic: Option<&str>) -> ByteString {
    // A topic echoed back is one the client sent: bounded by the frame size, but keep the
    // error frame small whatever it was.
    let topic = topic.map(|t| match t.char_indices().nth(300) {
        Some((end, _)) => &t[..end],
        None => t,
    });
    text(&ServerMessage::Error {
        code: code.as_str(),
        message,
        topic,
    })
}

/// `{"op":"pong"}`.
pub fn pong() -> ByteString {
    text(&ServerMessage::Pong)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parsed(frame: &ByteString) -> Value {
        serde_json::from_str(frame).unwrap()
    }

    #[test]
    fn client_messages_parse_and_refuse_what_is_not_the_protocol() {
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","topic":"sku:A","since":"1-0"}"#),
            Ok(ClientMessage::Subscribe {
                topic: "sku:A".into(),
                since: Some("1-0".into())
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","topic":"sku:A"}"#),
            Ok(ClientMessage::Subscribe {
                topic: "sku:A".into(),
                since: None
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"op":"unsubscribe","topic":"sku:A"}"#),
            Ok(ClientMessage::Unsubscribe {
                topic: "sku:A".into()
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"op":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"topic":"sku:A"}"#,
            r#"{"op":"dance"}"#,
            r#"{"op":"subscribe"}"#,
            r#"{"op":"subscribe","topic":7}"#,
            r#"{"op":"subscribe","topic":"sku:A","extra":1}"#,
        ] {
            let error = ClientMessage::parse(bad).unwrap_err();
            assert!(!error.contains(" at line "), "{error}");
        }
    }

    #[test]
    fn event_frames_carry_the_entry_id_type_data_and_timestamp() {
        let envelope = Envelope {
            id: "uuid".into(),
            event_type: "stock.changed".into(),
            key: "A".into(),
            data: r#"{"sku":"A","on_hand":1}"#.into(),
            ts: Some("2026-12-04T00:00:00Z".into()),
            traceparent: None,
        };
        let frame = event("sku:A", EntryId { ms: 17, seq: 2 }, &envelope).unwrap();
        assert_eq!(
            parsed(&frame),
            json!({"op": "event", "topic": "sku:A", "id": "17-2", "type": "stock.changed",
                   "data": {"sku": "A", "on_hand": 1}, "ts": "2026-12-04T00:00:00Z"})
        );
        let not_json = Envelope {
            data: "{".into(),
            ..envelope
        };
        assert!(event("sku:A", EntryId::ZERO, &not_json).is_none());
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            parsed(&subscribed("sku:A")),
            json!({"op": "subscribed", "topic": "sku:A"})
        );
        assert_eq!(
            parsed(&unsubscribed("sku:A")),
            json!({"op": "unsubscribed", "topic": "sku:A"})
        );
        assert_eq!(parsed(&pong()), json!({"op": "pong"}));
        assert_eq!(
            parsed(&error(ErrorCode::TooOld, "gone", Some("sku:A"))),
            json!({"op": "error", "code": "too_old", "message": "gone", "topic": "sku:A"})
        );
        let long = "x".repeat(5000);
        let frame = parsed(&error(ErrorCode::InvalidTopic, "m", Some(&long)));
        assert_eq!(frame["topic"].as_str().unwrap().len(), 300);
        assert_eq!(
            parsed(&error(ErrorCode::InvalidMessage, "m", None)),
            json!({"op": "error", "code": "invalid_message", "message": "m"})
        );
    }
}
