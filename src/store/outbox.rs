//! The transactional outbox: events emitted by committed units, waiting to be published, and
//! published ones kept for `runtime.outbox_retention_seconds` so the relay can publish them
//! again when Redis comes back behind what it acknowledged (see [`crate::streams::outbox_relay`]).

use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::troupe_outbox as t;

/// An event to append to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEvent {
    /// The stream (logical name) it is published on.
    pub stream: String,
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

/// Appends `events` of `domain`, each for its stream, inside the caller's transaction.
///
/// Takes a transaction-scoped advisory lock per domain first, so outbox rows of one domain are
/// committed in `seq` order even across instances; the relay relies on that order.
pub async fn append(
    conn: &mut AsyncPgConnection,
    domain: &str,
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
         SELECT $1, s, i, ty, k, d, tp FROM UNNEST($2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) \
         AS u(s, i, ty, k, d, tp)",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(events.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>())
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
    stream: String,
    event_id: uuid::Uuid,
    event_type: String,
    key: String,
    data: String,
    created_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
    published: bool,
}

/// An outbox row to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Outbox sequence number.
    pub seq: i64,
    /// The stream (logical name) it is published on.
    pub stream: String,
    /// Envelope `id`.
    pub event_id: String,
    /// Envelope `type`.
    pub event_type: String,
    /// Envelope `key`.
    pub key: String,
    /// Envelope `data`.
    pub data: String,
    /// Envelope `ts`: when the event was committed, RFC 3339 with milliseconds.
    pub ts: String,
    /// Envelope `traceparent`.
    pub traceparent: Option<String>,
    /// Published before (the relay is publishing it again because Redis lost it).
    pub published: bool,
}

/// `domain`'s events after `after_seq`, in `seq` order: the unpublished ones after the last
/// published row, or — when the relay republishes what Redis lost — published ones too.
pub async fn next_batch(
    conn: &mut AsyncPgConnection,
    domain: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<PendingEvent>, StoreError> {
    let rows: Vec<OutboxRow> = t::table
        .filter(t::domain.eq(domain))
        .filter(t::seq.gt(after_seq))
        .order(t::seq.asc())
        .limit(limit)
        .select((
            t::seq,
            t::stream,
            t::event_id,
            t::event_type,
            t::key,
            t::data,
            t::created_at,
            t::traceparent,
            t::published_at.is_not_null(),
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| PendingEvent {
            seq: r.seq,
            stream: r.stream,
            event_id: r.event_id.to_string(),
            event_type: r.event_type,
            key: r.key,
            data: r.data,
            ts: r
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            traceparent: r.traceparent,
            published: r.published,
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

/// What the outbox says about publication, for checking Redis's marker against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxView {
    /// The newest published event: `(seq, event id)`.
    pub last_published: Option<(i64, String)>,
    /// The `seq` of the row holding the marker's event id, if the outbox still has it.
    pub marker_row: Option<i64>,
    /// The lowest `seq` the outbox keeps.
    pub min_seq: Option<i64>,
    /// The highest `seq` of the domain's rows, published or not.
    pub max_seq: Option<i64>,
}

#[derive(QueryableByName)]
struct ViewRow {
    #[diesel(sql_type = Nullable<Int8>)]
    last_seq: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    last_id: Option<String>,
    #[diesel(sql_type = Nullable<Int8>)]
    marker_row: Option<i64>,
    #[diesel(sql_type = Nullable<Int8>)]
    min_seq: Option<i64>,
    #[diesel(sql_type = Nullable<Int8>)]
    max_seq: Option<i64>,
}

/// Reads [`OutboxView`] for `domain` and the marker's event id, in one round trip (each part an
/// index lookup: the published rows have their own partial index, event ids a unique one).
pub async fn view(
    conn: &mut AsyncPgConnection,
    domain: &str,
    marker_event_id: Option<&str>,
) -> Result<OutboxView, StoreError> {
    let marker_id = marker_event_id.and_then(|id| uuid::Uuid::parse_str(id).ok());
    let row: ViewRow = diesel::sql_query(
        "WITH last AS (SELECT seq, event_id FROM troupe_outbox \
                       WHERE domain = $1 AND published_at IS NOT NULL ORDER BY seq DESC LIMIT 1) \
         SELECT (SELECT seq FROM last) AS last_seq, \
                (SELECT event_id::text FROM last) AS last_id, \
                (SELECT seq FROM troupe_outbox WHERE event_id = $2 AND domain = $1) AS marker_row, \
                (SELECT min(seq) FROM troupe_outbox WHERE domain = $1) AS min_seq, \
                (SELECT max(seq) FROM troupe_outbox WHERE domain = $1) AS max_seq",
    )
    .bind::<Text, _>(domain)
    .bind::<Nullable<SqlUuid>, _>(marker_id)
    .get_result(conn)
    .await?;
    Ok(OutboxView {
        last_published: row.last_seq.zip(row.last_id),
        marker_row: row.marker_row,
        min_seq: row.min_seq,
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

/// Prepares the relay's own session: the relay lock lives as long as the session, so the
/// server must notice a dead client within seconds (keepalives, connection checks) rather than
/// the hours TCP takes by default, and every statement is bounded, so a relay that vanished
/// cannot keep its domain's events from being published for long.
pub async fn prepare_relay_session(
    conn: &mut AsyncPgConnection,
    statement_timeout: std::time::Duration,
) -> Result<(), StoreError> {
    let ms = statement_timeout.as_millis().max(1);
    diesel::sql_query(format!("SET statement_timeout = {ms}"))
        .execute(conn)
        .await?;
    // Best effort: servers before Postgres 14 lack the connection check, and keepalives do not
    // apply to Unix sockets.
    for setting in [
        "SET tcp_keepalives_idle = 5",
        "SET tcp_keepalives_interval = 2",
        "SET tcp_keepalives_count = 3",
        "SET client_connection_check_interval = '2s'",
    ] {
        if let Err(e) = diesel::sql_query(setting).execute(conn).await {
            tracing::debug!(setting, error = %e, "relay session setting not applied");
        }
    }
    Ok(())
}

/// Tries to become `domain`'s relay: a session advisory lock, held until the connection
/// closes, so that one relay per domain publishes even while instances overlap (a rolling
/// deploy). Returns whether this session holds it.
pub async fn try_lead_relay(
    conn: &mut AsyncPgConnection,
    domain: &str,
) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let row: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_lock(hashtextextended('troupe_relay:' || $1, 0)) AS locked",
    )
    .bind::<Text, _>(domain)
    .get_result(conn)
    .await?;
    Ok(row.locked)
}
