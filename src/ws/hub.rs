//! The hub: one per instance. It reads the topic streams with plain `XREAD` — no consumer
//! group, so every instance sees every event — and hands each event to the connections of this
//! instance subscribed to its topics, through each connection's bounded queue.
//!
//! Gap-free resume rests on one lock: the hub records how far it has dispatched each stream
//! under the same lock that registers a subscription, so a subscription knows exactly which
//! events it will get live (those after that position) and replays the ones up to it itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytestring::ByteString;
use chrono::{DateTime, Utc};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, watch};

use super::protocol;
use super::topics::{TopicError, TopicSource, resolve};
use crate::actors::backoff::Backoff;
use crate::domain::Envelope;
use crate::settings::{Settings, WsSettings};
use crate::streams::entry::{EntryId, StreamEntry, parse_entries, parse_multi_read_reply};
use crate::streams::envelope::decode;
use crate::streams::{RedisClients, StreamError};
use crate::telemetry::metrics::{WS_CONNECTIONS, WS_DROPPED_TOTAL};

/// An event frame on its way to one connection.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic it was sent for.
    pub topic: Arc<str>,
    /// Its entry id in the topic's stream (the event id clients resume from).
    pub id: EntryId,
    /// The `event` frame.
    pub frame: ByteString,
    /// When the event happened, for the delivery-latency metric.
    pub ts: Option<DateTime<Utc>>,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The topic is malformed or of an unknown kind.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The connection holds `ws.max_subscriptions` already.
    #[error("a connection may subscribe to at most {0} topics")]
    TooMany(usize),
    /// Subscribed already.
    #[error("already subscribed to this topic")]
    Already,
    /// The connection was dropped meanwhile (it overflowed its queue).
    #[error("the connection is closing")]
    Closing,
}

/// Why a replay cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Events after `since` were trimmed from the stream, or there are more than
    /// `ws.replay_max_entries` to scan.
    #[error("{0}")]
    TooOld(String),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] StreamError),
}

/// A registered subscription: the source publishing the topic, and the position up to which
/// the hub had dispatched its stream when the subscription was registered. Live deliveries
/// start after it; a resume replays up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// Index of the topic's source.
    pub source: usize,
    /// The stream position at registration.
    pub through: EntryId,
}

/// One page of a replay.
#[derive(Debug, Default)]
pub struct ReplayPage {
    /// The topic's events in the page, in stream order.
    pub deliveries: Vec<Delivery>,
    /// The last entry scanned; `None` when the range is exhausted.
    pub last_scanned: Option<EntryId>,
    /// Entries scanned (of any topic).
    pub scanned: usize,
}

/// One instance's hub of WebSocket subscriptions.
pub struct Hub {
    sources: Vec<TopicSource>,
    /// The Redis key of each source's stream.
    keys: Vec<String>,
    settings: WsSettings,
    max_key_bytes: usize,
    redis: RedisClients,
    state: Mutex<State>,
    open: AtomicUsize,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Per source: the last entry dispatched.
    positions: Vec<EntryId>,
    /// Per source: subscriptions to its topics. Entries of a source nobody subscribes to are
    /// skipped without being decoded.
    subscriptions: Vec<usize>,
    topics: HashMap<Arc<str>, Vec<u64>>,
    connections: HashMap<u64, Subscriber>,
}

struct Subscriber {
    queue: mpsc::Sender<Delivery>,
    kick: Arc<Notify>,
    /// Topics subscribed to, with the index of their source.
    topics: HashMap<Arc<str>, usize>,
}

/// One client connection's registration with the hub; dropping it unregisters it.
pub struct Connection {
    id: u64,
    hub: Arc<Hub>,
    /// Event frames for this connection's topics, in stream order per topic.
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Notified when the hub dropped this connection because its queue was full.
    pub kicked: Arc<Notify>,
}

impl Connection {
    /// Its id, for subscribing.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.remove(self.id);
        let open = self.hub.open.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(WS_CONNECTIONS).set(open as f64);
    }
}

