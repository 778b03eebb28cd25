//! The transactional outbox: events emitted by committed units, waiting to be published, and
//! published ones kept for `runtime.outbox_retention_seconds` so the relay can publish them
//! again when Redis comes back behind what it acknowledged (see [`crate::streams::outbox_relay`]).

use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Nullable, Text, Uuid as SqlUuid};
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
        .filter(t::published_at.is_null())
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

/// Marks `domain`'s unpublished events up to and including `seq` as published now.
pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    domain: &str,
    seq: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        t::table
            .filter(t::domain.eq(domain))
            .filter(t::published_at.is_null())
            .filter(t::seq.le(seq)),
    )
    .set(t::published_at.eq(diesel::dsl::sql::<Nullable<diesel::sql_types::Timestamptz>>("now()")))
    .execute(conn)
    .await?)
}

/// Marks `domain`'s retained published events after `seq` as unpublished again, so the relay
/// publishes them once more, in order; returns how many.
pub async fn unmark_after(
    conn: &mut AsyncPgConnection,
    domain: &str,
    seq: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        t::table
            .filter(t::domain.eq(domain))
            .filter(t::published_at.is_not_null())
            .filter(t::seq.gt(seq)),
    )
    .set(t::published_at.eq(None::<chrono::DateTime<chrono::Utc>>))
    .execute(conn)
    .await?)
}

/// What the outbox says about publication, for checking Redis's marker against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxView {
    /// The newest published event: `(seq, event id)`.
    pub last_published: Option<(i64, String)>,
    /// The id of the event at the marker's `seq`, when that row is still kept.
    pub id_at_marker: Option<String>,
    /// The highest `seq` of the domain's rows, published or not.
    pub max_seq: Option<i64>,
}

#[derive(QueryableByName)]
struct ViewRow {
    #[diesel(sql_type = Nullable<Int8>)]
    last_seq: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    last_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    id_at_marker: Option<String>,
    #[diesel(sql_type = Nullable<Int8>)]
    max_seq: Option<i64>,
}

/// Reads [`OutboxView`] for `domain`, with the row at `marker_seq`, in one round trip.
pub async fn view(
    conn: &mut AsyncPgConnection,
    domain: &str,
    marker_seq: i64,
) -> Result<OutboxView, StoreError> {
    let row: ViewRow = diesel::sql_query(
        "WITH last AS (SELECT seq, event_id FROM troupe_outbox \
                       WHERE domain = $1 AND published_at IS NOT NULL ORDER BY seq DESC LIMIT 1) \
         SELECT (SELECT seq FROM last) AS last_seq, \
                (SELECT event_id::text FROM last) AS last_id, \
                (SELECT event_id::text FROM troupe_outbox WHERE domain = $1 AND seq = $2) \
                  AS id_at_marker, \
                (SELECT max(seq) FROM troupe_outbox WHERE domain = $1) AS max_seq",
    )
    .bind::<Text, _>(domain)
    .bind::<Int8, _>(marker_seq)
    .get_result(conn)
    .await?;
    Ok(OutboxView {
        last_published: row.last_seq.zip(row.last_id),
        id_at_marker: row.id_at_marker,
        max_seq: row.max_seq,
    })
}

/// How many events of `domain` wait to be published.
pub async fn backlog(conn: &mut AsyncPgConnection, domain: &str) -> Result<i64, StoreError> {
    Ok(t::table
        .filter(t::domain.eq(domain))
        .filter(t::published_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}
