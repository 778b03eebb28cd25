//! The transactional outbox: events emitted by committed batches, waiting to be published.

use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::troupe_outbox as t;
use crate::streams::outbox_relay::OutgoingEvent;

/// An event to append to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEvent {
    /// Envelope id.
    pub event_id: uuid::Uuid,
    /// Envelope type.
    pub event_type: String,
    /// Envelope key.
    pub key: String,
    /// Envelope data (JSON text).
    pub data: String,
    /// Trace context.
    pub traceparent: Option<String>,
}

/// Appends `events` for `domain`'s output `stream`, inside the caller's transaction.
///
/// Takes a transaction-scoped advisory lock per domain first, so outbox rows of one domain are
/// committed in `seq` order even across instances; the relay relies on that order.
pub async fn append(
    conn: &mut AsyncPgConnection,
    domain: &str,
    stream: &str,
    events: &[NewOutboxEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('troupe_outbox:' || $1, 0))")
        .bind::<Text, _>(domain)
        .execute(conn)
        .await?;
    diesel::sql_query(
        "INSERT INTO troupe_outbox (domain, stream, event_id, event_type, key, data, traceparent) \
         SELECT $1, $2, i, ty, k, d, tp FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) \
         AS u(i, ty, k, d, tp)",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(stream)
    .bind::<Array<SqlUuid>, _>(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(events.iter().map(|e| e.traceparent.as_deref()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// An outbox row as read by the relay.
#[derive(Queryable)]
struct OutboxRow {
    seq: i64,
    event_id: uuid::Uuid,
    event_type: String,
    key: String,
    data: String,
    created_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
}

/// The oldest unpublished events of `domain`, in `seq` order.
pub async fn next_batch(
    conn: &mut AsyncPgConnection,
    domain: &str,
    limit: i64,
) -> Result<Vec<OutgoingEvent>, StoreError> {
    let rows: Vec<OutboxRow> = t::table
        .filter(t::domain.eq(domain))
        .order(t::seq.asc())
        .limit(limit)
        .select((
            t::seq,
            t::event_id,
            t::event_type,
            t::key,
            t::data,
            t::created_at,
            t::traceparent,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutgoingEvent {
            seq: r.seq,
            event_id: r.event_id.to_string(),
            event_type: r.event_type,
            key: r.key,
            data: r.data,
            ts: r
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            traceparent: r.traceparent,
        })
        .collect())
}

/// Deletes `domain`'s published events up to and including `seq`.
pub async fn delete_through(
    conn: &mut AsyncPgConnection,
    domain: &str,
    seq: i64,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(t::table.filter(t::domain.eq(domain)).filter(t::seq.le(seq)))
            .execute(conn)
            .await?,
    )
}

/// How many events of `domain` wait to be published.
pub async fn backlog(conn: &mut AsyncPgConnection, domain: &str) -> Result<i64, StoreError> {
    Ok(t::table
        .filter(t::domain.eq(domain))
        .count()
        .get_result(conn)
        .await?)
}
