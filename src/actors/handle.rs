//! [`DomainHandle`]: how the HTTP layer talks to a running domain — reads of one entity from
//! its partition's committed view (or from Postgres when it is not in memory), pages of
//! entities from Postgres, commands through the processor.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::{Semaphore, broadcast};

use super::ask::{AskError, ask};
use super::partition::{CommittedView, partition_of};
use super::processor::{CommandError, Committed, ExecuteCommand, Idempotency, Processor};
use super::runtime::restore_entity;
use super::supervisor::DomainStatus;
use crate::domain::{Domain, Entity, Notification};
use crate::store::pool::within;
use crate::store::{DbPool, StoreError, entities};
use crate::telemetry::error_chain;

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
    /// Postgres did not answer a read of committed state.
    #[error("domain {domain} could not read its stored state")]
    Store {
        /// Domain name.
        domain: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// A keyset page of committed entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPage<S> {
    /// The entities, in key order.
    pub entities: Vec<(String, Entity<S>)>,
    /// Where the next page starts (`after=`), if there may be one.
    pub next_after: Option<String>,
}

/// A cloneable handle on a running domain.
pub struct DomainHandle<D: Domain> {
    name: &'static str,
    /// Each partition's committed entities, read without a round trip to its thread.
    views: Arc<Vec<Arc<CommittedView<D::State>>>>,
    processor: Addr<Processor<D>>,
    ask_timeout: Duration,
    status: Arc<DomainStatus>,
    notifications: broadcast::Sender<Notification>,
    db: DbPool,
    /// Bounds the HTTP reads of stored state running at once, so that a burst of them cannot
    /// take the connections the domain's commits need.
    reads: Arc<Semaphore>,
}

impl<D: Domain> Clone for DomainHandle<D> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            views: self.views.clone(),
            processor: self.processor.clone(),
            ask_timeout: self.ask_timeout,
            status: self.status.clone(),
            notifications: self.notifications.clone(),
            db: self.db.clone(),
            reads: self.reads.clone(),
        }
    }
}

/// What the handle is built from.
pub(crate) struct HandleParts<D: Domain> {
    pub name: &'static str,
    pub views: Vec<Arc<CommittedView<D::State>>>,
    pub processor: Addr<Processor<D>>,
    pub ask_timeout: Duration,
    pub status: Arc<DomainStatus>,
    pub notifications: broadcast::Sender<Notification>,
    pub db: DbPool,
    /// HTTP reads of stored state allowed at once.
    pub concurrent_reads: usize,
}

impl<D: Domain> DomainHandle<D> {
    pub(crate) fn new(parts: HandleParts<D>) -> Self {
        Self {
            name: parts.name,
            views: Arc::new(parts.views),
            processor: parts.processor,
            ask_timeout: parts.ask_timeout,
            status: parts.status,
            notifications: parts.notifications,
            db: parts.db,
            reads: Arc::new(Semaphore::new(parts.concurrent_reads.max(1))),
        }
    }

    /// Runs a read of stored state on a pooled connection within the ask timeout, once one of
    /// the handle's read permits is free (waiting for it counts towards the timeout).
    async fn read<T>(
        &self,
        work: impl AsyncFnOnce(&mut diesel_async::AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, DomainUnavailable> {
        let unavailable = |source| DomainUnavailable::Store {
            domain: self.name,
            source,
        };
        let started = std::time::Instant::now();
        let permit = tokio::time::timeout(self.ask_timeout, self.reads.acquire())
            .await
            .map_err(|_| unavailable(StoreError::Timeout(self.ask_timeout)))?
            .map_err(|_| unavailable(StoreError::Pool("reads closed".into())))?;
        let left = self.ask_timeout.saturating_sub(started.elapsed());
        let result = within(&self.db, left, work).await.map_err(unavailable);
        drop(permit);
        result
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

    /// The committed entity of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Entity<D::State>>, DomainUnavailable> {
        if self.status.is_quarantined(key) {
            return Err(DomainUnavailable::EntityUnavailable {
                domain: self.name,
                key: key.to_owned(),
            });
        }
        let view = &self.views[partition_of(key, self.views.len())];
        if let Some(entity) = view.get(key) {
            return Ok(entity.map(|e| Entity::clone(&e)));
        }
        // Not in memory: its committed value is the row in Postgres. Read, not loaded into the
        // partition: only the processor puts keys there, between units.
        let name = self.name;
        let keys = [key.to_owned()];
        let rows = self
            .read(async |conn| entities::load_keys(conn, name, &keys).await)
            .await?;
        match rows
            .into_iter()
            .next()
            .map(|row| restore_entity::<D>(name, row))
        {
            None => Ok(None),
            Some((_, Ok(entity))) => Ok(Some(entity)),
            Some((key, Err(e))) => {
                tracing::warn!(domain = name, key, error = %error_chain(&e), "stored state cannot be loaded");
                Err(DomainUnavailable::EntityUnavailable { domain: name, key })
            }
        }
    }

    /// Up to `limit` committed entities with keys after `after`, in key order: a keyset page of
    /// what Postgres holds. A row whose state does not load is left out (and logged), and the
    /// page's cursor still moves past it.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntityPage<D::State>, DomainUnavailable> {
        self.list_matching(after, limit, None).await
    }

    /// Like [`list`](Self::list), only entities whose stored state contains `filter` (JSON
    /// containment: `{"customer_id": "c1", "status": "pending"}` matches states with those
    /// fields at those values). The page is full only if that many match; its cursor is the last
    /// match, so paging on is correct.
    pub async fn list_matching(
        &self,
        after: Option<&str>,
        limit: usize,
        filter: Option<&serde_json::Value>,
    ) -> Result<EntityPage<D::State>, DomainUnavailable> {
        let name = self.name;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read(async |conn| entities::load_page(conn, name, after, limit, filter).await)
            .await?;
        // A full page may have more after it: its last key, loadable or not, is the cursor.
        let next_after = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|row| row.key.clone()))
            .flatten();
        let entities = rows
            .into_iter()
            .filter_map(|row| match restore_entity::<D>(name, row) {
                (key, Ok(entity)) => Some((key, entity)),
                (key, Err(e)) => {
                    tracing::warn!(domain = name, key, error = %error_chain(&e), "stored state cannot be loaded; left out of the page");
                    None
                }
            })
            .collect();
        Ok(EntityPage {
            entities,
            next_after,
        })
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
