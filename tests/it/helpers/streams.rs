//! Writing to and inspecting the test's Redis streams and Postgres tables.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use redis::aio::MultiplexedConnection;

use super::Isolation;

/// One envelope as a producer writes it.
pub struct Adjustment<'a> {
    /// Envelope id.
    pub id: String,
    /// SKU.
    pub sku: &'a str,
    /// Delta.
    pub delta: i64,
}

impl Isolation {
    /// A Redis connection for the test itself.
    pub async fn redis(&self) -> MultiplexedConnection {
        redis::Client::open(self.settings.redis.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The prefixed key of a logical stream.
    pub fn key(&self, stream: &str) -> String {
        format!("{}{stream}", self.settings.redis.key_prefix)
    }

    /// XADDs raw field/value pairs to a logical stream.
    pub async fn xadd(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.key(stream)).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.redis().await).await.unwrap()
    }

    /// XADDs `stock.adjusted` envelopes in pipelined chunks.
    pub async fn write_adjustments(&self, adjustments: &[Adjustment<'_>]) {
        let mut conn = self.redis().await;
        let key = self.key("inventory.adjustments");
        for chunk in adjustments.chunks(1000) {
            let mut pipe = redis::pipe();
            for a in chunk {
                let data = format!(r#"{{"delta":{},"warehouse":"w1"}}"#, a.delta);
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("id")
                    .arg(&a.id)
                    .arg("type")
                    .arg("stock.adjusted")
                    .arg("key")
                    .arg(a.sku)
                    .arg("data")
                    .arg(data)
                    .ignore();
            }
            pipe.exec_async(&mut conn).await.unwrap();
        }
    }

    /// Entries delivered to the domain's group and not acknowledged. The group must exist (the
    /// domain's reader creates it as it starts): ask only once the domain has done something.
    pub async fn pending(&self, stream: &str, group: &str) -> u64 {
        let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(self.key(stream))
            .arg(group)
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        summary.0
    }

    /// Entries of a logical stream.
    pub async fn xlen(&self, stream: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(self.key(stream))
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// The ids of every event on the inventory output stream, oldest first (paged, so any
    /// length works).
    pub async fn output_event_ids(&self) -> Vec<String> {
        self.output_events()
            .await
            .into_iter()
            .map(|mut fields| fields.remove("id").unwrap_or_default())
            .collect()
    }

    /// Every event on the inventory output stream, field by field, oldest first (paged).
    pub async fn output_events(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.stream_entries("inventory.events").await
    }

    /// Every entry of `stream` (logical name), field by field, oldest first (paged).
    pub async fn stream_entries(
        &self,
        stream: &str,
    ) -> Vec<std::collections::HashMap<String, String>> {
        let mut redis = self.redis().await;
        let key = self.key(stream);
        let (mut events, mut from) = (Vec::new(), "-".to_owned());
        loop {
            let page: Vec<(String, std::collections::HashMap<String, String>)> =
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
            let Some((last, _)) = page.last() else {
                return events;
            };
            from = format!("({last}");
            events.extend(page.into_iter().map(|(_, fields)| fields));
        }
    }

    /// One `dlq_*` field (`reason`, `original_id` …) of every entry in the dead-letter
    /// stream `dlq` (logical name), oldest first.
    pub async fn dead_letter_field(&self, dlq: &str, field: &str) -> Vec<String> {
        let entries: Vec<(String, std::collections::HashMap<String, Vec<u8>>)> =
            redis::cmd("XRANGE")
                .arg(self.key(dlq))
                .arg("-")
                .arg("+")
                .query_async(&mut self.redis().await)
                .await
                .unwrap();
        let field = format!("dlq_{field}");
        entries
            .into_iter()
            .map(|(_, mut f)| {
                String::from_utf8_lossy(&f.remove(&field).unwrap_or_default()).into_owned()
            })
            .collect()
    }

    /// XADDs raw field/value pairs, values as bytes (for values that are not UTF-8).
    pub async fn xadd_bytes(&self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.key(stream)).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.redis().await).await.unwrap()
    }

    /// A direct connection to the test's database.
    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database.url)
            .await
            .unwrap()
    }

    /// The highest delivery count among the group's pending entries (0 if none).
    pub async fn max_delivery_count(&self, stream: &str, group: &str) -> u64 {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(self.key(stream))
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
        pending.iter().map(|p| p.3).max().unwrap_or(0)
    }

    /// Runs a query returning one bigint.
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Int8)]
            v: i64,
        }
        let row: Row = diesel::sql_query(sql)
            .get_result(&mut self.db().await)
            .await
            .unwrap();
        row.v
    }
}

/// Polls `check` every 50 ms until it returns true, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
