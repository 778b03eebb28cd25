//! The event catalogue: an AsyncAPI 3.0 document of every stream the registered domains read
//! and write, each event type on it and the schema of its data — generated from the same Rust
//! enums the handlers decode and emit (their `utoipa::ToSchema` derive, read through serde's
//! attributes like the OpenAPI document), so it cannot drift from the code.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::ws::TopicSource;

/// The schema of one event enum, as utoipa generates it, with the schemas it refers to.
#[derive(Debug, Clone)]
pub struct EnumSchema {
    root: Value,
    components: Vec<(String, Value)>,
}

impl EnumSchema {
    /// The schema of `T`, an adjacently tagged event enum deriving `utoipa::ToSchema`.
    pub fn of<T: utoipa::ToSchema>() -> Self {
        let root = serde_json::to_value(T::schema()).unwrap_or(Value::Null);
        let mut refs = Vec::new();
        T::schemas(&mut refs);
        let components = refs
            .into_iter()
            .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
            .collect();
        Self { root, components }
    }

    /// Each variant's type name and the schema of its `data`.
    fn variants(&self) -> Vec<(String, Value)> {
        let alternatives = self.root["oneOf"].as_array().cloned().unwrap_or_default();
        alternatives
            .iter()
            .filter_map(|alt| {
                let props = &alt["properties"];
                let name = props["type"]["enum"][0].as_str()?.to_owned();
                let data = props
                    .get("data")
                    .cloned()
                    .unwrap_or(json!({"type": "null"}));
                Some((name, data))
            })
            .collect()
    }
}

/// What one domain reads and writes.
#[derive(Debug, Clone)]
pub struct DomainEvents {
    /// The domain's name.
    pub domain: &'static str,
    /// The streams it consumes (every type of its event enum on each).
    pub inputs: Vec<String>,
    /// The streams it publishes to: `<domain>.events`, then its extra outputs (any of its
    /// output types on each).
    pub outputs: Vec<String>,
    /// Its event enum.
    pub input_schema: EnumSchema,
    /// Its output enum.
    pub output_schema: EnumSchema,
    /// Output types with one home stream ([`crate::domain::Domain::output_stream_of`]):
    /// `(event type, stream)`; the others may go on each of `outputs`.
    pub output_homes: Vec<(String, String)>,
}

/// A schema name two domains use for different schemas, if any.
pub fn schema_conflict(domains: &[DomainEvents]) -> Option<String> {
    let mut seen: BTreeMap<&str, &Value> = BTreeMap::new();
    let all = domains.iter().flat_map(|d| {
        d.input_schema
            .components
            .iter()
            .chain(&d.output_schema.components)
    });
    for (name, schema) in all {
        match seen.get(name.as_str()) {
            Some(other) if *other != schema => return Some(name.clone()),
            _ => {
                seen.insert(name, schema);
            }
        }
    }
    None
}

/// `token` escaped for use in a JSON pointer (RFC 6901).
fn pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The envelope every entry of every stream carries (docs/events.md), with `type` fixed and
/// `data` described by `data`.
fn envelope(event_type: &str, data: Value) -> Value {
    json!({
        "type": "object",
        "description": "A stream entry's fields. `data` is JSON text in the entry; it is shown decoded here.",
        "required": ["id", "type", "key", "data"],
        "properties": {
            "id": {"type": "string", "description": "Unique per event; consumers deduplicate by it (kept across the relay's retries)."},
            "type": {"type": "string", "const": event_type},
            "key": {"type": "string", "description": "The entity the event is about: valid UTF-8 without control characters, at most runtime.max_key_bytes."},
            "data": data,
            "ts": {"type": "string", "format": "date-time", "description": "When the event happened (RFC 3339); absent: when Redis received it."},
            "traceparent": {"type": "string", "description": "W3C trace context of the work that produced the event."}
        }
    })
}

fn message(event_type: &str, data: Value, summary: String) -> Value {
    json!({
        "name": event_type,
        "title": event_type,
        "summary": summary,
        "contentType": "application/json",
        "payload": envelope(event_type, data),
    })
}

/// A JSON Schema object of `properties`, all required but those in `optional`, nothing else.
fn frame(description: &str, properties: Value, optional: &[&str]) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|p| {
            p.keys()
                .filter(|k| !optional.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "additionalProperties": false,
        "properties": properties,
    })
}

