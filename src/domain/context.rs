//! What a handler sees and produces while it applies one input: the input's metadata, the
//! time, and the effects (events to emit, timers to schedule or cancel, notifications to send)
//! committed with the state.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
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
    /// A durable timer that came due ([`Context::schedule`]); the input's id is the timer's
    /// and its timestamp when it was due.
    Timer,
}

/// Metadata of the input being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMeta {
    /// The envelope's `id` (what deduplication goes by) for a stream entry; for a command, its
    /// `Idempotency-Key` if it came with one, else an id made up for it; for a timer, its
    /// [`TimerId`].
    pub id: String,
    /// Stream entry or command.
    pub source: Source,
    /// When the input happened: the envelope's `ts` if the producer set one, else when Redis
    /// received the entry (the time part of its id); for a command, when it was received; for
    /// a timer, when it was due.
    pub timestamp: DateTime<Utc>,
    /// W3C trace context of the work the input causes (its producer's trace, a new span id).
    pub traceparent: String,
}

/// An event a handler emits, published on the domain's output stream after commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emitted {
    /// The stream it is published on: `None` for the domain's own `<domain>.events`, else one
    /// of its [`extra_outputs`](super::Domain::extra_outputs) ([`Context::emit_to`]).
    pub stream: Option<String>,
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

/// The id of a durable timer, returned by [`Context::schedule`]: keep it in the state to
/// [`cancel`](Context::cancel) the timer later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TimerId(String);

impl TimerId {
    /// A new, unique id (a UUID v7: unique across instances, roughly time-ordered).
    fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as the runtime stores it (and as [`InputMeta::id`] of its firing).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for TimerId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A durable timer a handler scheduled: stored with the input's effects, it fires once, when
/// due, as an input to the entity `key` ([`Domain::on_timer`](super::Domain::on_timer)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledTimer {
    /// Its id.
    pub id: TimerId,
    /// The entity it fires for.
    pub key: String,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The domain's `Timer` value, as JSON.
    pub payload: Value,
}

/// What a handler may look at and produce while applying one input. `O` is the domain's
/// output enum ([`Domain::Output`](super::Domain::Output)): a handler can emit nothing else;
/// `T` its timer payload ([`Domain::Timer`](super::Domain::Timer)).
#[derive(Debug)]
pub struct Context<O, T = super::NoEvents> {
    key: String,
    version: u64,
    input: InputMeta,
    now: DateTime<Utc>,
    emitted: Vec<Emitted>,
    notifications: Vec<Notification>,
    timers: Vec<ScheduledTimer>,
    cancelled: Vec<TimerId>,
    /// The first emitted event or timer that did not serialize; it fails the input.
    unemittable: Option<String>,
    _output: PhantomData<fn(O, T)>,
}

impl<O: Serialize, T: Serialize> Context<O, T> {
    /// A context for `input`, addressed to `key` at `version`, handled at `now`.
    pub fn new(key: &str, version: u64, input: InputMeta, now: DateTime<Utc>) -> Self {
        Self {
            key: key.to_owned(),
            version,
            input,
            now,
            emitted: Vec::new(),
            notifications: Vec::new(),
            timers: Vec::new(),
            cancelled: Vec::new(),
            unemittable: None,
            _output: PhantomData,
        }
    }

    /// The key of the entity being handled.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The entity's version before this input: how many inputs were applied to it (0 for a
    /// key never touched). A command compares it with the version its client last saw
    /// (`If-Match`) and refuses with [`DomainError::Stale`](super::DomainError::Stale) when
    /// they differ: the check and the change apply in one step, so no write slips between.
    pub fn version(&self) -> u64 {
        self.version
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
        self.push(None, key, event);
    }

    /// Emits `event` for `key` on `stream`, one of the domain's
    /// [`extra_outputs`](super::Domain::extra_outputs) (an undeclared stream fails the input
    /// as unstorable once the handler returns). Events on all of a domain's streams publish
    /// in the order they commit.
    pub fn emit_to(&mut self, stream: &str, key: &str, event: O) {
        self.push(Some(stream.to_owned()), key, event);
    }

    fn push(&mut self, stream: Option<String>, key: &str, event: O) {
        match envelope_parts(&event) {
            Ok((event_type, data)) => self.emitted.push(Emitted {
                stream,
                event_type,
                key: key.to_owned(),
                data,
            }),
            Err(reason) => {
                self.unemittable.get_or_insert(reason);
            }
        }
    }

    /// Schedules a durable timer for the current key: `timer` is handed to
    /// [`Domain::on_timer`](super::Domain::on_timer) once, `after` from [`now`](Self::now). The
    /// timer is stored with this input's effects, so it exists exactly when they commit (an
    /// input that fails schedules nothing), and it fires after a restart or a crash too.
    pub fn schedule(&mut self, after: Duration, timer: T) -> TimerId {
        let key = self.key.clone();
        self.schedule_for(&key, after, timer)
    }

    /// Schedules a durable timer for another key of this domain (see [`schedule`](Self::schedule)).
    pub fn schedule_for(&mut self, key: &str, after: Duration, timer: T) -> TimerId {
        let id = TimerId::generate();
        let due = TimeDelta::from_std(after)
            .ok()
            .and_then(|after| self.now.checked_add_signed(after));
        match (due, serde_json::to_value(&timer)) {
            (Some(due), Ok(payload)) => self.timers.push(ScheduledTimer {
                id: id.clone(),
                key: key.to_owned(),
                due,
                payload,
            }),
            (None, _) => {
                self.unemittable
                    .get_or_insert(format!("timer due {after:?} from now is out of range"));
            }
            (_, Err(e)) => {
                self.unemittable.get_or_insert(format!("timer: {e}"));
            }
        }
        id
    }

    /// Cancels a timer scheduled earlier (by this input or an earlier one, for any key), with
    /// this input's effects: once they commit, it does not fire. Cancelling a timer that fired
    /// already, or was cancelled, does nothing.
    pub fn cancel(&mut self, timer: &TimerId) {
        let before = self.timers.len();
        self.timers.retain(|t| &t.id != timer);
        if self.timers.len() == before {
            self.cancelled.push(timer.clone());
        }
    }

    /// Notifies WebSocket subscribers of `topic`.
    pub fn notify(&mut self, topic: &str, payload: Value) {
        self.notifications.push(Notification {
            topic: topic.to_owned(),
            payload,
        });
    }

    /// Consumes the context, returning what was emitted, scheduled, cancelled and notified, or
    /// why an emitted event or a timer cannot be stored.
    pub fn into_effects(self) -> Result<Effects, String> {
        if let Some(reason) = self.unemittable {
            return Err(reason);
        }
        Ok(Effects {
            emitted: self.emitted,
            notifications: self.notifications,
            timers: self.timers,
            cancelled: self.cancelled,
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
    /// Events to publish, each on its [`stream`](Emitted::stream).
    pub emitted: Vec<Emitted>,
    /// Notifications for WebSocket clients.
    pub notifications: Vec<Notification>,
    /// Durable timers scheduled.
    pub timers: Vec<ScheduledTimer>,
    /// Timers (scheduled by earlier inputs) cancelled.
    pub cancelled: Vec<TimerId>,
}
