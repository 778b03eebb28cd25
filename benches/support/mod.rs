//! What the benchmarks share: their environment settings and fresh databases (and, in
//! `shop.rs`, included by the benchmarks that drive the shop, the running shop).

use anyhow::{Context, Result};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// The number in environment variable `name`, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Drops and creates database `name` on the server of `admin_url`; returns its URL.
pub async fn fresh_database(admin_url: &str, name: &str) -> Result<url::Url> {
    let mut admin = AsyncPgConnection::establish(admin_url)
        .await
        .context("postgres")?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let mut db_url = url::Url::parse(admin_url)?;
    db_url.set_path(name);
    Ok(db_url)
}