fn ws_message(name: &str, summary: &str, payload: Value) -> Value {
    json!({
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    })
}

/// The WebSocket channel (`GET /ws`, docs/websocket.md) and its two operations: what
/// clients send, and what the service sends them, with the topic kinds `topics` publish.
fn websocket(topics: &[TopicSource]) -> (Value, Map<String, Value>) {
    let kinds: Vec<String> = topics
        .iter()
        .flat_map(|t| {
            t.kinds().iter().map(move |kind| {
                format!("`{kind}:<id>` (events of {} on {})", t.domain(), t.stream())
            })
        })
        .collect();
    let topic = json!({"type": "string", "pattern": "^[a-z0-9_-]{1,32}:[^\\u0000-\\u001f]+$",
        "description": format!("<kind>:<id>, the id at most runtime.max_key_bytes. Kinds: {}.", kinds.join(", "))});
    let event_id = json!({"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$",
        "description": "The event's id in its topic's stream (<ms>-<seq>); resume after it with since."});
    let op = |name: &str| json!({"type": "string", "const": name});
    let messages = [
        (
            "subscribe",
            "Client: receive a topic's events; with since, first those after that event id.",
            frame(
                "subscribe",
                json!({"op": op("subscribe"), "topic": topic, "since": event_id}),
                &["since"],
            ),
        ),
        (
            "unsubscribe",
            "Client: stop receiving a topic.",
            frame(
                "unsubscribe",
                json!({"op": op("unsubscribe"), "topic": topic}),
                &[],
            ),
        ),
        (
            "ping",
            "Client: answered with pong.",
            frame("ping", json!({"op": op("ping")}), &[]),
        ),
        (
            "event",
            "Server: one event of a subscribed topic, in the order its domain emitted them.",
            frame(
                "event",
                json!({
                    "op": op("event"), "topic": topic, "id": event_id,
                    "type": {"type": "string", "description": "The event type (see the topic's stream channel)."},
                    "data": {"description": "The event's data, as on its stream (see the channel of the topic's stream)."},
                    "ts": {"type": ["string", "null"], "format": "date-time", "description": "When the event happened."}
                }),
                &[],
            ),
        ),
        (
            "subscribed",
            "Server: the subscription holds; replayed events (with since) follow, then live ones.",
            frame(
                "subscribed",
                json!({"op": op("subscribed"), "topic": topic}),
                &[],
            ),
        ),
        (
            "unsubscribed",
            "Server: the topic is no longer delivered.",
            frame(
                "unsubscribed",
                json!({"op": op("unsubscribed"), "topic": topic}),
                &[],
            ),
        ),
        (
            "error",
            "Server: a client message was refused; the connection stays open.",
            frame(
                "error",
                json!({
                    "op": op("error"),
                    "code": {"type": "string", "enum": ["invalid_message", "invalid_topic", "unknown_topic",
                        "invalid_since", "too_old", "too_many_subscriptions", "already_subscribed",
                        "not_subscribed", "unavailable"]},
                    "message": {"type": "string"},
                    "topic": {"type": "string", "description": "The topic the refused message named."}
                }),
                &["topic"],
            ),
        ),
        (
            "pong",
            "Server: the answer to ping.",
            frame("pong", json!({"op": op("pong")}), &[]),
        ),
    ];
    let mut channel_messages = Map::new();
    for (name, summary, payload) in messages {
        channel_messages.insert(name.to_owned(), ws_message(name, summary, payload));
    }
    let refs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"$ref": format!("#/channels/websocket/messages/{n}")}))
            .collect()
    };
    let channel = json!({
        "address": "/ws",
        "title": "WebSocket notifications",
        "description": "GET /ws upgrades to a WebSocket of JSON text frames (docs/websocket.md). The server pings every ws.heartbeat_seconds and closes a connection without a pong for twice as long; a client that reads too slowly is closed with 1008; on shutdown, 1001; a frame over ws.max_frame_bytes, 1009. Past ws.max_connections the upgrade is answered 503 too_many_connections.",
        "messages": channel_messages,
    });
    let mut operations = Map::new();
    operations.insert(
        "websocket.receive".into(),
        json!({
            "action": "receive",
            "summary": "What clients send over /ws",
            "channel": {"$ref": "#/channels/websocket"},
            "messages": refs(&["subscribe", "unsubscribe", "ping"]),
        }),
    );
    operations.insert(
        "websocket.send".into(),
        json!({
            "action": "send",
            "summary": "What the service sends clients over /ws",
            "channel": {"$ref": "#/channels/websocket"},
            "messages": refs(&["event", "subscribed", "unsubscribed", "error", "pong"]),
        }),
    );
    (channel, operations)
}