impl Hub {
    /// Reads where each topic stream ends now (live delivery starts there) and starts the
    /// reader.
    pub async fn start(
        sources: Vec<TopicSource>,
        settings: &Settings,
        redis: RedisClients,
    ) -> Result<Arc<Self>, StreamError> {
        let stream_keys = redis.keys();
        let keys: Vec<String> = sources
            .iter()
            .map(|s| stream_keys.stream(s.stream()))
            .collect();
        let mut conn = redis.manager();
        let mut positions = Vec::with_capacity(keys.len());
        for key in &keys {
            let last: Value = redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let last = parse_entries(last).map_err(StreamError::Protocol)?;
            positions.push(last.first().map_or(EntryId::ZERO, |e| e.id));
        }
        let (shutdown, _) = watch::channel(false);
        let hub = Arc::new(Self {
            sources,
            keys,
            settings: settings.ws.clone(),
            max_key_bytes: settings.runtime.max_key_bytes,
            redis,
            state: Mutex::new(State {
                subscriptions: vec![0; positions.len()],
                positions,
                ..State::default()
            }),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutdown,
        });
        if !hub.sources.is_empty() {
            actix_web::rt::spawn(hub.clone().run());
        }
        metrics::gauge!(WS_CONNECTIONS).set(0.0);
        Ok(hub)
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &WsSettings {
        &self.settings
    }

    /// Registers a new connection, or `None` when `ws.max_connections` are open.
    pub fn connect(self: &Arc<Self>) -> Option<Connection> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.settings.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(WS_DROPPED_TOTAL, "reason" => "connection_limit").increment(1);
            return None;
        }
        metrics::gauge!(WS_CONNECTIONS).set(open as f64);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, deliveries) = mpsc::channel(self.settings.send_queue);
        let kicked = Arc::new(Notify::new());
        self.lock().connections.insert(
            id,
            Subscriber {
                queue,
                kick: kicked.clone(),
                topics: HashMap::new(),
            },
        );
        Some(Connection {
            id,
            hub: self.clone(),
            deliveries,
            kicked,
        })
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Subscribes connection `id` to `topic`: events dispatched from now on reach it.
    pub fn subscribe(&self, id: u64, topic: &str) -> Result<Subscribed, SubscribeError> {
        let source = resolve(topic, &self.sources, self.max_key_bytes)?;
        let mut state = self.lock();
        let through = state.positions[source];
        let State {
            topics,
            connections,
            subscriptions,
            ..
        } = &mut *state;
        let subscriber = connections.get_mut(&id).ok_or(SubscribeError::Closing)?;
        if subscriber.topics.contains_key(topic) {
            return Err(SubscribeError::Already);
        }
        if subscriber.topics.len() >= self.settings.max_subscriptions {
            return Err(SubscribeError::TooMany(self.settings.max_subscriptions));
        }
        let topic: Arc<str> = Arc::from(topic);
        subscriber.topics.insert(topic.clone(), source);
        topics.entry(topic).or_default().push(id);
        subscriptions[source] += 1;
        Ok(Subscribed { source, through })
    }

    /// Unsubscribes connection `id` from `topic`; `false` when it was not subscribed.
    pub fn unsubscribe(&self, id: u64, topic: &str) -> bool {
        let mut state = self.lock();
        let State {
            topics,
            connections,
            subscriptions,
            ..
        } = &mut *state;
        let Some(subscriber) = connections.get_mut(&id) else {
            return false;
        };
        let Some(source) = subscriber.topics.remove(topic) else {
            return false;
        };
        unlink(topics, topic, id);
        subscriptions[source] -= 1;
        true
    }

    /// Checks that the events of source `source` after `since` are all still in its stream.
    pub async fn check_history(&self, source: usize, since: EntryId) -> Result<(), ReplayError> {
        let mut conn = self.redis.manager();
        let info: Result<Value, redis::RedisError> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.keys[source])
            .query_async(&mut conn)
            .await;
        let info = match info {
            Ok(info) => info,
            // No stream: nothing was ever published, so nothing was missed.
            Err(e) if e.to_string().contains("no such key") => return Ok(()),
            Err(e) => return Err(StreamError::from(e).into()),
        };
        let history = History::parse(info).map_err(StreamError::Protocol)?;
        history.covers(since).map_err(ReplayError::TooOld)
    }

    /// The events of `topic` (published by source `source`) in `(after, through]`, up to `count`
    /// entries scanned.
    pub async fn replay_page(
        &self,
        source: usize,
        topic: &str,
        after: EntryId,
        through: EntryId,
        count: usize,
    ) -> Result<ReplayPage, StreamError> {
        if after >= through {
            return Ok(ReplayPage::default());
        }
        let mut conn = self.redis.manager();
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.keys[source])
            .arg(format!("({after}"))
            .arg(through.to_string())
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let entries = parse_entries(reply).map_err(StreamError::Protocol)?;
        let topic: Arc<str> = Arc::from(topic);
        let mut page = ReplayPage {
            scanned: entries.len(),
            last_scanned: (entries.len() == count)
                .then(|| entries.last().map(|e| e.id))
                .flatten(),
            deliveries: Vec::new(),
        };
        for entry in &entries {
            let Some(envelope) = envelope_of(entry) else {
                continue;
            };
            if self.sources[source]
                .topics_of(&envelope)
                .iter()
                .any(|t| **t == *topic)
                && let Some(frame) = protocol::event(&topic, entry.id, &envelope)
            {
                page.deliveries.push(Delivery {
                    topic: topic.clone(),
                    id: entry.id,
                    frame,
                    ts: envelope.happened_at(),
                });
            }
        }
        Ok(page)
    }

    /// Tells every connection to close (code 1001) and stops the reader.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Changes to `true` when the hub shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// One read of the topic streams, dispatched: reads what follows `positions` (blocking up
    /// to `ws.read_block_ms`), hands every event to its topics' subscribers, and advances
    /// `positions`. Returns the entries read.
    pub async fn step(
        &self,
        conn: &mut MultiplexedConnection,
        positions: &mut [EntryId],
    ) -> Result<usize, StreamError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(self.settings.read_count)
            .arg("BLOCK")
            .arg(self.settings.read_block_ms)
            .arg("STREAMS")
            .arg(&self.keys);
        for position in positions.iter() {
            cmd.arg(position.to_string());
        }
        let reply: Value = cmd.query_async(conn).await?;
        let streams = parse_multi_read_reply(reply).map_err(StreamError::Protocol)?;
        let mut read = 0;
        for (key, entries) in streams {
            let Some(source) = self.keys.iter().position(|k| *k == key) else {
                continue;
            };
            read += entries.len();
            if let Some(last) = entries.last() {
                positions[source] = last.id;
            }
            self.dispatch(source, &entries);
        }
        Ok(read)
    }

    /// Hands `entries` of source `source` to their topics' subscribers, and records them as
    /// dispatched.
    fn dispatch(&self, source: usize, entries: &[StreamEntry]) {
        {
            // Checked and recorded under one lock: a subscription registered after it starts
            // after these entries, one registered before it gets them dispatched below.
            let mut state = self.lock();
            if state.subscriptions[source] == 0 {
                if let Some(last) = entries.last() {
                    state.positions[source] = last.id;
                }
                return;
            }
        }
        // Decoding and mapping happen outside the lock; only the hand-over is under it.
        let events: Vec<(EntryId, Envelope, Vec<String>)> = entries
            .iter()
            .filter_map(|entry| {
                let envelope = envelope_of(entry)?;
                let topics = self.sources[source].topics_of(&envelope);
                Some((entry.id, envelope, topics))
            })
            .collect();
        let mut overflowed = Vec::new();
        let mut state = self.lock();
        for (id, envelope, topics) in &events {
            for topic in topics {
                let Some((topic, subscribers)) = state.topics.get_key_value(topic.as_str()) else {
                    continue;
                };
                let Some(frame) = protocol::event(topic, *id, envelope) else {
                    continue;
                };
                let delivery = Delivery {
                    topic: topic.clone(),
                    id: *id,
                    frame,
                    ts: envelope.happened_at(),
                };
                for subscriber in subscribers {
                    let Some(connection) = state.connections.get(subscriber) else {
                        continue;
                    };
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        connection.queue.try_send(delivery.clone())
                    {
                        overflowed.push(*subscriber);
                    }
                }
            }
        }
        if let Some(last) = entries.last() {
            state.positions[source] = last.id;
        }
        overflowed.sort_unstable();
        overflowed.dedup();
        for id in overflowed {
            // Unregistered at once: it gets nothing more, and the others never wait for it.
            if let Some(subscriber) = remove_from(&mut state, id) {
                subscriber.kick.notify_one();
            }
        }
    }

    fn remove(&self, id: u64) {
        remove_from(&mut self.lock(), id);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still consistent enough to use
        // (each operation is a few inserts and removes); refusing every client would be worse.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The reader: `step` forever, reconnecting with backoff after Redis failures, until
    /// shutdown.
    async fn run(self: Arc<Self>) {
        let mut shutdown = self.shutdown_signal();
        let mut positions = self.lock().positions.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let block = Duration::from_millis(self.settings.read_block_ms);
        let mut conn = None;
        while !*shutdown.borrow() {
            let result = async {
                if conn.is_none() {
                    conn = Some(self.redis.blocking(block).await?);
                }
                let Some(c) = conn.as_mut() else {
                    unreachable!("connected just above")
                };
                self.step(c, &mut positions).await
            };
            let outcome = tokio::select! {
                outcome = result => outcome,
                _ = shutdown.changed() => break,
            };
            match outcome {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    conn = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay,
                        "reading the topic streams failed; live WebSocket events wait");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        tracing::info!("websocket hub stopped");
    }
}

fn unlink(topics: &mut HashMap<Arc<str>, Vec<u64>>, topic: &str, id: u64) {
    if let Some(ids) = topics.get_mut(topic) {
        ids.retain(|&i| i != id);
        if ids.is_empty() {
            topics.remove(topic);
        }
    }
}

fn remove_from(state: &mut State, id: u64) -> Option<Subscriber> {
    let subscriber = state.connections.remove(&id)?;
    for (topic, &source) in &subscriber.topics {
        unlink(&mut state.topics, topic, id);
        state.subscriptions[source] -= 1;
    }
    Some(subscriber)
}

fn envelope_of(entry: &StreamEntry) -> Option<Envelope> {
    entry.fields.as_ref()?;
    match decode(entry.field_pairs()) {
        Ok(envelope) => Some(envelope),
        Err(e) => {
            tracing::debug!(entry.id = %entry.id, error = %e, "malformed entry on a topic stream");
            None
        }
    }
}

/// What `XINFO STREAM` says of a stream's retained history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct History {
    first: Option<EntryId>,
    last_generated: EntryId,
    max_deleted: EntryId,
}

