//! The processor: turns one batch of stream entries (or one command) into one unit of work —
//! applied by the partitions, committed to Postgres in one transaction with the applied-input
//! record and the emitted events, and only then acknowledged.
//!
//! Units run one at a time per domain (`AtomicResponse`), so in-memory state is always
//! "committed plus the unit in flight", and a failed commit is undone exactly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, Message, WrapFuture};
use futures_util::future::join_all;

use super::context::{DomainContext, StreamBinding};
use super::partition::{
    ApplyCommand, ApplyEvents, EventItem, ItemOutcome, Partition, Refresh, Settle, partition_of,
};
use super::runtime::restore_entity;
use crate::domain::envelope::{child_traceparent, trace_id};
use crate::domain::{
    Domain, DomainError, Effects, Envelope, Failure, MalformedEntry, decode_event, route,
};
use crate::settings::CrashPoint;
use crate::store::batch::{BatchCommit, commit};
use crate::store::outbox::NewOutboxEvent;
use crate::store::pool::within;
use crate::store::{StoreError, applied, entities};
use crate::streams::StreamError;
use crate::streams::dead_letter::{Reason, move_to_dead_letters};
use crate::streams::entry::{EntryId, StreamEntry};
use crate::telemetry::metrics::{BATCH_SIZE, DEAD_LETTERS_TOTAL, EVENTS_TOTAL, PERSIST_SECONDS};

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
    #[error("partition unavailable: {0}")]
    Partition(String),
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
    /// Redelivered entries found already applied, acknowledged without applying.
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
}

struct Inner<D: Domain> {
    ctx: Arc<DomainContext<D>>,
    partitions: Vec<Addr<Partition<D>>>,
    persist_seconds: metrics::Histogram,
    /// Keys written by a unit whose commit reported failure. The commit may have landed all the
    /// same (the connection broke while COMMIT was answered), so memory cannot know their
    /// values: they are reloaded from Postgres before the next unit.
    uncertain: Mutex<HashSet<String>>,
}

