//! The processor: turns one batch of stream entries (or one command) into units of work —
//! applied by the partitions, each partition's share committed to Postgres in one transaction
//! with its applied-input records and emitted events, and only then acknowledged.
//!
//! A batch goes through stages with typed outcomes: **decode** (an entry that is malformed, too
//! large, or carries a key or id that cannot be stored is dead-lettered at once), **deduplicate**
//! (within the batch by envelope id; against Postgres inside the commit, see
//! [`crate::store::applied`]), **apply** and **commit** (each partition's share of a unit on
//! its own, concurrently, one transaction per share on its own connection; a share refused for
//! its data is split until the offending input is found), **acknowledge**. Batches run one at a
//! time per domain (`AtomicResponse`) and each partition has at most one share in flight, so its
//! in-memory state is always "committed plus the share in flight", and a failed commit is undone
//! exactly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler, Message,
    WrapFuture,
};
use futures_util::future::{LocalBoxFuture, join_all};
use serde::{Deserialize, Serialize};

use super::ask::{AskError, ask};
use super::context::{DomainContext, StreamBinding};
use super::partition::{
    ApplyCommand, ApplyEvents, EventItem, ItemOutcome, Missing, Partition, Payload, Refresh,
    Settle, partition_of,
};
use super::quarantine::{Quarantine, UNLOADABLE_STATE};
use super::runtime::restore_entity;
use crate::domain::keys::Limits;
use crate::domain::trace_context::{child_traceparent, trace_id};
use crate::domain::{
    Domain, DomainError, Effects, Entity, Failure, InputMeta, MalformedEntry, Notification,
    ScheduledTimer, Source, TimerId, decode_event, route, validate_key,
};
use crate::settings::CrashPoint;
use crate::store::applied;
use crate::store::batch::{BatchCommit, commit};
use crate::store::commands::{self, CommandRecord};
use crate::store::entities::EntityWrite;
use crate::store::outbox::NewOutboxEvent;
use crate::store::pool::within;
use crate::store::timers::{self, DueTimer, NewTimer};
use crate::store::{StoreError, entities};
use crate::streams::StreamError;
use crate::streams::dead_letter::{Reason, move_to_dead_letters};
use crate::streams::entry::{EntryId, StreamEntry};
use crate::telemetry::error_chain;
use crate::telemetry::events::{InputOutcome, RuntimeEvent};
use crate::telemetry::metrics::{BATCH_SIZE, PERSIST_SECONDS};

/// Dead-letter reason of an input whose unit Postgres refused for its data, once splitting the
/// unit has isolated it.
pub const COMMIT_REFUSED: &str = "commit_refused";

/// Why a unit of work failed. Nothing of it was committed or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// A partition did not answer.
    #[error("partition did not apply its part of the unit")]
    Partition(#[source] AskError),
}

impl ProcessError {
    /// Whether Redis or Postgres being unreachable caused it.
    pub fn is_outage(&self) -> bool {
        match self {
            ProcessError::Store(e) => e.is_outage(),
            ProcessError::Streams(e) => e.is_outage(),
            ProcessError::Partition(_) => false,
        }
    }
}

/// What became of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Entries applied and acknowledged.
    pub applied: usize,
    /// Entries whose envelope id was applied already, acknowledged without applying.
    pub duplicates: usize,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: usize,
    /// Entries that failed (or were held back behind a failure) and stay pending for a retry.
    pub left_pending: usize,
    /// Entries of types the subscription skips, acknowledged without applying.
    pub skipped: usize,
}

/// The processor actor of domain `D`.
pub struct Processor<D: Domain> {
    inner: Arc<Inner<D>>,
    /// Commands waiting for the next command unit, oldest first (boxed: an actor is `Unpin`,
    /// a domain's command need not be).
    commands: std::collections::VecDeque<Box<QueuedCommand<D>>>,
    /// Whether a [`RunCommands`] is on its way: the commands queued meanwhile join it.
    commands_scheduled: bool,
}

/// A command waiting for its unit, and where its outcome goes.
struct QueuedCommand<D: Domain> {
    msg: ExecuteCommand<D>,
    reply: Reply<D>,
    /// When it was queued: past the ask timeout its caller has answered 504 and left, and it is
    /// dropped unapplied (504 allows either outcome; applying it late would only surprise).
    queued: Instant,
}

/// Where a command's outcome goes.
type Reply<D> = tokio::sync::oneshot::Sender<Result<Committed<<D as Domain>::Reply>, CommandError>>;

/// Most commands one unit applies and commits together.
const MAX_COMMANDS_PER_UNIT: usize = 256;
/// Most commands waiting at once; beyond, a command is refused at once as not committed.
const MAX_QUEUED_COMMANDS: usize = 4 * MAX_COMMANDS_PER_UNIT;

/// Applies and commits the queued commands as one unit (see [`Inner::execute_all`]).
struct RunCommands;

impl Message for RunCommands {
    type Result = ();
}

struct Inner<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    partitions: Vec<Addr<Partition<D>>>,
    limits: Limits,
    persist_seconds: metrics::Histogram,
    /// Keys written by a unit whose commit reported failure. The commit may have landed all the
    /// same (the connection broke while COMMIT was answered), so memory cannot know their
    /// values: they are reloaded from Postgres before the next unit.
    uncertain: Mutex<HashSet<String>>,
    /// Keys whose stored state does not load.
    quarantine: Arc<Quarantine>,
    /// When quarantined keys were last tried again.
    quarantine_checked: Mutex<Instant>,
}

/// Counts what a committed unit scheduled and cancelled.
fn timers_committed(domain: &'static str, unit: &BatchCommit<'_>) {
    RuntimeEvent::TimersCommitted {
        domain,
        scheduled: unit.timers.len(),
        cancelled: unit.cancelled_timers.len(),
    }
    .record();
}

/// How often quarantined keys are tried again (a repaired row is picked up this soon).
const QUARANTINE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl<D: Domain> Processor<D> {
    /// A processor over `partitions`; `quarantine` holds the keys that did not load.
    pub fn new(
        ctx: Arc<DomainContext<D>>,
        partitions: Vec<Addr<Partition<D>>>,
        quarantine: Arc<Quarantine>,
    ) -> Self {
        let persist_seconds = metrics::histogram!(PERSIST_SECONDS, "domain" => ctx.name());
        let limits = Limits {
            max_key_bytes: ctx.runtime.max_key_bytes,
        };
        Self {
            inner: Arc::new(Inner {
                ctx,
                partitions,
                limits,
                persist_seconds,
                uncertain: Mutex::default(),
                quarantine,
                quarantine_checked: Mutex::new(Instant::now()),
            }),
            commands: std::collections::VecDeque::new(),
            commands_scheduled: false,
        }
    }
}

impl<D: Domain> Actor for Processor<D> {
    type Context = Context<Self>;
}

/// Process entries read from one stream.
pub struct ProcessBatch {
    /// The stream they came from.
    pub binding: Arc<StreamBinding>,
    /// The entries, in stream order.
    pub entries: Vec<StreamEntry>,
    /// Whether they may have been delivered before (own pending re-read, or claimed): only
    /// those need their delivery counts looked up.
    pub redelivered: bool,
}

impl Message for ProcessBatch {
    type Result = Result<BatchReport, ProcessError>;
}

impl<D: Domain> Handler<ProcessBatch> for Processor<D> {
    type Result = AtomicResponse<Self, Result<BatchReport, ProcessError>>;

    fn handle(&mut self, msg: ProcessBatch, _: &mut Self::Context) -> Self::Result {
        let inner = self.inner.clone();
        AtomicResponse::new(Box::pin(
            async move { inner.process(msg).await }
                .into_actor(self)
                .map(|r, _, _| r),
        ))
    }
}

