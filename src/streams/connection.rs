//! Redis clients and key naming.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use super::StreamError;
use crate::settings::RedisSettings;

/// The Redis clients of one process.
///
/// Non-blocking commands (XADD, XACK, XAUTOCLAIM, PING) share one auto-reconnecting
/// [`ConnectionManager`]. A blocking `XREADGROUP` would stall every command multiplexed behind
/// it, so each blocking reader opens a dedicated connection with [`RedisClients::blocking`].
#[derive(Clone)]
pub struct RedisClients {
    client: Client,
    manager: ConnectionManager,
    settings: RedisSettings,
}

impl RedisClients {
    /// Opens the shared connection manager; fails if Redis does not answer in time.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StreamError> {
        let client = Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout()))
            .set_response_timeout(Some(settings.response_timeout()))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            manager,
            settings: settings.clone(),
        })
    }

    /// The shared connection, for non-blocking commands. Cloning it is cheap.
    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A dedicated connection for a reader that blocks for up to `block` per read; its reply
    /// timeout leaves room for the block time.
    pub async fn blocking(&self, block: Duration) -> Result<MultiplexedConnection, StreamError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout()))
            .set_response_timeout(Some(block + self.settings.response_timeout()));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// `PING`, bounded by `timeout`: the readiness check.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StreamError> {
        let mut conn = self.manager();
        let ping = async { redis::cmd("PING").query_async::<String>(&mut conn).await };
        tokio::time::timeout(timeout, ping)
            .await
            .map_err(|_| StreamError::Timeout(timeout))??;
        Ok(())
    }

    /// The key naming of this process.
    pub fn keys(&self) -> StreamKeys {
        StreamKeys::new(&self.settings.key_prefix)
    }
}

/// Maps logical stream names (`inventory.adjustments`) to Redis keys, applying the configured
/// prefix so several deployments or tests can share one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    prefix: String,
}

impl StreamKeys {
    /// Key naming with `prefix` prepended to every key.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The Redis key of a stream.
    pub fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The Redis key of a stream's dead-letter stream.
    pub fn dead_letters(&self, name: &str) -> String {
        format!("{}{name}.dlq", self.prefix)
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
