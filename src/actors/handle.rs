//! [`DomainHandle`]: how the HTTP layer talks to a running domain — reads from the partitions'
//! committed state, commands through the processor.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::future::join_all;
use tokio::sync::broadcast;

use super::partition::{Get, List, Partition, partition_of};
use super::processor::{CommandError, Committed, ExecuteCommand, Processor};
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
    /// An actor did not answer in time or is gone.
    #[error("domain {domain} did not answer: {reason}")]
    NoAnswer {
        /// Domain name.
        domain: &'static str,
        /// Why.
        reason: String,
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

    fn no_answer(&self, reason: impl ToString) -> DomainUnavailable {
        DomainUnavailable::NoAnswer {
            domain: self.name,
            reason: reason.to_string(),
        }
    }

    /// The committed entity of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Entity<D::State>>, DomainUnavailable> {
        let partition = &self.partitions[partition_of(key, self.partitions.len())];
        tokio::time::timeout(self.ask_timeout, partition.send(Get::new(key.to_owned())))
            .await
            .map_err(|_| self.no_answer("timed out"))?
            .map_err(|e| self.no_answer(e))
    }

    /// Up to `limit` committed entities with keys after `after`, in key order: a keyset page.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Entity<D::State>)>, DomainUnavailable> {
        let asks = self.partitions.iter().map(|p| {
            tokio::time::timeout(
                self.ask_timeout,
                p.send(List::new(after.map(str::to_owned), limit)),
            )
        });
        let mut merged = Vec::new();
        for reply in join_all(asks).await {
            merged.extend(
                reply
                    .map_err(|_| self.no_answer("timed out"))?
                    .map_err(|e| self.no_answer(e))?,
            );
        }
        merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        merged.truncate(limit);
        Ok(merged)
    }

    /// Executes `command` on `key`; replies once its effects are committed.
    pub async fn execute(
        &self,
        key: &str,
        command: D::Command,
    ) -> Result<Committed<D::Reply>, CommandError> {
        self.status()
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let ask = self.processor.send(ExecuteCommand::<D> {
            key: key.to_owned(),
            command,
        });
        tokio::time::timeout(self.ask_timeout, ask)
            .await
            .map_err(|_| CommandError::Unavailable("timed out".into()))?
            .map_err(|e| CommandError::Unavailable(e.to_string()))?
    }
}
