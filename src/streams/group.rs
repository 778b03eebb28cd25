//! Consumer-group commands: create, read, acknowledge, claim, inspect.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;

use super::StreamError;
use super::entry::{EntryId, StreamEntry, parse_entries, parse_read_reply, text};

/// A consumer of a group on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Redis key of the stream.
    pub stream_key: String,
    /// Group name (the domain's name).
    pub group: String,
    /// Consumer name (the instance id).
    pub name: String,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// This consumer's own pending entries with ids after the given one (`0` for all).
    OwnPendingAfter(EntryId),
    /// Entries never delivered to the group (`>`).
    New,
}

/// Creates the group at the start of the stream (`0`, `MKSTREAM`) if it does not exist, so
/// nothing written before the first start is missed.
pub async fn ensure_group<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
    group: &str,
) -> Result<(), StreamError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream_key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => Ok(other?),
    }
}

impl Consumer {
    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s <id|>`.
    pub async fn read<C: ConnectionLike>(
        &self,
        conn: &mut C,
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&self.stream_key);
        match from {
            ReadFrom::New => cmd.arg(">"),
            ReadFrom::OwnPendingAfter(id) => cmd.arg(id.to_string()),
        };
        let reply: Value = cmd.query_async(conn).await?;
        parse_read_reply(reply).map_err(StreamError::Protocol)
    }

    /// `XACK` the given ids; returns how many were pending.
    pub async fn ack<C: ConnectionLike>(
        &self,
        conn: &mut C,
        ids: &[EntryId],
    ) -> Result<u64, StreamError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream_key).arg(&self.group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        Ok(cmd.query_async(conn).await?)
    }

    /// `XAUTOCLAIM` entries idle for at least `min_idle` from any consumer of the group,
    /// starting at `start`. Returns the cursor for the next call (`0-0` when the scan is
    /// complete) and the claimed entries in id order, including those deleted from the stream
    /// while pending (`fields: None`; Redis drops them from the pending list itself), so that
    /// they are dead-lettered like deleted entries found among the consumer's own.
    pub async fn autoclaim<C: ConnectionLike>(
        &self,
        conn: &mut C,
        min_idle: Duration,
        start: EntryId,
        count: usize,
    ) -> Result<(EntryId, Vec<StreamEntry>), StreamError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream_key)
            .arg(&self.group)
            .arg(&self.name)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(StreamError::Protocol("unexpected XAUTOCLAIM reply".into()));
        };
        if parts.len() < 2 {
            return Err(StreamError::Protocol("short XAUTOCLAIM reply".into()));
        }
        parts.truncate(3);
        let deleted = match parts.len() {
            3 => match parts.pop() {
                Some(Value::Array(ids)) => ids,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut entries =
            parse_entries(parts.pop().unwrap_or(Value::Nil)).map_err(StreamError::Protocol)?;
        let next = text(parts.pop().unwrap_or(Value::Nil))
            .and_then(|s| s.parse())
            .map_err(StreamError::Protocol)?;
        if !deleted.is_empty() {
            for id in deleted {
                let id = text(id)
                    .and_then(|s| s.parse())
                    .map_err(StreamError::Protocol)?;
                entries.push(StreamEntry { id, fields: None });
            }
            entries.sort_by_key(|e| e.id);
        }
        Ok((next, entries))
    }

    /// Delivery counts of this consumer's pending entries between `first` and `last`.
    pub async fn delivery_counts<C: ConnectionLike>(
        &self,
        conn: &mut C,
        first: EntryId,
        last: EntryId,
        count: usize,
    ) -> Result<HashMap<EntryId, u64>, StreamError> {
        let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream_key)
            .arg(&self.group)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(count)
            .arg(&self.name)
            .query_async(conn)
            .await?;
        reply
            .into_iter()
            .map(|(id, _, _, delivered)| {
                Ok((id.parse().map_err(StreamError::Protocol)?, delivered))
            })
            .collect()
    }
}

/// A group's backlog, from `XINFO GROUPS` and the `XPENDING` summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// The oldest pending entry.
    pub oldest_pending: Option<EntryId>,
    /// The last entry delivered to the group.
    pub last_delivered: EntryId,
}

/// Statistics of every group on a stream, by group name.
pub async fn group_stats<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
) -> Result<HashMap<String, GroupStats>, StreamError> {
    let info: redis::streams::StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream_key)
        .query_async(conn)
        .await
    {
        Ok(info) => info,
        Err(e) if e.to_string().contains("no such key") => return Ok(HashMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = HashMap::new();
    for group in info.groups {
        let summary: (u64, Option<String>, Option<String>, Value) = redis::cmd("XPENDING")
            .arg(stream_key)
            .arg(&group.name)
            .query_async(conn)
            .await?;
        let oldest_pending = summary
            .1
            .map(|s| s.parse())
            .transpose()
            .map_err(StreamError::Protocol)?;
        let last_delivered = group
            .last_delivered_id
            .parse()
            .map_err(StreamError::Protocol)?;
        out.insert(
            group.name,
            GroupStats {
                lag: group.lag.map(|l| l as u64),
                pending: summary.0,
                oldest_pending,
                last_delivered,
            },
        );
    }
    Ok(out)
}

/// How long the group's oldest pending entry has waited since it was last delivered (`None`:
/// nothing pending). This is time pending, not the entry's age: an entry written a day ago and
/// delivered a second ago has waited a second.
pub async fn oldest_pending_wait<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
    group: &str,
) -> Result<Option<Duration>, StreamError> {
    let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream_key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(reply
        .first()
        .map(|(_, _, idle_ms, _)| Duration::from_millis(*idle_ms)))
}

/// Removes the consumer only if it owns no pending entry, atomically (an entry delivered to it
/// after it was found idle would otherwise be dropped from the pending list and never
/// redelivered).
const REMOVE_IF_EMPTY: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Removes the consumers of `group` other than `keep` that have been idle for at least `grace`
/// and own no pending entry (instances that went away); returns their names.
pub async fn remove_idle_consumers<C: ConnectionLike>(
    conn: &mut C,
    stream_key: &str,
    group: &str,
    keep: &str,
    grace: Duration,
) -> Result<Vec<String>, StreamError> {
    let info: redis::streams::StreamInfoConsumersReply = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream_key)
        .arg(group)
        .query_async(conn)
        .await
    {
        Ok(info) => info,
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let grace_ms = u128::from(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let script = redis::Script::new(REMOVE_IF_EMPTY);
    let mut removed = Vec::new();
    for c in info.consumers {
        if c.name == keep || c.pending > 0 || (c.idle as u128) < grace_ms {
            continue;
        }
        let done: i64 = script
            .key(stream_key)
            .arg(group)
            .arg(&c.name)
            .invoke_async(conn)
            .await?;
        if done == 1 {
            removed.push(c.name);
        }
    }
    Ok(removed)
}
