//! A partition actor: owns the in-memory entities whose keys hash to it, applies inputs to them
//! one at a time, and keeps what is needed to undo a unit of work whose commit failed.
//!
//! A key is only ever touched by its one partition, so inputs for one entity apply in order.
//! Reads see committed values: while a unit is in flight, a changed key answers with its value
//! from before the unit.
//!
//! Entities come and go: the processor loads a key from Postgres the first time a unit needs
//! it ([`Missing`], then [`Refresh`]), and the partition evicts entities idle for
//! `runtime.entity_idle_seconds`, and the least recently used ones when it holds more than its
//! share of `runtime.max_entities_in_memory` — never a key with uncommitted changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Message};

use super::watchdog::Progress;
use crate::domain::keys::Limits;
use crate::domain::trace_context::{span_id, trace_id};
use crate::domain::{
    Clock, Domain, DomainError, Effects, Entity, Failure, InputMeta, Target, apply_command,
    apply_event, apply_timer,
};
use crate::faults::Faults;
use crate::store::entities::EntityWrite;
use crate::telemetry::events::{Eviction, RuntimeEvent};
use crate::telemetry::metrics::{ENTITIES_IN_MEMORY, HANDLE_SECONDS};

/// The span a handler runs in: the entity key and the W3C trace context of the work, so the
/// handler's own log lines join the trace of the input that caused them.
fn handler_span(key: &str, traceparent: &str) -> tracing::Span {
    tracing::info_span!(
        "handle",
        key,
        trace_id = trace_id(traceparent),
        span_id = span_id(traceparent)
    )
}

/// The partition owning `key`, among `partitions`.
pub fn partition_of(key: &str, partitions: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % partitions.max(1) as u64) as usize
}

/// The partition actor of domain `D`.
pub struct Partition<D: Domain> {
    domain: Arc<D>,
    /// The keys in memory.
    entities: HashMap<String, Resident<D::State>>,
    /// Values from before the unit in flight, for keys it changed (`None`: the key was new).
    undo: HashMap<String, Shared<D::State>>,
    /// The committed values of the keys in memory, for reads from other threads.
    view: Arc<CommittedView<D::State>>,
    /// The keys of the unit being prepared or in flight ([`Missing`] names them, [`Settle`]
    /// releases them): never evicted, so nothing the processor found or loaded leaves memory
    /// before the unit applies.
    pinned: HashSet<String>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    residency: Residency,
    handle_seconds: metrics::Histogram,
    in_memory: metrics::Gauge,
    watch: HandlerWatch,
}

/// A key's value as memory holds it: shared between the partition and its view (`None`: no row).
pub type Shared<S> = Option<Arc<Entity<S>>>;

/// A key in memory.
struct Resident<S> {
    /// Its value; `None`: Postgres has no row for it (a key not used yet). Shared with the
    /// [`CommittedView`] once committed, so a value is held once.
    entity: Shared<S>,
    /// When a unit last needed it (reads do not count: they go to the view).
    last_used: Instant,
}

/// The committed values of the keys a partition holds in memory, readable from any thread: a
/// GET answers from here without a round trip to the partition's thread. The partition writes
/// it when a unit settles committed, when keys are loaded, and when it evicts; a value written
/// by a unit in flight is not here until its commit settles.
pub struct CommittedView<S> {
    entities: RwLock<HashMap<String, Shared<S>>>,
}

impl<S> Default for CommittedView<S> {
    fn default() -> Self {
        Self {
            entities: RwLock::new(HashMap::new()),
        }
    }
}

impl<S> CommittedView<S> {
    /// `Some(value)` when the key is in memory (`value` `None`: it does not exist); `None`
    /// when it is not, and Postgres has the answer.
    pub fn get(&self, key: &str) -> Option<Shared<S>> {
        let entities = self.entities.read().unwrap_or_else(PoisonError::into_inner);
        entities.get(key).cloned()
    }

    fn set(&self, values: impl IntoIterator<Item = (String, Shared<S>)>) {
        let mut entities = self
            .entities
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entities.extend(values);
    }

    fn remove<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut entities = self
            .entities
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            entities.remove(key);
        }
    }

    fn clear(&self) {
        self.entities
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// How many entities a partition keeps in memory, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residency {
    /// Entities unused this long are evicted.
    pub idle: Duration,
    /// Most entities this partition holds; past it, the least recently used are evicted after a
    /// commit, down to nine tenths of it (so the scan that picks them runs once per tenth).
    pub capacity: usize,
}

