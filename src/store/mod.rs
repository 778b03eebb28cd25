//! Postgres persistence through diesel + diesel-async: the pool, the embedded migrations, and
//! every SQL statement the runtime runs. Nothing outside this module imports diesel.
//!
//! Store functions take `&mut AsyncPgConnection`, so the same function runs on a pooled
//! connection or inside a transaction.

pub mod applied;
pub mod batch;
pub mod commands;
pub mod entities;
pub mod migrations;
pub mod outbox;
pub mod pool;
pub mod retention;
pub mod schema;
pub mod timers;

pub use pool::{DbConn, DbPool};

use std::time::Duration;

/// A cause from a library whose error type the store does not name.
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had from the pool (database down, pool exhausted, timeout).
    #[error("no database connection: {0}")]
    Pool(#[source] BoxedCause),
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A connection could not be opened directly (migrations).
    #[error("database connection failed: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// Applying the embedded migrations failed.
    #[error("migrations failed: {0}")]
    Migration(#[source] BoxedCause),
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
    /// Inputs (envelope ids, or a command's idempotency key) were applied by an earlier unit;
    /// the unit was rolled back and must be redone without them.
    #[error("{} inputs were already applied", .0.len())]
    AlreadyApplied(Vec<String>),
}

/// Messages of Postgres errors that mean the server is shutting down, starting or recovering.
const SERVER_UNAVAILABLE: &[&str] = &[
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
];

/// Messages of Postgres errors caused by the data a statement carried: the same statement fails
/// the same way every time, so retrying the unit cannot help, isolating the input can.
const DATA_REFUSED: &[&str] = &[
    "invalid byte sequence",
    "index row size",
    "index row requires",
    "value too long",
    "unsupported Unicode escape sequence",
    "invalid input syntax",
    "out of range",
    "numeric field overflow",
    "string too long",
];

impl StoreError {
    /// Whether the statement was refused for the data it carried (a constraint, an encoding,
    /// a size): committing the same unit again fails the same way, so the runtime isolates the
    /// offending input instead of retrying.
    pub fn is_deterministic(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match self {
            StoreError::Query(Error::DatabaseError(kind, info)) => match kind {
                Kind::UniqueViolation
                | Kind::ForeignKeyViolation
                | Kind::NotNullViolation
                | Kind::CheckViolation
                | Kind::RestrictViolation
                | Kind::ExclusionViolation => true,
                Kind::Unknown => {
                    let message = info.message();
                    DATA_REFUSED.iter().any(|m| message.contains(m))
                }
                _ => false,
            },
            StoreError::Query(Error::SerializationError(_)) => true,
            _ => false,
        }
    }

    /// Whether a commit that failed this way may have landed all the same: it timed out, or
    /// the connection broke while the server was answering. A failure to get a connection, or
    /// a statement the server refused, leaves nothing committed.
    pub fn is_outcome_unknown(&self) -> bool {
        self.is_outage() && !matches!(self, StoreError::Pool(_) | StoreError::Connect(_))
    }

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
        StoreError::Pool(Box::new(e))
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

    #[test]
    fn refused_data_is_deterministic_an_outage_or_a_conflict_is_not() {
        let database_error = |kind, message: &str| {
            StoreError::Query(diesel::result::Error::DatabaseError(
                kind,
                Box::new(message.to_owned()),
            ))
        };
        use diesel::result::DatabaseErrorKind::{CheckViolation, SerializationFailure, Unknown};
        let nul = "invalid byte sequence for encoding \"UTF8\": 0x00";
        assert!(database_error(Unknown, nul).is_deterministic());
        assert!(database_error(CheckViolation, "violates check constraint").is_deterministic());
        assert!(!database_error(SerializationFailure, "could not serialize").is_deterministic());
        assert!(!database_error(Unknown, "deadlock detected").is_deterministic());
        let shutdown = "terminating connection due to administrator command";
        assert!(!database_error(Unknown, shutdown).is_deterministic());
        assert!(!StoreError::Timeout(Duration::from_secs(1)).is_deterministic());
        assert!(!StoreError::StaleEntities { stale: 1, of: 2 }.is_deterministic());
    }
}
