//! Unit-testing a domain with no server: given these events, when this event or command, expect
//! this state and these effects. Inputs go through the same decoding and apply path as in
//! production ([`decode_event`], [`apply_event`], [`apply_command`]).
//!
//! Time stands still unless the test moves it: handlers see [`Context::now`] from the kit's
//! [`ManualClock`], which starts at [`TestKit::START`]; an event's timestamp is its `ts` if the
//! test gave one ([`TestEvent::at`]), else the clock's time. Durable timers the handlers
//! schedule wait in the kit ([`TestKit::timers`]) until the test moves the clock past them and
//! fires them ([`TestKit::fire_due`]), as the runtime's poller would.
//!
//! [`Context::now`]: super::Context::now
//!
//! ```
//! # use troupe::domain::testkit::{TestKit, event};
//! # use troupe::domains::inventory::Inventory;
//! let mut kit = TestKit::new(Inventory::default());
//! kit.given([event("SKU-1", "stock.adjusted", serde_json::json!({"delta": 5, "warehouse": "w1"}))]);
//! kit.when(event("SKU-1", "stock.adjusted", serde_json::json!({"delta": -2, "warehouse": "w1"})))
//!     .unwrap();
//! assert_eq!(kit.state("SKU-1").unwrap().on_hand, 3);
//! assert_eq!(kit.entity("SKU-1").unwrap().version, 2);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::trace_context::child_traceparent;
use super::{
    Clock, Domain, Effects, Entity, EventCatalogue, Failure, InputMeta, MalformedEntry,
    ManualClock, OtherTypes, ScheduledTimer, Source, Target, apply_command, apply_event,
    apply_timer, decode_event, route,
};
use crate::domain::keys::Limits;

/// An event as a test writes it: what a producer would put in the envelope.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// Envelope `key`.
    pub key: String,
    /// Envelope `type`.
    pub event_type: String,
    /// Envelope `data`, as JSON.
    pub data: Value,
    /// Envelope `id`; the kit numbers events it is not given (`test-1`, `test-2`, …).
    pub id: Option<String>,
    /// Envelope `ts`; the kit's clock when not given.
    pub ts: Option<DateTime<Utc>>,
}

/// Builds a [`TestEvent`].
pub fn event(key: &str, event_type: &str, data: Value) -> TestEvent {
    TestEvent {
        key: key.to_owned(),
        event_type: event_type.to_owned(),
        data,
        id: None,
        ts: None,
    }
}

impl TestEvent {
    /// The same event with envelope id `id`.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// The same event, stamped by its producer as having happened at `ts`.
    pub fn at(mut self, ts: DateTime<Utc>) -> Self {
        self.ts = Some(ts);
        self
    }
}

/// Why an input given to the kit was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestFailure {
    /// The runtime would dead-letter it at once.
    #[error("malformed: {0}")]
    Malformed(#[from] MalformedEntry),
    /// The handler failed or panicked, or its result cannot be stored; the runtime would
    /// dead-letter it at once if [`Failure::is_permanent`], otherwise retry it first.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// A timer's stored payload does not decode as the domain's `Timer` type; the runtime
    /// would set the timer aside as dead.
    #[error("timer payload does not decode: {0}")]
    UndecodableTimer(String),
}

/// An in-memory harness for one domain.
pub struct TestKit<D: Domain> {
    domain: D,
    /// The subscribed streams; events are given as read from the first.
    streams: Vec<String>,
    catalogue: EventCatalogue,
    skips_other_types: bool,
    limits: Limits,
    entities: BTreeMap<String, Entity<D::State>>,
    clock: ManualClock,
    /// Timers scheduled and not yet fired or cancelled, in the order they were scheduled.
    timers: Vec<ScheduledTimer>,
    /// Inputs given so far, for made-up ids and stream entry ids.
    inputs: u64,
}

impl<D: Domain> TestKit<D> {
    /// Where the kit's clock starts: 2026-01-01T00:00:00Z.
    pub const START: DateTime<Utc> = match DateTime::from_timestamp(1_767_225_600, 0) {
        Some(start) => start,
        None => panic!("a valid start time"),
    };