impl Residency {
    /// How often the partition looks for idle entities: a quarter of the idle time, between 1
    /// and 60 seconds, so an entity stays at most a quarter longer than `idle`.
    pub fn sweep_every(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// What a partition reports about the handlers it runs: which key is in a handler (for the
/// stall watchdog), and the fault-injection hook.
#[derive(Debug, Clone)]
pub struct HandlerWatch {
    /// The domain's progress.
    pub progress: Arc<Progress>,
    /// This partition's index.
    pub partition: usize,
    /// Fault injection.
    pub faults: Faults,
}

impl HandlerWatch {
    fn entering(&self, key: &str) {
        self.progress.handling(self.partition, key);
        self.faults.entering_handler(key);
    }

    fn left(&self) {
        self.progress.handled(self.partition);
    }
}

impl<D: Domain> Partition<D> {
    /// An empty partition applying inputs within `limits` at the times `clock` tells, keeping
    /// entities in memory as `residency` says, reporting to `watch`.
    pub fn new(
        domain: Arc<D>,
        limits: Limits,
        clock: Arc<dyn Clock>,
        residency: Residency,
        view: Arc<CommittedView<D::State>>,
        watch: HandlerWatch,
    ) -> Self {
        let name = domain.name();
        Self {
            handle_seconds: metrics::histogram!(HANDLE_SECONDS, "domain" => name),
            in_memory: metrics::gauge!(ENTITIES_IN_MEMORY, "domain" => name),
            domain,
            entities: HashMap::new(),
            undo: HashMap::new(),
            view,
            pinned: HashSet::new(),
            limits,
            clock,
            residency,
            watch,
        }
    }

    /// The current (possibly uncommitted) value of a key in memory.
    fn current(&self, key: &str) -> Option<&Entity<D::State>> {
        self.entities.get(key).and_then(|r| r.entity.as_deref())
    }

    fn committed(&self, key: &str) -> Option<&Entity<D::State>> {
        match self.undo.get(key) {
            Some(before) => before.as_deref(),
            None => self.current(key),
        }
    }

    fn current_shared(&self, key: &str) -> Shared<D::State> {
        self.entities.get(key).and_then(|r| r.entity.clone())
    }

    /// Puts `entity` (`None`: no row) in memory as `key`'s value (not in the view: the caller
    /// knows whether it is committed).
    fn keep(&mut self, key: String, entity: Shared<D::State>) {
        let resident = Resident {
            entity,
            last_used: Instant::now(),
        };
        if self.entities.insert(key, resident).is_none() {
            self.in_memory.increment(1.0);
        }
    }

    fn install(&mut self, key: &str, entity: Entity<D::State>) {
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_owned(), self.current_shared(key));
        }
        self.keep(key.to_owned(), Some(Arc::new(entity)));
    }

    /// Whether `key` may leave memory: not pinned by the unit being prepared, and without
    /// uncommitted changes.
    fn evictable(&self, key: &str) -> bool {
        !self.pinned.contains(key) && !self.undo.contains_key(key)
    }

    /// Evicts entities unused for `residency.idle`, except the unit's keys.
    fn evict_idle(&mut self) {
        let idle = self.residency.idle;
        let gone: Vec<String> = self
            .entities
            .iter()
            .filter(|(key, r)| r.last_used.elapsed() >= idle && self.evictable(key))
            .map(|(key, _)| key.clone())
            .collect();
        self.view.remove(&gone);
        for key in &gone {
            self.entities.remove(key);
        }
        let evicted = gone.len();
        if evicted > 0 {
            self.in_memory.decrement(evicted as f64);
            RuntimeEvent::EntitiesEvicted {
                domain: self.domain.name(),
                reason: Eviction::Idle,
                count: evicted,
            }
            .record();
        }
    }

