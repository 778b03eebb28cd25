//! Entity state rows.

use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::troupe_entity_state as t;

/// One entity as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntity {
    /// Entity key.
    pub key: String,
    /// State as JSON.
    pub state: serde_json::Value,
    /// Inputs applied.
    pub version: i64,
}

/// A state to write: key, state as JSON text, version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityWrite {
    /// Entity key.
    pub key: String,
    /// Serialized state.
    pub state_json: String,
    /// Inputs applied.
    pub version: i64,
}

/// Loads a page of a domain's entities with keys after `after`, in key order.
#[tracing::instrument(skip_all, fields(domain, limit))]
pub async fn load_page(
    conn: &mut AsyncPgConnection,
    domain: &str,
    after: Option<&str>,
    limit: i64,
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
    let rows: Vec<(String, serde_json::Value, i64)> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(key, state, version)| StoredEntity {
            key,
            state,
            version,
        })
        .collect())
}

/// Inserts or replaces the given entities of `domain` with one statement.
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
    diesel::sql_query(
        "INSERT INTO troupe_entity_state (domain, key, state, version, updated_at) \
         SELECT $1, k, s::jsonb, v, now() FROM UNNEST($2::text[], $3::text[], $4::int8[]) AS u(k, s, v) \
         ON CONFLICT (domain, key) DO UPDATE \
         SET state = EXCLUDED.state, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<Text>, _>(states)
    .bind::<Array<Int8>, _>(versions)
    .execute(conn)
    .await?;
    Ok(())
}
