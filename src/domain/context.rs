//! What a handler sees and produces while it applies one input: the input's metadata, the
//! time, and the effects (events to emit, notifications to send) committed with the state.

use chrono::{DateTime, Utc};
use serde::Serialize;
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

/// A message for WebSocket clients subscribed to `topic`, sent after commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Topic, e.g. `inventory/SKU-1`.
    pub topic: String,
    /// Payload.
    pub payload: Value,
}

/// What a handler may look at and produce while applying one input.
#[derive(Debug)]
pub struct Context {
    key: String,
    input: InputMeta,
    now: DateTime<Utc>,
    emitted: Vec<Emitted>,
    notifications: Vec<Notification>,
}

impl Context {
    /// A context for `input`, addressed to `key`, handled at `now`.
    pub fn new(key: &str, input: InputMeta, now: DateTime<Utc>) -> Self {
        Self {
            key: key.to_owned(),
            input,
            now,
            emitted: Vec::new(),
            notifications: Vec::new(),
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

    /// Emits `event_type` with `data` for the current key.
    pub fn emit(&mut self, event_type: &str, data: Value) {
        let key = self.key.clone();
        self.emit_for(&key, event_type, data);
    }

    /// Emits `event_type` with `data` for another key.
    pub fn emit_for(&mut self, key: &str, event_type: &str, data: Value) {
        self.emitted.push(Emitted {
            event_type: event_type.to_owned(),
            key: key.to_owned(),
            data,
        });
    }

    /// Notifies WebSocket subscribers of `topic`.
    pub fn notify(&mut self, topic: &str, payload: Value) {
        self.notifications.push(Notification {
            topic: topic.to_owned(),
            payload,
        });
    }

    /// Consumes the context, returning what was emitted and notified.
    pub fn into_effects(self) -> Effects {
        Effects {
            emitted: self.emitted,
            notifications: self.notifications,
        }
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
