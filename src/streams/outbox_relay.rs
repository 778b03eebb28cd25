//! The Redis side of the outbox relay: publishing committed events exactly once, noticing when
//! Redis or Postgres went back, and trimming output streams without deleting what a consumer
//! group has not yet acknowledged.
//!
//! Exactly once across crashes: the relay publishes outbox rows in `seq` order through one Lua
//! script that appends the rows (each to its stream: a domain may publish to several) and
//! moves a per-domain marker (`"<seq> <event id>"` of the last
//! row published) in the same atomic step, so the stream and the marker cannot disagree, even
//! after Redis lost its last second. Rows are committed in `seq` order (the store takes a
//! per-domain lock when it writes the outbox), so the marker says exactly what Redis holds.
//!
//! The script publishes only when the marker is where the relay expects it (the last row
//! Postgres records as published). Otherwise it publishes nothing and the relay compares the
//! marker with the outbox (the relay actor's `reconcile`): Redis behind (it lost published events) means
//! publishing the kept rows after the marker again; the marker ahead with the same event at its
//! `seq` means a crash between publishing and recording it; a marker naming an event Postgres
//! does not have at that `seq` means Postgres went back (a restore, a reset, a failover that lost
//! commits), and the marker is moved down so new rows are never skipped.

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
    /// The Redis key of the stream it is appended to.
    pub stream_key: String,
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
    /// Published before: sent again because Redis lost it.
    pub republished: bool,
}

/// Where the relay's last publication ended, as stored in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// Outbox `seq` of the last event published (0: none).
    pub seq: i64,
    /// Its envelope id (empty: none, or a marker written before ids were recorded).
    pub event_id: String,
}

impl Marker {
    /// The stored form, `"<seq> <event id>"`.
    pub fn encode(&self) -> String {
        format!("{} {}", self.seq, self.event_id)
    }