    /// A harness with no entities, its clock at [`TestKit::START`].
    ///
    /// Panics, as the runtime refuses to start it, if the domain's `Event` or `Output` type is
    /// not an adjacently tagged enum.
    pub fn new(domain: D) -> Self {
        let catalogue = match EventCatalogue::of::<D>() {
            Ok(catalogue) => catalogue,
            Err(e) => panic!("domain {}: {e}", domain.name()),
        };
        let subscriptions = domain.subscriptions();
        let skips_other_types = subscriptions
            .iter()
            .any(|s| s.other_types == OtherTypes::Skip);
        let streams = subscriptions.into_iter().map(|s| s.stream).collect();
        Self {
            domain,
            streams,
            catalogue,
            skips_other_types,
            limits: Limits::default(),
            entities: BTreeMap::new(),
            clock: ManualClock::starting_at(Self::START),
            timers: Vec::new(),
            inputs: 0,
        }
    }

    /// The event types the domain consumes and emits.
    pub fn catalogue(&self) -> EventCatalogue {
        self.catalogue
    }

    /// The clock handlers see. Clones of it move with it.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.clock.advance(by);
        self
    }

    /// Applies `events` as history. Panics if one is not applied: history is a precondition.
    pub fn given(&mut self, events: impl IntoIterator<Item = TestEvent>) -> &mut Self {
        for e in events {
            let description = format!("{} {}", e.event_type, e.key);
            if let Err(failure) = self.when(e) {
                panic!("given event {description} was not applied: {failure}");
            }
        }
        self
    }

    /// Applies one event as the runtime would (routed by [`Domain::entity_key`]); on success
    /// the entity is updated and the effects are returned, on failure nothing changes. A type
    /// no subscription handles is malformed, or, if a subscription skips other types, skipped
    /// with no effects.
    pub fn when(&mut self, e: TestEvent) -> Result<Effects, TestFailure> {
        let decoded =
            match decode_event::<D>(self.catalogue.inputs, &e.event_type, &e.data.to_string()) {
                Ok(decoded) => decoded,
                Err(MalformedEntry::UnknownType(_)) if self.skips_other_types => {
                    return Ok(Effects::default());
                }
                Err(malformed) => return Err(malformed.into()),
            };
        let key = route(&self.domain, &self.limits, e.key, &e.event_type, &decoded)?;
        let now = self.clock.now();
        self.inputs += 1;
        let stream = self.streams.first().cloned().unwrap_or_default();
        let input = InputMeta {
            id: e.id.unwrap_or_else(|| format!("test-{}", self.inputs)),
            source: Source::Stream {
                stream,
                entry_id: format!("{}-{}", now.timestamp_millis().max(0), self.inputs),
            },
            timestamp: e.ts.unwrap_or(now),
            traceparent: child_traceparent(None),
        };
        let current = self.entities.get(&key).cloned().unwrap_or_default();
        let target = Target {
            key: &key,
            entity: &current,
            input: &input,
            now,
        };
        let applied = apply_event(&self.domain, &self.limits, target, decoded)?;
        self.entities.insert(key, applied.entity);
        Ok(self.track(applied.effects))
    }

    /// Keeps the timers `effects` schedule, drops those it cancels.
    fn track(&mut self, effects: Effects) -> Effects {
        self.timers
            .retain(|timer| !effects.cancelled.contains(&timer.id));
        self.timers.extend(effects.timers.iter().cloned());
        effects
    }

    /// The timers scheduled and not yet fired or cancelled, in the order they were scheduled.
    pub fn timers(&self) -> &[ScheduledTimer] {
        &self.timers
    }

    /// Fires, earliest first, every timer due by the clock (including those that firings
    /// schedule due by then), each as the runtime would ([`Domain::on_timer`]), and returns
    /// their effects in firing order. Stops at the first that fails, which stays scheduled
    /// (the runtime would try it again later) and nothing of which is applied.
    pub fn fire_due(&mut self) -> Result<Vec<Effects>, TestFailure> {
        let mut fired = Vec::new();
        loop {
            let now = self.clock.now();
            // The earliest due; among equals, the first scheduled.
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, timer)| timer.due <= now)
                .min_by_key(|(position, timer)| (timer.due, *position))
                .map(|(position, _)| position);
            let Some(position) = next else {
                return Ok(fired);
            };
            let timer = self.timers[position].clone();
            let payload: D::Timer = serde_json::from_value(timer.payload.clone())
                .map_err(|e| TestFailure::UndecodableTimer(e.to_string()))?;
            self.inputs += 1;
            let input = InputMeta {
                id: timer.id.to_string(),
                source: Source::Timer,
                timestamp: timer.due,
                traceparent: child_traceparent(None),
            };
            let current = self.entities.get(&timer.key).cloned().unwrap_or_default();
            let target = Target {
                key: &timer.key,
                entity: &current,
                input: &input,
                now,
            };
            let applied = apply_timer(&self.domain, &self.limits, target, payload)?;
            self.timers.remove(position);
            self.entities.insert(timer.key, applied.entity);
            fired.push(self.track(applied.effects));
        }
    }

    /// Executes a command as the runtime would and returns its reply and effects.
    pub fn command(
        &mut self,
        key: &str,
        command: D::Command,
    ) -> Result<(D::Reply, Effects), Failure> {
        let now = self.clock.now();
        self.inputs += 1;
        let input = InputMeta {
            id: format!("test-command-{}", self.inputs),
            source: Source::Command,
            timestamp: now,
            traceparent: child_traceparent(None),
        };
        let current = self.entities.get(key).cloned().unwrap_or_default();
        let target = Target {
            key,
            entity: &current,
            input: &input,
            now,
        };
        let (applied, reply) = apply_command(&self.domain, &self.limits, target, command)?;
        self.entities.insert(key.to_owned(), applied.entity);
        Ok((reply, self.track(applied.effects)))
    }

    /// The state of `key`, if any input was applied to it.
    pub fn state(&self, key: &str) -> Option<&D::State> {
        self.entities.get(key).map(|e| &e.state)
    }

    /// The entity (state and version) of `key`.
    pub fn entity(&self, key: &str) -> Option<&Entity<D::State>> {
        self.entities.get(key)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::domain::{Context, DomainError, NoEvents, Subscription, TimerId};

    /// Remembers what its handler saw.
    struct Recorder;

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Seen {
        id: String,
        source: String,
        timestamp: Option<DateTime<Utc>>,
        now: Option<DateTime<Utc>>,
        traceparent: String,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Ping {
        #[serde(rename = "ping")]
        Ping {},
    }

    fn record(seen: &mut Seen, ctx: &Context<NoEvents>) {
        let input = ctx.input();
        *seen = Seen {
            id: input.id.clone(),
            source: match &input.source {
                Source::Stream { stream, entry_id } => format!("{stream} {entry_id}"),
                Source::Command => "command".into(),
                Source::Timer => "timer".into(),
            },
            timestamp: Some(input.timestamp),
            now: Some(ctx.now()),
            traceparent: input.traceparent.clone(),
        };
    }

    impl Domain for Recorder {
        type State = Seen;
        type Event = Ping;
        type Output = NoEvents;
        type Timer = NoEvents;
        type Command = ();
        type Reply = ();

        fn name(&self) -> &'static str {
            "recorder"
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            vec![Subscription::new("recorder.input")]
        }
        fn handle(
            &self,
            seen: &mut Seen,
            _: Ping,
            ctx: &mut Context<NoEvents>,
        ) -> Result<(), DomainError> {
            record(seen, ctx);
            Ok(())
        }
        fn execute(
            &self,
            seen: &mut Seen,
            _: (),
            ctx: &mut Context<NoEvents>,
        ) -> Result<(), DomainError> {
            record(seen, ctx);
            Ok(())
        }
    }

    /// Takes events only: no `execute`.
    struct EventsOnly;

    impl Domain for EventsOnly {
        type State = Seen;
        type Event = Ping;
        type Output = NoEvents;
        type Timer = NoEvents;
        type Command = ();
        type Reply = ();

        fn name(&self) -> &'static str {
            "events-only"
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            vec![Subscription::new("events-only.input")]
        }
        fn handle(
            &self,
            seen: &mut Seen,
            _: Ping,
            ctx: &mut Context<NoEvents>,
        ) -> Result<(), DomainError> {
            record(seen, ctx);
            Ok(())
        }
    }

    /// Emits an event whose data cannot be an envelope's JSON (a map with non-string keys).
    struct BadEmitter;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum BadOutput {
        #[serde(rename = "fine")]
        Fine,
        #[serde(rename = "pairs")]
        Pairs(std::collections::BTreeMap<(u8, u8), u8>),
    }

    impl Domain for BadEmitter {
        type State = Seen;
        type Event = Ping;
        type Output = BadOutput;
        type Timer = NoEvents;
        type Command = std::convert::Infallible;
        type Reply = ();

        fn name(&self) -> &'static str {
            "bad-emitter"
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            vec![Subscription::new("bad-emitter.input")]
        }
        fn handle(
            &self,
            _: &mut Seen,
            _: Ping,
            ctx: &mut Context<BadOutput>,
        ) -> Result<(), DomainError> {
            ctx.emit(BadOutput::Fine);
            ctx.emit(BadOutput::Pairs([((1, 2), 3)].into()));
            Ok(())
        }
    }

    /// Rings after a delay, unless cancelled; a ring may ask to ring again.
    struct Reminders;

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Reminder {
        pending: Option<TimerId>,
        rings: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)>,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum ReminderEvent {
        #[serde(rename = "reminder.set")]
        Set {
            after_secs: u64,
            label: String,
            #[serde(default)]
            again_secs: Option<u64>,
            #[serde(default)]
            fail: bool,
        },
        #[serde(rename = "reminder.cancelled")]
        Cancelled {},
    }

    #[derive(Serialize, Deserialize)]
    enum Ring {
        Ring {
            label: String,
            again_secs: Option<u64>,
        },
    }

    impl Domain for Reminders {
        type State = Reminder;
        type Event = ReminderEvent;
        type Output = NoEvents;
        type Timer = Ring;
        type Command = std::convert::Infallible;
        type Reply = ();

        fn name(&self) -> &'static str {
            "reminders"
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            vec![Subscription::new("reminders.input")]
        }
        fn handle(
            &self,
            state: &mut Reminder,
            event: ReminderEvent,
            ctx: &mut Context<NoEvents, Ring>,
        ) -> Result<(), DomainError> {
            match event {
                ReminderEvent::Set {
                    after_secs,
                    label,
                    again_secs,
                    fail,
                } => {
                    let ring = Ring::Ring { label, again_secs };
                    let id = ctx.schedule(Duration::from_secs(after_secs), ring);
                    if fail {
                        return Err(DomainError::Failed("refused after scheduling".into()));
                    }
                    state.pending = Some(id);
                }
                ReminderEvent::Cancelled {} => {
                    if let Some(id) = state.pending.take() {
                        ctx.cancel(&id);
                    }
                }
            }
            Ok(())
        }
        fn on_timer(
            &self,
            state: &mut Reminder,
            timer: Ring,
            ctx: &mut Context<NoEvents, Ring>,
        ) -> Result<(), DomainError> {
            let Ring::Ring { label, again_secs } = timer;
            assert_eq!(ctx.input().source, Source::Timer);
            state.rings.push((
                label.clone(),
                ctx.input().id.clone(),
                ctx.input().timestamp,
                ctx.now(),
            ));
            state.pending = None;
            if let Some(again) = again_secs {
                let ring = Ring::Ring {
                    label,
                    again_secs: None,
                };
                state.pending = Some(ctx.schedule(Duration::from_secs(again), ring));
            }
            Ok(())
        }
    }

    fn set(after_secs: u64, label: &str) -> TestEvent {
        event(
            "K",
            "reminder.set",
            json!({"after_secs": after_secs, "label": label}),
        )
    }

    #[test]
    fn a_timer_fires_once_when_due_as_an_input_carrying_its_id_and_due_time() {
        let mut kit = TestKit::new(Reminders);
        let start = TestKit::<Reminders>::START;
        let effects = kit.when(set(60, "tea")).unwrap();
        let [scheduled] = effects.timers.as_slice() else {
            panic!("{effects:?}");
        };
        assert_eq!(scheduled.due, start + chrono::TimeDelta::seconds(60));
        assert_eq!(scheduled.key, "K");
        assert_eq!(kit.timers().len(), 1);

        assert!(kit.fire_due().unwrap().is_empty(), "not due yet");
        kit.advance(Duration::from_secs(59));
        assert!(kit.fire_due().unwrap().is_empty(), "not due yet");
        kit.advance(Duration::from_secs(3));
        assert_eq!(kit.fire_due().unwrap().len(), 1);
        let rings = &kit.state("K").unwrap().rings;
        assert_eq!(
            rings.as_slice(),
            [(
                "tea".to_owned(),
                scheduled.id.to_string(),
                scheduled.due,
                start + chrono::TimeDelta::seconds(62)
            )],
            "the input's id is the timer's, its timestamp when it was due, now the clock's"
        );
        assert_eq!(kit.entity("K").unwrap().version, 2, "a firing is an input");
        assert!(kit.fire_due().unwrap().is_empty(), "fired once");
        assert!(kit.timers().is_empty());
    }

    #[test]
    fn a_cancelled_timer_never_fires() {
        let mut kit = TestKit::new(Reminders);
        kit.when(set(60, "tea")).unwrap();
        let effects = kit
            .when(event("K", "reminder.cancelled", json!({})))
            .unwrap();
        assert_eq!(effects.cancelled.len(), 1);
        assert!(kit.timers().is_empty());
        kit.advance(Duration::from_secs(3600));
        assert!(kit.fire_due().unwrap().is_empty());
        assert!(kit.state("K").unwrap().rings.is_empty());
    }

    #[test]
    fn an_input_that_fails_schedules_nothing() {
        let mut kit = TestKit::new(Reminders);
        let failed = event(
            "K",
            "reminder.set",
            json!({"after_secs": 1, "label": "x", "fail": true}),
        );
        assert!(kit.when(failed).is_err());
        assert!(kit.timers().is_empty());
    }

    #[test]
    fn due_timers_fire_earliest_first_including_those_firings_schedule() {
        let mut kit = TestKit::new(Reminders);
        let start = TestKit::<Reminders>::START;
        let at = |secs| start + chrono::TimeDelta::seconds(secs);
        kit.when(set(30, "late")).unwrap();
        kit.when(set(20, "soon")).unwrap();
        kit.when(event(
            "J",
            "reminder.set",
            json!({"after_secs": 10, "label": "early", "again_secs": 5}),
        ))
        .unwrap();
        kit.advance(Duration::from_secs(12));
        assert_eq!(kit.fire_due().unwrap().len(), 1, "only J's is due");
        // Its firing, at 12 s, scheduled a repeat due at 17 s.
        kit.advance(Duration::from_secs(18));
        assert_eq!(kit.fire_due().unwrap().len(), 3);
        let rings = |key| -> Vec<(String, DateTime<Utc>)> {
            kit.state(key)
                .unwrap()
                .rings
                .iter()
                .map(|r| (r.0.clone(), r.2))
                .collect()
        };
        assert_eq!(
            rings("J"),
            [("early".to_owned(), at(10)), ("early".to_owned(), at(17))]
        );
        assert_eq!(
            rings("K"),
            [("soon".to_owned(), at(20)), ("late".to_owned(), at(30))],
            "earliest first, not in the order they were scheduled"
        );
        assert!(kit.timers().is_empty());
    }

    #[test]
    fn a_timer_whose_payload_postgres_cannot_store_fails_its_input_for_good() {
        let mut kit = TestKit::new(Reminders);
        let failed = kit.when(set(1, "nul\0")).unwrap_err();
        let TestFailure::Failed(failure @ Failure::Unstorable(reason)) = &failed else {
            panic!("{failed:?}");
        };
        assert!(failure.is_permanent());
        assert!(reason.contains("timer payload"), "{reason}");
        assert!(kit.timers().is_empty());
    }

    #[test]
    fn an_event_that_cannot_be_an_envelope_fails_the_input_for_good_and_emits_nothing() {
        let mut kit = TestKit::new(BadEmitter);
        let failed = kit.when(event("K", "ping", json!({}))).unwrap_err();
        let TestFailure::Failed(failure @ Failure::Unstorable(reason)) = &failed else {
            panic!("{failed:?}");
        };
        assert!(failure.is_permanent());
        assert!(reason.contains("emitted event"), "{reason}");
        assert!(kit.entity("K").is_none(), "nothing applied");
    }

    /// Declares an output type that is not an adjacently tagged enum.
    struct Untagged;

    impl Domain for Untagged {
        type State = Seen;
        type Event = Ping;
        type Output = Value;
        type Timer = NoEvents;
        type Command = std::convert::Infallible;
        type Reply = ();

        fn name(&self) -> &'static str {
            "untagged"
        }
        fn subscriptions(&self) -> Vec<Subscription> {
            Vec::new()
        }
        fn handle(&self, _: &mut Seen, _: Ping, _: &mut Context<Value>) -> Result<(), DomainError> {
            Ok(())
        }
    }

    #[test]
    #[should_panic(expected = "domain untagged: serde_json::value::Value is not an event enum")]
    fn a_domain_whose_output_is_not_an_event_enum_is_refused() {
        let _ = TestKit::new(Untagged);
    }

    #[test]
    fn a_domain_without_execute_refuses_commands_as_invalid() {
        let mut kit = TestKit::new(EventsOnly);
        let refused = kit.command("K", ()).unwrap_err();
        assert_eq!(
            refused,
            Failure::Handler(DomainError::Invalid(
                "domain events-only takes no commands".into()
            ))
        );
        assert!(kit.entity("K").is_none(), "nothing applied");
        kit.when(event("K", "ping", json!({}))).unwrap();
        assert_eq!(kit.entity("K").unwrap().version, 1);
    }

    #[test]
    fn handlers_see_the_inputs_metadata_and_the_kits_clock() {
        let mut kit = TestKit::new(Recorder);
        let start = TestKit::<Recorder>::START;
        let produced = start - chrono::TimeDelta::hours(1);
        kit.when(event("K", "ping", json!({})).with_id("e-1").at(produced))
            .unwrap();
        let seen = kit.state("K").unwrap().clone();
        assert_eq!(seen.id, "e-1");
        assert_eq!(
            seen.source,
            format!("recorder.input {}-1", start.timestamp_millis())
        );
        assert_eq!(seen.timestamp, Some(produced), "the producer's ts");
        assert_eq!(
            seen.now,
            Some(start),
            "time stands still until the test moves it"
        );
        assert!(crate::domain::trace_context::is_traceparent(
            &seen.traceparent
        ));

        kit.advance(Duration::from_secs(90));
        kit.when(event("K", "ping", json!({}))).unwrap();
        let later = start + chrono::TimeDelta::seconds(90);
        let seen = kit.state("K").unwrap().clone();
        assert_eq!(seen.id, "test-2", "a made-up id when the test gives none");
        assert_eq!(
            (seen.timestamp, seen.now),
            (Some(later), Some(later)),
            "no ts: stamped with the clock"
        );

        kit.clock().set(start);
        kit.command("K", ()).unwrap();
        let seen = kit.state("K").unwrap().clone();
        assert_eq!(seen.source, "command");
        assert_eq!((seen.timestamp, seen.now), (Some(start), Some(start)));
    }
}
