//! What every actor of one domain shares.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::domain::{Clock, Domain, EventCatalogue, Notification, OtherTypes, Subscription};
use crate::faults::Faults;
use crate::settings::RuntimeSettings;
use crate::store::DbPool;
use crate::streams::group::Consumer;
use crate::streams::{RedisClients, StreamKeys};

/// Dependencies and configuration of one running domain.
pub struct DomainContext<D: Domain> {
    /// The user's domain.
    pub domain: Arc<D>,
    /// The event types it consumes and emits, read from its enums at start.
    pub catalogue: EventCatalogue,
    /// Runtime tuning.
    pub runtime: RuntimeSettings,
    /// Consumer name of this process.
    pub instance_id: String,
    /// Redis clients.
    pub redis: RedisClients,
    /// Postgres pool of this domain.
    pub db: DbPool,
    /// Transaction timeout of a unit of work.
    pub commit_timeout: std::time::Duration,
    /// Key naming.
    pub keys: StreamKeys,
    /// Fault injection.
    pub faults: Faults,
    /// Woken after a commit that wrote outbox rows.
    pub relay_wakeup: Arc<Notify>,
    /// Notifications of committed changes, for WebSocket clients.
    pub notifications: broadcast::Sender<Notification>,
    /// Progress, for the stall watchdog.
    pub progress: Arc<super::watchdog::Progress>,
    /// The time handlers see ([`crate::domain::Context::now`]) and commands are stamped with.
    pub clock: Arc<dyn Clock>,
}

impl<D: Domain> DomainContext<D> {
    /// The domain's name.
    pub fn name(&self) -> &'static str {
        self.domain.name()
    }

    /// The logical name of the domain's output stream.
    pub fn output_stream(&self) -> String {
        crate::domain::output_stream(self.name())
    }

    /// Every stream the domain publishes to (logical names), its own first.
    pub fn output_streams(&self) -> Vec<String> {
        crate::domain::output_streams(self.domain.as_ref())
    }

    /// The Redis key of the relay's publication marker.
    pub fn relay_marker_key(&self) -> String {
        format!("{}troupe:relay:{}", self.keys.prefix(), self.name())
    }

    /// The binding of one subscription.
    pub fn binding(&self, subscription: &Subscription) -> StreamBinding {
        StreamBinding {
            name: subscription.stream.clone(),
            consumer: Consumer {
                stream_key: self.keys.stream(&subscription.stream),
                group: self.name().to_owned(),
                name: self.instance_id.clone(),
            },
            dlq_key: self.keys.dead_letters(&subscription.stream),
            handled_types: self.catalogue.inputs,
            skip_other_types: subscription.other_types == OtherTypes::Skip,
        }
    }
}

/// A subscription resolved to Redis keys and this process's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBinding {
    /// Logical stream name (metric label, applied-record key).
    pub name: String,
    /// Group and consumer on the stream's key.
    pub consumer: Consumer,
    /// Key of the dead-letter stream.
    pub dlq_key: String,
    /// Event types handled on this stream: those of the domain's event enum.
    pub handled_types: &'static [&'static str],
    /// Whether entries of other types are acknowledged unapplied instead of dead-lettered.
    pub skip_other_types: bool,
}
