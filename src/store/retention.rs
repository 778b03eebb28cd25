//! Age-based pruning of the records Troupe keeps for a window: applied-input ids, command
//! replies, published outbox rows and dead timers. Each call is one statement deleting at most `limit`
//! rows, so pruning a large backlog never holds locks or a connection for long.

use diesel::sql_types::{Int8, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

/// A kind of record kept for a retention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// `troupe_applied_input`: ids of applied inputs (the deduplication window).
    AppliedInputs,
    /// `troupe_command_reply`: replies stored under an `Idempotency-Key`.
    CommandReplies,
    /// `troupe_outbox` rows already published, kept so they can be published again when
    /// Redis comes back behind. Deleted oldest first, so what is kept is always a range the
    /// relay can tell from a gap; the newest published row is always kept: the relay checks
    /// Redis's marker against it.
    PublishedEvents,
    /// `troupe_timer` rows set aside as dead (they no longer fire), kept for the operator like
    /// dead letters.
    DeadTimers,
}

impl Retained {
    /// The bounded `DELETE` for this kind; `$1` domain, `$2` window in seconds, `$3` limit.
    /// Only static text goes into the statement.
    fn statement(self) -> &'static str {
        match self {
            Retained::AppliedInputs => {
                "DELETE FROM troupe_applied_input WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM troupe_applied_input \
                   WHERE domain = $1 AND applied_at < now() - make_interval(secs => $2::float8) \
                   LIMIT $3))"
            }
            Retained::CommandReplies => {
                "DELETE FROM troupe_command_reply WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM troupe_command_reply \
                   WHERE domain = $1 AND created_at < now() - make_interval(secs => $2::float8) \
                   LIMIT $3))"
            }
            Retained::PublishedEvents => {
                "DELETE FROM troupe_outbox WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM troupe_outbox \
                   WHERE domain = $1 AND published_at IS NOT NULL \
                     AND published_at < now() - make_interval(secs => $2::float8) \
                     AND seq < (SELECT max(seq) FROM troupe_outbox \
                                WHERE domain = $1 AND published_at IS NOT NULL) \
                   ORDER BY seq LIMIT $3))"
            }
            Retained::DeadTimers => {
                "DELETE FROM troupe_timer WHERE ctid = ANY(ARRAY( \
                   SELECT ctid FROM troupe_timer \
                   WHERE domain = $1 AND dead_reason IS NOT NULL \
                     AND dead_at < now() - make_interval(secs => $2::float8) \
                   LIMIT $3))"
            }
        }
    }

    /// A name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Retained::AppliedInputs => "applied_inputs",
            Retained::CommandReplies => "command_replies",
            Retained::PublishedEvents => "published_events",
            Retained::DeadTimers => "dead_timers",
        }
    }
}

/// Deletes up to `limit` of `domain`'s records of `kind` older than `window_seconds`; returns
/// how many. Callers repeat it while it returns `limit`.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    kind: Retained,
    domain: &str,
    window_seconds: u64,
    limit: i64,
) -> Result<usize, StoreError> {
    let window = i64::try_from(window_seconds).unwrap_or(i64::MAX);
    Ok(diesel::sql_query(kind.statement())
        .bind::<Text, _>(domain)
        .bind::<Int8, _>(window)
        .bind::<Int8, _>(limit)
        .execute(conn)
        .await?)
}
