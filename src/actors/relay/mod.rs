//! The outbox relay: publishes committed events from Postgres to the domain's output streams,
//! exactly once (see [`crate::streams::outbox_relay`]), publishes them again when Redis comes
//! back behind, waits for Redis's append-only file where it can (`WAITAOF`), and trims that
//! stream on a timer.

mod reconcile;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient,
    WrapFuture,
};

use super::context::DomainContext;
use super::supervisor::{Child, ChildExited, ExitCause};
use crate::domain::Domain;
use crate::settings::CrashPoint;
use redis::aio::MultiplexedConnection;

use crate::store::pool::Dedicated;
use crate::store::{StoreError, outbox};
use crate::streams::StreamError;
use crate::streams::entry::EntryId;
use crate::streams::outbox_relay::{
    Marker, OutgoingEvent, Published, probe_waitaof, publish, read_marker, replace_marker, trim,
    wait_aof,
};
use crate::telemetry::error_chain;
use crate::telemetry::events::{Reconciliation, RuntimeEvent};
use reconcile::{Reconcile, reconcile};

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// Redis did not confirm within the timeout that published events reached its
    /// append-only file. The relay restarts; Redis's marker is ahead of the outbox then, so the
    /// rows are recorded as published, and should Redis lose them after all, the retained rows
    /// are published again when the relay finds Redis behind.
    #[error("Redis did not write the published events to its append-only file in time")]
    NotDurable,
    /// Redis's marker kept moving under the relay (another relay of the same domain?).
    #[error("the relay marker moved again right after reconciling; is a second relay running?")]
    MarkerUnstable,
}

impl RelayError {
    /// Whether Redis or Postgres being unreachable caused it.
    pub fn is_outage(&self) -> bool {
        match self {
            RelayError::Store(e) => e.is_outage(),
            RelayError::Streams(e) => e.is_outage(),
            RelayError::NotDurable => true,
            RelayError::MarkerUnstable => false,
        }
    }
}

/// The relay actor of domain `D`.
pub struct Relay<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    supervisor: Recipient<ChildExited>,
    stop: Arc<AtomicBool>,
}

impl<D: Domain> Relay<D> {
    /// A relay reporting its exit to `supervisor`.
    pub fn new(ctx: Arc<DomainContext<D>>, supervisor: Recipient<ChildExited>) -> Self {
        Self {
            ctx,
            supervisor,
            stop: Arc::default(),
        }
    }
}

impl<D: Domain> Actor for Relay<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (domain_ctx, stop) = (self.ctx.clone(), self.stop.clone());
        ctx.spawn(
            run(domain_ctx, stop)
                .into_actor(self)
                .map(|(result, progressed), act, ctx| {
                    act.supervisor.do_send(ChildExited {
                        child: Child::Relay,
                        progressed,
                        outage: result.as_ref().is_err_and(RelayError::is_outage),
                        error: result.err().map(|e| Arc::new(e) as ExitCause),
                    });
                    ctx.stop();
                }),
        );
    }
}

/// Asks the relay to publish what is committed and stop.
#[derive(Debug, Clone, Copy)]
pub struct StopRelaying;

impl Message for StopRelaying {
    type Result = ();
}

impl<D: Domain> Handler<StopRelaying> for Relay<D> {
    type Result = ();
    fn handle(&mut self, _: StopRelaying, _: &mut Self::Context) {
        self.stop.store(true, Ordering::SeqCst);
        self.ctx.relay_wakeup.notify_one();
    }
}

const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// What one relay round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing waits to be published.
    Idle,
    /// Published this many events (and recorded them as published).
    Published(usize),
    /// Redis's marker was not where expected; the relay reconciled it with the outbox.
    Reconciled,
}

/// The relay of one domain while it leads: its own Postgres session (holding the relay lock)
/// and its own Redis connection (`WAITAOF` blocks its connection, and waits for the writes of
/// that connection only), and where publication stands.
pub struct Publisher<'a, D: Domain> {
    ctx: &'a DomainContext<D>,
    db: Dedicated,
    redis: MultiplexedConnection,
    wait_aof: bool,
    /// The marker Redis should hold; the relay publishes the rows after it.
    expected: Marker,
}

async fn run<D: Domain>(
    ctx: Arc<DomainContext<D>>,
    stop: Arc<AtomicBool>,
) -> (Result<(), RelayError>, bool) {
    let mut progressed = false;
    let result = relay_loop(&ctx, &stop, &mut progressed).await;
    (result, progressed)
}