impl<D: Domain> Processor<D> {
    /// A processor over `partitions`.
    pub fn new(ctx: Arc<DomainContext<D>>, partitions: Vec<Addr<Partition<D>>>) -> Self {
        let persist_seconds = metrics::histogram!(PERSIST_SECONDS, "domain" => ctx.name());
        Self {
            inner: Arc::new(Inner {
                ctx,
                partitions,
                persist_seconds,
                uncertain: Mutex::default(),
            }),
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
    /// those can be duplicates, so only those are checked against the applied records.
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

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The handler panicked.
    #[error("command failed: {0}")]
    Failed(String),
    /// The runtime could not commit it.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Execute a command against one entity and commit its effects before replying.
pub struct ExecuteCommand<D: Domain> {
    /// Entity key.
    pub key: String,
    /// The command.
    pub command: D::Command,
}

/// A command's reply, once its effects are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<R> {
    /// The domain's reply.
    pub reply: R,
    /// The entity's version after the command.
    pub version: u64,
}

impl<D: Domain> Message for ExecuteCommand<D> {
    type Result = Result<Committed<D::Reply>, CommandError>;
}

impl<D: Domain> Handler<ExecuteCommand<D>> for Processor<D> {
    type Result = AtomicResponse<Self, Result<Committed<D::Reply>, CommandError>>;

    fn handle(&mut self, msg: ExecuteCommand<D>, _: &mut Self::Context) -> Self::Result {
        let inner = self.inner.clone();
        AtomicResponse::new(Box::pin(
            async move { inner.execute(msg).await }
                .into_actor(self)
                .map(|r, _, _| r),
        ))
    }
}

/// A decoded entry on its way to a partition.
struct Candidate<E> {
    index: usize,
    id: EntryId,
    key: String,
    event: E,
    traceparent: String,
    final_attempt: bool,
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
        let mut report = BatchReport::default();
        if entries.is_empty() {
            return Ok(report);
        }
        ctx.faults.reached(CrashPoint::AfterRead);
        self.reload_uncertain().await?;
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
        let delivered = |id: &EntryId| deliveries.get(id).copied().unwrap_or(1);

        // Decode; what cannot be decoded is dead-lettered at once, it will never get better.
        let mut malformed: Vec<(usize, MalformedEntry)> = Vec::new();
        let mut skipped: Vec<EntryId> = Vec::new();
        let mut candidates: Vec<Candidate<D::Event>> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if entry.fields.is_none() {
                malformed.push((index, MalformedEntry::Deleted));
                continue;
            }
            let decoded = Envelope::from_fields(entry.field_pairs()).and_then(|envelope| {
                let event = decode_event::<D>(
                    &binding.handled_types,
                    &envelope.event_type,
                    &envelope.data,
                )?;
                Ok((envelope, event))
            });
            let decoded = decoded.and_then(|(envelope, event)| {
                let key = route(
                    ctx.domain.as_ref(),
                    envelope.key,
                    &envelope.event_type,
                    &event,
                )?;
                Ok((key, envelope.traceparent, event))
            });
            match decoded {
                Ok((key, traceparent, event)) => candidates.push(Candidate {
                    index,
                    id: entry.id,
                    traceparent: child_traceparent(traceparent.as_deref()),
                    key,
                    event,
                    final_attempt: delivered(&entry.id) >= ctx.runtime.max_deliveries,
                }),
                Err(MalformedEntry::UnknownType(_)) if binding.skip_other_types => {
                    skipped.push(entry.id);
                }
                Err(reason) => malformed.push((index, reason)),
            }
        }

        // Only a redelivered entry can have been applied already (crash between commit and ack).
        report.skipped = skipped.len();
        let mut to_ack: Vec<EntryId> = skipped;
        if msg.redelivered && !candidates.is_empty() {
            let ids: Vec<EntryId> = candidates.iter().map(|c| c.id).collect();
            // Bounded like the commit: a Postgres that stops answering is an outage, not a stall.
            let done: HashSet<EntryId> = within(&ctx.db, ctx.commit_timeout, async |conn| {
                applied::already_applied(conn, ctx.name(), &binding.name, &ids).await
            })
            .await?;
            if !done.is_empty() {
                candidates.retain(|c| !done.contains(&c.id));
                report.duplicates = done.len();
                to_ack.extend(done);
            }
        }

        // Apply, each partition its own keys, concurrently.
        let mut per_partition: Vec<Vec<EventItem<D::Event>>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        let mut meta: HashMap<usize, (EntryId, String)> = HashMap::with_capacity(candidates.len());
        for c in candidates {
            meta.insert(c.index, (c.id, c.traceparent.clone()));
            let p = self.partition(&c.key);
            per_partition[p].push(EventItem {
                index: c.index,
                key: c.key,
                event: c.event,
                final_attempt: c.final_attempt,
                traceparent: c.traceparent,
            });
        }
        let involved: Vec<usize> = (0..per_partition.len())
            .filter(|p| !per_partition[*p].is_empty())
            .collect();
        let timeout = ctx.runtime.ask_timeout();
        let asks = per_partition
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(p, items)| {
                tokio::time::timeout(timeout, self.partitions[p].send(ApplyEvents::<D> { items }))
            });
        let mut replies = Vec::with_capacity(involved.len());
        for reply in join_all(asks).await {
            match reply {
                Ok(Ok(reply)) => replies.push(reply),
                Ok(Err(e)) => {
                    return Err(self
                        .abandon(&involved, ProcessError::Partition(e.to_string()))
                        .await);
                }
                Err(_) => {
                    return Err(self
                        .abandon(&involved, ProcessError::Partition("timed out".into()))
                        .await);
                }
            }
        }

        let mut applied_ids = Vec::new();
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let mut notifications = Vec::new();
        let mut failed: Vec<(usize, Failure)> = Vec::new();
        for reply in replies {
            writes.extend(reply.writes);
            for (index, outcome) in reply.outcomes {
                let Some((id, traceparent)) = meta.get(&index) else {
                    continue;
                };
                match outcome {
                    ItemOutcome::Applied(effects) => {
                        applied_ids.push(*id);
                        events.extend(outbox_events(effects.emitted.iter(), traceparent));
                        notifications.extend(effects.notifications);
                    }
                    ItemOutcome::Failed { failure, dead } => {
                        tracing::warn!(entry.id = %id, trace_id = trace_id(traceparent), deliveries = delivered(id), error = %failure, dead, "handler failed");
                        if dead {
                            failed.push((index, failure));
                        } else {
                            report.left_pending += 1;
                        }
                    }
                    ItemOutcome::HeldBack => report.left_pending += 1,
                }
            }
        }

