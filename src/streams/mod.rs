//! Redis Streams: connections, key naming, and (in later modules) group reading, acking,
//! claiming, dead-lettering and publishing.

pub mod connection;
pub mod dead_letter;
pub mod entry;
pub mod envelope;
pub mod group;
pub mod outbox_relay;

pub use connection::{RedisClients, StreamKeys};

use std::time::Duration;

impl StreamError {
    /// Whether Redis is unreachable or not answering (as opposed to refusing a command):
    /// something to wait out, not a fault of the actor.
    pub fn is_outage(&self) -> bool {
        match self {
            StreamError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::MasterDown
                        )
                    )
            }
            StreamError::Timeout(_) => true,
            StreamError::Protocol(_) => false,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_redis_is_an_outage_a_refused_command_is_not() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(StreamError::Redis(refused).is_outage());
        assert!(StreamError::Timeout(Duration::from_secs(1)).is_outage());
        let loading = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "loading the dataset",
        ));
        assert!(StreamError::Redis(loading).is_outage());
        let wrong_type =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a stream"));
        assert!(!StreamError::Redis(wrong_type).is_outage());
        assert!(!StreamError::Protocol("odd reply".into()).is_outage());
    }
}
