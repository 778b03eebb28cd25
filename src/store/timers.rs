//! Durable timers (`troupe_timer`): written with the effects of the input that schedules or
//! cancels them, read by the domain's timer poller when due, and removed by their firing's
//! commit — which refuses a timer whose row is gone (cancelled, or fired by another instance),
//! so each timer fires once.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Int4, Int8, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

/// A timer to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTimer {
    /// Its id (unique per domain).
    pub id: String,
    /// The entity it fires for.
    pub key: String,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The domain's timer payload, as JSON text.
    pub payload: String,
    /// Trace context of the input that scheduled it; its firing continues that trace.
    pub traceparent: Option<String>,
}

/// A timer that is due, as the poller reads it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct DueTimer {
    /// Its id.
    #[diesel(sql_type = Text)]
    pub id: String,
    /// The entity it fires for.
    #[diesel(sql_type = Text)]
    pub key: String,
    /// When it was due.
    #[diesel(sql_type = Timestamptz)]
    pub due: DateTime<Utc>,
    /// Failed attempts so far.
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    /// The payload, as JSON.
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    pub payload: serde_json::Value,
    /// Trace context of the input that scheduled it.
    #[diesel(sql_type = Nullable<Text>)]
    pub traceparent: Option<String>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Int8)]
    n: i64,
}

/// Stores `timers` for `domain`.
pub async fn schedule(
    conn: &mut AsyncPgConnection,
    domain: &str,
    timers: &[NewTimer],
) -> Result<(), StoreError> {
    if timers.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = timers.iter().map(|t| t.id.as_str()).collect();
    let keys: Vec<&str> = timers.iter().map(|t| t.key.as_str()).collect();
    let due: Vec<DateTime<Utc>> = timers.iter().map(|t| t.due).collect();
    let payloads: Vec<&str> = timers.iter().map(|t| t.payload.as_str()).collect();
    let traces: Vec<Option<&str>> = timers.iter().map(|t| t.traceparent.as_deref()).collect();
    diesel::sql_query(
        "INSERT INTO troupe_timer (domain, timer_id, entity_key, due_at, attempt_at, payload, traceparent) \
         SELECT $1, t.id, t.key, t.due, t.due, t.payload::jsonb, t.tp \
         FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) AS t(id, key, due, payload, tp)",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<Timestamptz>, _>(due)
    .bind::<Array<Text>, _>(payloads)
    .bind::<Array<Nullable<Text>>, _>(traces)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the timers `ids` of `domain`, so they never fire. Ids of timers that fired or were
/// cancelled already are ignored. Returns how many were removed.
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    domain: &str,
    ids: &[&str],
) -> Result<usize, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::sql_query(
        "DELETE FROM troupe_timer WHERE domain = $1 AND timer_id = ANY($2::text[]) AND dead_reason IS NULL",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .execute(conn)
    .await?)
}

/// Removes the timers `ids` that a unit fires. If some are gone (cancelled, or fired by a
/// concurrent unit) this fails with [`StoreError::AlreadyApplied`] naming them, and the
/// transaction must roll back. A concurrent cancel or firing of the same timer waits on the
/// row lock and then finds nothing to delete, so only one of them takes effect.
pub async fn take_fired(
    conn: &mut AsyncPgConnection,
    domain: &str,
    ids: &[&str],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let taken: Vec<Id> = diesel::sql_query(
        "DELETE FROM troupe_timer WHERE domain = $1 AND timer_id = ANY($2::text[]) \
         AND dead_reason IS NULL RETURNING timer_id AS id",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .load(conn)
    .await?;
    if taken.len() == ids.len() {
        return Ok(());
    }
    let taken: std::collections::HashSet<String> = taken.into_iter().map(|t| t.id).collect();
    Err(StoreError::AlreadyApplied(
        ids.iter()
            .filter(|id| !taken.contains(**id))
            .map(|id| (*id).to_owned())
            .collect(),
    ))
}

/// Up to `limit` live timers of `domain` to try by `now`, earliest first.
pub async fn due(
    conn: &mut AsyncPgConnection,
    domain: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<DueTimer>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT timer_id AS id, entity_key AS key, due_at AS due, attempts, payload, traceparent \
         FROM troupe_timer WHERE domain = $1 AND dead_reason IS NULL AND attempt_at <= $2 \
         ORDER BY attempt_at, due_at, timer_id LIMIT $3",
    )
    .bind::<Text, _>(domain)
    .bind::<Timestamptz, _>(now)
    .bind::<Int8, _>(i64::try_from(limit).unwrap_or(i64::MAX))
    .load(conn)
    .await?)
}

/// Records a failed attempt at timer `id`: it is tried again at `retry_at`.
pub async fn retry_later(
    conn: &mut AsyncPgConnection,
    domain: &str,
    id: &str,
    retry_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE troupe_timer SET attempts = attempts + 1, attempt_at = $3 \
         WHERE domain = $1 AND timer_id = $2",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(id)
    .bind::<Timestamptz, _>(retry_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets timer `id` aside as dead, with why: it no longer fires.
pub async fn bury(
    conn: &mut AsyncPgConnection,
    domain: &str,
    id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE troupe_timer SET attempts = attempts + 1, dead_reason = $3, dead_at = now() \
         WHERE domain = $1 AND timer_id = $2",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(id)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many live timers of `domain` are due by `now` (the backlog the poller works through).
pub async fn backlog(
    conn: &mut AsyncPgConnection,
    domain: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM troupe_timer \
         WHERE domain = $1 AND dead_reason IS NULL AND attempt_at <= $2",
    )
    .bind::<Text, _>(domain)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .await?;
    Ok(count.n)
}
