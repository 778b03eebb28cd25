//! Entity state rows.

use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::troupe_entity_state as t;

/// One entity as stored.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct StoredEntity {
    /// Entity key.
    pub key: String,
    /// State as JSON.
    pub state: serde_json::Value,
    /// Inputs applied.
    pub version: i64,
}

/// A state to write: key, state as JSON text, version, and the version it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityWrite {
    /// Entity key.
    pub key: String,
    /// Serialized state.
    pub state_json: String,
    /// Inputs applied.
    pub version: i64,
    /// The version this write was computed from (0: the entity is new). The write only lands
    /// if Postgres still holds that version.
    pub expected_version: i64,
}

/// Loads a page of a domain's entities with keys after `after`, in key order; with
/// `containing`, only those whose state contains that JSON (`state @> containing`: a field
/// filter such as `{"customer_id": "c1"}`). The filter walks the primary key in order, so a
/// rare match may scan many rows: fine for a page of a customer's orders, not for analytics.
#[tracing::instrument(skip_all, fields(domain, limit))]
pub async fn load_page(
    conn: &mut AsyncPgConnection,
    domain: &str,
    after: Option<&str>,
    limit: i64,
    containing: Option<&serde_json::Value>,
) -> Result<Vec<StoredEntity>, StoreError> {
    let mut query = t::table
        .filter(t::domain.eq(domain))
        .select((t::key, t::state, t::version))
        .order(t::key.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(t::key.gt(after.to_owned()));
    }
    if let Some(containing) = containing {
        query = query.filter(t::state.contains(containing.clone()));
    }
    Ok(query.load(conn).await?)
}

/// Loads the given entities of `domain`; keys with no row are absent from the result.
pub async fn load_keys(
    conn: &mut AsyncPgConnection,
    domain: &str,
    keys: &[String],
) -> Result<Vec<StoredEntity>, StoreError> {
    Ok(t::table
        .filter(t::domain.eq(domain))
        .filter(t::key.eq_any(keys))
        .select((t::key, t::state, t::version))
        .load(conn)
        .await?)
}

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Int8)]
    written: i64,
}

/// Writes the given entities of `domain` with one statement, each only if Postgres still holds
/// the version it was computed from (optimistic concurrency). If any does not — the in-memory
/// copy is stale: another writer, or a commit whose outcome was lost — nothing should be
/// committed: the error is [`StoreError::StaleEntities`], and the caller's transaction rolls
/// back.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    domain: &str,
    rows: &[EntityWrite],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let states: Vec<&str> = rows.iter().map(|r| r.state_json.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    let expected: Vec<i64> = rows.iter().map(|r| r.expected_version).collect();
    // Existing entities are updated only at their expected version; new ones are inserted only
    // if nobody inserted them meanwhile. Counting what landed tells whether all did.
    let landed: Written = diesel::sql_query(
        "WITH u AS (SELECT * FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(k, s, v, e)), \
         updated AS ( \
           UPDATE troupe_entity_state t SET state = u.s::jsonb, version = u.v, updated_at = now() \
           FROM u WHERE u.e > 0 AND t.domain = $1 AND t.key = u.k AND t.version = u.e \
           RETURNING 1), \
         inserted AS ( \
           INSERT INTO troupe_entity_state (domain, key, state, version, updated_at) \
           SELECT $1, k, s::jsonb, v, now() FROM u WHERE u.e = 0 \
           ON CONFLICT (domain, key) DO NOTHING \
           RETURNING 1) \
         SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted) AS written",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<Text>, _>(states)
    .bind::<Array<Int8>, _>(versions)
    .bind::<Array<Int8>, _>(expected)
    .get_result(conn)
    .await?;
    let stale = rows.len() as i64 - landed.written;
    if stale > 0 {
        return Err(StoreError::StaleEntities {
            stale: stale as usize,
            of: rows.len(),
        });
    }
    Ok(())
}
