//! The outbox relay: publishes committed events from Postgres to the domain's output stream,
//! exactly once (see [`crate::streams::outbox_relay`]), publishes them again when Redis comes
//! back behind, waits for Redis's append-only file where it can (`WAITAOF`), and trims that
//! stream on a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient,
    WrapFuture,
};

use super::context::DomainContext;
use super::supervisor::{Child, ChildExited};
use crate::domain::Domain;
use crate::settings::CrashPoint;
use crate::store::pool::within;
use crate::store::{StoreError, outbox};
use crate::streams::StreamError;
use crate::streams::entry::EntryId;
use crate::streams::outbox_relay::{
    Marker, Published, Reconcile, probe_waitaof, publish, read_marker, reconcile, set_marker, trim,
    wait_aof,
};
use crate::telemetry::error_chain;
use crate::telemetry::metrics::{
    OUTBOX_PUBLISHED_TOTAL, OUTBOX_REPUBLISHED_TOTAL, RELAY_RECONCILED_TOTAL,
};

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
    /// append-only file; they are not recorded as published and go out again.
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
                        error: result.err().map(|e| e.to_string()),
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

/// The relay's view of where publication stands.
#[derive(Debug, Clone)]
pub struct RelayPosition {
    /// The marker Redis should hold: the last event recorded as published.
    pub expected: Marker,
    /// Whether to wait for Redis's append-only file after each publication.
    pub wait_aof: bool,
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
    let mut position = start(ctx).await?;
    let mut last_trim = Instant::now();
    loop {
        // Publish until the outbox is empty, then wait for a commit or the interval; trim on
        // the timer whatever the backlog, so a busy domain's stream is bounded too.
        let mut reconciled = false;
        loop {
            match relay_once(ctx, &mut position).await? {
                Round::Idle => break,
                Round::Published(_) => {
                    *progressed = true;
                    reconciled = false;
                }
                Round::Reconciled if reconciled => return Err(RelayError::MarkerUnstable),
                Round::Reconciled => reconciled = true,
            }
            if last_trim.elapsed() >= TRIM_INTERVAL {
                last_trim = Instant::now();
                trim_output(ctx).await?;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if last_trim.elapsed() >= TRIM_INTERVAL {
            last_trim = Instant::now();
            trim_output(ctx).await?;
        }
        let _ =
            tokio::time::timeout(ctx.runtime.relay_interval(), ctx.relay_wakeup.notified()).await;
    }
}

/// Finds out whether Redis supports `WAITAOF` and reconciles its marker with the outbox.
pub async fn start<D: Domain>(ctx: &DomainContext<D>) -> Result<RelayPosition, RelayError> {
    let wait_aof = if ctx.runtime.relay_wait_aof {
        match probe_waitaof(&mut ctx.redis.manager()).await {
            Ok(()) => true,
            Err(e) if e.is_outage() => return Err(e.into()),
            Err(e) => {
                tracing::info!(
                    domain = ctx.name(),
                    reason = %error_chain(&e),
                    "Redis cannot confirm append-only writes (WAITAOF needs Redis 7.2 and appendonly yes); \
                     events published in Redis's last unsynced second can be lost and are published again \
                     from the retained outbox when the relay notices"
                );
                false
            }
        }
    } else {
        false
    };
    Ok(RelayPosition {
        expected: reconcile_marker(ctx).await?,
        wait_aof,
    })
}

/// Compares Redis's marker with the outbox, repairs whichever side is off, and returns the
/// marker Redis now holds.
async fn reconcile_marker<D: Domain>(ctx: &DomainContext<D>) -> Result<Marker, RelayError> {
    let (domain, key) = (ctx.name(), ctx.relay_marker_key());
    let mut redis = ctx.redis.manager();
    let marker = read_marker(&mut redis, &key).await?;
    let at = marker.as_ref().map_or(0, |m| m.seq);
    let view = within(&ctx.db, ctx.commit_timeout, async |conn| {
        outbox::view(conn, domain, at).await
    })
    .await?;
    let plan = reconcile(marker.as_ref(), &view);
    let (outcome, marker) = match plan {
        Reconcile::InStep(m) => return Ok(m),
        Reconcile::Republish { after } => {
            let n = unmark_after(ctx, after.seq).await?;
            set_marker(&mut redis, &key, &after).await?;
            tracing::warn!(domain, marker_seq = after.seq, published_seq = ?view.last_published.as_ref().map(|l| l.0), republishing = n,
                "Redis is behind what was published (it lost writes or was restored); publishing the retained events after its marker again");
            ("redis_behind", after)
        }
        Reconcile::RecordThrough(m) => {
            within(&ctx.db, ctx.commit_timeout, async |conn| {
                outbox::mark_published(conn, domain, m.seq).await
            })
            .await?;
            tracing::info!(
                domain,
                marker_seq = m.seq,
                "events published before a restart are recorded as published"
            );
            ("record_through", m)
        }
        Reconcile::PostgresWentBack { to } => {
            set_marker(&mut redis, &key, &to).await?;
            tracing::error!(
                domain,
                marker_seq = at,
                moved_to = to.seq,
                "Redis's relay marker names an event the outbox does not hold at that position: Postgres went back \
                 (restore, reset or lost commits); moved the marker down so new events are not skipped"
            );
            ("postgres_went_back", to)
        }
        Reconcile::RepublishAll => {
            let n = unmark_after(ctx, 0).await?;
            set_marker(&mut redis, &key, &Marker::default()).await?;
            tracing::error!(
                domain,
                marker_seq = at,
                republishing = n,
                "the outbox no longer holds the event at Redis's marker (Redis behind by more than \
                 runtime.outbox_retention_seconds?); publishing every retained event again; older ones may be missing"
            );
            ("republish_all", Marker::default())
        }
    };
    metrics::counter!(RELAY_RECONCILED_TOTAL, "domain" => domain, "outcome" => outcome)
        .increment(1);
    Ok(marker)
}

async fn unmark_after<D: Domain>(ctx: &DomainContext<D>, seq: i64) -> Result<usize, RelayError> {
    let n = within(&ctx.db, ctx.commit_timeout, async |conn| {
        outbox::unmark_after(conn, ctx.name(), seq).await
    })
    .await?;
    metrics::counter!(OUTBOX_REPUBLISHED_TOTAL, "domain" => ctx.name()).increment(n as u64);
    Ok(n)
}

/// Publishes one batch of outbox rows and records them as published (they stay in the outbox
/// for `runtime.outbox_retention_seconds`).
pub async fn relay_once<D: Domain>(
    ctx: &DomainContext<D>,
    position: &mut RelayPosition,
) -> Result<Round, RelayError> {
    let domain = ctx.name();
    let batch = within(&ctx.db, ctx.commit_timeout, async |conn| {
        outbox::next_batch(conn, domain, ctx.runtime.relay_batch).await
    })
    .await?;
    let Some(last) = batch.last() else {
        return Ok(Round::Idle);
    };
    let mut redis = ctx.redis.manager();
    let stream_key = ctx.keys.stream(&ctx.output_stream());
    let marker_key = ctx.relay_marker_key();
    match publish(
        &mut redis,
        &stream_key,
        &marker_key,
        &position.expected,
        &batch,
    )
    .await?
    {
        Published::MarkerMoved => {
            position.expected = reconcile_marker(ctx).await?;
            return Ok(Round::Reconciled);
        }
        Published::Appended(n) => {
            metrics::counter!(OUTBOX_PUBLISHED_TOTAL, "domain" => domain).increment(n);
        }
    }
    if position.wait_aof && !wait_aof(&mut redis, ctx.commit_timeout).await? {
        return Err(RelayError::NotDurable);
    }
    ctx.faults.reached(CrashPoint::AfterPublishBeforeMark);
    within(&ctx.db, ctx.commit_timeout, async |conn| {
        outbox::mark_published(conn, domain, last.seq).await
    })
    .await?;
    position.expected = Marker {
        seq: last.seq,
        event_id: last.event_id.clone(),
    };
    Ok(Round::Published(batch.len()))
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
    let removed = trim(
        &mut redis,
        &ctx.keys.stream(&ctx.output_stream()),
        keep_after,
    )
    .await?;
    if removed > 0 {
        tracing::debug!(removed, "trimmed output stream");
    }
    Ok(())
}
