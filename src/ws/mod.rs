//! Real-time delivery over WebSocket (`GET /ws`, protocol in `docs/websocket.md`).
//!
//! Domains name the topics of the events they emit ([`Domain::topics`]); every instance's
//! [`Hub`] reads those domains' `<name>.events` streams with plain `XREAD` and hands each event
//! to its own clients subscribed to the event's topics, so a client connected to any instance
//! gets every event of its topics, in stream order. A client that lost its connection resumes
//! with `since`: the events it missed are replayed from the stream, then live ones follow,
//! with no gap and no duplicate.
//!
//! [`Domain::topics`]: crate::domain::Domain::topics

pub mod connection;
pub mod hub;
pub mod protocol;
pub mod topics;

pub use hub::Hub;
pub use topics::TopicSource;
