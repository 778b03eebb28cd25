//! A fresh Postgres database per test, dropped after the test by a reaper thread.
//!
//! Why a reaper instead of a blocking drop: `DROP DATABASE` waits until every backend of the
//! cluster absorbs a ProcSignalBarrier, and a backend still in its start-up handshake does not
//! absorb it until `authentication_timeout` (a minute). A test's runtime that blocks in `Drop`
//! can itself hold such a half-open connection (its app or proxy was connecting when the test
//! ended), so a blocking drop stalls every test for a minute. Dropping on another thread, one
//! database at a time, lets the test's runtime wind down and close its sockets.
//!
//! Databases are named `troupe_test_<pid>_<uuid>`: drops still queued when the test process
//! exits are done by the next run, which reaps the databases of processes that are gone.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// A database created for one test.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `troupe_test_<pid>_<uuid>` on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        sweep_orphans(admin_url);
        let name = format!(
            "troupe_test_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = AsyncPgConnection::establish(admin_url)
            .await
            .expect("admin connection");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("database url");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let reap = Reap {
            admin_url: self.admin_url.clone(),
            name: Some(self.name.clone()),
        };
        if reaper().send(reap).is_err() {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A request to the reaper: drop `name`, or (with `None`) the databases of dead test processes.
struct Reap {
    admin_url: String,
    name: Option<String>,
}

/// The reaper's queue; the first use also asks it to sweep what earlier runs left behind.
fn reaper() -> &'static Sender<Reap> {
    static REAPER: OnceLock<Sender<Reap>> = OnceLock::new();
    REAPER.get_or_init(|| {
        let (tx, rx) = channel::<Reap>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("warning: test database reaper has no runtime");
                return;
            };
            while let Ok(reap) = rx.recv() {
                let names = match reap.name {
                    Some(name) => vec![name],
                    None => rt.block_on(orphaned_databases(&reap.admin_url)),
                };
                for name in names {
                    if let Err(error) = rt.block_on(drop_database(&reap.admin_url, &name)) {
                        eprintln!("warning: could not drop test database {name}: {error}");
                    }
                }
            }
        });
        tx
    })
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Test databases whose creating process no longer runs (known only where `/proc` is).
async fn orphaned_databases(admin_url: &str) -> Vec<String> {
    if !std::path::Path::new("/proc/self").exists() {
        return Vec::new();
    }
    let Ok(mut conn) = AsyncPgConnection::establish(admin_url).await else {
        return Vec::new();
    };
    let names: Vec<DatabaseName> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'troupe\\_test\\_%'")
            .load(&mut conn)
            .await
            .unwrap_or_default();
    names
        .into_iter()
        .map(|n| n.datname)
        .filter(|name| {
            let pid = name
                .strip_prefix("troupe_test_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            // Names without a pid come from an older layout; their process is long gone.
            pid.is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

async fn drop_database(admin_url: &str, name: &str) -> diesel::QueryResult<()> {
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .map(|_| ())
}

/// Asks the reaper, once per process, to drop what earlier test runs left behind.
fn sweep_orphans(admin_url: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = reaper().send(Reap {
            admin_url: admin_url.to_owned(),
            name: None,
        });
    });
}