async fn relay_loop<D: Domain>(
    ctx: &DomainContext<D>,
    stop: &AtomicBool,
    progressed: &mut bool,
) -> Result<(), RelayError> {
    let Some(mut publisher) = Publisher::lead(ctx, stop).await? else {
        return Ok(());
    };
    let mut last_trim = Instant::now();
    loop {
        // Publish until the outbox is empty, then wait for a commit or the interval; trim on
        // the timer whatever the backlog, so a busy domain's stream is bounded too.
        let mut reconciled = false;
        loop {
            match publisher.round().await? {
                Round::Idle => {
                    // Caught up: a relay that gets this far is working (resets its backoff).
                    *progressed = true;
                    break;
                }
                Round::Published(_) => {
                    *progressed = true;
                    reconciled = false;
                }
                Round::Reconciled if reconciled => return Err(RelayError::MarkerUnstable),
                Round::Reconciled => reconciled = true,
            }
            trim_when_due(ctx, &mut last_trim).await?;
        }
        trim_when_due(ctx, &mut last_trim).await?;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _ =
            tokio::time::timeout(ctx.runtime.relay_interval(), ctx.relay_wakeup.notified()).await;
        // A Redis that went back while nothing was emitted is noticed now, not at the next
        // event (by then the retention window may have passed).
        publisher.check_marker().await?;
    }
}

impl<'a, D: Domain> Publisher<'a, D> {
    /// Waits until this relay holds the domain's relay lock (another instance's relay may hold
    /// it), then finds out whether Redis supports `WAITAOF` and reconciles its marker with the
    /// outbox. `None` when asked to stop first.
    pub async fn lead(
        ctx: &'a DomainContext<D>,
        stop: &AtomicBool,
    ) -> Result<Option<Self>, RelayError> {
        let domain = ctx.name();
        let mut db = Dedicated::take(&ctx.db).await?;
        let limit = ctx.commit_timeout;
        db.run(limit, async |conn| {
            outbox::prepare_relay_session(conn, limit).await
        })
        .await?;
        let mut waiting = false;
        while !db
            .run(ctx.commit_timeout, async |conn| {
                outbox::try_lead_relay(conn, domain).await
            })
            .await?
        {
            if !waiting {
                tracing::info!(
                    domain,
                    "another relay publishes this domain's events; standing by"
                );
                waiting = true;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            // StopRelaying wakes this wait too.
            let _ = tokio::time::timeout(
                ctx.runtime.relay_interval() * 5,
                ctx.relay_wakeup.notified(),
            )
            .await;
        }
        if waiting {
            tracing::info!(
                domain,
                "this instance's relay now publishes the domain's events"
            );
        }
        // WAITAOF waits up to the commit timeout; the connection's own timeout is above it.
        let mut redis = ctx.redis.blocking(ctx.commit_timeout).await?;
        let wait_aof = ctx.runtime.relay_wait_aof && supports_waitaof(domain, &mut redis).await?;
        let mut publisher = Self {
            ctx,
            db,
            redis,
            wait_aof,
            expected: Marker::default(),
        };
        publisher.expected = publisher.reconcile_marker().await?;
        Ok(Some(publisher))
    }

    /// Publishes the next batch after the expected marker and records it as published (the
    /// rows stay in the outbox for `runtime.outbox_retention_seconds`).
    pub async fn round(&mut self) -> Result<Round, RelayError> {
        let (ctx, domain) = (self.ctx, self.ctx.name());
        let after = self.expected.seq;
        let batch = self
            .db
            .run(ctx.commit_timeout, async |conn| {
                outbox::next_batch(conn, domain, after, ctx.runtime.relay_batch).await
            })
            .await?;
        let batch: Vec<OutgoingEvent> = batch.into_iter().map(|row| outgoing(ctx, row)).collect();
        let Some(last) = batch.last() else {
            return Ok(Round::Idle);
        };
        let marker_key = ctx.relay_marker_key();
        match publish(&mut self.redis, &marker_key, &self.expected, &batch).await? {
            Published::MarkerMoved => {
                self.expected = self.reconcile_marker().await?;
                return Ok(Round::Reconciled);
            }
            Published::Appended(count) => RuntimeEvent::Published {
                domain,
                count,
                republished: batch.iter().filter(|e| e.republished).count() as u64,
            }
            .record(),
        }
        if self.wait_aof && !wait_aof(&mut self.redis, ctx.commit_timeout).await? {
            return Err(RelayError::NotDurable);
        }
        ctx.faults.reached(CrashPoint::AfterPublishBeforeMark);
        let through = last.seq;
        self.db
            .run(ctx.commit_timeout, async |conn| {
                outbox::mark_published(conn, domain, through).await
            })
            .await?;
        self.expected = Marker {
            seq: last.seq,
            event_id: last.event_id.clone(),
        };
        Ok(Round::Published(batch.len()))
    }

    /// Reconciles when Redis's marker is not the expected one.
    async fn check_marker(&mut self) -> Result<(), RelayError> {
        let (raw, _) = read_marker(&mut self.redis, &self.ctx.relay_marker_key()).await?;
        if !holds(raw.as_deref(), &self.expected) {
            self.expected = self.reconcile_marker().await?;
        }
        Ok(())
    }

    /// Compares Redis's marker with the outbox, repairs whichever side is off, and returns the
    /// marker Redis now holds (in its canonical form: the publish script compares strings).
    async fn reconcile_marker(&mut self) -> Result<Marker, RelayError> {
        for _ in 0..3 {
            let (raw, marker) = read_marker(&mut self.redis, &self.ctx.relay_marker_key()).await?;
            let target = self.plan(marker.as_ref()).await?;
            if holds(raw.as_deref(), &target) {
                return Ok(target);
            }
            let key = self.ctx.relay_marker_key();
            if replace_marker(&mut self.redis, &key, raw.as_deref(), &target).await? {
                return Ok(target);
            }
            // Someone moved the marker between reading and writing it: look again.
        }
        Err(RelayError::MarkerUnstable)
    }

    /// Decides and carries out the Postgres side of reconciling `marker`; returns the marker
    /// Redis must hold afterwards.
    async fn plan(&mut self, marker: Option<&Marker>) -> Result<Marker, RelayError> {
        let (ctx, domain) = (self.ctx, self.ctx.name());
        let marker_id = marker.map(|m| m.event_id.clone());
        let view = self
            .db
            .run(ctx.commit_timeout, async |conn| {
                outbox::view(conn, domain, marker_id.as_deref()).await
            })
            .await?;
        let marker_seq = marker.map_or(0, |m| m.seq);
        let published_seq = view.last_published.as_ref().map_or(0, |l| l.0);
        let (how, target) = match reconcile(marker, &view) {
            Reconcile::InStep(m) => return Ok(m),
            Reconcile::Republish { after } => (
                Reconciliation::RedisBehind {
                    marker_seq: after.seq,
                    published_seq,
                },
                after,
            ),
            Reconcile::RecordThrough(m) => {
                self.record_through(m.seq).await?;
                (Reconciliation::RecordThrough { marker_seq: m.seq }, m)
            }
            Reconcile::Upgrade(m) => {
                self.record_through(m.seq).await?;
                (Reconciliation::Upgrade { marker_seq: m.seq }, m)
            }
            Reconcile::PostgresWentBack { to } => (
                Reconciliation::PostgresWentBack {
                    marker_seq,
                    moved_to: to.seq,
                },
                to,
            ),
            Reconcile::RepublishAll => (
                Reconciliation::RepublishAll {
                    marker_seq,
                    published_seq,
                },
                Marker::default(),
            ),
        };
        RuntimeEvent::Reconciled { domain, how }.record();
        Ok(target)
    }

    async fn record_through(&mut self, seq: i64) -> Result<(), RelayError> {
        let (ctx, domain) = (self.ctx, self.ctx.name());
        self.db
            .run(ctx.commit_timeout, async |conn| {
                outbox::mark_published(conn, domain, seq).await
            })
            .await?;
        Ok(())
    }
}

/// Whether the stored marker `raw` is `marker` in the form the publish script expects (no
/// marker at all is the same as the empty one).
fn holds(raw: Option<&str>, marker: &Marker) -> bool {
    match raw {
        Some(raw) => raw == marker.encode(),
        None => *marker == Marker::default(),
    }
}

/// Whether this Redis can confirm append-only writes; logs why not.
async fn supports_waitaof(
    domain: &str,
    redis: &mut MultiplexedConnection,
) -> Result<bool, RelayError> {
    match probe_waitaof(redis).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_outage() => Err(e.into()),
        Err(e) => {
            tracing::info!(
                domain,
                reason = %error_chain(&e),
                "Redis cannot confirm append-only writes (WAITAOF needs Redis 7.2 and appendonly yes); \
                 events published in Redis's last unsynced second can be lost and are published again \
                 from the retained outbox when the relay notices"
            );
            Ok(false)
        }
    }
}

