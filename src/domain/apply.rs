//! Applying one input to one entity: the single code path shared by the runtime's partition
//! actors and the test kit, so unit tests exercise exactly what production runs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{Limits, Unstorable, json_has_nul, validate_key};
use super::{Context, Domain, DomainError, Effects, Emitted, Entity, InputMeta, MalformedEntry};

/// An input applied successfully: the entity's next value and the effects to commit with it.
#[derive(Debug, Clone)]
pub struct Applied<S> {
    /// The entity after the input (version incremented).
    pub entity: Entity<S>,
    /// Events and notifications produced.
    pub effects: Effects,
    /// The new state as JSON text, checked to be storable and to load back.
    pub state_json: String,
}

/// Why an input was not applied. The entity is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The handler returned an error.
    #[error("handler error: {0}")]
    Handler(#[from] DomainError),
    /// The handler panicked.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// The handler succeeded but what it produced cannot be stored: a state holding
    /// `\u0000` or NaN, an emitted event for a key that is not valid.
    #[error("result cannot be stored: {0}")]
    Unstorable(String),
}

impl Failure {
    /// Whether applying the same input again can only fail the same way: such an input is
    /// dead-lettered at once instead of being retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Failure::Handler(
                DomainError::Invalid(_)
                    | DomainError::NotFound { .. }
                    | DomainError::Stale { .. }
                    | DomainError::Rejected { .. }
            ) | Failure::Unstorable(_)
        )
    }

    /// Stable reason code for a dead letter of an input that failed this way.
    pub fn dead_letter_code(&self) -> &'static str {
        match self {
            Failure::Handler(
                DomainError::Invalid(_)
                | DomainError::NotFound { .. }
                | DomainError::Stale { .. }
                | DomainError::Rejected { .. },
            ) => "invalid",
            Failure::Unstorable(_) => "unstorable",
            _ => "max_deliveries",
        }
    }
}

/// The entity key an event applies to ([`Domain::entity_key`]), reusing the envelope's key
/// when the domain does not route otherwise, and checked against `limits` (a key Postgres
/// cannot store is refused here, before anything is applied). `entity_key` is the domain's
/// code: if it panics (an event lacking the field it routes by, say), the entry is invalid
/// data, not a crash.
pub fn route<D: Domain>(
    domain: &D,
    limits: &Limits,
    envelope_key: String,
    event_type: &str,
    event: &D::Event,
) -> Result<String, MalformedEntry> {
    let routed = catch_unwind(AssertUnwindSafe(|| {
        match domain.entity_key(&envelope_key, event) {
            std::borrow::Cow::Borrowed(key) if key == envelope_key => None,
            other => Some(other.into_owned()),
        }
    }))
    .map_err(|payload| MalformedEntry::InvalidData {
        event_type: event_type.to_owned(),
        reason: format!("entity_key panicked: {}", panic_message(payload.as_ref())),
    })?;
    let key = routed.unwrap_or(envelope_key);
    validate_key(&key, limits.max_key_bytes).map_err(MalformedEntry::InvalidKey)?;
    Ok(key)
}

/// Decodes an envelope's `type` and `data` into the domain's event type, checking the type
/// against those its event enum declares ([`EventCatalogue::inputs`](super::EventCatalogue)).
pub fn decode_event<D: Domain>(
    handled_types: &[&str],
    event_type: &str,
    data: &str,
) -> Result<D::Event, MalformedEntry> {
    if !handled_types.contains(&event_type) {
        return Err(MalformedEntry::UnknownType(event_type.to_owned()));
    }
    decode_tagged(event_type, data)
}

