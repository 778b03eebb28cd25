//! A stream reader: one per subscribed stream, consuming it through the domain's consumer group
//! and handing batches to the processor.
//!
//! On every start (first start or supervised restart) it recovers before it reads anything new:
//! first its own pending entries (`XREADGROUP … 0`: delivered to this consumer name before a
//! crash or restart, not acknowledged), then entries abandoned by dead consumers
//! (`XAUTOCLAIM` past `claim_min_idle_ms`). Then it reads new entries (`>`), claiming again
//! every `claim_interval_ms`. While the processor works on one batch it reads the next, and it
//! waits for that batch's report before handing over another: at most one batch in flight and
//! one in hand. Pending entries are only re-read on start, before anything is in flight, so
//! redelivery never races processing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient,
    WrapFuture,
};

use super::backoff::Backoff;
use super::context::{DomainContext, StreamBinding};
use super::processor::{BatchReport, ProcessBatch, ProcessError, Processor};
use super::supervisor::{Child, ChildExited, ExitCause};
use crate::domain::Domain;
use crate::store;
use crate::streams::StreamError;
use crate::streams::entry::{EntryId, StreamEntry};
use crate::streams::group::{ReadFrom, ensure_group};

/// Why a reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// Redis failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// A batch could not be processed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The processor did not take the batch (its mailbox is closed or full).
    #[error("processor unavailable")]
    ProcessorGone(#[source] actix::MailboxError),
    /// The processor did not answer in time.
    #[error("batch not processed within runtime.ask_timeout_ms")]
    ProcessorTimeout,
}

/// How a run of reading new entries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// Asked to stop; the last batch is committed.
    Stopped,
    /// A batch left entries pending: retry them before reading on.
    LeftPending,
}

impl ReaderError {
    /// Whether Redis or Postgres being unreachable caused it.
    pub fn is_outage(&self) -> bool {
        match self {
            ReaderError::Streams(e) => e.is_outage(),
            ReaderError::Process(e) => e.is_outage(),
            ReaderError::ProcessorGone(_) | ReaderError::ProcessorTimeout => false,
        }
    }
}

/// The reader actor of one stream of domain `D`.
pub struct Reader<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    binding: Arc<StreamBinding>,
    processor: Addr<Processor<D>>,
    supervisor: Recipient<ChildExited>,
    stop: Arc<AtomicBool>,
}

impl<D: Domain> Reader<D> {
    /// A reader of `binding` feeding `processor`, reporting its exit to `supervisor`.
    pub fn new(
        ctx: Arc<DomainContext<D>>,
        binding: Arc<StreamBinding>,
        processor: Addr<Processor<D>>,
        supervisor: Recipient<ChildExited>,
    ) -> Self {
        Self {
            ctx,
            binding,
            processor,
            supervisor,
            stop: Arc::default(),
        }
    }
}

impl<D: Domain> Actor for Reader<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let work = ReadLoop {
            ctx: self.ctx.clone(),
            binding: self.binding.clone(),
            processor: self.processor.clone(),
            stop: self.stop.clone(),
            progressed: false,
        };
        let child = Child::Reader(self.binding.name.clone());
        ctx.spawn(
            work.run()
                .into_actor(self)
                .map(move |(result, progressed), act, ctx| {
                    act.supervisor.do_send(ChildExited {
                        child,
                        progressed,
                        outage: result.as_ref().is_err_and(ReaderError::is_outage),
                        error: result.err().map(|e| Arc::new(e) as ExitCause),
                    });
                    ctx.stop();
                }),
        );
    }
}

/// Asks the reader to stop after the batch in flight.
#[derive(Debug, Clone, Copy)]
pub struct StopReading;

impl Message for StopReading {
    type Result = ();
}

impl<D: Domain> Handler<StopReading> for Reader<D> {
    type Result = ();
    fn handle(&mut self, _: StopReading, _: &mut Self::Context) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A batch handed to the processor whose report has not been awaited yet.
type InFlight =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<BatchReport, ReaderError>>>>;

struct ReadLoop<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    binding: Arc<StreamBinding>,
    processor: Addr<Processor<D>>,
    stop: Arc<AtomicBool>,
    progressed: bool,
}

impl<D: Domain> ReadLoop<D> {
    async fn run(mut self) -> (Result<(), ReaderError>, bool) {
        let result = self.run_inner().await;
        (result, self.progressed)
    }

