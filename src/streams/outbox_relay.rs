//! The Redis side of the outbox relay: publishing committed events exactly once, and trimming
//! output streams without deleting what a consumer group has not yet acknowledged.
//!
//! Exactly once across crashes: the relay publishes outbox rows in `seq` order through one Lua
//! script that appends each row whose `seq` is above a per-domain marker and then raises the
//! marker, atomically. If the process dies after the script ran but before the rows were
//! deleted from Postgres, the next run sends the same rows and the script skips them. Rows are
//! committed in `seq` order (the store takes a per-domain lock when it writes the outbox), so a
//! marker is enough.

use std::collections::HashMap;

use redis::Script;
use redis::aio::ConnectionLike;

use super::StreamError;
use super::entry::EntryId;
use super::group::group_stats;

/// An outbox row on its way to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Outbox sequence number.
    pub seq: i64,
    /// Envelope `id`.
    pub event_id: String,
    /// Envelope `type`.
    pub event_type: String,
    /// Envelope `key`.
    pub key: String,
    /// Envelope `data`.
    pub data: String,
    /// Envelope `ts`.
    pub ts: String,
    /// Envelope `traceparent`.
    pub traceparent: Option<String>,
}

const PUBLISH: &str = r"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local published = 0
for i = 1, #ARGV, 7 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    if ARGV[i + 6] == '' then
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2], 'key', ARGV[i + 3],
        'data', ARGV[i + 4], 'ts', ARGV[i + 5])
    else
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2], 'key', ARGV[i + 3],
        'data', ARGV[i + 4], 'ts', ARGV[i + 5], 'traceparent', ARGV[i + 6])
    end
    last = seq
    published = published + 1
  end
end
redis.call('SET', KEYS[2], last)
return published
";

/// Appends the events with `seq` above the marker at `marker_key` to `stream_key`, in order,
/// and raises the marker; returns how many were appended (the rest were already published).
pub async fn publish<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
    marker_key: &str,
    events: &[OutgoingEvent],
) -> Result<u64, StreamError> {
    if events.is_empty() {
        return Ok(0);
    }
    let script = Script::new(PUBLISH);
    let mut invocation = script.key(stream_key);
    invocation.key(marker_key);
    for e in events {
        invocation
            .arg(e.seq)
            .arg(&e.event_id)
            .arg(&e.event_type)
            .arg(&e.key)
            .arg(&e.data)
            .arg(&e.ts)
            .arg(e.traceparent.as_deref().unwrap_or(""));
    }
    Ok(invocation.invoke_async(conn).await?)
}

/// Trims `stream_key` to entries newer than `keep_after`, but never past an entry that some
/// group has not read and acknowledged. Returns the number of entries removed.
pub async fn trim<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
    keep_after: EntryId,
) -> Result<u64, StreamError> {
    let groups = group_stats(conn, stream_key).await?;
    let min_id = safe_trim_point(keep_after, &groups);
    // Exact (`=`) trimming: approximate trimming may keep more, never less, but exact keeps the
    // retention predictable and the cost is small at our trim frequency.
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream_key)
        .arg("MINID")
        .arg(min_id.to_string())
        .query_async(conn)
        .await?;
    Ok(removed)
}

/// The lowest id that must be kept: `keep_after`, lowered to each group's oldest unacknowledged
/// entry and to the entry after its last-delivered id.
pub fn safe_trim_point(
    keep_after: EntryId,
    groups: &HashMap<String, super::group::GroupStats>,
) -> EntryId {
    groups.values().fold(keep_after, |min, g| {
        let unread = g.last_delivered.next();
        let unacked = g.oldest_pending.unwrap_or(unread);
        min.min(unread).min(unacked)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::group::GroupStats;

    #[test]
    fn trimming_stops_at_unread_and_unacked_entries() {
        let id = |ms| EntryId { ms, seq: 0 };
        let mut groups = HashMap::new();
        assert_eq!(safe_trim_point(id(100), &groups), id(100));
        groups.insert(
            "a".into(),
            GroupStats {
                lag: None,
                pending: 0,
                oldest_pending: None,
                last_delivered: id(50),
            },
        );
        assert_eq!(safe_trim_point(id(100), &groups), id(50).next());
        groups.insert(
            "b".into(),
            GroupStats {
                lag: None,
                pending: 1,
                oldest_pending: Some(id(20)),
                last_delivered: id(90),
            },
        );
        assert_eq!(safe_trim_point(id(100), &groups), id(20));
    }
}