/// Decodes an envelope's `type` and `data` into an adjacently tagged enum (a domain's
/// [`Domain::Output`], say, when reading back what it emitted).
pub fn decode_tagged<T: DeserializeOwned>(
    event_type: &str,
    data: &str,
) -> Result<T, MalformedEntry> {
    let data: Value =
        serde_json::from_str(data).map_err(|e| MalformedEntry::InvalidJson(e.to_string()))?;
    let mut tagged = Map::with_capacity(2);
    tagged.insert("type".into(), Value::String(event_type.to_owned()));
    tagged.insert("data".into(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(|e| MalformedEntry::InvalidData {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })
}

/// What an input is applied to and when: the entity, its key, the input's metadata and the
/// time the handler sees ([`Context::now`]).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a, S> {
    /// The entity's key.
    pub key: &'a str,
    /// Its current value (`Entity::default()` for a key never touched).
    pub entity: &'a Entity<S>,
    /// The input's metadata ([`Context::input`]).
    pub input: &'a InputMeta,
    /// The runtime clock's time.
    pub now: DateTime<Utc>,
}

/// Applies `event` to a copy of the target entity; the original is untouched whatever
/// happens.
pub fn apply_event<D: Domain>(
    domain: &D,
    limits: &Limits,
    target: Target<'_, D::State>,
    event: D::Event,
) -> Result<Applied<D::State>, Failure> {
    let (applied, ()) = run(domain, limits, target, |state, ctx| {
        domain.handle(state, event, ctx)
    })?;
    Ok(applied)
}

/// Applies a durable timer's payload to a copy of the target entity.
pub fn apply_timer<D: Domain>(
    domain: &D,
    limits: &Limits,
    target: Target<'_, D::State>,
    timer: D::Timer,
) -> Result<Applied<D::State>, Failure> {
    let (applied, ()) = run(domain, limits, target, |state, ctx| {
        domain.on_timer(state, timer, ctx)
    })?;
    Ok(applied)
}

/// Applies `command` to a copy of the target entity and returns the reply with the result.
pub fn apply_command<D: Domain>(
    domain: &D,
    limits: &Limits,
    target: Target<'_, D::State>,
    command: D::Command,
) -> Result<(Applied<D::State>, D::Reply), Failure> {
    run(domain, limits, target, |state, ctx| {
        domain.execute(state, command, ctx)
    })
}

fn run<D: Domain, R>(
    domain: &D,
    limits: &Limits,
    target: Target<'_, D::State>,
    f: impl FnOnce(&mut D::State, &mut Context<D::Output, D::Timer>) -> Result<R, DomainError>,
) -> Result<(Applied<D::State>, R), Failure> {
    let Target {
        key,
        entity,
        input,
        now,
    } = target;
    let mut state = entity.state.clone();
    let mut ctx = Context::new(key, entity.version, input.clone(), now);
    // The handler works on a copy, so unwinding cannot leave a half-applied state behind.
    let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut state, &mut ctx)))
        .map_err(|payload| Failure::Panicked(panic_message(payload.as_ref())))?;
    let reply = outcome?;
    let state_json = storable(&state).map_err(|e| Failure::Unstorable(format!("state {e}")))?;
    let effects = ctx.into_effects().map_err(Failure::Unstorable)?;
    if let Some(emitted) = undeclared_stream(domain, &effects.emitted) {
        return Err(Failure::Unstorable(format!(
            "emitted {} to stream {:?}, which the domain does not declare in extra_outputs",
            emitted.event_type,
            emitted.stream.as_deref().unwrap_or_default()
        )));
    }
    if let Some((emitted, home)) = away_from_home(domain, &effects.emitted) {
        return Err(Failure::Unstorable(format!(
            "emitted {} to stream {:?}; the domain publishes it on {home:?} only",
            emitted.event_type,
            emitted
                .stream
                .as_deref()
                .unwrap_or(&super::output_stream(domain.name()))
        )));
    }
    for emitted in &effects.emitted {
        validate_key(&emitted.key, limits.max_key_bytes).map_err(|e| {
            Failure::Unstorable(format!("emitted {} for key that {e}", emitted.event_type))
        })?;
        validate_key(&emitted.event_type, limits.max_key_bytes)
            .map_err(|e| Failure::Unstorable(format!("emitted event type {e}")))?;
    }
    for timer in &effects.timers {
        validate_key(&timer.key, limits.max_key_bytes)
            .map_err(|e| Failure::Unstorable(format!("timer for key that {e}")))?;
        if json_has_nul(&timer.payload.to_string()) {
            return Err(Failure::Unstorable(format!(
                "timer payload {}",
                Unstorable::Nul
            )));
        }
        // Like a state: what is stored must load back when the timer fires, maybe much later.
        serde_json::from_value::<D::Timer>(timer.payload.clone()).map_err(|e| {
            Failure::Unstorable(format!(
                "timer payload {}",
                Unstorable::NoRoundTrip(e.to_string())
            ))
        })?;
    }
    let entity = Entity {
        state,
        version: entity.version + 1,
    };
    Ok((
        Applied {
            entity,
            effects,
            state_json,
        },
        reply,
    ))
}

/// The first event emitted to a stream the domain does not publish to, if any.
fn undeclared_stream<'a, D: Domain>(domain: &D, emitted: &'a [Emitted]) -> Option<&'a Emitted> {
    let mut to_others = emitted.iter().filter(|e| e.stream.is_some()).peekable();
    to_others.peek()?;
    let declared = super::output_streams(domain);
    to_others.find(|e| {
        !declared
            .iter()
            .any(|d| Some(d.as_str()) == e.stream.as_deref())
    })
}

/// The first event emitted to another stream than its type's home
/// ([`Domain::output_stream_of`]), with that home.
fn away_from_home<'a, D: Domain>(
    domain: &D,
    emitted: &'a [Emitted],
) -> Option<(&'a Emitted, String)> {
    emitted.iter().find_map(|e| {
        let home = domain.output_stream_of(&e.event_type)?;
        let stream = e
            .stream
            .clone()
            .unwrap_or_else(|| super::output_stream(domain.name()));
        (stream != home).then_some((e, home))
    })
}

/// The state as JSON text, if Postgres can store it and it loads back as it is.
fn storable<S: Serialize + DeserializeOwned>(state: &S) -> Result<String, Unstorable> {
    let json = serde_json::to_string(state).map_err(|e| Unstorable::Serialize(e.to_string()))?;
    if json_has_nul(&json) {
        return Err(Unstorable::Nul);
    }
    // serde_json writes NaN and infinities as `null`, which then fails to load: a state
    // written so would stop its domain from starting. Loading it back now catches that.
    serde_json::from_str::<S>(&json).map_err(|e| Unstorable::NoRoundTrip(e.to_string()))?;
    Ok(json)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
