//! A fresh Postgres database per test, dropped when the test ends.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// A database created for one test.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `troupe_test_<uuid>` on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("troupe_test_{}", uuid::Uuid::new_v4().simple());
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
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; use a thread with its own runtime to block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin_url).await.ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
