//! One client's WebSocket session: its messages, its subscriptions (with `since` replay), the
//! events the hub queues for it, heartbeats, and how it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use tokio::sync::{Notify, watch};

use super::hub::{Connection, Delivery, Hub, ReplayError, SubscribeError};
use super::protocol::{self, ClientMessage, ErrorCode};
use super::topics::TopicError;
use crate::streams::entry::EntryId;
use crate::telemetry::metrics::{WS_DELIVERY_SECONDS, WS_DROPPED_TOTAL, WS_MESSAGES_SENT_TOTAL};

/// Entries scanned per page of a replay.
const REPLAY_PAGE: usize = 500;

/// How long a close frame may take to be queued before the connection is simply dropped (a
/// client too slow to take events is too slow to take the close frame).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed it, or the connection is gone.
    ClientGone,
    /// The hub dropped it: its send queue was full.
    Slow,
    /// The server is shutting down.
    Shutdown,
    /// No pong for twice the heartbeat interval.
    HeartbeatTimeout,
    /// A frame over `ws.max_frame_bytes`.
    FrameTooLarge,
    /// The client broke the WebSocket protocol.
    ProtocolError,
}

impl End {
    /// The close frame sent, and the `troupe_ws_dropped_total` reason.
    fn close(self, heartbeat_seconds: u64) -> Option<(CloseReason, &'static str)> {
        let reason = |code, description: String| CloseReason {
            code,
            description: Some(description),
        };
        Some(match self {
            End::ClientGone => return None,
            End::Shutdown => (
                reason(CloseCode::Away, "the server is shutting down".into()),
                "shutdown",
            ),
            End::Slow => (
                reason(
                    CloseCode::Policy,
                    "too slow: the send queue overflowed; reconnect with since".into(),
                ),
                "slow_client",
            ),
            End::HeartbeatTimeout => (
                reason(
                    CloseCode::Normal,
                    format!("no pong within {} s", 2 * heartbeat_seconds),
                ),
                "heartbeat_timeout",
            ),
            End::FrameTooLarge => (
                reason(
                    CloseCode::Size,
                    "frame larger than ws.max_frame_bytes".into(),
                ),
                "frame_too_large",
            ),
            End::ProtocolError => (
                reason(CloseCode::Protocol, "websocket protocol error".into()),
                "protocol_error",
            ),
        })
    }
}

/// The writing half: every frame goes through [`Client::send`], which gives up as soon as the
/// hub drops the connection or the server shuts down, even while the socket is stalled.
struct Client {
    session: Session,
    kicked: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
}

/// Waits for `write` unless the hub drops the connection or the server shuts down first.
async fn guarded(
    kicked: &Notify,
    shutdown: &mut watch::Receiver<bool>,
    write: impl Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), End> {
    tokio::select! {
        biased;
        _ = kicked.notified() => Err(End::Slow),
        _ = shutdown.wait_for(|stop| *stop) => Err(End::Shutdown),
        written = write => written.map_err(|_| End::ClientGone),
    }
}

impl Client {
    async fn send(&mut self, frame: ByteString) -> Result<(), End> {
        let Client {
            session,
            kicked,
            shutdown,
        } = self;
        guarded(kicked, shutdown, session.text(frame)).await
    }

    async fn ping(&mut self) -> Result<(), End> {
        let Client {
            session,
            kicked,
            shutdown,
        } = self;
        guarded(kicked, shutdown, session.ping(b"")).await
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<(), End> {
        let Client {
            session,
            kicked,
            shutdown,
        } = self;
        guarded(kicked, shutdown, session.pong(payload)).await
    }

    async fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        topic: Option<&str>,
    ) -> Result<(), End> {
        if code == ErrorCode::InvalidMessage {
            metrics::counter!(WS_DROPPED_TOTAL, "reason" => "invalid_message").increment(1);
        }
        self.send(protocol::error(code, message, topic)).await
    }

    async fn deliver(&mut self, delivery: Delivery) -> Result<(), End> {
        let ts = delivery.ts;
        self.send(delivery.frame).await?;
        metrics::counter!(WS_MESSAGES_SENT_TOTAL).increment(1);
        if let Some(ts) = ts {
            let age = (chrono::Utc::now() - ts).to_std().unwrap_or_default();
            metrics::histogram!(WS_DELIVERY_SECONDS).record(age.as_secs_f64());
        }
        Ok(())
    }
}

/// What woke the session loop.
enum Wake {
    Message(Option<Result<AggregatedMessage, ProtocolError>>),
    Delivery(Delivery),
    Heartbeat,
    End(End),
}

