//! The domain supervisor: starts the readers, the relay and the timer poller of one domain, restarts them with
//! exponential backoff when they fail, measures consumer lag, and declares the domain failed
//! (visible in readiness and `troupe_domain_up`) when restarts exceed the configured intensity.
//!
//! actix's own `Supervisor` restarts instantly, without limit, and not at all after a panic, so
//! children here report their exit with [`ChildExited`] and the supervisor decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    ResponseActFuture, WrapFuture,
};

use super::backoff::{Backoff, RestartWindow};
use super::context::{DomainContext, StreamBinding};
use super::processor::Processor;
use super::quarantine::Quarantine;
use super::reader::{Reader, StopReading};
use super::relay::{Relay, StopRelaying};
use super::timers::{StopTimers, TimerPoller};
use super::watchdog::Progress;
use crate::domain::Domain;
use crate::store::pool::within;
use crate::store::retention::{self, Retained};
use crate::store::{StoreError, outbox, timers};
use crate::streams::StreamError;
use crate::streams::dead_letter;
use crate::streams::entry::EntryId;
use crate::streams::group::{group_stats, oldest_pending_wait, remove_idle_consumers};
use crate::telemetry::error_chain;
use crate::telemetry::events::{Cause, RuntimeEvent};
use crate::telemetry::metrics::{
    CONSUMER_LAG, CONSUMER_OLDEST_PENDING_SECONDS, CONSUMER_PENDING, OUTBOX_BACKLOG, TIMERS_DUE,
};

/// A supervised child.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Child {
    /// The reader of a stream (logical name).
    Reader(String),
    /// The outbox relay.
    Relay,
    /// The timer poller.
    Timers,
}

impl Child {
    fn label(&self) -> &'static str {
        match self {
            Child::Reader(_) => "reader",
            Child::Relay => "relay",
            Child::Timers => "timers",
        }
    }
}

/// A child stopped, on request (`error` is `None`) or by failure.
#[derive(Debug, Clone)]
pub struct ChildExited {
    /// Which child.
    pub child: Child,
    /// Whether it did useful work since it started (resets its backoff).
    pub progressed: bool,
    /// Whether Redis or Postgres being unreachable stopped it: restarted with backoff for as
    /// long as the outage lasts, without counting toward the restart intensity (readiness
    /// already names the unreachable server, and the domain must resume once it is back).
    pub outage: bool,
    /// Why it failed, with its causes.
    pub error: Option<ExitCause>,
}

/// Why a child failed: its error, causes kept (logged as a chain, never shown to clients).
pub type ExitCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

impl Message for ChildExited {
    type Result = ();
}

/// Lifecycle of a domain, shared with the health checks.
#[derive(Debug)]
pub struct DomainStatus {
    state: AtomicU8,
    reason: Mutex<Option<String>>,
    progress: Arc<Progress>,
    quarantine: Arc<Quarantine>,
}

const FAILED: u8 = 1;

impl DomainStatus {
    /// A running domain whose progress `progress` tracks, with its quarantined keys.
    pub fn new(progress: Arc<Progress>, quarantine: Arc<Quarantine>) -> Self {
        Self {
            state: AtomicU8::new(0),
            reason: Mutex::new(None),
            progress,
            quarantine,
        }
    }

    /// Whether `key`'s stored state does not load (its entity cannot be served).
    pub fn is_quarantined(&self, key: &str) -> bool {
        self.quarantine.reason(key).is_some()
    }

    /// `Err(reason)` while the domain cannot serve: failed for good, or stalled.
    pub fn readiness(&self) -> Result<(), String> {
        self.check()?;
        self.progress.stalled().map_or(Ok(()), Err)
    }

    /// `Err(reason)` once the domain has failed for good.
    pub fn check(&self) -> Result<(), String> {
        if self.state.load(Ordering::SeqCst) == FAILED {
            let reason = self.reason.lock().map(|r| r.clone()).unwrap_or_default();
            return Err(reason.unwrap_or_else(|| "failed".into()));
        }
        Ok(())
    }

    fn fail(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(reason);
        }
        self.state.store(FAILED, Ordering::SeqCst);
    }
}