async fn trim_when_due<D: Domain>(
    ctx: &DomainContext<D>,
    last_trim: &mut Instant,
) -> Result<(), RelayError> {
    if last_trim.elapsed() >= TRIM_INTERVAL {
        *last_trim = Instant::now();
        trim_output(ctx).await?;
    }
    Ok(())
}

async fn trim_output<D: Domain>(ctx: &DomainContext<D>) -> Result<(), RelayError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let keep_after = EntryId {
        ms: now_ms.saturating_sub(ctx.runtime.output_retention_seconds * 1000),
        seq: 0,
    };
    let mut redis = ctx.redis.manager();
    for stream in ctx.output_streams() {
        let removed = trim(&mut redis, &ctx.keys.stream(&stream), keep_after).await?;
        if removed > 0 {
            tracing::debug!(stream, removed, "trimmed output stream");
        }
    }
    Ok(())
}

/// The row as the stream's publisher takes it (the store and the stream adapters do not know
/// each other's types).
fn outgoing<D: Domain>(ctx: &DomainContext<D>, row: outbox::PendingEvent) -> OutgoingEvent {
    OutgoingEvent {
        seq: row.seq,
        stream_key: ctx.keys.stream(&row.stream),
        event_id: row.event_id,
        event_type: row.event_type,
        key: row.key,
        data: row.data,
        ts: row.ts,
        traceparent: row.traceparent,
        republished: row.published,
    }
}