/// The AsyncAPI 3.0 document of `domains`, with the WebSocket channel of `topics`.
pub fn document(domains: &[DomainEvents], topics: &[TopicSource], version: &str) -> Value {
    let mut channels: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut operations = Map::new();
    let mut schemas = Map::new();
    // Outputs first: where a stream is written by one domain and read by another, the
    // writer's types describe it.
    for d in domains {
        let variants = d.output_schema.variants();
        if variants.is_empty() {
            continue;
        }
        for (i, output) in d.outputs.iter().enumerate() {
            let messages = channels.entry(output.clone()).or_default();
            let mut refs = Vec::new();
            for (event_type, data) in &variants {
                let homed_elsewhere = d
                    .output_homes
                    .iter()
                    .any(|(t, home)| t == event_type && home != output);
                if homed_elsewhere {
                    continue;
                }
                let summary = format!("Emitted by {}", d.domain);
                messages
                    .entry(event_type.clone())
                    .or_insert_with(|| message(event_type, data.clone(), summary));
                refs.push(json!({"$ref": format!(
                    "#/channels/{}/messages/{}",
                    pointer(output),
                    pointer(event_type)
                )}));
            }
            // The first output is the domain's own `<domain>.events`.
            let operation = match i {
                0 => format!("{}.send", d.domain),
                _ => format!("{}.send.{output}", d.domain),
            };
            operations.insert(
                operation,
                json!({
                    "action": "send",
                    "summary": format!("{} publishes its committed events, each once, in commit order", d.domain),
                    "channel": {"$ref": format!("#/channels/{}", pointer(output))},
                    "messages": refs,
                }),
            );
        }
        for (name, schema) in d.output_schema.components.iter() {
            schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
        }
    }
    // A stream another domain writes carries the writer's types only: a consumer reads those
    // of them its enum declares (it skips the rest), and adds none of its own to the channel.
    let written: std::collections::BTreeSet<String> = channels.keys().cloned().collect();
    for d in domains {
        let variants = d.input_schema.variants();
        for stream in &d.inputs {
            let messages = channels.entry(stream.clone()).or_default();
            let mut refs = Vec::new();
            for (event_type, data) in &variants {
                if written.contains(stream) && !messages.contains_key(event_type) {
                    continue;
                }
                let summary = format!("Consumed by {}", d.domain);
                messages
                    .entry(event_type.clone())
                    .or_insert_with(|| message(event_type, data.clone(), summary));
                refs.push(json!({"$ref": format!(
                    "#/channels/{}/messages/{}",
                    pointer(stream),
                    pointer(event_type)
                )}));
            }
            operations.insert(
                format!("{}.receive.{}", d.domain, stream),
                json!({
                    "action": "receive",
                    "summary": format!("{} consumes {stream} in consumer group {}", d.domain, d.domain),
                    "channel": {"$ref": format!("#/channels/{}", pointer(stream))},
                    "messages": refs,
                }),
            );
        }
        for (name, schema) in d.input_schema.components.iter() {
            schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
        }
    }
    let mut channels: Map<String, Value> = channels
        .into_iter()
        .map(|(stream, messages)| {
            let channel = json!({
                "address": stream,
                "description": format!("Redis stream {stream} (its key is prefixed with redis.key_prefix)"),
                "messages": messages,
            });
            (stream, channel)
        })
        .collect();
    let (ws_channel, ws_operations) = websocket(topics);
    channels.insert("websocket".into(), ws_channel);
    operations.extend(ws_operations);
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Troupe event catalogue",
            "version": version,
            "description": "Every Redis stream the domains read and write, the event types on each and their data, and the WebSocket protocol of GET /ws. Envelopes are specified in docs/events.md.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas},
    })
}