/// The supervisor of domain `D`.
pub struct DomainSupervisor<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    bindings: Vec<Arc<StreamBinding>>,
    processor: Addr<Processor<D>>,
    readers: HashMap<String, Addr<Reader<D>>>,
    relay: Option<Addr<Relay<D>>>,
    timers: Option<Addr<TimerPoller<D>>>,
    backoff: HashMap<Child, Backoff>,
    restarts: RestartWindow,
    status: Arc<DomainStatus>,
    live: Arc<AtomicUsize>,
    stopping: bool,
}

impl<D: Domain> DomainSupervisor<D> {
    /// A supervisor for the domain's readers and relay, feeding `processor`.
    pub fn new(
        ctx: Arc<DomainContext<D>>,
        processor: Addr<Processor<D>>,
        status: Arc<DomainStatus>,
    ) -> Self {
        let bindings = ctx
            .domain
            .subscriptions()
            .iter()
            .map(|s| Arc::new(ctx.binding(s)))
            .collect();
        let restarts = RestartWindow::new(
            ctx.runtime.max_restarts,
            Duration::from_secs(ctx.runtime.restart_window_seconds),
        );
        Self {
            ctx,
            bindings,
            processor,
            readers: HashMap::new(),
            relay: None,
            timers: None,
            backoff: HashMap::new(),
            restarts,
            status,
            live: Arc::default(),
            stopping: false,
        }
    }

    fn start_child(&mut self, child: &Child, ctx: &mut Context<Self>) {
        let me = ctx.address().recipient();
        match child {
            Child::Reader(stream) => {
                let Some(binding) = self.bindings.iter().find(|b| &b.name == stream).cloned()
                else {
                    return;
                };
                let reader =
                    Reader::new(self.ctx.clone(), binding, self.processor.clone(), me).start();
                self.readers.insert(stream.clone(), reader);
            }
            Child::Relay => self.relay = Some(Relay::new(self.ctx.clone(), me).start()),
            Child::Timers => {
                let poller = TimerPoller::new(self.ctx.clone(), self.processor.clone(), me);
                self.timers = Some(poller.start());
            }
        }
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops the readers and the timer poller (each lets its unit in flight commit) and then,
    /// once they are all gone, the relay, so that it publishes what their last units emitted
    /// before it stops.
    fn stop_children(&mut self) {
        for reader in self.readers.values() {
            reader.do_send(StopReading);
        }
        if let Some(timers) = &self.timers {
            timers.do_send(StopTimers);
        }
        self.stop_relay_once_readers_are_gone();
    }

    fn stop_relay_once_readers_are_gone(&self) {
        let producers_gone = self.readers.is_empty() && self.timers.is_none();
        if let (true, Some(relay)) = (producers_gone, &self.relay) {
            relay.do_send(StopRelaying);
        }
    }

    fn measure(&self, ctx: &mut Context<Self>) {
        let (domain_ctx, bindings) = (self.ctx.clone(), self.bindings.clone());
        ctx.spawn(
            async move {
                if let Err(e) = measure_once(&domain_ctx, &bindings).await {
                    tracing::debug!(domain = domain_ctx.name(), error = %e, "could not measure consumer lag");
                }
            }
            .into_actor(self),
        );
    }
}

impl<D: Domain> Actor for DomainSupervisor<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let children: Vec<Child> = self
            .bindings
            .iter()
            .map(|b| Child::Reader(b.name.clone()))
            .chain([Child::Relay, Child::Timers])
            .collect();
        for child in &children {
            self.start_child(child, ctx);
        }
        ctx.run_interval(self.ctx.runtime.stats_interval(), |act, ctx| {
            act.measure(ctx)
        });
        // The supervisor runs on the domain's home thread, not a partition's, so a handler
        // blocking its partition's thread cannot stop the watchdog.
        let stall_timeout = self.ctx.runtime.stall_timeout();
        let every = (stall_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        self.ctx.progress.all_progressed();
        ctx.run_interval(every, move |act, _| {
            act.ctx.progress.watch(act.ctx.name(), stall_timeout);
        });
        RuntimeEvent::DomainStarted {
            domain: self.ctx.name(),
            streams: self.bindings.len(),
        }
        .record();
    }
}

