//! [`DomainHandle`]: how the HTTP layer talks to a running domain — reads from the partitions'
//! committed state, commands through the processor.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::future::join_all;
use tokio::sync::broadcast;

use super::ask::{AskError, ask};
use super::partition::{Get, List, Partition, partition_of};
use super::processor::{CommandError, Committed, ExecuteCommand, Idempotency, Processor};
use super::supervisor::DomainStatus;
use crate::domain::{Domain, Entity, Notification};

/// Why a domain could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DomainUnavailable {
    /// The domain failed for good (restart intensity exceeded).
    #[error("domain {domain} has failed: {reason}")]
    Failed {
        /// Domain name.
        domain: &'static str,
        /// Why.
        reason: String,
    },
    /// The entity's stored state does not load (its key is quarantined).
    #[error("entity {key:?} of domain {domain} cannot be loaded")]
    EntityUnavailable {
        /// Domain name.
        domain: &'static str,
        /// Entity key.
        key: String,
    },
    /// An actor did not answer in time or is gone.
    #[error("domain {domain} did not answer")]
    NoAnswer {
        /// Domain name.
        domain: &'static str,
        /// Why.
        #[source]
        source: AskError,
    },
}

/// A cloneable handle on a running domain.
pub struct DomainHandle<D: Domain> {
    name: &'static str,
    partitions: Arc<Vec<Addr<Partition<D>>>>,
    processor: Addr<Processor<D>>,
    ask_timeout: Duration,
    status: Arc<DomainStatus>,
    notifications: broadcast::Sender<Notification>,
}

impl<D: Domain> Clone for DomainHandle<D> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            partitions: self.partitions.clone(),
            processor: self.processor.clone(),
            ask_timeout: self.ask_timeout,
            status: self.status.clone(),
            notifications: self.notifications.clone(),
        }
    }
}

impl<D: Domain> DomainHandle<D> {
    pub(crate) fn new(
        name: &'static str,
        partitions: Vec<Addr<Partition<D>>>,
        processor: Addr<Processor<D>>,
        ask_timeout: Duration,
        status: Arc<DomainStatus>,
        notifications: broadcast::Sender<Notification>,
    ) -> Self {
        Self {
            name,
            partitions: Arc::new(partitions),
            processor,
            ask_timeout,
            status,
            notifications,
        }
    }

    /// The domain's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Err(reason)` while the domain cannot serve (failed for good, or stalled).
    pub fn readiness(&self) -> Result<(), String> {
        self.status.readiness()
    }

    /// `Err` once the domain has failed for good.
    pub fn status(&self) -> Result<(), DomainUnavailable> {
        self.status
            .check()
            .map_err(|reason| DomainUnavailable::Failed {
                domain: self.name,
                reason,
            })
    }

    /// Subscribes to notifications of committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.notifications.subscribe()
    }

    fn no_answer(&self, e: AskError) -> DomainUnavailable {
        DomainUnavailable::NoAnswer {
            domain: self.name,
            source: e,
        }
    }

    /// The committed entity of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Entity<D::State>>, DomainUnavailable> {
        if self.status.is_quarantined(key) {
            return Err(DomainUnavailable::EntityUnavailable {
                domain: self.name,
                key: key.to_owned(),
            });
        }
        let partition = &self.partitions[partition_of(key, self.partitions.len())];
        ask(partition, Get::new(key.to_owned()), self.ask_timeout)
            .await
            .map_err(|e| self.no_answer(e))
    }

    /// Up to `limit` committed entities with keys after `after`, in key order: a keyset page.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Entity<D::State>)>, DomainUnavailable> {
        let asks = self.partitions.iter().map(|p| {
            ask(
                p,
                List::new(after.map(str::to_owned), limit),
                self.ask_timeout,
            )
        });
        let mut merged = Vec::new();
        for reply in join_all(asks).await {
            merged.extend(reply.map_err(|e| self.no_answer(e))?);
        }
        merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        merged.truncate(limit);
        Ok(merged)
    }

    /// Executes `command` on `key`; replies once its effects are committed. With
    /// `idempotency`, a retry gets the first reply (marked `replayed`) and applies nothing.
    ///
    /// A wait that times out is [`CommandError::OutcomeUnknown`]: the command was submitted and
    /// may still commit, so the caller must retry with the same idempotency key, not without.
    pub async fn execute(
        &self,
        key: &str,
        command: D::Command,
        idempotency: Option<Idempotency>,
    ) -> Result<Committed<D::Reply>, CommandError> {
        self.status()
            .map_err(|e| CommandError::NotCommitted(Box::new(e)))?;
        let request = ExecuteCommand::<D> {
            key: key.to_owned(),
            command,
            idempotency,
        };
        match ask(&self.processor, request, self.ask_timeout).await {
            Ok(result) => result,
            Err(e @ AskError::TimedOut(_)) => Err(CommandError::OutcomeUnknown(Box::new(e))),
            Err(e @ AskError::Closed(_)) => Err(CommandError::NotCommitted(Box::new(e))),
        }
    }
}
