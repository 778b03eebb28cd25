//! Replies of commands sent with an `Idempotency-Key`, stored in the command's own transaction
//! so that a retry gets the original reply and applies nothing.

use diesel::QueryableByName;
use diesel::sql_types::{Jsonb, Text};
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
struct Stored {
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Jsonb)]
    reply: serde_json::Value,
}

/// The stored record of `key`, if any.
pub async fn find(
    conn: &mut AsyncPgConnection,
    domain: &str,
    key: &str,
) -> Result<Option<CommandRecord>, StoreError> {
    let found: Vec<Stored> = diesel::sql_query(
        "SELECT fingerprint, reply FROM troupe_command_reply \
         WHERE domain = $1 AND idempotency_key = $2",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(key)
    .load(conn)
    .await?;
    Ok(found.into_iter().next().map(|s| CommandRecord {
        key: key.to_owned(),
        fingerprint: s.fingerprint,
        reply: s.reply,
    }))
}