impl<D: Domain> Handler<ChildExited> for DomainSupervisor<D> {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        match &msg.child {
            Child::Reader(stream) => {
                self.readers.remove(stream);
            }
            Child::Relay => self.relay = None,
            Child::Timers => self.timers = None,
        }
        let domain = self.ctx.name();
        if self.stopping {
            self.stop_relay_once_readers_are_gone();
            return;
        }
        let backoff = self.backoff.entry(msg.child.clone()).or_insert_with(|| {
            Backoff::new(
                Duration::from_millis(self.ctx.runtime.backoff_initial_ms),
                Duration::from_millis(self.ctx.runtime.backoff_max_ms),
            )
        });
        if msg.progressed {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if !msg.outage && !self.restarts.allow(Instant::now()) {
            // The health endpoints show the reason; the error text (SQL, hosts) stays in the log.
            let reason = format!(
                "more than {} restarts within {} s; the {} failed last (see the log)",
                self.ctx.runtime.max_restarts,
                self.ctx.runtime.restart_window_seconds,
                msg.child.label()
            );
            RuntimeEvent::DomainFailed {
                domain,
                reason: &reason,
                error: msg.error.as_deref().map(|e| e as Cause<'_>),
            }
            .record();
            self.status.fail(reason);
            self.stopping = true;
            self.stop_children();
            return;
        }
        RuntimeEvent::ActorRestarted {
            domain,
            actor: msg.child.label(),
            child: &format!("{:?}", msg.child),
            error: msg.error.as_deref().map(|e| e as Cause<'_>),
            outage: msg.outage,
            delay,
        }
        .record();
        let child = msg.child;
        ctx.run_later(delay, move |act, ctx| {
            if !act.stopping {
                act.start_child(&child, ctx);
            }
        });
    }
}

/// Stops reading, lets the batch in flight commit, publishes the outbox, and resolves when every
/// child has stopped (or `grace` has passed).
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// Longest wait.
    pub grace: Duration,
}

impl Message for Shutdown {
    type Result = ();
}

impl<D: Domain> Handler<Shutdown> for DomainSupervisor<D> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        self.stop_children();
        let (live, domain) = (self.live.clone(), self.ctx.name());
        Box::pin(
            async move {
                let deadline = Instant::now() + msg.grace;
                while live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tracing::info!(
                    domain,
                    unfinished = live.load(Ordering::SeqCst),
                    "domain stopped"
                );
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// Rows deleted per pruning statement.
const PRUNE_BATCH: i64 = 5_000;

/// Deletes records past their retention window — applied-input ids and command replies
/// (`runtime.dedupe_window_seconds`), published outbox rows (`runtime.outbox_retention_seconds`),
/// dead timers (`runtime.dead_letter_retention_seconds`) — in statements of [`PRUNE_BATCH`] rows, each bounded by the commit timeout, for at most
/// half a stats interval per round (enough to outpace ~100,000 inputs/s; a backlog is caught up
/// over the following rounds).
async fn prune_retained<D: Domain>(ctx: &DomainContext<D>) -> Result<(), StoreError> {
    let budget = ctx.runtime.stats_interval() / 2;
    let started = Instant::now();
    let kinds = [
        (Retained::AppliedInputs, ctx.runtime.dedupe_window_seconds),
        (Retained::CommandReplies, ctx.runtime.dedupe_window_seconds),
        (
            Retained::PublishedEvents,
            ctx.runtime.outbox_retention_seconds,
        ),
        (
            Retained::DeadTimers,
            ctx.runtime.dead_letter_retention_seconds,
        ),
    ];
    for (kind, window) in kinds {
        let mut pruned = 0;
        loop {
            let n = within(&ctx.db, ctx.commit_timeout, async |conn| {
                retention::prune(conn, kind, ctx.name(), window, PRUNE_BATCH).await
            })
            .await?;
            pruned += n;
            if (n as i64) < PRUNE_BATCH || started.elapsed() >= budget {
                break;
            }
        }
        if pruned > 0 {
            tracing::debug!(
                domain = ctx.name(),
                records = kind.label(),
                pruned,
                "pruned records past their retention window"
            );
        }
    }
    Ok(())
}

/// Bounds what a stream binding leaves behind in Redis: dead letters past
/// `runtime.dead_letter_retention_seconds` or beyond `runtime.dead_letter_max_len`, and
/// consumers of the domain's group idle past `runtime.consumer_idle_grace_seconds` that own
/// nothing (instances that went away).
async fn tidy_stream<D: Domain>(
    ctx: &DomainContext<D>,
    binding: &StreamBinding,
    redis: &mut redis::aio::ConnectionManager,
    now_ms: u64,
) -> Result<(), StreamError> {
    let rt = &ctx.runtime;
    let keep_after = EntryId {
        ms: now_ms.saturating_sub(rt.dead_letter_retention_seconds.saturating_mul(1000)),
        seq: 0,
    };
    let trimmed =
        dead_letter::trim(redis, &binding.dlq_key, keep_after, rt.dead_letter_max_len).await?;
    RuntimeEvent::DeadLettersTrimmed {
        domain: ctx.name(),
        stream: &binding.name,
        count: trimmed,
    }
    .record();
    let c = &binding.consumer;
    let removed = remove_idle_consumers(
        redis,
        &c.stream_key,
        &c.group,
        &c.name,
        Duration::from_secs(rt.consumer_idle_grace_seconds),
    )
    .await?;
    for consumer in &removed {
        RuntimeEvent::ConsumerRemoved {
            domain: ctx.name(),
            stream: &binding.name,
            consumer,
        }
        .record();
    }
    Ok(())
}

async fn measure_once<D: Domain>(
    ctx: &DomainContext<D>,
    bindings: &[Arc<StreamBinding>],
) -> Result<(), String> {
    let mut redis = ctx.redis.manager();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Redis first: lag and pending matter most while Postgres is down.
    for b in bindings {
        let stats = match group_stats(&mut redis, &b.consumer.stream_key).await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(domain = ctx.name(), stream = %b.name, error = %e, "could not read group stats");
                continue;
            }
        };
        let Some(g) = stats.get(&b.consumer.group) else {
            continue;
        };
        let labels = [
            ("domain", ctx.name().to_owned()),
            ("stream", b.name.clone()),
        ];
        // Redis cannot always tell the lag (entries deleted mid-stream): NaN, not a false 0.
        metrics::gauge!(CONSUMER_LAG, &labels).set(g.lag.map_or(f64::NAN, |l| l as f64));
        metrics::gauge!(CONSUMER_PENDING, &labels).set(g.pending as f64);
        let waited = oldest_pending_wait(&mut redis, &b.consumer.stream_key, &b.consumer.group)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(domain = ctx.name(), stream = %b.name, error = %e, "could not read the oldest pending entry");
                None
            });
        metrics::gauge!(CONSUMER_OLDEST_PENDING_SECONDS, &labels)
            .set(waited.map_or(0.0, |w| w.as_secs_f64()));
        if let Err(e) = tidy_stream(ctx, b, &mut redis, now_ms).await {
            tracing::warn!(domain = ctx.name(), stream = %b.name, error = %error_chain(&e), "could not trim dead letters or remove idle consumers");
        }
    }
    // The backlog first: it matters most when pruning is what fails.
    let backlog = within(&ctx.db, ctx.commit_timeout, async |conn| {
        outbox::backlog(conn, ctx.name()).await
    })
    .await
    .map_err(|e| error_chain(&e))?;
    metrics::gauge!(OUTBOX_BACKLOG, "domain" => ctx.name()).set(backlog as f64);
    let now = ctx.clock.now();
    let due = within(&ctx.db, ctx.commit_timeout, async |conn| {
        timers::backlog(conn, ctx.name(), now).await
    })
    .await
    .map_err(|e| error_chain(&e))?;
    metrics::gauge!(TIMERS_DUE, "domain" => ctx.name()).set(due as f64);
    if let Err(e) = prune_retained(ctx).await {
        // Retried next round; an outage is already named by readiness.
        if e.is_outage() {
            tracing::debug!(domain = ctx.name(), error = %error_chain(&e), "could not prune retained records");
        } else {
            tracing::warn!(domain = ctx.name(), error = %error_chain(&e), "could not prune retained records");
        }
    }
    Ok(())
}