/// Runs one client's session until it ends, then closes it with the reason.
pub async fn serve(
    hub: Arc<Hub>,
    mut connection: Connection,
    session: Session,
    stream: MessageStream,
) {
    let settings = hub.settings().clone();
    let mut stream = stream
        .max_frame_size(settings.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(settings.max_frame_bytes);
    let mut client = Client {
        session,
        kicked: connection.kicked.clone(),
        shutdown: hub.shutdown_signal(),
    };
    // Per topic subscribed to: the last event id sent, so nothing is sent twice when live
    // events and a replay meet.
    let mut sent: HashMap<Arc<str>, EntryId> = HashMap::new();
    let period = settings.heartbeat();
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut last_pong = Instant::now();
    tracing::debug!(connection = connection.id(), "websocket connected");

    let end = loop {
        let wake = tokio::select! {
            biased;
            _ = client.kicked.notified() => Wake::End(End::Slow),
            _ = client.shutdown.wait_for(|stop| *stop) => Wake::End(End::Shutdown),
            message = stream.recv() => Wake::Message(message),
            Some(delivery) = connection.deliveries.recv() => Wake::Delivery(delivery),
            _ = heartbeat.tick() => Wake::Heartbeat,
        };
        let step = match wake {
            Wake::End(end) => Err(end),
            Wake::Heartbeat if last_pong.elapsed() >= 2 * period => Err(End::HeartbeatTimeout),
            Wake::Heartbeat => client.ping().await,
            Wake::Delivery(delivery) => match sent.get_mut(&delivery.topic) {
                // Not subscribed any more, or sent by the replay already.
                None => Ok(()),
                Some(last) if delivery.id <= *last => Ok(()),
                Some(last) => {
                    *last = delivery.id;
                    client.deliver(delivery).await
                }
            },
            Wake::Message(None) => Err(End::ClientGone),
            Wake::Message(Some(Err(ProtocolError::Overflow))) => Err(End::FrameTooLarge),
            Wake::Message(Some(Err(e))) => {
                tracing::debug!(connection = connection.id(), error = %e, "websocket protocol error");
                Err(End::ProtocolError)
            }
            Wake::Message(Some(Ok(message))) => match message {
                AggregatedMessage::Text(text) => {
                    handle(&hub, &connection, &mut client, &mut sent, &text).await
                }
                AggregatedMessage::Binary(_) => {
                    client
                        .error(
                            ErrorCode::InvalidMessage,
                            "binary frames are not part of the protocol; send JSON text",
                            None,
                        )
                        .await
                }
                AggregatedMessage::Ping(payload) => client.pong(&payload).await,
                AggregatedMessage::Pong(_) => {
                    last_pong = Instant::now();
                    Ok(())
                }
                AggregatedMessage::Close(_) => Err(End::ClientGone),
            },
        };
        if let Err(end) = step {
            break end;
        }
    };

    let id = connection.id();
    // Unregistered first: nothing more is queued for it while it closes.
    drop(connection);
    match end.close(settings.heartbeat_seconds) {
        None => {
            // Answer a client's close (or find the connection gone); either way, done.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.session.close(None)).await;
            tracing::debug!(connection = id, "websocket closed by the client");
        }
        Some((reason, metric_reason)) => {
            if end == End::Shutdown {
                tracing::debug!(connection = id, "websocket closed: shutdown");
            } else {
                metrics::counter!(WS_DROPPED_TOTAL, "reason" => metric_reason).increment(1);
                tracing::info!(
                    connection = id,
                    reason = metric_reason,
                    "websocket closed by the server"
                );
            }
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.session.close(Some(reason))).await;
        }
    }
}

/// Handles one text frame from the client.
async fn handle(
    hub: &Hub,
    connection: &Connection,
    client: &mut Client,
    sent: &mut HashMap<Arc<str>, EntryId>,
    text: &str,
) -> Result<(), End> {
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err(problem) => {
            let message = format!("not a protocol message: {problem}");
            return client
                .error(ErrorCode::InvalidMessage, &message, None)
                .await;
        }
    };
    match message {
        ClientMessage::Ping => client.send(protocol::pong()).await,
        ClientMessage::Unsubscribe { topic } => {
            if hub.unsubscribe(connection.id(), &topic) {
                sent.remove(topic.as_str());
                client.send(protocol::unsubscribed(&topic)).await
            } else {
                client
                    .error(
                        ErrorCode::NotSubscribed,
                        "not subscribed to this topic",
                        Some(&topic),
                    )
                    .await
            }
        }
        ClientMessage::Subscribe { topic, since } => {
            subscribe(hub, connection, client, sent, &topic, since.as_deref()).await
        }
    }
}

