//! The unit of work: everything one processed batch (or one command) changes, committed in
//! one transaction.

use diesel_async::{AsyncConnection, AsyncPgConnection};

use super::commands::{self, CommandRecord};
use super::entities::{self, EntityWrite};
use super::outbox::{self, NewOutboxEvent};
use super::timers::{self, NewTimer};
use super::{StoreError, applied};

/// What one unit of work commits.
#[derive(Debug, Default)]
pub struct BatchCommit<'a> {
    /// The consuming domain.
    pub domain: &'a str,
    /// Envelope ids of the inputs applied by this unit, recorded for deduplication.
    pub applied: Vec<&'a str>,
    /// The idempotency records of the unit's commands, stored with their effects.
    pub commands: Vec<CommandRecord>,
    /// New states of the entities the unit changed.
    pub entities: Vec<EntityWrite>,
    /// Events emitted by the unit, each for its stream.
    pub events: Vec<NewOutboxEvent>,
    /// Ids of the durable timers this unit fires (also in `applied`): removed with it, and if
    /// one is gone already the unit fails with [`StoreError::AlreadyApplied`] naming it.
    pub fired_timers: Vec<&'a str>,
    /// Durable timers the unit's inputs scheduled.
    pub timers: Vec<NewTimer>,
    /// Durable timers the unit's inputs cancelled.
    pub cancelled_timers: Vec<&'a str>,
}

/// Writes the applied-input records, states, emitted events and timers atomically. Inputs recorded
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
        timers::take_fired(tx, batch.domain, &batch.fired_timers).await?;
        for command in &batch.commands {
            if !commands::record(tx, batch.domain, command).await? {
                return Err(StoreError::AlreadyApplied(vec![command.key.clone()]));
            }
        }
        entities::upsert(tx, batch.domain, &batch.entities).await?;
        outbox::append(tx, batch.domain, &batch.events).await?;
        timers::schedule(tx, batch.domain, &batch.timers).await?;
        timers::cancel(tx, batch.domain, &batch.cancelled_timers).await?;
        Ok(())
    })
    .await
}
