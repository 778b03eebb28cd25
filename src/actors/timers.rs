//! The timer poller: finds the domain's durable timers that are due and hands them to the
//! processor, which fires each as an input to its entity (see [`FireTimers`]).
//!
//! Timers live in Postgres (`troupe_timer`), written with the effects of the input that
//! scheduled them, so a restart or a crash loses none: the poller of the next start finds them
//! due. It looks every `runtime.timer_poll_ms`, and at once again while it finds full batches
//! of `runtime.timer_batch`; a timer therefore fires at most one poll interval plus one unit
//! after it is due, as long as the domain keeps up with its timers (the `troupe_timers_due`
//! gauge and the `troupe_timer_lateness_seconds` histogram show whether it does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient,
    WrapFuture,
};
use tokio::sync::Notify;

use super::ask::{AskError, ask};
use super::backoff::Backoff;
use super::context::DomainContext;
use super::processor::{FireTimers, ProcessError, Processor, TimerReport};
use super::supervisor::{Child, ChildExited, ExitCause};
use crate::domain::Domain;
use crate::store::StoreError;
use crate::store::pool::within;
use crate::store::timers;
use crate::telemetry::error_chain;

/// Why the timer poller stopped.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// Postgres failed while looking for due timers.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Firing them failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The processor did not answer in time.
    #[error("the processor did not fire the due timers")]
    Processor(#[source] AskError),
}

impl TimerError {
    /// Whether Redis or Postgres being unreachable caused it.
    pub fn is_outage(&self) -> bool {
        match self {
            TimerError::Store(e) => e.is_outage(),
            TimerError::Process(e) => e.is_outage(),
            TimerError::Processor(_) => false,
        }
    }
}

/// One round of the poller: fires up to `runtime.timer_batch` timers due by the domain's clock.
/// `None` when none is due. Tests drive the poller through this.
pub async fn poll_once<D: Domain>(
    ctx: &DomainContext<D>,
    processor: &Addr<Processor<D>>,
) -> Result<Option<TimerReport>, TimerError> {
    let (name, now, limit) = (ctx.name(), ctx.clock.now(), ctx.runtime.timer_batch);
    let due = within(&ctx.db, ctx.commit_timeout, async |conn| {
        timers::due(conn, name, now, limit).await
    })
    .await?;
    if due.is_empty() {
        return Ok(None);
    }
    let report = ask(
        processor,
        FireTimers { timers: due },
        ctx.runtime.ask_timeout(),
    )
    .await
    .map_err(TimerError::Processor)??;
    Ok(Some(report))
}

/// The timer poller of domain `D`.
pub struct TimerPoller<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    processor: Addr<Processor<D>>,
    supervisor: Recipient<ChildExited>,
    stop: Arc<AtomicBool>,
    wakeup: Arc<Notify>,
}

impl<D: Domain> TimerPoller<D> {
    /// A poller handing due timers to `processor`, reporting its exit to `supervisor`.
    pub fn new(
        ctx: Arc<DomainContext<D>>,
        processor: Addr<Processor<D>>,
        supervisor: Recipient<ChildExited>,
    ) -> Self {
        Self {
            ctx,
            processor,
            supervisor,
            stop: Arc::default(),
            wakeup: Arc::default(),
        }
    }
}

impl<D: Domain> Actor for TimerPoller<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let work = run(
            self.ctx.clone(),
            self.processor.clone(),
            self.stop.clone(),
            self.wakeup.clone(),
        );
        ctx.spawn(work.into_actor(self).map(|(result, progressed), act, ctx| {
            act.supervisor.do_send(ChildExited {
                child: Child::Timers,
                progressed,
                outage: result.as_ref().is_err_and(TimerError::is_outage),
                error: result.err().map(|e| Arc::new(e) as ExitCause),
            });
            ctx.stop();
        }));
    }
}

/// Asks the poller to stop after the timers in flight.
#[derive(Debug, Clone, Copy)]
pub struct StopTimers;

impl Message for StopTimers {
    type Result = ();
}

impl<D: Domain> Handler<StopTimers> for TimerPoller<D> {
    type Result = ();
    fn handle(&mut self, _: StopTimers, _: &mut Self::Context) {
        self.stop.store(true, Ordering::SeqCst);
        self.wakeup.notify_one();
    }
}

async fn run<D: Domain>(
    ctx: Arc<DomainContext<D>>,
    processor: Addr<Processor<D>>,
    stop: Arc<AtomicBool>,
    wakeup: Arc<Notify>,
) -> (Result<(), TimerError>, bool) {
    let mut progressed = false;
    let result = async {
        tracing::debug!(domain = ctx.name(), "timer poller started");
        let mut full = false;
        let mut retry = Backoff::new(
            Duration::from_millis(ctx.runtime.backoff_initial_ms),
            Duration::from_millis(ctx.runtime.backoff_max_ms),
        );
        loop {
            // Waits first, also before the first round: the readers, the relay and the stats
            // loop all take their first connections when the domain starts, and a poll at the
            // same moment would only add to that burst.
            if !full {
                let _ = tokio::time::timeout(ctx.runtime.timer_poll(), wakeup.notified()).await;
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let round = match poll_once(&ctx, &processor).await {
                Ok(round) => {
                    retry.reset();
                    round
                }
                // Postgres unreachable, or slow to give a connection: the timers wait in it, so
                // nothing is lost by trying again here, without a restart (readiness already
                // names an unreachable database).
                Err(e) if e.is_outage() => {
                    let delay = retry.next_delay();
                    tracing::warn!(domain = ctx.name(), error = %error_chain(&e), delay_ms = delay.as_millis() as u64, "could not look for due timers; trying again");
                    tokio::time::sleep(delay).await;
                    full = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A round that answered is working (resets the poller's restart backoff).
            progressed = true;
            full = round
                .is_some_and(|r| r.fired + r.gone + r.retried + r.dead >= ctx.runtime.timer_batch);
        }
        tracing::debug!(domain = ctx.name(), "timer poller stopped");
        Ok(())
    }
    .await;
    (result, progressed)
}
