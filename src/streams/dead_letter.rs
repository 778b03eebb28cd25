//! Dead-letter streams: `<stream>.dlq` holds entries that could not be processed, with the
//! original fields and the reason, for an operator to list, replay or discard.

use redis::aio::ConnectionLike;
use redis::{Script, Value};
use serde::Serialize;

use super::StreamError;
use super::entry::{EntryId, StreamEntry, parse_entries};
use super::group::Consumer;

/// Prefix of the fields the runtime adds to a dead-lettered entry.
pub const FIELD_PREFIX: &str = "dlq_";

/// Why an entry is dead-lettered.
#[derive(Debug, Clone)]
pub struct Reason<'a> {
    /// Stable code: `invalid_json`, `unknown_type`, `max_deliveries`...
    pub code: &'a str,
    /// The error text.
    pub error: &'a str,
    /// How many times the entry was delivered.
    pub deliveries: u64,
}

/// Acknowledges the entry and, only if it was still pending, appends its fields to the
/// dead-letter stream: one script, so a retry after a lost reply cannot add a second copy.
/// (`ARGV[3] == '1'`: the entry was deleted from the stream and Redis already dropped it from
/// the pending list while claiming it; record it anyway.)
const MOVE: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 or ARGV[3] == '1' then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
  return 1
end
return 0
";

/// Most original fields copied into a dead letter: a script cannot pass many more values to one
/// command (Lua's stack holds ~8,000), and an entry with thousands of fields is garbage anyway.
/// The rest are dropped and `dlq_fields_dropped` says how many.
pub const MAX_DEAD_LETTER_FIELDS: usize = 1_000;

/// Moves `entry` to `dlq_key` and acknowledges it atomically: either both happen or neither,
/// so an entry is never both dead-lettered and still pending, nor lost; and an entry that is no
/// longer pending (a retry after a lost reply) is not added twice. Returns whether it moved.
pub async fn move_to_dead_letters<C: ConnectionLike>(
    conn: &mut C,
    consumer: &Consumer,
    dlq_key: &str,
    entry: &StreamEntry,
    reason: &Reason<'_>,
) -> Result<bool, StreamError> {
    let script = Script::new(MOVE);
    let mut invocation = script.key(&consumer.stream_key);
    invocation
        .key(dlq_key)
        .arg(&consumer.group)
        .arg(entry.id.to_string())
        .arg(if entry.fields.is_none() { "1" } else { "0" });
    let fields = entry.fields.as_deref().unwrap_or_default();
    for (k, v) in fields.iter().take(MAX_DEAD_LETTER_FIELDS) {
        invocation.arg(k).arg(v.as_slice());
    }
    if fields.len() > MAX_DEAD_LETTER_FIELDS {
        invocation
            .arg("dlq_fields_dropped")
            .arg(fields.len() - MAX_DEAD_LETTER_FIELDS);
    }
    invocation
        .arg("dlq_reason")
        .arg(reason.code)
        .arg("dlq_error")
        .arg(reason.error)
        .arg("dlq_stream")
        .arg(&consumer.stream_key)
        .arg("dlq_group")
        .arg(&consumer.group)
        .arg("dlq_consumer")
        .arg(&consumer.name)
        .arg("dlq_original_id")
        .arg(entry.id.to_string())
        .arg("dlq_deliveries")
        .arg(reason.deliveries)
        .arg("dlq_at")
        .arg(chrono::Utc::now().to_rfc3339());
    let moved: i64 = invocation.invoke_async(conn).await?;
    Ok(moved == 1)
}

/// Trims a dead-letter stream to entries added after `keep_after` and to its newest `max_len`
/// entries; returns how many were removed.
pub async fn trim<C: ConnectionLike>(
    conn: &mut C,
    dlq_key: &str,
    keep_after: EntryId,
    max_len: u64,
) -> Result<u64, StreamError> {
    let (by_age, by_len): (u64, u64) = redis::pipe()
        .cmd("XTRIM")
        .arg(dlq_key)
        .arg("MINID")
        .arg(keep_after.to_string())
        .cmd("XTRIM")
        .arg(dlq_key)
        .arg("MAXLEN")
        .arg(max_len)
        .query_async(conn)
        .await?;
    Ok(by_age + by_len)
}

/// A dead-lettered entry as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id in the dead-letter stream.
    pub id: String,
    /// Original fields, and the `dlq_*` fields the runtime added.
    pub fields: std::collections::BTreeMap<String, String>,
}

/// Lists dead letters after `after` (exclusive), oldest first.
pub async fn list<C: ConnectionLike>(
    conn: &mut C,
    dlq_key: &str,
    after: Option<EntryId>,
    count: usize,
) -> Result<Vec<DeadLetter>, StreamError> {
    let start = after
        .map(|id| id.next().to_string())
        .unwrap_or_else(|| "-".to_owned());
    let reply: Value = redis::cmd("XRANGE")
        .arg(dlq_key)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    let entries = parse_entries(reply).map_err(StreamError::Protocol)?;
    Ok(entries
        .into_iter()
        .map(|e| DeadLetter {
            id: e.id.to_string(),
            fields: e
                .fields
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
        })
        .collect())
}

/// What [`replay`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Back on its stream under this new id, and gone from the dead-letter stream.
    As(String),
    /// No such dead letter (already replayed or discarded).
    NotFound,
    /// The dead letter keeps no original fields (the entry was deleted from its stream before
    /// it was read), so there is nothing to put back; discard it instead.
    NothingToReplay,
}

/// Puts a dead letter back on its stream (without the `dlq_*` fields) and removes it from the
/// dead-letter stream, atomically.
pub async fn replay<C: ConnectionLike>(
    conn: &mut C,
    dlq_key: &str,
    stream_key: &str,
    id: EntryId,
) -> Result<Replayed, StreamError> {
    let script = Script::new(
        r"
        local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
        if #found == 0 then return 0 end
        local fields, out = found[1][2], {}
        for i = 1, #fields, 2 do
          if string.sub(fields[i], 1, 4) ~= 'dlq_' then
            out[#out + 1] = fields[i]
            out[#out + 1] = fields[i + 1]
          end
        end
        if #out == 0 then return 1 end
        local new_id = redis.call('XADD', KEYS[2], '*', unpack(out))
        redis.call('XDEL', KEYS[1], ARGV[1])
        return new_id
        ",
    );
    let reply: Value = script
        .key(dlq_key)
        .key(stream_key)
        .arg(id.to_string())
        .invoke_async(conn)
        .await?;
    match reply {
        Value::Int(0) => Ok(Replayed::NotFound),
        Value::Int(_) => Ok(Replayed::NothingToReplay),
        Value::BulkString(id) => Ok(Replayed::As(String::from_utf8_lossy(&id).into_owned())),
        Value::SimpleString(id) => Ok(Replayed::As(id)),
        other => Err(StreamError::Protocol(format!(
            "unexpected reply from the replay script: {other:?}"
        ))),
    }
}

/// Deletes a dead letter; returns whether it existed.
pub async fn discard<C: ConnectionLike>(
    conn: &mut C,
    dlq_key: &str,
    id: EntryId,
) -> Result<bool, StreamError> {
    let deleted: u64 = redis::cmd("XDEL")
        .arg(dlq_key)
        .arg(id.to_string())
        .query_async(conn)
        .await?;
    Ok(deleted > 0)
}