    #[tracing::instrument(skip_all, fields(domain = self.ctx.name(), stream = %self.binding.name, consumer = %self.binding.consumer.name))]
    async fn run_inner(&mut self) -> Result<(), ReaderError> {
        let ctx = self.ctx.clone();
        let runtime = &ctx.runtime;
        let mut conn = self.ctx.redis.blocking(runtime.read_block()).await?;
        ensure_group(
            &mut conn,
            &self.binding.consumer.stream_key,
            &self.binding.consumer.group,
        )
        .await?;

        let mut retry = Backoff::new(
            Duration::from_millis(runtime.backoff_initial_ms),
            Duration::from_millis(runtime.backoff_max_ms),
        );
        loop {
            // Recover until nothing stays pending: failed entries are retried here, in
            // process, with backoff (each re-read raises their delivery counts toward
            // `max_deliveries`), without restarting any actor.
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    tracing::info!("reader stopped");
                    return Ok(());
                }
                // Re-reading pending entries raises their delivery counts, so do it only when
                // Postgres answers: an outage must not use up entries' `max_deliveries`.
                store::ping(&self.ctx.db, self.ctx.commit_timeout)
                    .await
                    .map_err(ProcessError::from)?;
                let mut left_pending = self.recover_own_pending(&mut conn).await?;
                if left_pending == 0 {
                    left_pending = self.claim_abandoned().await?;
                }
                if left_pending == 0 {
                    break;
                }
                let delay = retry.next_delay();
                tracing::warn!(
                    left_pending,
                    delay_ms = delay.as_millis() as u64,
                    "entries failed in their handler; retrying them"
                );
                tokio::time::sleep(delay).await;
            }
            retry.reset();
            tracing::info!("reader recovered; reading new entries");
            if self.read_new(&mut conn).await? == ReadEnd::Stopped {
                tracing::info!("reader stopped");
                return Ok(());
            }
        }
    }

    /// Reads new entries (`>`) until asked to stop or a batch leaves entries pending (then
    /// they are to be retried from the pending list before anything newer).
    async fn read_new(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<ReadEnd, ReaderError> {
        let ctx = self.ctx.clone();
        let runtime = &ctx.runtime;
        // While the processor works on one batch, the next is read: one batch in flight, one in
        // hand, never more.
        let mut in_flight: Option<InFlight> = None;
        let mut last_claim = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if last_claim.elapsed() >= runtime.claim_interval() {
                if self.finish(in_flight.take()).await? > 0 {
                    return Ok(ReadEnd::LeftPending);
                }
                last_claim = Instant::now();
                if self.claim_abandoned().await? > 0 {
                    return Ok(ReadEnd::LeftPending);
                }
            }
            let entries = self
                .binding
                .consumer
                .read(
                    conn,
                    ReadFrom::New,
                    runtime.read_count,
                    Some(runtime.read_block()),
                )
                .await?;
            if self.finish(in_flight.take()).await? > 0 {
                // What was just read goes back to being pending; it is re-read in order.
                return Ok(ReadEnd::LeftPending);
            }
            if entries.is_empty() {
                // Caught up: nothing waits, so there is nothing to be stalled on.
                ctx.progress.progressed(&self.binding.name);
            } else {
                in_flight = Some(self.submit(entries, false));
            }
        }
        self.finish(in_flight.take()).await?;
        Ok(ReadEnd::Stopped)
    }

    /// Re-reads this consumer's own pending entries, oldest first, until none is left unseen or
    /// one stays pending: a later chunk may hold a later entry of the same key, which must not
    /// be applied before it. Returns how many stayed pending.
    async fn recover_own_pending(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<usize, ReaderError> {
        let mut cursor = EntryId::ZERO;
        let mut left_pending = 0;
        let mut recovered = 0;
        loop {
            let entries = self
                .binding
                .consumer
                .read(
                    conn,
                    ReadFrom::OwnPendingAfter(cursor),
                    self.ctx.runtime.read_count,
                    None,
                )
                .await?;
            let Some(last) = entries.last() else { break };
            cursor = last.id;
            recovered += entries.len();
            left_pending = self.process(entries, true).await?.left_pending;
            if left_pending > 0 {
                break;
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, left_pending, "re-read own pending entries");
        }
        Ok(left_pending)
    }

    /// Claims and processes entries left idle past `claim_min_idle_ms` by any consumer, chunk
    /// by chunk, stopping (like [`Self::recover_own_pending`]) at the first chunk where some
    /// stay pending. Returns how many did.
    async fn claim_abandoned(&mut self) -> Result<usize, ReaderError> {
        let mut redis = self.ctx.redis.manager();
        let mut cursor = EntryId::ZERO;
        loop {
            let (next, entries) = self
                .binding
                .consumer
                .autoclaim(
                    &mut redis,
                    self.ctx.runtime.claim_min_idle(),
                    cursor,
                    self.ctx.runtime.read_count,
                )
                .await?;
            if !entries.is_empty() {
                tracing::info!(claimed = entries.len(), "claimed abandoned entries");
                let left_pending = self.process(entries, true).await?.left_pending;
                if left_pending > 0 {
                    return Ok(left_pending);
                }
            }
            if next == EntryId::ZERO {
                return Ok(0);
            }
            cursor = next;
        }
    }

    async fn process(
        &mut self,
        entries: Vec<StreamEntry>,
        redelivered: bool,
    ) -> Result<BatchReport, ReaderError> {
        let report = self.submit(entries, redelivered).await?;
        self.note(&report);
        Ok(report)
    }

    /// Hands a batch to the processor; the returned future resolves with its report.
    fn submit(&self, entries: Vec<StreamEntry>, redelivered: bool) -> InFlight {
        let batch = ProcessBatch {
            binding: self.binding.clone(),
            entries,
            redelivered,
        };
        let request = self.processor.send(batch);
        let timeout = self.ctx.runtime.ask_timeout();
        Box::pin(async move {
            match tokio::time::timeout(timeout, request).await {
                Ok(reply) => Ok(reply.map_err(ReaderError::ProcessorGone)??),
                Err(_) => Err(ReaderError::ProcessorTimeout),
            }
        })
    }

    /// Waits for a submitted batch; returns how many of its entries stay pending.
    async fn finish(&mut self, in_flight: Option<InFlight>) -> Result<usize, ReaderError> {
        let Some(batch) = in_flight else {
            return Ok(0);
        };
        let report = batch.await?;
        self.note(&report);
        Ok(report.left_pending)
    }

    fn note(&mut self, report: &BatchReport) {
        if report.applied > 0
            || report.duplicates > 0
            || report.dead_lettered > 0
            || report.skipped > 0
        {
            self.progressed = true;
        }
    }
}
