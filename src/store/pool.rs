//! The connection pool.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};

use super::StoreError;
use crate::settings::DatabaseSettings;

/// A pool of async Postgres connections.
pub type DbPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
/// A connection borrowed from [`DbPool`].
pub type DbConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Builds the pool. No connection is opened until one is needed, so this succeeds while the
/// database is down; connections that broke while pooled are detected on checkout (the
/// `Verified` recycling method runs a trivial query) and replaced.
pub fn build(settings: &DatabaseSettings) -> Result<DbPool, StoreError> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Verified;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&settings.url, config);
    let timeout = Some(settings.connect_timeout());
    DbPool::builder(manager)
        .max_size(settings.pool_max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .map_err(|e| StoreError::Pool(Box::new(e)))
}

/// Runs `work` on a pooled connection within `limit`. A connection that does not answer in
/// time is taken out of the pool and closed, so Postgres aborts what it was doing (releasing
/// its locks) rather than the pool handing the connection out again mid-transaction.
pub async fn within<T>(
    pool: &DbPool,
    limit: Duration,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut conn = pool.get().await?;
    match tokio::time::timeout(limit, work(&mut conn)).await {
        Ok(result) => result,
        Err(_) => {
            drop(DbConn::take(conn));
            Err(StoreError::Timeout(limit))
        }
    }
}

/// A connection taken out of the pool for good, for session state such as an advisory lock
/// that must last as long as its holder: it is closed (never returned to the pool) when
/// dropped or when a call on it times out, so the session and its locks end with it.
pub struct Dedicated(Option<DbConn>);

impl Dedicated {
    /// Takes a connection from `pool`.
    pub async fn take(pool: &DbPool) -> Result<Self, StoreError> {
        Ok(Self(Some(pool.get().await?)))
    }

    /// Runs `work` on the connection within `limit`; a call that times out closes it (the
    /// session ends, Postgres aborts the statement) and every later call fails.
    pub async fn run<T>(
        &mut self,
        limit: Duration,
        work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(conn) = self.0.as_mut() else {
            return Err(StoreError::Pool(
                "dedicated connection closed after a timeout".into(),
            ));
        };
        match tokio::time::timeout(limit, work(conn)).await {
            Ok(result) => result,
            Err(_) => {
                self.close();
                Err(StoreError::Timeout(limit))
            }
        }
    }

    fn close(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(DbConn::take(conn));
        }
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        self.close();
    }
}