/// Why a command was not carried out, or may not have been.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The handler panicked.
    #[error("command handler panicked: {0}")]
    Panicked(String),
    /// The handler's result cannot be stored (a state holding `\u0000` or NaN, say).
    #[error("the command's result cannot be stored: {0}")]
    Unstorable(String),
    /// The entity's stored state cannot be loaded (it is quarantined); nothing was applied.
    #[error("the entity's stored state cannot be loaded: {0}")]
    Unloadable(String),
    /// The same `Idempotency-Key` came with another request.
    #[error("idempotency key {0:?} was used for a different request")]
    IdempotencyKeyReused(String),
    /// Certainly not committed: nothing of it took effect. Safe to retry.
    #[error("command not committed")]
    NotCommitted(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Submitted, but whether it committed is unknown (the wait or the commit timed out, the
    /// connection broke during COMMIT). Retry with the same idempotency key.
    #[error("command outcome unknown")]
    OutcomeUnknown(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A command's idempotency key and what identifies the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key (`Idempotency-Key` header).
    pub key: String,
    /// A digest of the request (target and body): a retry has the same one.
    pub fingerprint: String,
}

/// Execute a command against one entity and commit its effects before replying.
pub struct ExecuteCommand<D: Domain> {
    /// Entity key.
    pub key: String,
    /// The command.
    pub command: D::Command,
    /// Makes a retry return the first reply instead of applying the command again.
    pub idempotency: Option<Idempotency>,
}

/// A command's reply, once its effects are committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed<R> {
    /// The domain's reply.
    pub reply: R,
    /// The entity's version after the command.
    pub version: u64,
    /// Whether this is the stored reply of an earlier request with the same idempotency key.
    #[serde(skip)]
    pub replayed: bool,
}

impl<D: Domain> Message for ExecuteCommand<D> {
    type Result = Result<Committed<D::Reply>, CommandError>;
}

/// Commands are group-committed: each waits in the processor's queue, and the commands that
/// arrive while a unit (of commands or of stream entries) is in flight are applied and
/// committed together by the next one — one transaction, one fsync, for up to
/// [`MAX_COMMANDS_PER_UNIT`] commands.
impl<D: Domain> Handler<ExecuteCommand<D>> for Processor<D> {
    type Result = actix::ResponseFuture<Result<Committed<D::Reply>, CommandError>>;

    fn handle(&mut self, msg: ExecuteCommand<D>, ctx: &mut Self::Context) -> Self::Result {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if self.commands.len() >= MAX_QUEUED_COMMANDS {
            let _ = reply.send(Err(CommandError::NotCommitted(
                format!("{MAX_QUEUED_COMMANDS} commands are waiting already").into(),
            )));
        } else {
            self.commands.push_back(Box::new(QueuedCommand {
                msg,
                reply,
                queued: Instant::now(),
            }));
            if !self.commands_scheduled {
                self.commands_scheduled = true;
                // Through the mailbox, in turn with the stream batches: a notification would
                // wait for an empty mailbox, which a domain catching up never has.
                ctx.address().do_send(RunCommands);
            }
        }
        Box::pin(async move {
            outcome.await.unwrap_or_else(|_| {
                Err(CommandError::NotCommitted(
                    "the processor stopped before the command's unit ran".into(),
                ))
            })
        })
    }
}

impl<D: Domain> Handler<RunCommands> for Processor<D> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: RunCommands, ctx: &mut Self::Context) -> Self::Result {
        let take = self.commands.len().min(MAX_COMMANDS_PER_UNIT);
        let unit: Vec<QueuedCommand<D>> = self.commands.drain(..take).map(|c| *c).collect();
        if self.commands.is_empty() {
            self.commands_scheduled = false;
        } else {
            ctx.address().do_send(RunCommands);
        }
        let inner = self.inner.clone();
        AtomicResponse::new(Box::pin(
            async move { inner.execute_all(unit).await }.into_actor(self),
        ))
    }
}

/// Fire due durable timers (read by the timer poller), each as an input to its entity.
pub struct FireTimers {
    /// The timers, earliest first.
    pub timers: Vec<DueTimer>,
}

/// What became of the timers of a [`FireTimers`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimerReport {
    /// Fired: applied and committed, their rows removed.
    pub fired: usize,
    /// Gone when their firing committed (cancelled meanwhile, or fired by another instance):
    /// not applied.
    pub gone: usize,
    /// Failed (or waited behind a failure of their key) and stay scheduled, tried again later.
    pub retried: usize,
    /// Set aside for good: failed `max_deliveries` times, refused as invalid, or their payload
    /// no longer decodes.
    pub dead: usize,
}

impl Message for FireTimers {
    type Result = Result<TimerReport, ProcessError>;
}

impl<D: Domain> Handler<FireTimers> for Processor<D> {
    type Result = AtomicResponse<Self, Result<TimerReport, ProcessError>>;

    fn handle(&mut self, msg: FireTimers, _: &mut Self::Context) -> Self::Result {
        let inner = self.inner.clone();
        AtomicResponse::new(Box::pin(
            async move { inner.fire(msg).await }
                .into_actor(self)
                .map(|r, _, _| r),
        ))
    }
}

/// Dead reason of a timer whose payload no longer decodes as the domain's `Timer` type.
pub const TIMER_UNDECODABLE: &str = "undecodable";

/// What becomes of a timer that did not fire, decided once its unit is over.
enum Unfired {
    /// Stays scheduled; tried again after a backoff (counts as an attempt).
    Retry(String),
    /// Stays scheduled, tried again at the next poll (not an attempt: it waited behind a
    /// failure of its key).
    Wait,
    /// Set aside for good with this reason code and error.
    Dead(&'static str, String),
}

/// A decoded input on its way to a partition.
struct Input<E> {
    index: usize,
    /// Envelope id, stream entry, timestamp, trace context.
    meta: InputMeta,
    key: String,
    event: E,
    final_attempt: bool,
}

impl<E> Input<E> {
    fn map<F>(self, f: impl FnOnce(E) -> F) -> Input<F> {
        Input {
            index: self.index,
            meta: self.meta,
            key: self.key,
            event: f(self.event),
            final_attempt: self.final_attempt,
        }
    }
}

/// What a unit's inputs carry on to the partitions.
type UnitInput<D> = Input<Payload<<D as Domain>::Event, <D as Domain>::Timer>>;

/// One input as its partition applies it.
type PartitionItem<D> = EventItem<Payload<<D as Domain>::Event, <D as Domain>::Timer>>;

/// The decode stage's verdict on one entry.
enum Decoded<E> {
    Input(Input<E>),
    Skip,
    Malformed(MalformedEntry),
}

/// What a batch's units concluded, gathered for the acknowledge stage.
#[derive(Default)]
struct Outcome {
    report: BatchReport,
    ack: Vec<EntryId>,
    /// Batch index, reason code, error text.
    dead: Vec<(usize, &'static str, String)>,
    notifications: Vec<Notification>,
}

impl Outcome {
    /// Adds what another share of the batch concluded.
    fn absorb(&mut self, other: Outcome) {
        let (r, o) = (&mut self.report, other.report);
        r.applied += o.applied;
        r.duplicates += o.duplicates;
        r.dead_lettered += o.dead_lettered;
        r.left_pending += o.left_pending;
        r.skipped += o.skipped;
        self.ack.extend(other.ack);
        self.dead.extend(other.dead);
        self.notifications.extend(other.notifications);
    }
}

/// Stored values by key (`None`: no row), and the keys that did not decode with why.
type LoadedKeys<S> = (Vec<(String, Option<Entity<S>>)>, HashMap<String, String>);

/// The partitions' answer to one unit.
struct AppliedUnit {
    involved: Vec<usize>,
    applied: Vec<(usize, String)>,
    writes: Vec<crate::store::entities::EntityWrite>,
    events: Vec<NewOutboxEvent>,
    timers: Vec<NewTimer>,
    cancelled: Vec<TimerId>,
    notifications: Vec<Notification>,
    /// Batch index, key, failure, dead-letter now.
    failed: Vec<(usize, String, Failure, bool)>,
    /// Batch indices of the failed inputs that were not tried (behind a failure of their key).
    held_back: HashSet<usize>,
    /// Batch index and why: inputs whose entity's stored state did not load (now quarantined).
    unloadable: Vec<(usize, String)>,
}

impl<D: Domain> Inner<D> {
    fn partition(&self, key: &str) -> usize {
        partition_of(key, self.partitions.len())
    }

