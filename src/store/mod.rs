//! Postgres persistence through diesel + diesel-async: the pool, the embedded migrations, and
//! every SQL statement the runtime runs. Nothing outside this module imports diesel.
//!
//! Store functions take `&mut AsyncPgConnection`, so the same function runs on a pooled
//! connection or inside a transaction.

pub mod applied;
pub mod batch;
pub mod entities;
pub mod migrations;
pub mod outbox;
pub mod pool;
pub mod schema;

pub use pool::{DbConn, DbPool};

use std::time::Duration;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had from the pool (database down, pool exhausted, timeout).
    #[error("no database connection: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A connection could not be opened directly (migrations).
    #[error("database connection failed: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// Applying the embedded migrations failed.
    #[error("migrations failed: {0}")]
    Migration(String),
    /// The operation did not finish in time.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    /// Some entity writes were computed from versions Postgres no longer holds.
    #[error("{stale} of {of} entities changed in postgres since they were loaded")]
    StaleEntities {
        /// How many writes did not land.
        stale: usize,
        /// How many were attempted.
        of: usize,
    },
    /// A stored value could not be decoded.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// Messages of Postgres errors that mean the server is shutting down, starting or recovering.
const SERVER_UNAVAILABLE: &[&str] = &[
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
];

impl StoreError {
    /// Whether Postgres is unreachable or not answering (as opposed to refusing a statement):
    /// something to wait out, not a fault of the actor.
    pub fn is_outage(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Pool(_) | StoreError::Connect(_) | StoreError::Timeout(_) => true,
            StoreError::Query(Error::BrokenTransactionManager) => true,
            StoreError::Query(Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => true,
            // The server going down or coming up (SQLSTATE 57P01, 57P03): diesel reports these
            // as unknown database errors, so they are known by their message.
            StoreError::Query(Error::DatabaseError(_, info)) => {
                let message = info.message();
                SERVER_UNAVAILABLE.iter().any(|m| message.starts_with(m))
            }
            _ => false,
        }
    }
}

impl From<deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>> for StoreError {
    fn from(e: deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>) -> Self {
        StoreError::Pool(e.to_string())
    }
}

/// `SELECT 1` on a pooled connection, bounded by `timeout`: the readiness check.
pub async fn ping(pool: &DbPool, timeout: Duration) -> Result<(), StoreError> {
    use diesel_async::RunQueryDsl;
    let check = async {
        let mut conn = pool.get().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| StoreError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_postgres_is_an_outage_a_refused_statement_is_not() {
        assert!(StoreError::Pool("connection refused".into()).is_outage());
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_outage());
        assert!(StoreError::Query(diesel::result::Error::BrokenTransactionManager).is_outage());
        assert!(!StoreError::Query(diesel::result::Error::NotFound).is_outage());
        let database_error = |kind, message: &str| {
            StoreError::Query(diesel::result::Error::DatabaseError(
                kind,
                Box::new(message.to_owned()),
            ))
        };
        use diesel::result::DatabaseErrorKind::{UniqueViolation, Unknown};
        let shutdown = "terminating connection due to administrator command";
        assert!(database_error(Unknown, shutdown).is_outage());
        assert!(database_error(Unknown, "the database system is starting up").is_outage());
        assert!(!database_error(UniqueViolation, "duplicate key value").is_outage());
        assert!(!StoreError::StaleEntities { stale: 1, of: 2 }.is_outage());
        assert!(!StoreError::Corrupt("bad json".into()).is_outage());
    }
}
