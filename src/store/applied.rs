//! Records of applied inputs, by envelope id, for exactly-once processing that does not trust
//! Redis's memory: an input whose id is recorded is acknowledged without being applied.
//!
//! The record is written in the unit's own transaction with one `INSERT … ON CONFLICT DO
//! NOTHING`, which also reports the ids that were already there; the caller then rolls the
//! unit back and redoes it without them. The common path costs no extra round trip.

use diesel::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Records `ids` as applied by `domain`; returns those that were recorded already (by an
/// earlier unit), which the caller must not apply: roll back and redo without them.
pub async fn record(
    conn: &mut AsyncPgConnection,
    domain: &str,
    ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let already: Vec<Id> = diesel::sql_query(
        "WITH wanted AS (SELECT x FROM UNNEST($2::text[]) AS x), \
         inserted AS ( \
           INSERT INTO troupe_applied_input (domain, input_id) SELECT $1, x FROM wanted \
           ON CONFLICT DO NOTHING RETURNING input_id) \
         SELECT x AS id FROM wanted WHERE x NOT IN (SELECT input_id FROM inserted)",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .load(conn)
    .await?;
    Ok(already.into_iter().map(|r| r.id).collect())
}
