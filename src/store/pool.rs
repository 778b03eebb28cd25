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
        .map_err(|e| StoreError::Pool(e.to_string()))
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