async fn subscribe(
    hub: &Hub,
    connection: &Connection,
    client: &mut Client,
    sent: &mut HashMap<Arc<str>, EntryId>,
    topic: &str,
    since: Option<&str>,
) -> Result<(), End> {
    let since = match since.map(parse_event_id).transpose() {
        Ok(since) => since,
        Err(message) => {
            return client
                .error(ErrorCode::InvalidSince, &message, Some(topic))
                .await;
        }
    };
    let subscribed = match hub.subscribe(connection.id(), topic) {
        Ok(subscribed) => subscribed,
        Err(e) => {
            let code = match &e {
                SubscribeError::Topic(TopicError::Malformed { .. }) => ErrorCode::InvalidTopic,
                SubscribeError::Topic(TopicError::UnknownKind { .. }) => ErrorCode::UnknownTopic,
                SubscribeError::TooMany(_) => ErrorCode::TooManySubscriptions,
                SubscribeError::Already => ErrorCode::AlreadySubscribed,
                SubscribeError::Closing => return Err(End::Slow),
            };
            return client.error(code, &e.to_string(), Some(topic)).await;
        }
    };
    let Some(since) = since else {
        sent.insert(Arc::from(topic), subscribed.through);
        return client.send(protocol::subscribed(topic)).await;
    };
    let refuse = |e: ReplayError| match e {
        ReplayError::TooOld(message) => (ErrorCode::TooOld, message),
        ReplayError::Redis(e) => {
            tracing::warn!(error = %e, topic, "a websocket replay could not read its stream");
            (
                ErrorCode::Unavailable,
                "the topic's history cannot be read now; subscribe again".into(),
            )
        }
    };
    if let Err(e) = hub.check_history(subscribed.source, since).await {
        hub.unsubscribe(connection.id(), topic);
        let (code, message) = refuse(e);
        return client.error(code, &message, Some(topic)).await;
    }
    client.send(protocol::subscribed(topic)).await?;
    // Replayed: `(since, through]`; live deliveries start after `through`.
    let mut after = since;
    let mut scanned = 0;
    loop {
        let page = hub
            .replay_page(
                subscribed.source,
                topic,
                after,
                subscribed.through,
                REPLAY_PAGE,
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                hub.unsubscribe(connection.id(), topic);
                let (code, message) = refuse(ReplayError::Redis(e));
                return client.error(code, &message, Some(topic)).await;
            }
        };
        for delivery in page.deliveries {
            client.deliver(delivery).await?;
        }
        scanned += page.scanned;
        let Some(last) = page.last_scanned else {
            break;
        };
        after = last;
        if scanned >= hub.settings().replay_max_entries {
            hub.unsubscribe(connection.id(), topic);
            let message = format!(
                "more than {} events since {since} to replay; the events sent are valid, but \
                 subscribe again without since (after fetching the state)",
                hub.settings().replay_max_entries
            );
            return client.error(ErrorCode::TooOld, &message, Some(topic)).await;
        }
    }
    sent.insert(Arc::from(topic), subscribed.through.max(since));
    Ok(())
}

/// An event id as the server sends them: `<ms>-<seq>`.
fn parse_event_id(id: &str) -> Result<EntryId, String> {
    let refuse = || {
        format!(
            "since must be an event id as received (<ms>-<seq>), not {:?}",
            truncate(id)
        )
    };
    let (ms, seq) = id.split_once('-').ok_or_else(refuse)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return Err(refuse());
    }
    id.parse().map_err(|_| refuse())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_ms_dash_seq() {
        assert_eq!(parse_event_id("17-2"), Ok(EntryId { ms: 17, seq: 2 }));
        assert_eq!(
            parse_event_id("18446744073709551615-18446744073709551615"),
            Ok(EntryId {
                ms: u64::MAX,
                seq: u64::MAX
            })
        );
        for bad in [
            "",
            "17",
            "-1",
            "1-",
            "1-x",
            "+1-0",
            "1-0-0",
            "18446744073709551616-0",
            &"9".repeat(3000),
        ] {
            let error = parse_event_id(bad).unwrap_err();
            assert!(error.len() < 200, "{error}");
        }
    }

    #[test]
    fn every_server_close_has_a_code_and_a_bounded_reason() {
        assert!(End::ClientGone.close(15).is_none());
        for (end, code, metric) in [
            (End::Shutdown, CloseCode::Away, "shutdown"),
            (End::Slow, CloseCode::Policy, "slow_client"),
            (
                End::HeartbeatTimeout,
                CloseCode::Normal,
                "heartbeat_timeout",
            ),
            (End::FrameTooLarge, CloseCode::Size, "frame_too_large"),
            (End::ProtocolError, CloseCode::Protocol, "protocol_error"),
        ] {
            let (reason, reason_label) = end.close(15).unwrap();
            assert_eq!((reason.code, reason_label), (code, metric));
            assert!(reason.description.unwrap().len() <= 123);
        }
    }
}
