//! The domain contract: what a user writes to put a business domain on Troupe.
//!
//! A domain is plain Rust. It names the streams it consumes, keeps a state per
//! entity key, and applies one input (a stream event, or a command from HTTP) to one entity's
//! state at a time, returning effects: events to emit on `<domain>.events` (or another stream it
//! declares), durable timers to
//! schedule or cancel, and notifications for WebSocket clients. Events in and out are typed enums: the envelope types a domain
//! consumes and emits are read from them ([`EventCatalogue`]), never listed by hand.
//! Nothing here knows about actix, Redis or Postgres; the runtime
//! (`crate::actors`, `crate::streams`, `crate::store`) does the rest.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use troupe::domain::{Context, Domain, DomainError, EventCatalogue, Subscription};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Counter { total: i64 }
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum CounterEvent {
//!     #[serde(rename = "counter.added")]
//!     Added { amount: i64 },
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum CounterOutput {
//!     #[serde(rename = "counter.changed")]
//!     Changed { total: i64 },
//! }
//!
//! struct Counters;
//!
//! impl Domain for Counters {
//!     type State = Counter;
//!     type Event = CounterEvent;
//!     type Output = CounterOutput;
//!     type Timer = troupe::domain::NoEvents;
//!     type Command = std::convert::Infallible;
//!     type Reply = ();
//!
//!     fn name(&self) -> &'static str { "counters" }
//!     fn subscriptions(&self) -> Vec<Subscription> {
//!         vec![Subscription::new("counters.input")]
//!     }
//!     fn handle(&self, state: &mut Counter, event: CounterEvent, ctx: &mut Context<CounterOutput>)
//!         -> Result<(), DomainError>
//!     {
//!         let CounterEvent::Added { amount } = event;
//!         state.total += amount;
//!         ctx.emit(CounterOutput::Changed { total: state.total });
//!         Ok(())
//!     }
//!     // No `execute`: this domain takes no commands.
//! }
//!
//! let catalogue = EventCatalogue::of::<Counters>().unwrap();
//! assert_eq!(catalogue.inputs, ["counter.added"]);
//! assert_eq!(catalogue.outputs, ["counter.changed"]);
//! ```

pub mod apply;
pub mod clock;
pub mod context;
pub mod envelope;
pub mod event_types;
pub mod keys;
pub mod testkit;
pub mod trace_context;

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use apply::{
    Applied, Failure, Target, apply_command, apply_event, apply_timer, decode_event, decode_tagged,
    route,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{
    Context, Effects, Emitted, InputMeta, Notification, ScheduledTimer, Source, TimerId,
};
pub use envelope::{Envelope, MalformedEntry};
pub use event_types::{EventCatalogue, NoEvents, NotAnEventEnum, event_types};
pub use keys::{InvalidKey, validate_key};

/// A business domain run by Troupe.
pub trait Domain: Send + Sync + 'static {
    /// The state of one entity. A key that was never touched has `State::default()`.
    type State: Clone + Default + Serialize + DeserializeOwned + Send + Sync + Unpin + 'static;
    /// The events this domain consumes, decoded from an envelope's `type` and `data` as an
    /// adjacently tagged enum: `#[serde(tag = "type", content = "data")]`. Its variant names
    /// (after `rename`) are the types every subscription accepts. [`NoEvents`] for none.
    type Event: DeserializeOwned + Send + 'static;
    /// The events this domain emits on `<name>.events`, an adjacently tagged enum like
    /// `Event` (deserializable too, so consumers and tests can read them back). Handlers
    /// emit values of it, so a type it does not declare cannot be emitted. [`NoEvents`] for
    /// a domain that emits nothing.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// What a durable timer carries ([`Context::schedule`]), handed to [`Domain::on_timer`]
    /// when it fires. Stored as JSON until then, so it must load back after a restart (keep
    /// old variants readable while timers of them may be pending). [`NoEvents`] for a domain
    /// that schedules none.
    type Timer: Serialize + DeserializeOwned + Send + 'static;
    /// Commands this domain answers from HTTP (use `std::convert::Infallible` for none).
    type Command: Send + 'static;
    /// The reply to a command. Serializable, because the reply of a command sent with an
    /// idempotency key is stored with its effects and answered again to a retry.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Unique name: the consumer group, the output stream `<name>.events`, the state rows.
    fn name(&self) -> &'static str;

    /// The streams this domain consumes. Each accepts every type of [`Domain::Event`].
    fn subscriptions(&self) -> Vec<Subscription>;

    /// Streams besides `<name>.events` this domain publishes to with [`Context::emit_to`]
    /// (logical names, `shop.notifications` say): a stream meant for other readers than the
    /// domain's own consumers. Each is written by this domain only (the registry refuses two
    /// writers), its events commit and publish exactly like those on `<name>.events`, in one
    /// commit order across all of the domain's streams, and it is trimmed the same way. An
    /// event emitted to a stream not declared here fails its input as unstorable.
    fn extra_outputs(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The one stream an output type is published on, for a domain with extra outputs whose
    /// types each have a home (`stock.hold_requested` only on `reservations.requests`, say):
    /// `<name>.events` or one of [`extra_outputs`](Domain::extra_outputs). `None`, the
    /// default, lets the type go to every stream the domain declares. A named home is enforced
    /// (an event of the type emitted elsewhere fails its input as unstorable) and the event
    /// catalogue lists the type on that stream only.
    fn output_stream_of(&self, event_type: &str) -> Option<String> {
        let _ = event_type;
        None
    }

    /// The kinds of real-time topic this domain's events concern (`&["customer", "order"]`):
    /// a topic is `<kind>:<id>`, and WebSocket clients subscribe to topics. A kind belongs to
    /// one domain (the registry refuses two), whose `<name>.events` stream is the topic's
    /// history: clients resume from an event id of it. Empty, the default, publishes none.
    fn topic_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// The topics an event this domain emitted on `<name>.events` concerns (`customer:42`),
    /// each of a kind in [`topic_kinds`](Domain::topic_kinds); `key` is the entry's key. Every
    /// instance delivers the event to its clients subscribed to them, in stream order.
    fn topics(&self, key: &str, event: &Self::Output) -> Vec<String> {
        let _ = (key, event);
        Vec::new()
    }

    /// The entity an event applies to. By default the envelope's `key`; override it to route
    /// by a field of the event instead (a payment event handled per order, say). Whatever it
    /// returns decides the partition, so a key's events still apply in stream order.
    fn entity_key<'a>(&self, envelope_key: &'a str, event: &'a Self::Event) -> Cow<'a, str> {
        let _ = event;
        Cow::Borrowed(envelope_key)
    }

    /// Applies one event to one entity's state. Returning an error (or panicking) leaves the
    /// state untouched and the entry unacknowledged: it is retried and, after
    /// `max_deliveries`, moved to the dead-letter stream. Business outcomes such as "not enough
    /// stock" are not errors: emit an event saying so.
    fn handle(
        &self,
        state: &mut Self::State,
        event: Self::Event,
        ctx: &mut Context<Self::Output, Self::Timer>,
    ) -> Result<(), DomainError>;

    /// Applies a durable timer that came due to the entity it was scheduled for, once: it is
    /// an input like an event (the same per-key order, its effects committed with the timer's
    /// removal, exactly once also across crashes), whose id is the [`TimerId`] and whose
    /// timestamp is when it was due. A failure is retried with backoff; after `max_deliveries`
    /// failures, or at once for [`DomainError::Invalid`], the timer is set aside as dead (kept
    /// in `troupe_timer` with the reason, and counted). Optional for domains without timers.
    fn on_timer(
        &self,
        state: &mut Self::State,
        timer: Self::Timer,
        ctx: &mut Context<Self::Output, Self::Timer>,
    ) -> Result<(), DomainError> {
        let _ = (state, timer, ctx);
        Err(DomainError::Invalid(format!(
            "domain {} handles no timers",
            self.name()
        )))
    }

    /// Applies one command from HTTP to one entity's state and returns the reply. Its effects
    /// commit exactly like an event's before the reply is sent. Optional: a domain fed only by
    /// events declares `type Command = std::convert::Infallible` and leaves this out.
    fn execute(
        &self,
        state: &mut Self::State,
        command: Self::Command,
        ctx: &mut Context<Self::Output, Self::Timer>,
    ) -> Result<Self::Reply, DomainError> {
        let _ = (state, command, ctx);
        Err(DomainError::Invalid(format!(
            "domain {} takes no commands",
            self.name()
        )))
    }
}

/// A domain with its own settings section, `[domains.<name>]` in the configuration files
/// (or `TROUPE__DOMAINS__<NAME>__<KEY>` in the environment), built from it when it starts.
/// Registered with `Registry::serve_configured::<D>(routes)`.
///
/// Every setting needs a default (`#[serde(default)]`): the registry builds the domain from an
/// empty section to learn its name, subscriptions and outputs, which therefore must not depend
/// on the settings. A section that does not deserialize, or that [`from_settings`]
/// refuses, stops start-up with the domain's name and the reason.
///
/// [`from_settings`]: Configurable::from_settings
pub trait Configurable: Domain + Sized {
    /// The section's shape (consider `#[serde(deny_unknown_fields)]`, so typos are refused).
    type Settings: DeserializeOwned;

    /// The domain as `settings` configure it; `Err` says what is wrong with them.
    fn from_settings(settings: Self::Settings) -> Result<Self, String>;
}

/// The stream a domain's emitted events are published on: `<domain>.events`.
pub fn output_stream(domain: &str) -> String {
    format!("{domain}.events")
}

/// Every stream `domain` publishes to: `<name>.events` first, then its
/// [`extra_outputs`](Domain::extra_outputs).
pub fn output_streams<D: Domain + ?Sized>(domain: &D) -> Vec<String> {
    std::iter::once(output_stream(domain.name()))
        .chain(domain.extra_outputs().into_iter().map(str::to_owned))
        .collect()
}

/// One stream a domain consumes, for every type of its [`Domain::Event`] enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Logical stream name (`inventory.adjustments`); the key prefix is applied by the runtime.
    pub stream: String,
    /// What becomes of an entry of another type.
    pub other_types: OtherTypes,
}

/// What a subscription does with entries whose type it does not handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtherTypes {
    /// Dead-letter them as `unknown_type`: the stream is this domain's input, and a type it
    /// does not know is a producer's mistake.
    #[default]
    DeadLetter,
    /// Acknowledge them without applying (`outcome="skipped"`): the stream is another domain's
    /// output, carrying types this domain has no interest in.
    Skip,
}

impl Subscription {
    /// Subscribes to `stream`; entries of types the domain's event enum does not declare are
    /// dead-lettered.
    pub fn new(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            other_types: OtherTypes::DeadLetter,
        }
    }

    /// Skips entries of types the event enum does not declare, instead of dead-lettering
    /// them: for consuming another domain's output stream (`orders.events`) for some of its
    /// types.
    pub fn skipping_other_types(mut self) -> Self {
        self.other_types = OtherTypes::Skip;
        self
    }
}

/// An entity as the runtime keeps it: the domain's state plus the number of inputs applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Entity<S> {
    /// The domain's state.
    pub state: S,
    /// How many inputs (events and commands) have been applied to this entity.
    pub version: u64,
}

/// Why a domain refused or failed an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A business rule refused a command (HTTP 409 with `code`).
    #[error("{message}")]
    Rejected {
        /// Stable snake_case code (`insufficient_stock`).
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The input is not acceptable and never will be (HTTP 422; a stream event is
    /// dead-lettered at once, reason `invalid`).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The command addresses an entity that does not exist in the domain's terms (a customer
    /// never registered): HTTP 404. Like the other refusals, a stream event failing so is
    /// dead-lettered at once as `invalid`.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Kind of entity (`customer`).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// The command was made against a version of the entity that is no longer current
    /// (`If-Match` with [`Context::version`] of an earlier read): HTTP 412, nothing applied.
    #[error("the entity is at version {current}, not {expected}")]
    Stale {
        /// The version the command expected.
        expected: u64,
        /// The entity's version.
        current: u64,
    },
    /// Anything else, possibly transient (a stream event is retried, then dead-lettered).
    #[error("{0}")]
    Failed(String),
}
