//! What a handler sees and produces while it applies one input: the input's metadata, the
//! time, and the effects (events to emit, notifications to send) committed with the state.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where the input being applied came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An entry of an input stream.
    Stream {
        /// Logical name of the stream (`inventory.adjustments`).
        stream: String,
        /// The entry's id in that stream (`1700000000000-0`). Redis may number the same
        /// envelope differently after a failover or a resend: deduplication uses the envelope
        /// id, never this.
        entry_id: String,
    },
    /// A command from the HTTP API.
    Command,
}

/// Metadata of the input being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMeta {
    /// The envelope's `id` (what deduplication goes by) for a stream entry; for a command, its
    /// `Idempotency-Key` if it came with one, else an id made up for it.
    pub id: String,
    /// Stream entry or command.
    pub source: Source,
    /// When the input happened: the envelope's `ts` if the producer set one, else when Redis
    /// received the entry (the time part of its id); for a command, when it was received.
    pub timestamp: DateTime<Utc>,
    /// W3C trace context of the work the input causes (its producer's trace, a new span id).
    pub traceparent: String,
}

/// An event a handler emits, published on the domain's output stream after commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emitted {
    /// Envelope `type`.
    pub event_type: String,
    /// Envelope `key`.
    pub key: String,
    /// Envelope `data`.
    pub data: Value,
}

impl Emitted {
    /// The event as the output enum `O` it was emitted as (for tests and consumers).
    pub fn decode<O: DeserializeOwned>(&self) -> Result<O, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": self.event_type, "data": self.data }))
    }
}

/// A message for WebSocket clients subscribed to `topic`, sent after commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Topic, e.g. `inventory/SKU-1`.
    pub topic: String,
    /// Payload.
    pub payload: Value,
}

/// What a handler may look at and produce while applying one input. `O` is the domain's
/// output enum ([`Domain::Output`](super::Domain::Output)): a handler can emit nothing else.
#[derive(Debug)]
pub struct Context<O> {
    key: String,
    input: InputMeta,
    now: DateTime<Utc>,
    emitted: Vec<Emitted>,
    notifications: Vec<Notification>,
    /// The first emitted event that did not serialize as an envelope; it fails the input.
    unemittable: Option<String>,
    _output: PhantomData<fn(O)>,
}

impl<O: Serialize> Context<O> {
    /// A context for `input`, addressed to `key`, handled at `now`.
    pub fn new(key: &str, input: InputMeta, now: DateTime<Utc>) -> Self {
        Self {
            key: key.to_owned(),
            input,
            now,
            emitted: Vec::new(),
            notifications: Vec::new(),
            unemittable: None,
            _output: PhantomData,
        }
    }

    /// The key of the entity being handled.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The input being applied: its id, source, timestamp and trace context.
    pub fn input(&self) -> &InputMeta {
        &self.input
    }

    /// The time the input is applied, by the runtime's clock (the test kit's clock in tests).
    /// The same for the whole input. It is not stored: an input redone after a failed commit
    /// may see a later time, so a state should keep what it needs of it.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Emits `event` for the current key on `<domain>.events`.
    pub fn emit(&mut self, event: O) {
        let key = self.key.clone();
        self.emit_for(&key, event);
    }

    /// Emits `event` for another key. An event that does not serialize as an adjacently
    /// tagged enum (a map with non-string keys in its data, say) fails the input as
    /// unstorable once the handler returns: the runtime never publishes half of what a
    /// handler emitted.
    pub fn emit_for(&mut self, key: &str, event: O) {
        match envelope_parts(&event) {
            Ok((event_type, data)) => self.emitted.push(Emitted {
                event_type,
                key: key.to_owned(),
                data,
            }),
            Err(reason) => {
                self.unemittable.get_or_insert(reason);
            }
        }
    }

    /// Notifies WebSocket subscribers of `topic`.
    pub fn notify(&mut self, topic: &str, payload: Value) {
        self.notifications.push(Notification {
            topic: topic.to_owned(),
            payload,
        });
    }

    /// Consumes the context, returning what was emitted and notified, or why an emitted
    /// event cannot be published.
    pub fn into_effects(self) -> Result<Effects, String> {
        if let Some(reason) = self.unemittable {
            return Err(reason);
        }
        Ok(Effects {
            emitted: self.emitted,
            notifications: self.notifications,
        })
    }
}

/// An output event's envelope `type` and `data`, from its adjacently tagged form.
fn envelope_parts<O: Serialize>(event: &O) -> Result<(String, Value), String> {
    let value = serde_json::to_value(event).map_err(|e| format!("emitted event: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err(format!("emitted event is not tagged: {value}"));
    };
    let data = fields.remove("data").unwrap_or(Value::Null);
    match (fields.remove("type"), fields.is_empty()) {
        (Some(Value::String(event_type)), true) => Ok((event_type, data)),
        _ => Err("emitted event is not #[serde(tag = \"type\", content = \"data\")]".to_owned()),
    }
}

/// The effects of one applied input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Events for `<domain>.events`.
    pub emitted: Vec<Emitted>,
    /// Notifications for WebSocket clients.
    pub notifications: Vec<Notification>,
}
