//! The unit of work: everything one processed batch changes, committed in one transaction.

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::entities::{self, EntityWrite};
use super::outbox::{self, NewOutboxEvent};
use super::{StoreError, applied};
use crate::streams::entry::EntryId;

/// What one batch commits.
#[derive(Debug, Default)]
pub struct BatchCommit<'a> {
    /// The consuming domain.
    pub domain: &'a str,
    /// The input stream (logical name), when the batch came from one.
    pub stream: Option<&'a str>,
    /// Input entries applied by this batch.
    pub applied: Vec<EntryId>,
    /// New states of the entities the batch changed.
    pub entities: Vec<EntityWrite>,
    /// Output stream (logical name) for `events`.
    pub output_stream: &'a str,
    /// Events emitted by the batch.
    pub events: Vec<NewOutboxEvent>,
}

/// Writes states, the applied-input record and the emitted events atomically.
#[tracing::instrument(skip_all, fields(domain = batch.domain, entries = batch.applied.len(), entities = batch.entities.len(), events = batch.events.len()))]
pub async fn commit(
    conn: &mut AsyncPgConnection,
    batch: &BatchCommit<'_>,
) -> Result<(), StoreError> {
    conn.transaction::<_, StoreError, _>(async |tx| {
        entities::upsert(tx, batch.domain, &batch.entities).await?;
        if let Some(stream) = batch.stream {
            applied::record(tx, batch.domain, stream, &batch.applied).await?;
        }
        outbox::append(tx, batch.domain, batch.output_stream, &batch.events).await?;
        Ok(())
    })
    .await
}