        if !applied_ids.is_empty() {
            let output_stream = ctx.output_stream();
            let unit = BatchCommit {
                domain: ctx.name(),
                stream: Some(&binding.name),
                applied: applied_ids.clone(),
                entities: writes,
                output_stream: &output_stream,
                events,
            };
            self.commit(&unit, &involved).await?;
            ctx.faults.reached(CrashPoint::AfterCommitBeforeAck);
            if !unit.events.is_empty() {
                ctx.relay_wakeup.notify_one();
            }
            for n in notifications {
                let _ = ctx.notifications.send(n);
            }
        } else {
            self.settle(&involved, true).await;
        }
        report.applied = applied_ids.len();
        to_ack.extend(applied_ids);
        binding.consumer.ack(&mut redis, &to_ack).await?;

        for (index, reason) in malformed {
            let entry = &entries[index];
            let error = reason.to_string();
            tracing::warn!(entry.id = %entry.id, reason = reason.code(), error, "dead-lettering malformed entry");
            let r = Reason {
                code: reason.code(),
                error: &error,
                deliveries: delivered(&entry.id),
            };
            move_to_dead_letters(&mut redis, &binding.consumer, &binding.dlq_key, entry, &r)
                .await?;
            metrics::counter!(DEAD_LETTERS_TOTAL, "domain" => ctx.name(), "stream" => binding.name.clone(), "reason" => reason.code()).increment(1);
            report.dead_lettered += 1;
        }
        for (index, failure) in failed {
            let entry = &entries[index];
            let error = failure.to_string();
            tracing::error!(entry.id = %entry.id, deliveries = delivered(&entry.id), error, "dead-lettering entry after max deliveries");
            let r = Reason {
                code: "max_deliveries",
                error: &error,
                deliveries: delivered(&entry.id),
            };
            move_to_dead_letters(&mut redis, &binding.consumer, &binding.dlq_key, entry, &r)
                .await?;
            metrics::counter!(DEAD_LETTERS_TOTAL, "domain" => ctx.name(), "stream" => binding.name.clone(), "reason" => "max_deliveries").increment(1);
            report.dead_lettered += 1;
        }

