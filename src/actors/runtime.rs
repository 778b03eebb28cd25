//! Starting a domain: partition actors on their own arbiters (empty: entities load on first
//! use), then its processor and supervisor (which starts readers and relay).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use tokio::sync::{Notify, broadcast};

use super::context::DomainContext;
use super::handle::{DomainHandle, HandleParts};
use super::partition::{CommittedView, HandlerWatch, Partition, Residency};
use super::processor::Processor;
use super::quarantine::Quarantine;
use super::supervisor::{DomainStatus, DomainSupervisor, Shutdown};
use super::watchdog::Progress;
use crate::domain::keys::Limits;
use crate::domain::{Clock, Domain, Entity, EventCatalogue, NotAnEventEnum, SystemClock};
use crate::faults::Faults;
use crate::settings::Settings;
use crate::store::{self, StoreError, entities};
use crate::streams::RedisClients;

const NOTIFICATION_BUFFER: usize = 4_096;

/// A started domain: its handle for HTTP and what is needed to stop it.
pub struct RunningDomain<D: Domain> {
    /// For HTTP handlers.
    pub handle: DomainHandle<D>,
    supervisor: Addr<DomainSupervisor<D>>,
    arbiters: Vec<Arbiter>,
}

impl<D: Domain> RunningDomain<D> {
    /// Stops reading, lets in-flight work commit and the outbox drain, then stops the domain's
    /// threads.
    pub async fn shutdown(self, grace: Duration) {
        if let Err(e) = self.supervisor.send(Shutdown { grace }).await {
            tracing::warn!(domain = self.handle.name(), error = %e, "supervisor already gone at shutdown");
        }
        self.abort();
    }

    /// Stops the domain's threads at once, with no regard for work in flight (which is safe:
    /// nothing unacknowledged is lost, it is redelivered on the next start).
    pub fn abort(self) {
        for arbiter in self.arbiters {
            arbiter.stop();
        }
    }
}

/// Decodes a stored entity of domain `D`.
pub(crate) fn restore_entity<D: Domain>(
    domain: &str,
    row: entities::StoredEntity,
) -> (String, Result<Entity<D::State>, StoreError>) {
    let entity = serde_json::from_value::<D::State>(row.state)
        .map(|state| Entity {
            state,
            version: u64::try_from(row.version).unwrap_or(0),
        })
        .map_err(|e| StoreError::Corrupt(format!("{domain} entity {:?}: {e}", row.key)));
    (row.key, entity)
}

/// Why a domain did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its event or output type is not an event enum.
    #[error("domain {domain}: {source}")]
    Declaration {
        /// The domain's name.
        domain: &'static str,
        /// What is wrong with the type.
        source: NotAnEventEnum,
    },
    /// Its settings section does not configure it.
    #[error("[domains.{domain}]: {problem}")]
    Settings {
        /// The domain's name.
        domain: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Its pool could not be built.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts `domain`'s actors (entities load on first use).
pub async fn start_domain<D: Domain>(
    domain: D,
    settings: &Settings,
    redis: &RedisClients,
) -> Result<RunningDomain<D>, StartError> {
    start_shared(Arc::new(domain), settings, redis).await
}

/// [`start_domain`] for a domain value that is shared already (the registry keeps its own).
pub async fn start_shared<D: Domain>(
    domain: Arc<D>,
    settings: &Settings,
    redis: &RedisClients,
) -> Result<RunningDomain<D>, StartError> {
    let catalogue = EventCatalogue::of::<D>().map_err(|source| StartError::Declaration {
        domain: domain.name(),
        source,
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = settings.runtime.clone();
    let db = store::pool::build(&settings.database)?;

    let partition_count = runtime.partitions;
    // Nothing is loaded now: each partition loads a key the first time a unit needs it, so
    // start-up takes the same time whatever the number of stored entities.
    let quarantine = Arc::new(Quarantine::default());
    let residency = Residency {
        idle: Duration::from_secs(runtime.entity_idle_seconds),
        capacity: runtime
            .max_entities_in_memory
            .div_ceil(partition_count.max(1)),
    };
    tracing::info!(
        domain = domain.name(),
        partitions = partition_count,
        per_partition = residency.capacity,
        idle_seconds = runtime.entity_idle_seconds,
        "starting; entities load on first use"
    );

    let limits = Limits {
        max_key_bytes: runtime.max_key_bytes,
    };
    let streams: Vec<String> = domain
        .subscriptions()
        .into_iter()
        .map(|s| s.stream)
        .collect();
    let progress = Arc::new(Progress::new(partition_count, &streams));
    let faults = Faults::new(&settings.faults);
    let mut arbiters = Vec::with_capacity(partition_count + 1);
    let mut partitions = Vec::with_capacity(partition_count);
    let mut views = Vec::with_capacity(partition_count);
    for index in 0..partition_count {
        let arbiter = Arbiter::new();
        let d = domain.clone();
        let clock = clock.clone();
        let partition_view = Arc::new(CommittedView::default());
        views.push(partition_view.clone());
        let watch = HandlerWatch {
            progress: progress.clone(),
            partition: index,
            faults: faults.clone(),
        };
        let partition = Partition::start_in_arbiter(&arbiter.handle(), move |_| {
            Partition::new(d, limits, clock, residency, partition_view, watch)
        });
        partitions.push(partition);
        arbiters.push(arbiter);
    }

    let (notifications, _) = broadcast::channel(NOTIFICATION_BUFFER);
    let ctx = Arc::new(DomainContext {
        domain: domain.clone(),
        catalogue,
        runtime: runtime.clone(),
        instance_id: settings.instance.id.clone(),
        redis: redis.clone(),
        db,
        commit_timeout: settings.database.commit_timeout(),
        keys: redis.keys(),
        faults,
        relay_wakeup: Arc::new(Notify::new()),
        notifications: notifications.clone(),
        progress: progress.clone(),
        clock,
    });
    let status = Arc::new(DomainStatus::new(progress, quarantine.clone()));
    let home = Arbiter::new();
    let processor = {
        let (ctx, partitions) = (ctx.clone(), partitions.clone());
        let quarantine = quarantine.clone();
        Processor::start_in_arbiter(&home.handle(), move |_| {
            Processor::new(ctx, partitions, quarantine)
        })
    };
    let supervisor = {
        let (ctx, processor, status) = (ctx.clone(), processor.clone(), status.clone());
        DomainSupervisor::start_in_arbiter(&home.handle(), move |_| {
            DomainSupervisor::new(ctx, processor, status)
        })
    };
    arbiters.push(home);
    let handle = DomainHandle::new(HandleParts {
        name: domain.name(),
        views,
        processor,
        ask_timeout: runtime.ask_timeout(),
        status,
        notifications,
        db: ctx.db.clone(),
        // What the commits (one per partition), the relay and the stats loop leave of the pool.
        concurrent_reads: settings
            .database
            .pool_max_size
            .saturating_sub(partition_count + 2),
    });
    Ok(RunningDomain {
        handle,
        supervisor,
        arbiters,
    })
}
