//! Stream entries as read from Redis, and stream ids.

use std::fmt;
use std::str::FromStr;

use redis::Value;

/// A stream entry id, `<ms>-<seq>`, ordered like Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id, `0-0`.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// The id right after this one.
    pub fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(EntryId {
            ms: ms.parse().map_err(|_| format!("bad stream id {s:?}"))?,
            seq: seq.parse().map_err(|_| format!("bad stream id {s:?}"))?,
        })
    }
}

/// One entry read from a stream. `fields` is `None` when the entry was deleted (trimmed) while
/// it was pending: Redis then returns its id with no fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// Entry id.
    pub id: EntryId,
    /// Field/value pairs in the order they were written.
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

impl StreamEntry {
    /// Its size: field names and values, in bytes.
    pub fn bytes(&self) -> usize {
        self.fields
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }

    /// Field pairs as `(&str, &[u8])`, for [`crate::streams::envelope::decode`].
    pub fn field_pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// Parses the entries of an `XREADGROUP`/`XRANGE`/`XAUTOCLAIM` entry list.
pub fn parse_entries(value: Value) -> Result<Vec<StreamEntry>, String> {
    let Value::Array(items) = value else {
        return match value {
            Value::Nil => Ok(Vec::new()),
            other => Err(format!("expected an entry list, got {other:?}")),
        };
    };
    items.into_iter().map(parse_entry).collect()
}

fn parse_entry(value: Value) -> Result<StreamEntry, String> {
    let Value::Array(mut parts) = value else {
        return Err(format!("expected an entry, got {value:?}"));
    };
    if parts.len() != 2 {
        return Err(format!("expected [id, fields], got {} items", parts.len()));
    }
    let fields = parts.pop().unwrap_or(Value::Nil);
    let id = text(parts.pop().unwrap_or(Value::Nil))?.parse()?;
    let fields = match fields {
        Value::Nil => None,
        Value::Array(flat) => {
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((text(k)?, bytes(v)?));
            }
            Some(pairs)
        }
        Value::Map(map) => Some(
            map.into_iter()
                .map(|(k, v)| Ok((text(k)?, bytes(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("expected entry fields, got {other:?}")),
    };
    Ok(StreamEntry { id, fields })
}

/// Parses an `XREADGROUP` reply for a single stream.
pub fn parse_read_reply(value: Value) -> Result<Vec<StreamEntry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                let Value::Array(mut pair) = stream else {
                    return Err("expected [key, entries]".into());
                };
                if let Some(entries) = pair.pop() {
                    out.extend(parse_entries(entries)?);
                }
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, entries) in streams {
                out.extend(parse_entries(entries)?);
            }
            Ok(out)
        }
        other => Err(format!("unexpected XREADGROUP reply {other:?}")),
    }
}

/// Parses an `XREAD` reply over several streams: each stream's key with its entries.
pub fn parse_multi_read_reply(value: Value) -> Result<Vec<(String, Vec<StreamEntry>)>, String> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((
                        pair.next().unwrap_or(Value::Nil),
                        pair.next().unwrap_or(Value::Nil),
                    ))
                }
                _ => Err("expected [key, entries]".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => return Err(format!("unexpected XREAD reply {other:?}")),
    };
    pairs
        .into_iter()
        .map(|(key, entries)| Ok((text(key)?, parse_entries(entries)?)))
        .collect()
}

pub(crate) fn text(value: Value) -> Result<String, String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| "field name is not UTF-8".into()),
        Value::SimpleString(s) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(format!("expected a value, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn ids_order_like_redis() {
        let a: EntryId = "5-10".parse().unwrap();
        let b: EntryId = "10-1".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.next().to_string(), "5-11");
        assert!("x-1".parse::<EntryId>().is_err());
    }

    #[test]
    fn parses_entries_including_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("type"), bulk("t")]),
                ]),
                Value::Array(vec![bulk("1-2"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].fields.as_ref().unwrap()[0],
            ("type".to_string(), b"t".to_vec())
        );
        assert_eq!(entries[1].fields, None);
    }
}