    /// Past `residency.capacity`, evicts the least recently used entities down to nine tenths
    /// of it, except the unit's keys (so a unit with more keys than the capacity keeps them
    /// all until it settles).
    fn evict_over_capacity(&mut self) {
        let capacity = self.residency.capacity;
        if self.entities.len() <= capacity {
            return;
        }
        let keep = capacity - capacity / 10;
        let mut by_use: Vec<(Instant, String)> = self
            .entities
            .iter()
            .filter(|(key, _)| self.evictable(key))
            .map(|(key, r)| (r.last_used, key.clone()))
            .collect();
        let evict = (self.entities.len() - keep).min(by_use.len());
        if evict == 0 {
            return;
        }
        by_use.select_nth_unstable_by_key(evict - 1, |(used, _)| *used);
        by_use.truncate(evict);
        self.view.remove(by_use.iter().map(|(_, key)| key));
        for (_, key) in by_use {
            self.entities.remove(&key);
        }
        self.in_memory.decrement(evict as f64);
        RuntimeEvent::EntitiesEvicted {
            domain: self.domain.name(),
            reason: Eviction::Capacity,
            count: evict,
        }
        .record();
    }

    /// The write of `key`'s current value (serialized as `state_json`), guarded by its
    /// committed version.
    fn write_of(&self, key: &str, state_json: String) -> EntityWrite {
        let version = self.current(key).map_or(0, |e| e.version);
        let expected = self.committed(key).map_or(0, |e| e.version);
        EntityWrite {
            key: key.to_owned(),
            state_json,
            version: i64::try_from(version).unwrap_or(i64::MAX),
            expected_version: i64::try_from(expected).unwrap_or(i64::MAX),
        }
    }
}

impl<D: Domain> Actor for Partition<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Batches arrive one per unit of work; queries may queue behind one.
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.residency.sweep_every(), |partition, _| {
            partition.evict_idle();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // A restarted domain starts with empty partitions.
        self.in_memory.decrement(self.entities.len() as f64);
        self.view.clear();
    }
}

/// What an input of a unit carries: a stream event, or a durable timer that came due. Both
/// apply the same way, in the order the unit gives them.
pub enum Payload<E, T> {
    /// A decoded stream event, for [`Domain::handle`].
    Event(E),
    /// A timer's decoded payload, for [`Domain::on_timer`].
    Timer(T),
}

/// One input (event or timer) for a partition.
pub struct EventItem<E> {
    /// Position in the batch, echoed in the outcome.
    pub index: usize,
    /// Entity key.
    pub key: String,
    /// The decoded input.
    pub event: E,
    /// Whether a failure now sends the entry to the dead-letter stream (its delivery count
    /// reached `max_deliveries`), in which case later entries of the key are not held back
    /// (neither are they behind a permanent failure, which is dead-lettered at once).
    pub final_attempt: bool,
    /// The input's metadata. The handler runs in a span carrying its trace context, and
    /// emitted events carry that on.
    pub input: InputMeta,
}

/// What became of one event.
#[derive(Debug)]
pub enum ItemOutcome {
    /// Applied; these effects commit with the unit.
    Applied(Effects),
    /// Not applied. `dead`: this was the final attempt.
    Failed {
        /// Why.
        failure: Failure,
        /// Final attempt: dead-letter it.
        dead: bool,
    },
    /// Not tried because an earlier entry of the same key failed in this batch; it stays
    /// pending so the key's order holds.
    HeldBack,
}

/// Applies a unit's inputs for this partition, in order.
pub struct ApplyEvents<D: Domain> {
    /// The inputs, in stream (or due) order.
    pub items: Vec<EventItem<Payload<D::Event, D::Timer>>>,
}

/// The partition's part of a unit of work.
#[derive(Debug, Default)]
pub struct PartitionReply {
    /// Outcome per item, by batch index.
    pub outcomes: Vec<(usize, ItemOutcome)>,
    /// New values of the changed entities, to commit.
    pub writes: Vec<EntityWrite>,
}

impl<D: Domain> Message for ApplyEvents<D> {
    type Result = PartitionReply;
}

impl<D: Domain> Handler<ApplyEvents<D>> for Partition<D> {
    type Result = actix::MessageResult<ApplyEvents<D>>;

