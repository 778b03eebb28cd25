//! A real WebSocket client of `GET /ws` (tokio-tungstenite), speaking the protocol of
//! `docs/websocket.md` in typed steps.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a client waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// One connected client.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Dropped,
}

/// `ws://…/ws` of the service at `address` (`http://127.0.0.1:<port>`).
pub fn url(address: &str) -> String {
    format!("{}/ws", address.replacen("http://", "ws://", 1))
}

impl WsClient {
    /// Connects to the service at `address`.
    pub async fn connect(address: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url(address))
            .await
            .expect("the websocket handshake succeeds");
        Self { socket }
    }

    /// Connects with a receive buffer of `bytes`, for a client that stops reading and must
    /// fill up quickly.
    pub async fn connect_with_small_buffer(address: &str, bytes: u32) -> Self {
        let host = address.trim_start_matches("http://");
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket
            .connect(host.parse().expect("host:port"))
            .await
            .expect("tcp connect");
        let (socket, _) =
            tokio_tungstenite::client_async(url(address), MaybeTlsStream::Plain(stream))
                .await
                .expect("the websocket handshake succeeds");
        Self { socket }
    }

    /// The handshake's outcome: the HTTP status of a refused upgrade.
    pub async fn refused_status(address: &str) -> Option<u16> {
        match tokio_tungstenite::connect_async(url(address)).await {
            Ok(_) => None,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Some(response.status().as_u16())
            }
            Err(e) => panic!("unexpected handshake error {e}"),
        }
    }

    /// Sends `message` as a JSON text frame.
    pub async fn send(&mut self, message: Value) {
        self.send_raw(Message::text(message.to_string())).await;
    }

    /// Sends any frame.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("frame sent");
    }

    /// Subscribes to `topic` (resuming after `since`) and waits for `subscribed`.
    pub async fn subscribe(&mut self, topic: &str, since: Option<&str>) {
        let answer = self.subscribe_answer(topic, since).await;
        assert_eq!(
            answer,
            json!({"op": "subscribed", "topic": topic}),
            "subscribing to {topic}"
        );
    }

    /// Sends a subscription and returns the server's first answer.
    pub async fn subscribe_answer(&mut self, topic: &str, since: Option<&str>) -> Value {
        let mut message = json!({"op": "subscribe", "topic": topic});
        if let Some(since) = since {
            message["since"] = json!(since);
        }
        self.send(message).await;
        self.next().await.expect("an answer to subscribe")
    }

    /// The next text frame as JSON, within [`PATIENCE`]; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("a frame within {PATIENCE:?}"))
    }

    /// The next text frame within `wait`: `None` if none came, `Some(None)` if the
    /// connection ended. Pings are answered (by tungstenite) and skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Some(Some(serde_json::from_str(&text).expect("frames are JSON")));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => panic!("the server sends text frames only"),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Some(None),
            }
        }
    }

    /// The next `n` event frames (any other frame fails the test).
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let frame = self.next().await.expect("the connection stays open");
            assert_eq!(frame["op"], "event", "expected an event, got {frame}");
            events.push(frame);
        }
        events
    }

    /// Asserts that no frame comes within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(frame) = self.next_within(wait).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    /// Reads (and drops) frames until the connection ends, within `wait`; how it ended and
    /// how many event frames came first.
    pub async fn ended(&mut self, wait: Duration) -> (Ended, usize) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = 0;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("the connection ends within {wait:?}"));
            match frame {
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f: CloseFrame| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return (Ended::Closed(code, reason), events);
                }
                Some(Ok(Message::Text(text))) => {
                    events += usize::from(text.contains(r#""op":"event""#));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (Ended::Dropped, events),
            }
        }
    }
}
