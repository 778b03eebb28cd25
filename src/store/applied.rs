//! Records of applied stream entries, for recognising redeliveries after a crash between
//! commit and acknowledgement.

use std::collections::HashSet;

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::troupe_applied_batch as t;
use crate::streams::entry::EntryId;

/// Records that a batch applied `ids` from `stream`.
pub async fn record(
    conn: &mut AsyncPgConnection,
    domain: &str,
    stream: &str,
    ids: &[EntryId],
) -> Result<(), StoreError> {
    let Some(max) = ids.iter().max() else {
        return Ok(());
    };
    let to_i64 = |v: u64| {
        i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("stream id {max} out of range")))
    };
    diesel::insert_into(t::table)
        .values((
            t::domain.eq(domain),
            t::stream.eq(stream),
            t::entry_ids.eq(ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
            t::max_id_ms.eq(to_i64(max.ms)?),
            t::max_id_seq.eq(to_i64(max.seq)?),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Which of `ids` were already applied by a committed batch.
pub async fn already_applied(
    conn: &mut AsyncPgConnection,
    domain: &str,
    stream: &str,
    ids: &[EntryId],
) -> Result<HashSet<EntryId>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let found: Vec<Found> = diesel::sql_query(
        "SELECT DISTINCT x AS id FROM troupe_applied_batch, UNNEST(entry_ids) AS x \
         WHERE domain = $1 AND stream = $2 AND entry_ids && $3::text[] AND x = ANY($3::text[])",
    )
    .bind::<Text, _>(domain)
    .bind::<Text, _>(stream)
    .bind::<Array<Text>, _>(&wanted)
    .load(conn)
    .await?;
    found
        .into_iter()
        .map(|f| f.id.parse().map_err(StoreError::Corrupt))
        .collect()
}

/// Deletes records whose newest entry is older than `oldest_unacked`: such entries were all
/// acknowledged and can never be redelivered.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    domain: &str,
    stream: &str,
    oldest_unacked: EntryId,
) -> Result<usize, StoreError> {
    let ms = i64::try_from(oldest_unacked.ms).unwrap_or(i64::MAX);
    let seq = i64::try_from(oldest_unacked.seq).unwrap_or(i64::MAX);
    let deleted = diesel::delete(
        t::table
            .filter(t::domain.eq(domain))
            .filter(t::stream.eq(stream))
            .filter(
                t::max_id_ms
                    .lt(ms)
                    .or(t::max_id_ms.eq(ms).and(t::max_id_seq.lt(seq))),
            ),
    )
    .execute(conn)
    .await?;
    Ok(deleted)
}
