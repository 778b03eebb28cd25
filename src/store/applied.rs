//! Records of applied inputs, by envelope id, for exactly-once processing that does not trust
//! Redis's memory: an input whose id is recorded is acknowledged without being applied.
//!
//! The record is written in the unit's own transaction with one plain `INSERT`: the common
//! path, where no input was applied before, costs one statement and no conflict handling
//! (`ON CONFLICT` with a report of the conflicting ids cost about twice as much per id). When
//! an id was recorded already, the `INSERT` fails on the record's key and the transaction rolls
//! back; only then are the recorded ids looked up ([`already_applied`]), and the caller redoes
//! the unit without them.

use diesel::QueryableByName;
use diesel::result::{DatabaseErrorKind, Error};
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

/// The record's key: a violation of it means an input was applied before.
const RECORD_KEY: &str = "troupe_applied_input_pkey";

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Records `ids` as applied by `domain`. If any was recorded already (by an earlier unit, or a
/// concurrent one), this fails with an error [`is_already_recorded`] recognises, and the
/// transaction is aborted.
pub async fn record(
    conn: &mut AsyncPgConnection,
    domain: &str,
    ids: &[&str],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO troupe_applied_input (domain, input_id) SELECT $1, x FROM UNNEST($2::text[]) AS x",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `error` is [`record`] refusing an id that was recorded already.
pub fn is_already_recorded(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some(RECORD_KEY)
    )
}

/// Those of `ids` that `domain` recorded as applied.
pub async fn already_applied(
    conn: &mut AsyncPgConnection,
    domain: &str,
    ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<Id> = diesel::sql_query(
        "SELECT input_id AS id FROM troupe_applied_input \
         WHERE domain = $1 AND input_id = ANY($2::text[])",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(ids)
    .load(conn)
    .await?;
    Ok(found.into_iter().map(|r| r.id).collect())
}
