//! The outbox relay: publishes committed events from Postgres to the domain's output stream,
//! exactly once (see [`crate::streams::outbox_relay`]), and trims that stream.

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
use crate::store::{StoreError, outbox};
use crate::streams::StreamError;
use crate::streams::entry::EntryId;
use crate::streams::outbox_relay::{publish, trim};
use crate::telemetry::metrics::OUTBOX_PUBLISHED_TOTAL;

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
}

impl RelayError {
    /// Whether Redis or Postgres being unreachable caused it.
    pub fn is_outage(&self) -> bool {
        match self {
            RelayError::Store(e) => e.is_outage(),
            RelayError::Streams(e) => e.is_outage(),
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
    let mut last_trim = Instant::now();
    loop {
        // Publish until the outbox is empty, then wait for a commit or the interval.
        while relay_once(ctx).await? > 0 {
            *progressed = true;
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

/// Publishes one batch of outbox rows and deletes them; returns how many rows it handled.
pub async fn relay_once<D: Domain>(ctx: &DomainContext<D>) -> Result<usize, RelayError> {
    let mut conn = ctx.db.get().await.map_err(StoreError::from)?;
    let batch = outbox::next_batch(&mut conn, ctx.name(), ctx.runtime.relay_batch).await?;
    let Some(last) = batch.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let mut redis = ctx.redis.manager();
    let stream_key = ctx.keys.stream(&ctx.output_stream());
    let published = publish(&mut redis, &stream_key, &ctx.relay_marker_key(), &batch).await?;
    ctx.faults.reached(CrashPoint::AfterPublishBeforeMark);
    outbox::delete_through(&mut conn, ctx.name(), last).await?;
    metrics::counter!(OUTBOX_PUBLISHED_TOTAL, "domain" => ctx.name()).increment(published);
    if published < batch.len() as u64 {
        tracing::info!(
            skipped = batch.len() as u64 - published,
            "outbox rows were already published before a restart"
        );
    }
    Ok(batch.len())
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
