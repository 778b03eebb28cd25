//! Embedded diesel migrations, run by `troupe migrate` and at the start of `troupe serve`.

use diesel::{Connection, RunQueryDsl};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StoreError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Session advisory lock key held while migrating ("troupe" in ASCII), so instances starting
/// together migrate one after another instead of racing on the same DDL.
const MIGRATION_LOCK_KEY: i64 = 0x74_72_6f_75_70_65;

/// Applies every pending migration and returns the versions applied. Concurrent callers
/// (several instances starting at once) take turns; the later ones find nothing pending.
///
/// diesel's migration harness is synchronous, so it runs on a blocking thread through
/// `AsyncConnectionWrapper`, which drives the async connection on a runtime of its own.
pub async fn run(database_url: &str) -> Result<Vec<String>, StoreError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)?;
        // Released when `conn` closes at the end of this closure.
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(StoreError::Migration)?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await
    .map_err(|e| StoreError::Migration(Box::new(e)))?
}