impl History {
    fn parse(info: Value) -> Result<Self, String> {
        let pairs: Vec<(Value, Value)> = match info {
            Value::Map(pairs) => pairs,
            Value::Array(flat) => {
                let mut flat = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            other => return Err(format!("unexpected XINFO STREAM reply {other:?}")),
        };
        let mut history = History {
            first: None,
            last_generated: EntryId::ZERO,
            max_deleted: EntryId::ZERO,
        };
        let id = |v: &Value| -> Result<EntryId, String> {
            match v {
                Value::BulkString(b) => std::str::from_utf8(b).map_err(|e| e.to_string())?.parse(),
                Value::SimpleString(s) => s.parse(),
                other => Err(format!("expected an entry id, got {other:?}")),
            }
        };
        for (key, value) in pairs {
            let key = match &key {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => continue,
            };
            match key.as_str() {
                "last-generated-id" => history.last_generated = id(&value)?,
                "max-deleted-entry-id" => history.max_deleted = id(&value)?,
                "first-entry" => {
                    history.first = match value {
                        Value::Nil => None,
                        Value::Array(entry) => match entry.first() {
                            Some(v) => Some(id(v)?),
                            None => None,
                        },
                        other => return Err(format!("unexpected first-entry {other:?}")),
                    }
                }
                _ => {}
            }
        }
        Ok(history)
    }

    /// `Ok` when every entry after `since` is still in the stream. Trimming (which Redis 7.0
    /// does not record in `max-deleted-entry-id`) is detected by the first entry: once the
    /// client's `since` itself is gone, entries after it may be too.
    fn covers(&self, since: EntryId) -> Result<(), String> {
        if self.max_deleted > since {
            return Err(format!("events after {since} were deleted from the stream"));
        }
        match self.first {
            Some(first) if first > since => Err(format!(
                "the oldest event kept is {first}; events after {since} may have been trimmed"
            )),
            None if self.last_generated > since => {
                Err(format!("every event after {since} was trimmed"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    fn info(first: Option<&str>, last: &str, deleted: &str) -> Value {
        Value::Array(vec![
            bulk("length"),
            Value::Int(2),
            bulk("last-generated-id"),
            bulk(last),
            bulk("max-deleted-entry-id"),
            bulk(deleted),
            bulk("first-entry"),
            first.map_or(Value::Nil, |f| {
                Value::Array(vec![bulk(f), Value::Array(vec![bulk("a"), bulk("b")])])
            }),
        ])
    }

    #[test]
    fn history_covers_a_since_that_is_still_in_the_stream() {
        let kept = History::parse(info(Some("4-0"), "5-0", "0-0")).unwrap();
        assert_eq!(
            kept,
            History {
                first: Some(id("4-0")),
                last_generated: id("5-0"),
                max_deleted: EntryId::ZERO
            }
        );
        assert!(kept.covers(id("4-0")).is_ok());
        assert!(kept.covers(id("5-0")).is_ok());
        assert!(kept.covers(id("9-0")).is_ok());
        // 3-0 was trimmed: what followed it may have been too.
        assert!(kept.covers(id("3-0")).is_err());
    }

    #[test]
    fn history_refuses_a_since_before_a_deletion_or_an_emptied_stream() {
        let deleted = History::parse(info(Some("1-0"), "5-0", "3-0")).unwrap();
        assert!(deleted.covers(id("2-0")).is_err());
        assert!(deleted.covers(id("3-0")).is_ok());
        let emptied = History::parse(info(None, "5-0", "0-0")).unwrap();
        assert!(emptied.covers(id("4-0")).is_err());
        assert!(emptied.covers(id("5-0")).is_ok());
    }
}