    fn handle(&mut self, msg: ApplyEvents<D>, _: &mut Self::Context) -> Self::Result {
        let mut reply = PartitionReply {
            outcomes: Vec::with_capacity(msg.items.len()),
            writes: Vec::new(),
        };
        let mut blocked: HashSet<String> = HashSet::new();
        // The serialized state of each changed key after its last applied input, in key order
        // so that writers lock rows in one order.
        let mut changed: BTreeMap<String, String> = BTreeMap::new();
        for item in msg.items {
            if blocked.contains(&item.key) {
                reply.outcomes.push((item.index, ItemOutcome::HeldBack));
                continue;
            }
            let started = Instant::now();
            let new_entity = Entity::default();
            if !self.entities.contains_key(&item.key) {
                // The processor loads (and pins) every key before a unit applies, so this is a
                // defect; applying to a fresh entity would let the handler decide on the wrong
                // state. The entry stays pending and the key's later entries wait behind it.
                tracing::error!(key = %item.key, "key not in memory when its input applies; holding it back");
                blocked.insert(item.key.clone());
                reply.outcomes.push((item.index, ItemOutcome::HeldBack));
                continue;
            }
            let current = self.current(&item.key).unwrap_or(&new_entity);
            let span = handler_span(&item.key, &item.input.traceparent);
            self.watch.entering(&item.key);
            let target = Target {
                key: &item.key,
                entity: current,
                input: &item.input,
                now: self.clock.now(),
            };
            let domain = self.domain.as_ref();
            let outcome = span.in_scope(|| match item.event {
                Payload::Event(event) => apply_event(domain, &self.limits, target, event),
                Payload::Timer(timer) => apply_timer(domain, &self.limits, target, timer),
            });
            self.handle_seconds.record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(applied) => {
                    changed.insert(item.key.clone(), applied.state_json);
                    self.install(&item.key, applied.entity);
                    reply
                        .outcomes
                        .push((item.index, ItemOutcome::Applied(applied.effects)));
                }
                Err(failure) => {
                    // An input dead-lettered now is settled: the key's later inputs may go on.
                    // One that stays pending holds them back, so the key's order holds.
                    let dead = item.final_attempt || failure.is_permanent();
                    if !dead {
                        blocked.insert(item.key.clone());
                    }
                    reply
                        .outcomes
                        .push((item.index, ItemOutcome::Failed { failure, dead }));
                }
            }
        }
        self.watch.left();
        reply.writes = changed
            .into_iter()
            .map(|(key, state_json)| self.write_of(&key, state_json))
            .collect();
        actix::MessageResult(reply)
    }
}

/// Applies a command to one entity.
pub struct ApplyCommand<D: Domain> {
    /// Entity key.
    pub key: String,
    /// The command.
    pub command: D::Command,
    /// The command's metadata (see [`EventItem::input`]).
    pub input: InputMeta,
}

/// A command's reply with its effects and the entity write to commit.
pub type CommandApplied<D> = Result<(<D as Domain>::Reply, Effects, EntityWrite), Failure>;

impl<D: Domain> Message for ApplyCommand<D> {
    type Result = CommandApplied<D>;
}

impl<D: Domain> Handler<ApplyCommand<D>> for Partition<D> {
    type Result = actix::MessageResult<ApplyCommand<D>>;

    fn handle(&mut self, msg: ApplyCommand<D>, _: &mut Self::Context) -> Self::Result {
        if !self.entities.contains_key(&msg.key) {
            // As for events: a defect, never decided on a fresh entity.
            tracing::error!(key = %msg.key, "key not in memory when its command applies");
            return actix::MessageResult(Err(Failure::Handler(DomainError::Failed(
                "entity not loaded".into(),
            ))));
        }
        let new_entity = Entity::default();
        let current = self.current(&msg.key).unwrap_or(&new_entity);
        let span = handler_span(&msg.key, &msg.input.traceparent);
        self.watch.entering(&msg.key);
        let target = Target {
            key: &msg.key,
            entity: current,
            input: &msg.input,
            now: self.clock.now(),
        };
        let applied = span
            .in_scope(|| apply_command(self.domain.as_ref(), &self.limits, target, msg.command));
        self.watch.left();
        let result = applied.map(|(applied, reply)| {
            self.install(&msg.key, applied.entity);
            let write = self.write_of(&msg.key, applied.state_json);
            (reply, applied.effects, write)
        });
        actix::MessageResult(result)
    }
}

/// Ends the unit of work in flight: keep its changes (`committed`) or undo them.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// Whether the unit's commit succeeded.
    pub committed: bool,
}

impl Message for Settle {
    type Result = ();
}

