//! Replies of commands sent with an `Idempotency-Key`, stored in the command's own transaction
//! so that a retry gets the original reply and applies nothing.

use diesel::QueryableByName;
use diesel::sql_types::{Array, Jsonb, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

/// A command's idempotency record.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// What identifies the request (a hash of its target and body): the same key with another
    /// fingerprint is a client error, not a retry.
    pub fingerprint: String,
    /// The reply to give again.
    pub reply: serde_json::Value,
}

/// Stores `record` for `domain`; returns `false` (and stores nothing) when the key is taken.
pub async fn record(
    conn: &mut AsyncPgConnection,
    domain: &str,
    record: &CommandRecord,
) -> Result<bool, StoreError> {
    let inserted = diesel::sql_query(
        "INSERT INTO troupe_command_reply (domain, idempotency_key, fingerprint, reply) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(&record.key)
    .bind::<Text, _>(&record.fingerprint)
    .bind::<Jsonb, _>(&record.reply)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

#[derive(QueryableByName)]
struct StoredKeyed {
    #[diesel(sql_type = Text)]
    idempotency_key: String,
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Jsonb)]
    reply: serde_json::Value,
}

/// The stored records of `keys`, by key, in one query (a unit of commands asks once).
pub async fn find_many(
    conn: &mut AsyncPgConnection,
    domain: &str,
    keys: &[String],
) -> Result<std::collections::HashMap<String, CommandRecord>, StoreError> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<StoredKeyed> = diesel::sql_query(
        "SELECT idempotency_key, fingerprint, reply FROM troupe_command_reply \
         WHERE domain = $1 AND idempotency_key = ANY($2)",
    )
    .bind::<Text, _>(domain)
    .bind::<Array<Text>, _>(keys)
    .load(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|s| {
            let record = CommandRecord {
                key: s.idempotency_key.clone(),
                fingerprint: s.fingerprint,
                reply: s.reply,
            };
            (s.idempotency_key, record)
        })
        .collect())
}
