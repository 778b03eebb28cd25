//! Redis Streams: connections, key naming, and (in later modules) group reading, acking,
//! claiming, dead-lettering and publishing.

pub mod connection;
pub mod dead_letter;
pub mod entry;
pub mod group;
pub mod outbox_relay;

pub use connection::{RedisClients, StreamKeys};

use std::time::Duration;

/// Errors of the Redis layer.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A command failed or the connection is down.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something we did not expect.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The operation did not finish in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}