impl<D: Domain> Handler<Settle> for Partition<D> {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Self::Context) {
        if msg.committed {
            let changed: Vec<String> = self.undo.drain().map(|(key, _)| key).collect();
            let committed: Vec<(String, Shared<D::State>)> = changed
                .into_iter()
                .map(|key| {
                    let value = self.current_shared(&key);
                    (key, value)
                })
                .collect();
            self.view.set(committed);
        } else {
            let undo: Vec<_> = self.undo.drain().collect();
            for (key, before) in undo {
                self.keep(key, before);
            }
        }
        self.pinned.clear();
        self.evict_over_capacity();
    }
}

/// Which of `keys` are not in memory: the processor loads those before a unit applies. All of
/// `keys` are pinned until the unit settles (or the next unit is prepared).
pub struct Missing {
    /// Keys the unit needs.
    pub keys: Vec<String>,
}

impl Message for Missing {
    type Result = Vec<String>;
}

impl<D: Domain> Handler<Missing> for Partition<D> {
    type Result = actix::MessageResult<Missing>;

    fn handle(&mut self, msg: Missing, _: &mut Self::Context) -> Self::Result {
        self.pinned.clear();
        let mut missing = Vec::new();
        for key in msg.keys {
            if !self.entities.contains_key(&key) && !self.pinned.contains(&key) {
                missing.push(key.clone());
            }
            self.pinned.insert(key);
        }
        actix::MessageResult(missing)
    }
}

/// Puts the given keys' values in Postgres (`None`: no row) into memory: keys loaded on first
/// use, and keys reloaded after a unit whose commit may have landed although it reported
/// failure. Sent between units.
pub struct Refresh<S> {
    /// Keys with their stored values.
    pub entities: Vec<(String, Option<Entity<S>>)>,
}

impl<S: Send + 'static> Message for Refresh<S> {
    type Result = ();
}

impl<D: Domain> Handler<Refresh<D::State>> for Partition<D> {
    type Result = ();

    fn handle(&mut self, msg: Refresh<D::State>, _: &mut Self::Context) {
        self.undo.clear();
        let stored: Vec<(String, Shared<D::State>)> = msg
            .entities
            .into_iter()
            .map(|(key, entity)| (key, entity.map(Arc::new)))
            .collect();
        for (key, entity) in &stored {
            self.keep(key.clone(), entity.clone());
        }
        self.view.set(stored);
        self.evict_over_capacity();
    }
}

#[cfg(test)]
mod tests {
    use crate::telemetry::captured_logs::Captured;
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::domain::{Context, DomainError, NoEvents, Subscription};
    use crate::faults::Faults;

    /// Logs from its handler, as a user's domain would.
    struct Chatty;

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Seen;

    #[derive(Deserialize)]
    enum Ping {
        Ping,
    }

    impl Domain for Chatty {
        type State = Seen;
        type Event = Ping;
        type Output = NoEvents;
        type Timer = NoEvents;
        type Command = std::convert::Infallible;
        type Reply = ();

        fn name(&self) -> &'static str {
            "chatty"
        }

        fn subscriptions(&self) -> Vec<Subscription> {
            Vec::new()
        }