    #[tracing::instrument(skip_all, fields(domain = self.ctx.name(), stream = %msg.binding.name, entries = msg.entries.len(), redelivered = msg.redelivered))]
    async fn process(&self, msg: ProcessBatch) -> Result<BatchReport, ProcessError> {
        let ctx = &self.ctx;
        let binding = &msg.binding;
        let entries = &msg.entries;
        if entries.is_empty() {
            return Ok(BatchReport::default());
        }
        ctx.faults.reached(CrashPoint::AfterRead);
        self.reload_uncertain().await?;
        self.retry_quarantined().await?;
        let labels = [
            ("domain", ctx.name().to_owned()),
            ("stream", binding.name.clone()),
        ];
        metrics::histogram!(BATCH_SIZE, &labels).record(entries.len() as f64);
        let mut redis = ctx.redis.manager();

        let deliveries: HashMap<EntryId, u64> = if msg.redelivered {
            let (first, last) = (entries[0].id, entries[entries.len() - 1].id);
            binding
                .consumer
                .delivery_counts(&mut redis, first, last, entries.len() * 2 + 16)
                .await?
        } else {
            HashMap::new()
        };

        // Decode and deduplicate within the batch; cut it into units bounded in bytes.
        let mut out = Outcome::default();
        let mut seen: HashSet<String> = HashSet::with_capacity(entries.len());
        let mut units: Vec<Vec<Input<D::Event>>> = Vec::new();
        let mut unit_bytes = usize::MAX;
        for (index, entry) in entries.iter().enumerate() {
            match self.decode(binding, entry, index, &deliveries) {
                Decoded::Input(input) => {
                    if let Some(reason) = self.quarantine.reason(&input.key) {
                        out.dead.push((index, UNLOADABLE_STATE, reason));
                        continue;
                    }
                    if !seen.insert(input.meta.id.clone()) {
                        out.ack.push(entry.id);
                        out.report.duplicates += 1;
                        continue;
                    }
                    let bytes = entry.bytes();
                    if unit_bytes.saturating_add(bytes) > ctx.runtime.max_unit_bytes {
                        units.push(Vec::new());
                        unit_bytes = 0;
                    }
                    unit_bytes += bytes;
                    if let Some(unit) = units.last_mut() {
                        unit.push(input);
                    }
                }
                Decoded::Skip => {
                    out.ack.push(entry.id);
                    out.report.skipped += 1;
                }
                Decoded::Malformed(reason) => {
                    out.dead.push((index, reason.code(), reason.to_string()));
                }
            }
        }

        // Each partition's share of a unit is applied and committed on its own, concurrently
        // with the others, each on its own connection: their keys are disjoint, so nothing of
        // one share waits for another's, and Postgres flushes their commits together. A share
        // that fails leaves the others committed; their inputs are recorded by id, so when the
        // batch is redelivered they are acknowledged as duplicates.
        let mut blocked: Vec<HashSet<String>> =
            (0..self.partitions.len()).map(|_| HashSet::new()).collect();
        for unit in units {
            let mut shares: Vec<Vec<Input<D::Event>>> =
                (0..self.partitions.len()).map(|_| Vec::new()).collect();
            for input in unit {
                shares[self.partition(&input.key)].push(input);
            }
            let deliveries = &deliveries;
            let runs = blocked
                .iter_mut()
                .zip(shares)
                .filter(|(_, share)| !share.is_empty())
                .map(|(blocked, share)| async move {
                    let mut part = Outcome::default();
                    self.run_unit(binding, entries, deliveries, share, blocked, &mut part)
                        .await
                        .map(|()| part)
                });
            let mut failed = None;
            for result in join_all(runs).await {
                match result {
                    Ok(part) => out.absorb(part),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                // What the other shares committed is announced; their entries stay pending
                // and are acknowledged as duplicates on redelivery.
                for n in out.notifications.drain(..) {
                    let _ = ctx.notifications.send(n);
                }
                return Err(e);
            }
        }

        self.acknowledge_applied_unloadable(binding, entries, &deliveries, &mut out)
            .await?;
        binding.consumer.ack(&mut redis, &out.ack).await?;
        for n in out.notifications.drain(..) {
            let _ = ctx.notifications.send(n);
        }
        for (index, code, error) in &out.dead {
            let entry = &entries[*index];
            let deliveries = deliveries.get(&entry.id).copied().unwrap_or(1);
            let reason = Reason {
                code,
                error,
                deliveries,
            };
            let moved = move_to_dead_letters(
                &mut redis,
                &binding.consumer,
                &binding.dlq_key,
                entry,
                &reason,
            )
            .await?;
            if !moved {
                // Acknowledged already: a retry after a lost reply, or another consumer.
                tracing::debug!(entry.id = %entry.id, "entry no longer pending; not dead-lettered twice");
                continue;
            }
            RuntimeEvent::DeadLettered {
                domain: ctx.name(),
                stream: &binding.name,
                entry_id: &entry.id.to_string(),
                reason: code,
                error,
                deliveries,
            }
            .record();
            out.report.dead_lettered += 1;
        }

        let report = out.report;
        for (outcome, count) in [
            (InputOutcome::Applied, report.applied),
            (InputOutcome::Duplicate, report.duplicates),
            (InputOutcome::DeadLettered, report.dead_lettered),
            (InputOutcome::Failed, report.left_pending),
            (InputOutcome::Skipped, report.skipped),
        ] {
            RuntimeEvent::Inputs {
                domain: ctx.name(),
                stream: &binding.name,
                outcome,
                count,
            }
            .record();
        }
        if report.applied + report.duplicates + report.dead_lettered + report.skipped > 0 {
            ctx.progress.progressed(&binding.name);
        }
        Ok(report)
    }

    /// Inputs of a quarantined key that were applied before its stored row broke (redelivered
    /// after a crash between commit and acknowledgement) are duplicates: acknowledged, not
    /// dead-lettered. One lookup of their ids, only when a batch has such inputs.
    async fn acknowledge_applied_unloadable(
        &self,
        binding: &StreamBinding,
        entries: &[StreamEntry],
        deliveries: &HashMap<EntryId, u64>,
        out: &mut Outcome,
    ) -> Result<(), ProcessError> {
        let ids: Vec<(usize, String)> = out
            .dead
            .iter()
            .filter(|(_, code, _)| *code == UNLOADABLE_STATE)
            .filter_map(|(index, _, _)| {
                match self.decode(binding, &entries[*index], *index, deliveries) {
                    Decoded::Input(input) => Some((*index, input.meta.id)),
                    _ => None,
                }
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let domain = self.ctx.name();
        let lookup: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
        let recorded: HashSet<String> =
            within(&self.ctx.db, self.ctx.commit_timeout, async |conn| {
                applied::already_applied(conn, domain, &lookup).await
            })
            .await?
            .into_iter()
            .collect();
        let duplicates: HashSet<usize> = ids
            .iter()
            .filter(|(_, id)| recorded.contains(id))
            .map(|(index, _)| *index)
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        out.dead.retain(|(index, _, _)| !duplicates.contains(index));
        out.ack
            .extend(duplicates.iter().map(|index| entries[*index].id));
        out.report.duplicates += duplicates.len();
        tracing::info!(
            domain,
            duplicates = duplicates.len(),
            "inputs of quarantined keys were applied before their rows broke; acknowledged as duplicates"
        );
        Ok(())
    }

    /// The decode stage for one entry: envelope, size, id, type, data and entity key.
    fn decode(
        &self,
        binding: &StreamBinding,
        entry: &StreamEntry,
        index: usize,
        deliveries: &HashMap<EntryId, u64>,
    ) -> Decoded<D::Event> {
        let runtime = &self.ctx.runtime;
        if entry.fields.is_none() {
            return Decoded::Malformed(MalformedEntry::Deleted);
        }
        let bytes = entry.bytes();
        if bytes > runtime.max_entry_bytes {
            return Decoded::Malformed(MalformedEntry::TooLarge {
                bytes,
                max: runtime.max_entry_bytes,
            });
        }
        let decoded = crate::streams::envelope::decode(entry.field_pairs()).and_then(|envelope| {
            let happened_at = envelope.happened_at();
            validate_key(&envelope.id, runtime.max_key_bytes).map_err(MalformedEntry::InvalidId)?;
            let event =
                decode_event::<D>(binding.handled_types, &envelope.event_type, &envelope.data)?;
            let key = route(
                self.ctx.domain.as_ref(),
                &self.limits,
                envelope.key,
                &envelope.event_type,
                &event,
            )?;
            // When the input happened: as its producer says, else when Redis received it.
            let timestamp = happened_at
                .or_else(|| {
                    i64::try_from(entry.id.ms)
                        .ok()
                        .and_then(chrono::DateTime::from_timestamp_millis)
                })
                .unwrap_or_else(|| self.ctx.clock.now());
            Ok(Input {
                index,
                meta: InputMeta {
                    traceparent: child_traceparent(envelope.traceparent.as_deref()),
                    id: envelope.id,
                    source: Source::Stream {
                        stream: binding.name.clone(),
                        entry_id: entry.id.to_string(),
                    },
                    timestamp,
                },
                key,
                event,
                final_attempt: deliveries.get(&entry.id).copied().unwrap_or(1)
                    >= runtime.max_deliveries,
            })
        });
        match decoded {
            Ok(input) => Decoded::Input(input),
            Err(MalformedEntry::UnknownType(_)) if binding.skip_other_types => Decoded::Skip,
            Err(reason) => Decoded::Malformed(reason),
        }
    }

    /// Decodes the entries at `indices` again, for a unit that must be redone (its inputs were
    /// consumed by the first attempt).
    fn redecode(
        &self,
        binding: &StreamBinding,
        entries: &[StreamEntry],
        deliveries: &HashMap<EntryId, u64>,
        indices: &[usize],
    ) -> Vec<Input<D::Event>> {
        indices
            .iter()
            .filter_map(|index| {
                match self.decode(binding, &entries[*index], *index, deliveries) {
                    Decoded::Input(input) => Some(input),
                    // Decoding is deterministic: an entry that decoded once decodes again.
                    Decoded::Skip | Decoded::Malformed(_) => None,
                }
            })
            .collect()
    }

    /// Applies and commits one unit. Inputs found already applied are acknowledged and the unit
    /// is redone without them; a unit Postgres refuses for its data is split in halves until
    /// the input responsible is alone, and that one is dead-lettered.
    fn run_unit<'a>(
        &'a self,
        binding: &'a StreamBinding,
        entries: &'a [StreamEntry],
        deliveries: &'a HashMap<EntryId, u64>,
        unit: Vec<Input<D::Event>>,
        blocked: &'a mut HashSet<String>,
        out: &'a mut Outcome,
    ) -> LocalBoxFuture<'a, Result<(), ProcessError>> {
        Box::pin(async move {
            let mut unit = unit;
            loop {
                // Behind an input of the same key that stays pending, nothing of that key may
                // apply, in this unit or a later one of the batch.
                let before = unit.len();
                unit.retain(|input| !blocked.contains(&input.key));
                out.report.left_pending += before - unit.len();
                if unit.is_empty() {
                    return Ok(());
                }
                let mut indices: Vec<usize> = unit.iter().map(|i| i.index).collect();
                let inputs = unit.into_iter().map(|i| i.map(Payload::Event)).collect();
                let mut applied = self.apply(inputs).await?;
                if !applied.unloadable.is_empty() {
                    // Dead-lettered now: not part of a redo or a split of this unit.
                    let gone: HashSet<usize> = applied.unloadable.iter().map(|(i, _)| *i).collect();
                    indices.retain(|index| !gone.contains(index));
                    for (index, reason) in applied.unloadable.drain(..) {
                        out.dead.push((index, UNLOADABLE_STATE, reason));
                    }
                }
                if applied.applied.is_empty() {
                    self.settle(&applied.involved, true).await;
                    conclude_failures(applied.failed, blocked, out);
                    return Ok(());
                }
                let batch = BatchCommit {
                    domain: self.ctx.name(),
                    applied: applied.applied.iter().map(|(_, id)| id.as_str()).collect(),
                    commands: Vec::new(),
                    entities: applied.writes,
                    events: applied.events,
                    fired_timers: Vec::new(),
                    timers: applied.timers,
                    cancelled_timers: applied.cancelled.iter().map(TimerId::as_str).collect(),
                };
                match self.commit(&batch, &applied.involved).await {
                    Ok(()) => {
                        self.ctx.faults.reached(CrashPoint::AfterCommitBeforeAck);
                        timers_committed(self.ctx.name(), &batch);
                        if !batch.events.is_empty() {
                            self.ctx.relay_wakeup.notify_one();
                        }
                        out.report.applied += applied.applied.len();
                        out.ack
                            .extend(applied.applied.iter().map(|(index, _)| entries[*index].id));
                        out.notifications.extend(applied.notifications);
                        conclude_failures(applied.failed, blocked, out);
                        return Ok(());
                    }
                    Err(StoreError::AlreadyApplied(ids)) => {
                        let ids: HashSet<String> = ids.into_iter().collect();
                        tracing::info!(
                            duplicates = ids.len(),
                            "inputs were applied before (by envelope id); redoing the unit without them"
                        );
                        let mut redo = self.redecode(binding, entries, deliveries, &indices);
                        redo.retain(|input| {
                            let duplicate = ids.contains(&input.meta.id);
                            if duplicate {
                                out.ack.push(entries[input.index].id);
                                out.report.duplicates += 1;
                            }
                            !duplicate
                        });
                        unit = redo;
                    }
                    Err(e) if e.is_deterministic() => {
                        if let [index] = indices.as_slice() {
                            let error = error_chain(&e);
                            tracing::error!(entry.id = %entries[*index].id, error, "postgres refused this input's effects; dead-lettering it");
                            out.dead.push((*index, COMMIT_REFUSED, error));
                            return Ok(());
                        }
                        tracing::warn!(error = %error_chain(&e), inputs = indices.len(), "postgres refused the unit for its data; splitting it to isolate the input");
                        let (first, second) = indices.split_at(indices.len() / 2);
                        for half in [first, second] {
                            let part = self.redecode(binding, entries, deliveries, half);
                            self.run_unit(binding, entries, deliveries, part, blocked, out)
                                .await?;
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    /// The apply stage: each partition applies its inputs, concurrently.
    async fn apply(&self, unit: Vec<UnitInput<D>>) -> Result<AppliedUnit, ProcessError> {
        let mut per_partition: Vec<Vec<PartitionItem<D>>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        let mut meta: HashMap<usize, (String, String, String)> = HashMap::with_capacity(unit.len());
        for input in unit {
            meta.insert(
                input.index,
                (
                    input.meta.id.clone(),
                    input.key.clone(),
                    input.meta.traceparent.clone(),
                ),
            );
            let p = self.partition(&input.key);
            per_partition[p].push(EventItem {
                index: input.index,
                key: input.key,
                event: input.event,
                final_attempt: input.final_attempt,
                input: input.meta,
            });
        }
        // The load stage: keys not in memory come from Postgres first.
        let mut unloadable = Vec::new();
        for (p, items) in per_partition.iter_mut().enumerate() {
            if items.is_empty() {
                continue;
            }
            let keys = items.iter().map(|item| item.key.clone()).collect();
            let refused = self.ensure_loaded(p, keys).await?;
            if !refused.is_empty() {
                items.retain(|item| match refused.get(&item.key) {
                    Some(reason) => {
                        unloadable.push((item.index, reason.clone()));
                        false
                    }
                    None => true,
                });
            }
        }
        let involved: Vec<usize> = (0..per_partition.len())
            .filter(|p| !per_partition[*p].is_empty())
            .collect();
        let timeout = self.ctx.runtime.ask_timeout();
        let asks = per_partition
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(p, items)| ask(&self.partitions[p], ApplyEvents::<D> { items }, timeout));
        let mut replies = Vec::with_capacity(involved.len());
        for reply in join_all(asks).await {
            match reply {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    self.settle(&involved, false).await;
                    return Err(ProcessError::Partition(e));
                }
            }
        }
        let mut unit = AppliedUnit {
            involved,
            applied: Vec::new(),
            writes: Vec::new(),
            events: Vec::new(),
            timers: Vec::new(),
            cancelled: Vec::new(),
            notifications: Vec::new(),
            failed: Vec::new(),
            held_back: HashSet::new(),
            unloadable,
        };
        let own_stream = self.ctx.output_stream();
        for reply in replies {
            unit.writes.extend(reply.writes);
            for (index, outcome) in reply.outcomes {
                let Some((input_id, key, traceparent)) = meta.remove(&index) else {
                    continue;
                };
                match outcome {
                    ItemOutcome::Applied(effects) => {
                        unit.events.extend(outbox_events(
                            effects.emitted.iter(),
                            &own_stream,
                            &traceparent,
                        ));
                        unit.timers
                            .extend(new_timers(&effects.timers, &traceparent));
                        unit.cancelled.extend(effects.cancelled);
                        unit.notifications.extend(effects.notifications);
                        unit.applied.push((index, input_id));
                    }
                    ItemOutcome::Failed { failure, dead } => {
                        tracing::warn!(input.id = %input_id, key, trace_id = trace_id(&traceparent), error = %failure, dead, "handler failed");
                        unit.failed.push((index, key, failure, dead));
                    }
                    ItemOutcome::HeldBack => {
                        unit.held_back.insert(index);
                        unit.failed.push((
                            index,
                            key,
                            Failure::Handler(DomainError::Failed("held back".into())),
                            false,
                        ));
                    }
                }
            }
        }
        Ok(unit)
    }

    /// Commits `unit` within `database.commit_timeout_ms` and settles the partitions that
    /// applied it. On failure their changes are undone; unless Postgres certainly refused the
    /// unit, the written keys become uncertain.
    async fn commit(&self, unit: &BatchCommit<'_>, partitions: &[usize]) -> Result<(), StoreError> {
        let started = Instant::now();
        let limit = self.ctx.commit_timeout;
        let committed = within(&self.ctx.db, limit, async |conn| commit(conn, unit).await).await;
        self.persist_seconds.record(started.elapsed().as_secs_f64());
        self.settle(partitions, committed.is_ok()).await;
        match &committed {
            Ok(()) => {}
            Err(StoreError::AlreadyApplied(_)) => {}
            Err(e) if e.is_deterministic() => {}
            Err(e) => {
                tracing::warn!(error = %error_chain(e), entities = unit.entities.len(), "commit failed; its entities will be reloaded");
                if let Ok(mut uncertain) = self.uncertain.lock() {
                    uncertain.extend(unit.entities.iter().map(|w| w.key.clone()));
                }
            }
        }
        committed
    }

    /// Puts the keys partition `p` needs for a unit into memory, loading from Postgres those it
    /// does not hold (a key with no row is kept as "does not exist"). Returns the keys whose
    /// stored state does not load, now quarantined, with why. Between units only.
    async fn ensure_loaded(
        &self,
        p: usize,
        keys: Vec<String>,
    ) -> Result<HashMap<String, String>, ProcessError> {
        let timeout = self.ctx.runtime.ask_timeout();
        let missing = ask(&self.partitions[p], Missing { keys }, timeout)
            .await
            .map_err(ProcessError::Partition)?;
        if missing.is_empty() {
            return Ok(HashMap::new());
        }
        let (loaded, unloadable) = self.load_stored(missing).await?;
        RuntimeEvent::EntitiesLoaded {
            domain: self.ctx.name(),
            count: loaded.len(),
        }
        .record();
        tracing::debug!(
            domain = self.ctx.name(),
            partition = p,
            loaded = loaded.len(),
            "loaded entities on first use"
        );
        ask(&self.partitions[p], Refresh { entities: loaded }, timeout)
            .await
            .map_err(ProcessError::Partition)?;
        Ok(unloadable)
    }

    /// The stored values of `keys` (`None`: no row), and apart from them the keys whose stored
    /// state does not decode, which are quarantined, with why.
    async fn load_stored(&self, keys: Vec<String>) -> Result<LoadedKeys<D::State>, ProcessError> {
        let name = self.ctx.name();
        let rows = within(&self.ctx.db, self.ctx.commit_timeout, async |conn| {
            entities::load_keys(conn, name, &keys).await
        })
        .await?;
        let mut stored = HashMap::with_capacity(rows.len());
        let mut unloadable = HashMap::new();
        for row in rows {
            match restore_entity::<D>(name, row) {
                (key, Ok(entity)) => {
                    stored.insert(key, entity);
                }
                (key, Err(e)) => {
                    let reason = error_chain(&e);
                    self.quarantine.add(name, &key, reason.clone());
                    unloadable.insert(key, reason);
                }
            }
        }
        let loaded = keys
            .into_iter()
            .filter(|key| !unloadable.contains_key(key))
            .map(|key| {
                let entity = stored.remove(&key);
                (key, entity)
            })
            .collect();
        Ok((loaded, unloadable))
    }

    /// Reloads the uncertain keys from Postgres into their partitions.
    async fn reload_uncertain(&self) -> Result<(), ProcessError> {
        let keys: Vec<String> = match self.uncertain.lock() {
            Ok(uncertain) if !uncertain.is_empty() => uncertain.iter().cloned().collect(),
            _ => return Ok(()),
        };
        let count = keys.len();
        let (mut loaded, unloadable) = self.load_stored(keys).await?;
        // A key whose row no longer decodes is quarantined: its inputs are dead-lettered, the
        // other keys go on; what memory held of it goes.
        loaded.extend(unloadable.into_keys().map(|key| (key, None)));
        self.refresh(loaded).await?;
        if let Ok(mut uncertain) = self.uncertain.lock() {
            uncertain.clear();
        }
        tracing::info!(
            domain = self.ctx.name(),
            entities = count,
            "reloaded entities after a failed commit"
        );
        Ok(())
    }

    /// Tries the quarantined keys again, at most every [`QUARANTINE_RETRY`]: a key whose row
    /// loads now is put back into its partition and leaves quarantine.
    async fn retry_quarantined(&self) -> Result<(), ProcessError> {
        match self.quarantine_checked.lock() {
            Ok(mut checked) if checked.elapsed() >= QUARANTINE_RETRY => *checked = Instant::now(),
            _ => return Ok(()),
        }
        let keys = self.quarantine.keys();
        if keys.is_empty() {
            return Ok(());
        }
        let name = self.ctx.name();
        let rows = within(&self.ctx.db, self.ctx.commit_timeout, async |conn| {
            entities::load_keys(conn, name, &keys).await
        })
        .await?;
        let mut loaded = Vec::new();
        let mut missing: HashSet<String> = keys.into_iter().collect();
        for row in rows {
            let (key, entity) = restore_entity::<D>(name, row);
            missing.remove(&key);
            if let Ok(entity) = entity {
                loaded.push((key, Some(entity)));
            }
        }
        // A row the operator deleted: the key starts afresh.
        loaded.extend(missing.into_iter().map(|key| (key, None)));
        let released: Vec<String> = loaded.iter().map(|(key, _)| key.clone()).collect();
        self.refresh(loaded).await?;
        for key in released {
            self.quarantine.release(name, &key);
        }
        Ok(())
    }

    /// Puts stored values (`None`: no entity) into the partitions owning their keys.
    async fn refresh(
        &self,
        entities: Vec<(String, Option<Entity<D::State>>)>,
    ) -> Result<(), ProcessError> {
        let mut per_partition: Vec<Vec<_>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        for (key, entity) in entities {
            per_partition[self.partition(&key)].push((key, entity));
        }
        let timeout = self.ctx.runtime.ask_timeout();
        for (p, entities) in per_partition.into_iter().enumerate() {
            if !entities.is_empty() {
                ask(&self.partitions[p], Refresh { entities }, timeout)
                    .await
                    .map_err(ProcessError::Partition)?;
            }
        }
        Ok(())
    }

    /// Ends the unit in flight on `partitions`. A partition that does not answer in time is
    /// stuck in a handler: the supervisor's watchdog reports it.
    async fn settle(&self, partitions: &[usize], committed: bool) {
        let timeout = self.ctx.runtime.ask_timeout();
        let settles = partitions
            .iter()
            .map(|p| ask(&self.partitions[*p], Settle { committed }, timeout));
        for result in join_all(settles).await {
            if let Err(e) = result {
                tracing::error!(error = %error_chain(&e), "partition did not settle its unit");
            }
        }
    }

    /// Applies `queued` commands in order, each to its entity, and commits the ones that
    /// applied as one unit with their effects and idempotency records; then answers each.
    ///
    /// A command refused by its domain (or whose entity does not load, or whose idempotency
    /// key has a stored reply) is answered at once and takes no part in the unit. A command
    /// repeating an idempotency key another command of the unit carries is answered from that
    /// one's outcome. If the partitions cannot be asked, or the commit fails, no command of the
    /// unit took effect, or (`OutcomeUnknown`) the commit may have landed for all of them.
    #[tracing::instrument(skip_all, fields(domain = self.ctx.name(), commands = queued.len()))]
    async fn execute_all(&self, queued: Vec<QueuedCommand<D>>) {
        let ctx = &self.ctx;
        if let Err(e) = self.prepare_commands().await {
            let cause = error_chain(&e);
            for command in queued {
                let _ = command
                    .reply
                    .send(Err(CommandError::NotCommitted(cause.clone().into())));
            }
            return;
        }
        // Load every key the unit touches, partition by partition.
        let mut keys: HashMap<usize, Vec<String>> = HashMap::new();
        for command in &queued {
            keys.entry(self.partition(&command.msg.key))
                .or_default()
                .push(command.msg.key.clone());
        }
        let mut unloadable: HashMap<String, String> = HashMap::new();
        let mut unready: HashMap<usize, String> = HashMap::new();
        let loaded: Vec<usize> = keys.keys().copied().collect();
        for (p, keys) in keys {
            match self.ensure_loaded(p, keys).await {
                Ok(refused) => unloadable.extend(refused),
                Err(e) => {
                    unready.insert(p, error_chain(&e));
                }
            }
        }

        // The stored replies of the unit's idempotency keys, in one query.
        let mut idempotency_keys: Vec<String> = queued
            .iter()
            .filter_map(|c| c.msg.idempotency.as_ref().map(|i| i.key.clone()))
            .collect();
        idempotency_keys.sort_unstable();
        idempotency_keys.dedup();
        let stored = within(&ctx.db, ctx.commit_timeout, async |conn| {
            commands::find_many(conn, ctx.name(), &idempotency_keys).await
        })
        .await
        .map_err(|e| error_chain(&e));
        let mut applied: Vec<AppliedCommand<D>> = Vec::new();
        let mut repeats: Vec<(QueuedCommand<D>, usize)> = Vec::new();
        // Refusals decided on a state an earlier command of this unit left: final only if
        // that state commits.
        let mut held_refusals: Vec<(Reply<D>, CommandError)> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        let ask_timeout = ctx.runtime.ask_timeout();
        let mut queued = queued.into_iter();
        while let Some(command) = queued.next() {
            let QueuedCommand {
                msg,
                reply,
                queued: at,
            } = command;
            if at.elapsed() >= ask_timeout {
                continue;
            }
            let p = self.partition(&msg.key);
            if let Some(cause) = unready.get(&p) {
                let _ = reply.send(Err(CommandError::NotCommitted(cause.clone().into())));
                continue;
            }
            if let Some(reason) = self
                .quarantine
                .reason(&msg.key)
                .or_else(|| unloadable.get(&msg.key).cloned())
            {
                let _ = reply.send(Err(CommandError::Unloadable(reason)));
                continue;
            }
            if let Some(idempotency) = &msg.idempotency {
                if let Some(first) = applied
                    .iter()
                    .position(|a| a.idempotency.as_ref().map(|i| &i.key) == Some(&idempotency.key))
                {
                    repeats.push((
                        QueuedCommand {
                            msg,
                            reply,
                            queued: at,
                        },
                        first,
                    ));
                    continue;
                }
                match &stored {
                    Ok(records) => {
                        if let Some(record) = records.get(&idempotency.key) {
                            let _ = reply.send(replay(record.clone(), idempotency));
                            continue;
                        }
                    }
                    Err(cause) => {
                        let _ = reply.send(Err(CommandError::NotCommitted(cause.clone().into())));
                        continue;
                    }
                }
            }
            let traceparent = child_traceparent(None);
            let input = InputMeta {
                id: msg.idempotency.as_ref().map_or_else(
                    || uuid::Uuid::now_v7().to_string(),
                    |idempotency| idempotency.key.clone(),
                ),
                source: Source::Command,
                timestamp: ctx.clock.now(),
                traceparent: traceparent.clone(),
            };
            let asked = ask(
                &self.partitions[p],
                ApplyCommand::<D> {
                    key: msg.key.clone(),
                    command: msg.command,
                    input,
                },
                ctx.runtime.ask_timeout(),
            )
            .await;
            match asked {
                Ok(Ok((reply_value, effects, write))) => {
                    if !touched.contains(&p) {
                        touched.push(p);
                    }
                    applied.push(AppliedCommand {
                        idempotency: msg.idempotency,
                        committed: Committed {
                            reply: reply_value,
                            version: u64::try_from(write.version).unwrap_or(0),
                            replayed: false,
                        },
                        effects,
                        write,
                        traceparent,
                        reply,
                    });
                }
                // Refused on a copy of the entity: nothing changed, nothing to undo.
                Ok(Err(failure)) => {
                    let refusal = match failure {
                        Failure::Handler(e) => CommandError::Domain(e),
                        Failure::Panicked(message) => {
                            tracing::error!(error = %message, "command handler panicked");
                            CommandError::Panicked(message)
                        }
                        Failure::Unstorable(message) => CommandError::Unstorable(message),
                    };
                    if applied.iter().any(|a| a.write.key == msg.key) {
                        held_refusals.push((reply, refusal));
                    } else {
                        let _ = reply.send(Err(refusal));
                    }
                }
                Err(e) => {
                    // The partition may still apply it, after the settle below was dropped with
                    // its own timeout: the keys it and this unit touched are reloaded from
                    // Postgres before the next unit, so nothing of them takes effect.
                    if !touched.contains(&p) {
                        touched.push(p);
                    }
                    if let Ok(mut uncertain) = self.uncertain.lock() {
                        uncertain.insert(msg.key.clone());
                        uncertain.extend(applied.iter().map(|a| a.write.key.clone()));
                    }
                    self.settle(&touched, false).await;
                    let cause = format!("an earlier command of its unit: {}", error_chain(&e));
                    let _ = reply.send(Err(CommandError::NotCommitted(Box::new(e))));
                    let not_committed = || CommandError::NotCommitted(cause.clone().into());
                    for command in applied {
                        let _ = command.reply.send(Err(not_committed()));
                    }
                    for (reply, _) in held_refusals {
                        let _ = reply.send(Err(not_committed()));
                    }
                    for rest in queued {
                        let _ = rest.reply.send(Err(not_committed()));
                    }
                    answer_repeats(repeats, &[]);
                    return;
                }
            }
        }
        if applied.is_empty() {
            // Unpins what was loaded for the unit; nothing changed.
            self.settle(&loaded, false).await;
            answer_repeats(repeats, &[]);
            return;
        }

        let mut records = Vec::new();
        for command in &applied {
            if let Some(idempotency) = &command.idempotency {
                match serde_json::to_value(&command.committed) {
                    Ok(reply) => records.push(CommandRecord {
                        key: idempotency.key.clone(),
                        fingerprint: idempotency.fingerprint.clone(),
                        reply,
                    }),
                    Err(e) => {
                        // Deterministic and not expected of a Serialize reply: the unit is
                        // given up whole rather than committed without this record; only the
                        // command whose reply it is was refused, the others were not committed.
                        self.settle(&touched, false).await;
                        let culprit = idempotency.key.clone();
                        let cause = format!("reply of another command does not serialize: {e}");
                        for command in applied {
                            let answer = match &command.idempotency {
                                Some(i) if i.key == culprit => {
                                    CommandError::Unstorable(format!("reply: {e}"))
                                }
                                _ => CommandError::NotCommitted(cause.clone().into()),
                            };
                            let _ = command.reply.send(Err(answer));
                        }
                        for (reply, _) in held_refusals {
                            let _ =
                                reply.send(Err(CommandError::NotCommitted(cause.clone().into())));
                        }
                        answer_repeats(repeats, &[]);
                        return;
                    }
                }
            }
        }
        // One write per entity: the last, computed from the version Postgres holds.
        let mut entities: Vec<EntityWrite> = Vec::new();
        for command in &applied {
            match entities.iter_mut().find(|w| w.key == command.write.key) {
                Some(earlier) => {
                    earlier.state_json.clone_from(&command.write.state_json);
                    earlier.version = command.write.version;
                }
                None => entities.push(command.write.clone()),
            }
        }
        // In key order, as units of stream entries write: writers lock rows in one order.
        entities.sort_by(|a, b| a.key.cmp(&b.key));
        let own_stream = ctx.output_stream();
        let unit = BatchCommit {
            domain: ctx.name(),
            applied: Vec::new(),
            commands: records,
            entities,
            events: applied
                .iter()
                .flat_map(|c| outbox_events(c.effects.emitted.iter(), &own_stream, &c.traceparent))
                .collect(),
            fired_timers: Vec::new(),
            timers: applied
                .iter()
                .flat_map(|c| new_timers(&c.effects.timers, &c.traceparent))
                .collect(),
            cancelled_timers: applied
                .iter()
                .flat_map(|c| c.effects.cancelled.iter().map(TimerId::as_str))
                .collect(),
        };
        if let Err(e) = self.commit(&unit, &touched).await {
            tracing::error!(error = %error_chain(&e), commands = applied.len(), "commands not committed");
            let unknown = e.is_outcome_unknown();
            let cause = error_chain(&e);
            let failed = |cause: &str| -> CommandError {
                if unknown {
                    CommandError::OutcomeUnknown(cause.to_owned().into())
                } else {
                    CommandError::NotCommitted(cause.to_owned().into())
                }
            };
            drop(unit);
            for command in applied {
                let _ = command.reply.send(Err(failed(&cause)));
            }
            for (repeat, _) in repeats {
                let _ = repeat.reply.send(Err(failed(&cause)));
            }
            for (reply, _) in held_refusals {
                let _ = reply.send(Err(failed(&cause)));
            }
            return;
        }
        timers_committed(ctx.name(), &unit);
        let published = !unit.events.is_empty();
        drop(unit);
        if published {
            ctx.relay_wakeup.notify_one();
        }
        ctx.faults.command_committed().await;
        let mut outcomes = Vec::with_capacity(applied.len());
        for command in applied {
            let AppliedCommand {
                idempotency,
                committed,
                effects,
                reply,
                ..
            } = command;
            for n in effects.notifications {
                let _ = ctx.notifications.send(n);
            }
            outcomes.push((idempotency, serde_json::to_value(&committed).ok()));
            let _ = reply.send(Ok(committed));
        }
        for (reply, refusal) in held_refusals {
            let _ = reply.send(Err(refusal));
        }
        answer_repeats(repeats, &outcomes);
    }

    /// What every unit of commands needs first: keys of uncertain commits reloaded, and
    /// quarantined keys tried again.
    async fn prepare_commands(&self) -> Result<(), ProcessError> {
        self.reload_uncertain().await?;
        self.retry_quarantined().await
    }
}

impl<D: Domain> Inner<D> {
    /// Fires due timers: each applies to its entity through the partitions like an event, and
    /// its firing commits with its effects and the removal of its row. A timer whose row is
    /// gone by then (cancelled, or fired by another instance) is dropped unapplied; a failed
    /// one is retried with backoff, and set aside as dead after `max_deliveries` attempts or
    /// at once when the failure is permanent.
    #[tracing::instrument(skip_all, fields(domain = self.ctx.name(), timers = msg.timers.len()))]
    async fn fire(&self, msg: FireTimers) -> Result<TimerReport, ProcessError> {
        let due = msg.timers;
        if due.is_empty() {
            return Ok(TimerReport::default());
        }
        self.reload_uncertain().await?;
        self.retry_quarantined().await?;
        let mut report = TimerReport::default();
        let mut unfired: Vec<(usize, Unfired)> = Vec::new();
        let mut inputs = Vec::with_capacity(due.len());
        for index in 0..due.len() {
            if let Some(reason) = self.quarantine.reason(&due[index].key) {
                // The operator may repair the row: the timer waits, with backoff, meanwhile.
                unfired.push((
                    index,
                    Unfired::Retry(format!("{UNLOADABLE_STATE}: {reason}")),
                ));
                continue;
            }
            match self.decode_timer(&due, index) {
                Ok(input) => inputs.push(input),
                Err(e) => unfired.push((index, Unfired::Dead(TIMER_UNDECODABLE, e))),
            }
        }
        self.fire_unit(&due, inputs, &mut unfired, &mut report)
            .await?;
        self.conclude_unfired(&due, unfired, &mut report).await?;
        Ok(report)
    }

    /// The timer at `index` as an input to its entity.
    fn decode_timer(&self, due: &[DueTimer], index: usize) -> Result<UnitInput<D>, String> {
        let timer = &due[index];
        let payload: D::Timer =
            serde_json::from_value(timer.payload.clone()).map_err(|e| e.to_string())?;
        let attempt = u64::try_from(timer.attempts).unwrap_or(0) + 1;
        Ok(Input {
            index,
            meta: InputMeta {
                id: timer.id.clone(),
                source: Source::Timer,
                timestamp: timer.due,
                traceparent: child_traceparent(timer.traceparent.as_deref()),
            },
            key: timer.key.clone(),
            event: Payload::Timer(payload),
            final_attempt: attempt >= self.ctx.runtime.max_deliveries,
        })
    }

    /// Applies and commits the firing of `inputs`, as [`Inner::run_unit`] does for events:
    /// timers found gone are dropped and the unit redone without them; a unit Postgres refuses
    /// for its data is fired one timer at a time, and the one refused alone is dead.
    fn fire_unit<'a>(
        &'a self,
        due: &'a [DueTimer],
        inputs: Vec<UnitInput<D>>,
        unfired: &'a mut Vec<(usize, Unfired)>,
        report: &'a mut TimerReport,
    ) -> LocalBoxFuture<'a, Result<(), ProcessError>> {
        Box::pin(async move {
            let mut inputs = inputs;
            loop {
                if inputs.is_empty() {
                    return Ok(());
                }
                let mut indices: Vec<usize> = inputs.iter().map(|i| i.index).collect();
                let mut applied = self.apply(inputs).await?;
                for (index, reason) in applied.unloadable.drain(..) {
                    indices.retain(|i| *i != index);
                    unfired.push((
                        index,
                        Unfired::Retry(format!("{UNLOADABLE_STATE}: {reason}")),
                    ));
                }
                let held_back = std::mem::take(&mut applied.held_back);
                for (index, _, failure, dead) in applied.failed.drain(..) {
                    let verdict = if held_back.contains(&index) {
                        Unfired::Wait
                    } else if dead {
                        Unfired::Dead(failure.dead_letter_code(), failure.to_string())
                    } else {
                        Unfired::Retry(failure.to_string())
                    };
                    unfired.push((index, verdict));
                }
                if applied.applied.is_empty() {
                    self.settle(&applied.involved, true).await;
                    return Ok(());
                }
                let ids: Vec<&str> = applied.applied.iter().map(|(_, id)| id.as_str()).collect();
                let batch = BatchCommit {
                    domain: self.ctx.name(),
                    applied: ids.clone(),
                    commands: Vec::new(),
                    entities: applied.writes,
                    events: applied.events,
                    fired_timers: ids,
                    timers: applied.timers,
                    cancelled_timers: applied.cancelled.iter().map(TimerId::as_str).collect(),
                };
                match self.commit(&batch, &applied.involved).await {
                    Ok(()) => {
                        if !batch.events.is_empty() {
                            self.ctx.relay_wakeup.notify_one();
                        }
                        timers_committed(self.ctx.name(), &batch);
                        let now = self.ctx.clock.now();
                        let lateness: Vec<std::time::Duration> = applied
                            .applied
                            .iter()
                            .map(|(index, _)| (now - due[*index].due).to_std().unwrap_or_default())
                            .collect();
                        RuntimeEvent::TimersFired {
                            domain: self.ctx.name(),
                            lateness: &lateness,
                        }
                        .record();
                        report.fired += applied.applied.len();
                        for n in applied.notifications {
                            let _ = self.ctx.notifications.send(n);
                        }
                        return Ok(());
                    }
                    Err(StoreError::AlreadyApplied(gone)) => {
                        let gone: HashSet<String> = gone.into_iter().collect();
                        tracing::info!(
                            timers = gone.len(),
                            "timers were cancelled or fired meanwhile; firing the others without them"
                        );
                        // Undecided verdicts of this attempt are decided again by the redo.
                        let redone: HashSet<usize> = indices.iter().copied().collect();
                        unfired.retain(|(index, _)| !redone.contains(index));
                        report.gone += gone.len();
                        indices.retain(|index| !gone.contains(&due[*index].id));
                        inputs = self.redecode_timers(due, &indices);
                    }
                    Err(e) if e.is_deterministic() => {
                        let redone: HashSet<usize> = indices.iter().copied().collect();
                        unfired.retain(|(index, _)| !redone.contains(index));
                        if let [index] = indices.as_slice() {
                            let error = error_chain(&e);
                            tracing::error!(timer.id = %due[*index].id, error, "postgres refused this timer's effects; setting it aside");
                            unfired.push((*index, Unfired::Dead(COMMIT_REFUSED, error)));
                            return Ok(());
                        }
                        tracing::warn!(error = %error_chain(&e), timers = indices.len(), "postgres refused the timers' unit for its data; firing them one at a time");
                        for index in indices {
                            let single = self.redecode_timers(due, &[index]);
                            self.fire_unit(due, single, unfired, report).await?;
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    fn redecode_timers(&self, due: &[DueTimer], indices: &[usize]) -> Vec<UnitInput<D>> {
        indices
            .iter()
            .filter_map(|index| self.decode_timer(due, *index).ok())
            .collect()
    }

    /// Records what becomes of the timers that did not fire: tried again later, or dead.
    async fn conclude_unfired(
        &self,
        due: &[DueTimer],
        unfired: Vec<(usize, Unfired)>,
        report: &mut TimerReport,
    ) -> Result<(), ProcessError> {
        let (ctx, name) = (&self.ctx, self.ctx.name());
        for (index, verdict) in unfired {
            let timer = &due[index];
            match verdict {
                Unfired::Wait => report.retried += 1,
                Unfired::Retry(error) => {
                    let delay = retry_delay(&ctx.runtime, timer.attempts);
                    let retry_at = ctx.clock.now()
                        + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                    within(&ctx.db, ctx.commit_timeout, async |conn| {
                        timers::retry_later(conn, name, &timer.id, retry_at).await
                    })
                    .await?;
                    RuntimeEvent::TimerRetried {
                        domain: name,
                        timer: &timer.id,
                        key: &timer.key,
                        attempts: timer.attempts + 1,
                        error: &error,
                        retry_in: delay,
                    }
                    .record();
                    report.retried += 1;
                }
                Unfired::Dead(code, error) => {
                    let reason = format!("{code}: {error}");
                    within(&ctx.db, ctx.commit_timeout, async |conn| {
                        timers::bury(conn, name, &timer.id, &reason).await
                    })
                    .await?;
                    RuntimeEvent::TimerDead {
                        domain: name,
                        timer: &timer.id,
                        key: &timer.key,
                        reason: code,
                        error: &error,
                    }
                    .record();
                    report.dead += 1;
                }
            }
        }
        Ok(())
    }
}

/// How long a timer that failed `attempts` times before waits for its next attempt: the
/// restart backoff, doubling per attempt.
fn retry_delay(runtime: &crate::settings::RuntimeSettings, attempts: i32) -> std::time::Duration {
    let doublings = u32::try_from(attempts).unwrap_or(0).min(20);
    let delay = runtime.backoff_initial_ms.saturating_mul(1 << doublings);
    std::time::Duration::from_millis(delay.min(runtime.backoff_max_ms))
}

/// The reply stored for an idempotency key, if the request is the same one.
fn replay<R: serde::de::DeserializeOwned>(
    record: CommandRecord,
    idempotency: &Idempotency,
) -> Result<Committed<R>, CommandError> {
    if record.fingerprint != idempotency.fingerprint {
        return Err(CommandError::IdempotencyKeyReused(record.key));
    }
    let mut committed: Committed<R> = serde_json::from_value(record.reply).map_err(|e| {
        CommandError::NotCommitted(Box::new(StoreError::Corrupt(format!(
            "stored reply of idempotency key {:?}: {e}",
            record.key
        ))))
    })?;
    committed.replayed = true;
    tracing::info!(
        idempotency.key = %record.key,
        "command retried with its idempotency key; answering the stored reply"
    );
    Ok(committed)
}

/// A command applied to its entity, waiting for its unit's commit.
struct AppliedCommand<D: Domain> {
    idempotency: Option<Idempotency>,
    committed: Committed<D::Reply>,
    effects: Effects,
    write: EntityWrite,
    traceparent: String,
    reply: Reply<D>,
}

/// Answers the commands that repeated an idempotency key of an earlier command of their unit:
/// with its committed reply (`outcomes`, by position) when it committed and the requests
/// match, else as not committed (the client's retry finds the stored reply, if any).
fn answer_repeats<D: Domain>(
    repeats: Vec<(QueuedCommand<D>, usize)>,
    outcomes: &[(Option<Idempotency>, Option<serde_json::Value>)],
) {
    for (repeat, first) in repeats {
        let answer = match (outcomes.get(first), &repeat.msg.idempotency) {
            (Some((Some(original), Some(reply))), Some(idempotency)) => replay(
                CommandRecord {
                    key: original.key.clone(),
                    fingerprint: original.fingerprint.clone(),
                    reply: reply.clone(),
                },
                idempotency,
            ),
            _ => Err(CommandError::NotCommitted(
                "the command with the same idempotency key was not committed".into(),
            )),
        };
        let _ = repeat.reply.send(answer);
    }
}

/// Files the failures of a unit whose outcome is final: dead ones for the dead-letter stream,
/// the others stay pending and hold back their key.
fn conclude_failures(
    failed: Vec<(usize, String, Failure, bool)>,
    blocked: &mut HashSet<String>,
    out: &mut Outcome,
) {
    for (index, key, failure, dead) in failed {
        if dead {
            // Logged as it failed ("handler failed"), and as it is moved (RuntimeEvent).
            out.dead
                .push((index, failure.dead_letter_code(), failure.to_string()));
        } else {
            blocked.insert(key);
            out.report.left_pending += 1;
        }
    }
}

/// The timers a handler scheduled, as stored; each firing continues the trace of the input
/// that scheduled it.
fn new_timers<'a>(
    scheduled: &'a [ScheduledTimer],
    traceparent: &'a str,
) -> impl Iterator<Item = NewTimer> + 'a {
    scheduled.iter().map(move |t| NewTimer {
        id: t.id.to_string(),
        key: t.key.clone(),
        due: t.due,
        payload: t.payload.to_string(),
        traceparent: Some(traceparent.to_owned()),
    })
}

/// Outbox rows of `emitted`; those without a stream go to the domain's `own_stream`.
fn outbox_events<'a>(
    emitted: impl Iterator<Item = &'a crate::domain::Emitted> + 'a,
    own_stream: &'a str,
    traceparent: &'a str,
) -> impl Iterator<Item = NewOutboxEvent> + 'a {
    emitted.map(move |e| NewOutboxEvent {
        stream: e.stream.as_deref().unwrap_or(own_stream).to_owned(),
        event_id: uuid::Uuid::now_v7(),
        event_type: e.event_type.clone(),
        key: e.key.clone(),
        data: e.data.to_string(),
        traceparent: Some(traceparent.to_owned()),
    })
}
