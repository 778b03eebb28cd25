//! The unit of work: everything one processed batch (or one command) changes, committed in
//! one transaction.

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::commands::{self, CommandRecord};
use super::entities::{self, EntityWrite};
use super::outbox::{self, NewOutboxEvent};
use super::{StoreError, applied};

/// What one unit of work commits.
#[derive(Debug, Default)]
pub struct BatchCommit<'a> {
    /// The consuming domain.
    pub domain: &'a str,
    /// Envelope ids of the inputs applied by this unit, recorded for deduplication.
    pub applied: Vec<&'a str>,
    /// The idempotency record of a command, stored with its effects.
    pub command: Option<CommandRecord>,
    /// New states of the entities the unit changed.
    pub entities: Vec<EntityWrite>,
    /// Output stream (logical name) for `events`.
    pub output_stream: &'a str,
    /// Events emitted by the unit.
    pub events: Vec<NewOutboxEvent>,
}

/// Writes the applied-input records, states and emitted events atomically. Inputs recorded
/// already roll everything back with [`StoreError::AlreadyApplied`] naming them.
#[tracing::instrument(skip_all, fields(domain = batch.domain, inputs = batch.applied.len(), entities = batch.entities.len(), events = batch.events.len()))]
pub async fn commit(
    conn: &mut AsyncPgConnection,
    batch: &BatchCommit<'_>,
) -> Result<(), StoreError> {
    // A conflict on the record whose ids are no longer there was a concurrent unit that rolled
    // back: trying again is right. Bounded, in case something else keeps conflicting.
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match write(conn, batch).await {
            Err(e) if applied::is_already_recorded(&e) => {
                let already = applied::already_applied(conn, batch.domain, &batch.applied).await?;
                if !already.is_empty() {
                    return Err(StoreError::AlreadyApplied(already));
                }
                if attempt == ATTEMPTS {
                    return Err(e);
                }
                tracing::debug!(
                    attempt,
                    "applied-input record conflicted with a unit that rolled back; trying again"
                );
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// One attempt at [`commit`].
async fn write(conn: &mut AsyncPgConnection, batch: &BatchCommit<'_>) -> Result<(), StoreError> {
    conn.transaction::<_, StoreError, _>(async |tx| {
        // First, so a duplicate costs as little as possible before the rollback.
        applied::record(tx, batch.domain, &batch.applied).await?;
        if let Some(command) = &batch.command
            && !commands::record(tx, batch.domain, command).await?
        {
            return Err(StoreError::AlreadyApplied(vec![command.key.clone()]));
        }
        entities::upsert(tx, batch.domain, &batch.entities).await?;
        outbox::append(tx, batch.domain, batch.output_stream, &batch.events).await?;
        Ok(())
    })
    .await
}