        fn handle(
            &self,
            _: &mut Seen,
            _: Ping,
            _: &mut Context<NoEvents>,
        ) -> Result<(), DomainError> {
            tracing::info!("handled a ping");
            Ok(())
        }
    }

    fn partition(residency: Residency) -> Partition<Chatty> {
        let watch = HandlerWatch {
            progress: Arc::new(Progress::new(1, &[])),
            partition: 0,
            faults: Faults::new(&crate::settings::FaultSettings::default()),
        };
        let clock = Arc::new(crate::domain::SystemClock);
        let view = Arc::new(CommittedView::default());
        Partition::new(
            Arc::new(Chatty),
            Limits::default(),
            clock,
            residency,
            view,
            watch,
        )
    }

    #[test]
    fn keys_with_uncommitted_changes_are_never_evicted() {
        let mut p = partition(Residency {
            idle: Duration::ZERO,
            capacity: 1,
        });
        p.keep("A".into(), None);
        p.keep("B".into(), None);
        // A unit in flight changed A: neither eviction may run before it settles.
        p.install("A", Entity::default());
        p.evict_idle();
        assert!(
            p.entities.contains_key("A"),
            "a key with uncommitted changes stays"
        );
        assert!(!p.entities.contains_key("B"), "an idle one goes");

        p.undo.clear(); // committed
        p.evict_idle();
        assert!(p.entities.is_empty(), "idle for longer than zero");
    }

    #[test]
    fn the_keys_of_the_unit_being_prepared_are_never_evicted() {
        let mut p = partition(Residency {
            idle: Duration::ZERO,
            capacity: 1,
        });
        p.keep("A".into(), None);
        p.keep("B".into(), None);
        p.keep("C".into(), None);
        // The processor asks which of A, B, D are missing (D), and loads it meanwhile.
        let mut ctx = actix::Context::new();
        let keys = ["A", "B", "D"].map(String::from).to_vec();
        let missing = Handler::<Missing>::handle(&mut p, Missing { keys }, &mut ctx).0;
        assert_eq!(missing, ["D"]);
        p.evict_idle();
        p.evict_over_capacity();
        let mut kept: Vec<&String> = p.entities.keys().collect();
        kept.sort();
        assert_eq!(kept, ["A", "B"], "only C, not pinned, may go");
        // Once the unit settles, its keys may go too.
        Handler::<Settle>::handle(&mut p, Settle { committed: true }, &mut ctx);
        p.evict_idle();
        assert!(p.entities.is_empty());
    }

    #[test]
    fn the_view_shows_committed_values_only() {
        let mut p = partition(Residency {
            idle: Duration::ZERO,
            capacity: 10,
        });
        let mut ctx = actix::Context::new();
        let entity = |version| Entity {
            state: Seen,
            version,
        };
        let version = |p: &Partition<Chatty>| p.view.get("A").map(|e| e.map(|e| e.version));
        assert_eq!(version(&p), None, "not in memory");
        let refresh = Refresh {
            entities: vec![("A".to_owned(), Some(entity(1))), ("B".to_owned(), None)],
        };
        Handler::<Refresh<Seen>>::handle(&mut p, refresh, &mut ctx);
        assert_eq!(version(&p), Some(Some(1)), "loaded: committed");
        assert_eq!(
            p.view.get("B").map(|e| e.is_none()),
            Some(true),
            "known not to exist"
        );

        p.install("A", entity(2));
        assert_eq!(
            version(&p),
            Some(Some(1)),
            "a unit in flight is not visible"
        );
        Handler::<Settle>::handle(&mut p, Settle { committed: false }, &mut ctx);
        assert_eq!(version(&p), Some(Some(1)), "undone");
        p.install("A", entity(2));
        Handler::<Settle>::handle(&mut p, Settle { committed: true }, &mut ctx);
        assert_eq!(version(&p), Some(Some(2)), "committed");

        p.evict_idle();
        assert_eq!(version(&p), None, "evicted from the view too");
    }

    #[test]
    fn over_capacity_the_least_recently_used_go_first() {
        let mut p = partition(Residency {
            idle: Duration::from_secs(3600),
            capacity: 20,
        });
        for n in 0..25 {
            p.keep(format!("K{n:02}"), None);
            std::thread::sleep(Duration::from_millis(1));
        }
        p.evict_over_capacity();
        // Down to nine tenths of the capacity: the 7 oldest went.
        let mut kept: Vec<&String> = p.entities.keys().collect();
        kept.sort();
        assert_eq!(kept.len(), 18);
        assert_eq!(kept[0], "K07");
    }

    #[test]
    fn a_handlers_log_lines_carry_the_trace_of_its_input() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(subscriber, || {
            let span = handler_span("K-1", traceparent);
            let input = crate::domain::InputMeta {
                id: "e-1".into(),
                source: crate::domain::Source::Command,
                timestamp: chrono::Utc::now(),
                traceparent: traceparent.into(),
            };
            let target = Target {
                key: "K-1",
                entity: &Entity::default(),
                input: &input,
                now: input.timestamp,
            };
            span.in_scope(|| apply_event(&Chatty, &Limits::default(), target, Ping::Ping))
                .map(|_| ())
                .unwrap();
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(output.lines().next().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "handled a ping", "{output}");
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span"]["span_id"], "00f067aa0ba902b7");
        assert_eq!(line["span"]["key"], "K-1");
    }
}