        let count = |outcome: &'static str, n: usize| {
            if n > 0 {
                metrics::counter!(EVENTS_TOTAL, "domain" => ctx.name(), "stream" => binding.name.clone(), "outcome" => outcome)
                    .increment(n as u64);
            }
        };
        count("applied", report.applied);
        count("duplicate", report.duplicates);
        count("dead_lettered", report.dead_lettered);
        count("failed", report.left_pending);
        count("skipped", report.skipped);
        Ok(report)
    }

    /// Commits `unit` within `database.commit_timeout_ms` and settles the partitions that
    /// applied it. On failure their changes are undone and the written keys become uncertain.
    async fn commit(&self, unit: &BatchCommit<'_>, partitions: &[usize]) -> Result<(), StoreError> {
        let started = Instant::now();
        let limit = self.ctx.commit_timeout;
        let committed = within(&self.ctx.db, limit, async |conn| commit(conn, unit).await).await;
        self.persist_seconds.record(started.elapsed().as_secs_f64());
        self.settle(partitions, committed.is_ok()).await;
        if let Err(e) = &committed {
            tracing::warn!(error = %e, entities = unit.entities.len(), "commit failed; its entities will be reloaded");
            if let Ok(mut uncertain) = self.uncertain.lock() {
                uncertain.extend(unit.entities.iter().map(|w| w.key.clone()));
            }
        }
        committed
    }

    /// Reloads the uncertain keys from Postgres into their partitions.
    async fn reload_uncertain(&self) -> Result<(), ProcessError> {
        let keys: Vec<String> = match self.uncertain.lock() {
            Ok(uncertain) if !uncertain.is_empty() => uncertain.iter().cloned().collect(),
            _ => return Ok(()),
        };
        let name = self.ctx.name();
        let rows = within(&self.ctx.db, self.ctx.commit_timeout, async |conn| {
            entities::load_keys(conn, name, &keys).await
        })
        .await?;
        let mut stored = HashMap::with_capacity(rows.len());
        for row in rows {
            let (key, entity) = restore_entity::<D>(name, row)?;
            stored.insert(key, entity);
        }
        let mut per_partition: Vec<Vec<_>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        for key in &keys {
            let entity = stored.remove(key);
            per_partition[self.partition(key)].push((key.clone(), entity));
        }
        for (p, entities) in per_partition.into_iter().enumerate() {
            if !entities.is_empty() {
                self.partitions[p]
                    .send(Refresh { entities })
                    .await
                    .map_err(|e| ProcessError::Partition(e.to_string()))?;
            }
        }
        if let Ok(mut uncertain) = self.uncertain.lock() {
            uncertain.clear();
        }
        tracing::info!(
            domain = name,
            entities = keys.len(),
            "reloaded entities after a failed commit"
        );
        Ok(())
    }

    async fn settle(&self, partitions: &[usize], committed: bool) {
        let settles = partitions
            .iter()
            .map(|p| self.partitions[*p].send(Settle { committed }));
        for result in join_all(settles).await {
            if let Err(e) = result {
                tracing::error!(error = %e, "partition did not settle its unit");
            }
        }
    }

    async fn abandon(&self, partitions: &[usize], error: ProcessError) -> ProcessError {
        self.settle(partitions, false).await;
        error
    }

    #[tracing::instrument(skip_all, fields(domain = self.ctx.name(), key = %msg.key))]
    async fn execute(&self, msg: ExecuteCommand<D>) -> Result<Committed<D::Reply>, CommandError> {
        let ctx = &self.ctx;
        let p = self.partition(&msg.key);
        let traceparent = child_traceparent(None);
        if let Err(e) = self.reload_uncertain().await {
            return Err(CommandError::Unavailable(e.to_string()));
        }
        let asked = tokio::time::timeout(
            ctx.runtime.ask_timeout(),
            self.partitions[p].send(ApplyCommand::<D> {
                key: msg.key.clone(),
                command: msg.command,
                traceparent: traceparent.clone(),
            }),
        )
        .await;
        let failed = match asked {
            Ok(Ok(Ok(applied))) => Ok(applied),
            Ok(Ok(Err(Failure::Handler(e)))) => Err(CommandError::Domain(e)),
            Ok(Ok(Err(Failure::Panicked(message)))) => {
                tracing::error!(error = %message, "command handler panicked");
                Err(CommandError::Failed(message))
            }
            Ok(Err(e)) => Err(CommandError::Unavailable(e.to_string())),
            Err(_) => Err(CommandError::Unavailable("partition timed out".into())),
        };
        let (reply, effects, write) = match failed {
            Ok(applied) => applied,
            Err(e) => {
                // A command that timed out may still be applied by the partition later; the
                // settle queued behind it undoes it, so a refused command never takes effect.
                self.settle(&[p], false).await;
                return Err(e);
            }
        };
        let version = u64::try_from(write.version).unwrap_or(0);
        let output_stream = ctx.output_stream();
        let unit = BatchCommit {
            domain: ctx.name(),
            stream: None,
            applied: Vec::new(),
            entities: vec![write],
            output_stream: &output_stream,
            events: outbox_events(effects.emitted.iter(), &traceparent).collect(),
        };
        if let Err(e) = self.commit(&unit, &[p]).await {
            tracing::error!(error = %e, "command not committed");
            return Err(CommandError::Unavailable(e.to_string()));
        }
        if !unit.events.is_empty() {
            ctx.relay_wakeup.notify_one();
        }
        let Effects { notifications, .. } = effects;
        for n in notifications {
            let _ = ctx.notifications.send(n);
        }
        Ok(Committed { reply, version })
    }
}

fn outbox_events<'a>(
    emitted: impl Iterator<Item = &'a crate::domain::Emitted> + 'a,
    traceparent: &'a str,
) -> impl Iterator<Item = NewOutboxEvent> + 'a {
    emitted.map(move |e| NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: e.event_type.clone(),
        key: e.key.clone(),
        data: e.data.to_string(),
        traceparent: Some(traceparent.to_owned()),
    })
}