    /// Parses a stored marker; a bare number (the format before ids) parses with an empty id.
    fn decode(raw: &str) -> Option<Marker> {
        let (seq, id) = raw.split_once(' ').unwrap_or((raw, ""));
        Some(Marker {
            seq: seq.parse().ok()?,
            event_id: id.to_owned(),
        })
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Appended this many events and moved the marker to the last one.
    Appended(u64),
    /// The marker was not where the relay expected it: nothing was appended; the relay reconciles.
    MarkerMoved,
}

// KEYS[1] is the marker, KEYS[2..] the streams; each event's last argument is the index of
// its stream's key in KEYS (every key a script touches must be declared). All or nothing: the
// marker moves only with the last append, and nothing is appended when any stream is unusable.
const PUBLISH: &str = r"
local raw = redis.call('GET', KEYS[1])
local expected = ARGV[1] .. ' ' .. ARGV[2]
if raw == false then raw = '0 ' end
if raw ~= expected then
  return -1
end
-- A script's writes are not rolled back when a later command fails, so every stream is checked
-- before the first append: a key of another type fails the whole batch, writing nothing.
for k = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE output stream ' .. KEYS[k] .. ' holds a ' .. t)
  end
end
local published = 0
local last = ''
for i = 3, #ARGV, 8 do
  local stream = KEYS[tonumber(ARGV[i + 7])]
  if ARGV[i + 6] == '' then
    redis.call('XADD', stream, '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2], 'key', ARGV[i + 3],
      'data', ARGV[i + 4], 'ts', ARGV[i + 5])
  else
    redis.call('XADD', stream, '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2], 'key', ARGV[i + 3],
      'data', ARGV[i + 4], 'ts', ARGV[i + 5], 'traceparent', ARGV[i + 6])
  end
  last = ARGV[i] .. ' ' .. ARGV[i + 1]
  published = published + 1
end
if published > 0 then
  redis.call('SET', KEYS[1], last)
end
return published
";

/// Appends `events` (consecutive unpublished rows, in `seq` order), each to its stream, and
/// moves the marker at `marker_key` to the last of them, provided the marker is at `expected`;
/// otherwise appends nothing and answers [`Published::MarkerMoved`]. One script for all of a
/// domain's streams, so the marker says what every one of them holds.
pub async fn publish<C: ConnectionLike>(
    conn: &mut C,
    marker_key: &str,
    expected: &Marker,
    events: &[OutgoingEvent],
) -> Result<Published, StreamError> {
    if events.is_empty() {
        return Ok(Published::Appended(0));
    }
    let script = Script::new(PUBLISH);
    let mut invocation = script.key(marker_key);
    let mut streams: Vec<&str> = Vec::new();
    for e in events {
        if !streams.contains(&e.stream_key.as_str()) {
            streams.push(&e.stream_key);
            invocation.key(&e.stream_key);
        }
    }
    invocation.arg(expected.seq).arg(&expected.event_id);
    for e in events {
        // Lua's KEYS is 1-based and KEYS[1] is the marker.
        let stream_index = streams.iter().position(|s| *s == e.stream_key).unwrap_or(0) + 2;
        invocation
            .arg(e.seq)
            .arg(&e.event_id)
            .arg(&e.event_type)
            .arg(&e.key)
            .arg(&e.data)
            .arg(&e.ts)
            .arg(e.traceparent.as_deref().unwrap_or(""))
            .arg(stream_index);
    }
    let appended: i64 = invocation.invoke_async(conn).await?;
    Ok(u64::try_from(appended).map_or(Published::MarkerMoved, Published::Appended))
}

/// The marker as stored (`None`: Redis has none, as after losing everything) and decoded
/// (`None` also when it does not parse).
pub async fn read_marker<C: ConnectionLike>(
    conn: &mut C,
    marker_key: &str,
) -> Result<(Option<String>, Option<Marker>), StreamError> {
    let raw: Option<String> = redis::cmd("GET").arg(marker_key).query_async(conn).await?;
    let decoded = raw.as_deref().and_then(Marker::decode);
    Ok((raw, decoded))
}

const REPLACE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then v = '' end
if v ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Sets the marker to `marker` if it still holds `found` (as [`read_marker`] returned it), so
/// that a marker someone else moved meanwhile is never overwritten; returns whether it did.
pub async fn replace_marker<C: ConnectionLike>(
    conn: &mut C,
    marker_key: &str,
    found: Option<&str>,
    marker: &Marker,
) -> Result<bool, StreamError> {
    let replaced: i64 = Script::new(REPLACE)
        .key(marker_key)
        .arg(found.unwrap_or(""))
        .arg(marker.encode())
        .invoke_async(conn)
        .await?;
    Ok(replaced == 1)
}

/// Whether this Redis can confirm that a write reached its append-only file (`WAITAOF`, Redis
/// 7.2 and later, with `appendonly yes`); the error says why not.
pub async fn probe_waitaof<C: ConnectionLike>(conn: &mut C) -> Result<(), StreamError> {
    let _: Vec<i64> = redis::cmd("WAITAOF")
        .arg(1)
        .arg(0)
        .arg(1000)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Waits until this connection's writes are fsynced to the local append-only file, at most
/// `timeout`; `false` when they were not in time.
pub async fn wait_aof<C: ConnectionLike>(
    conn: &mut C,
    timeout: std::time::Duration,
) -> Result<bool, StreamError> {
    let acks: Vec<i64> = redis::cmd("WAITAOF")
        .arg(1)
        .arg(0)
        .arg(timeout.as_millis().max(1) as u64)
        .query_async(conn)
        .await?;
    Ok(acks.first().is_some_and(|local| *local >= 1))
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

    fn m(seq: i64, id: &str) -> Marker {
        Marker {
            seq,
            event_id: id.into(),
        }
    }

    #[test]
    fn markers_round_trip_and_old_markers_parse_without_id() {
        assert_eq!(Marker::decode(&m(42, "e-1").encode()), Some(m(42, "e-1")));
        assert_eq!(Marker::decode("17"), Some(m(17, "")));
        assert_eq!(Marker::decode("x y"), None);
    }

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
