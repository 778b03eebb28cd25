//! The baseline of the drain bench: a hand-written, single-purpose consumer of the same load,
//! built from the same crates Troupe uses (tokio, redis) plus tokio-postgres, with none of
//! Troupe's machinery (see BENCHMARKS.md, "Baseline").
//!
//! Two tasks joined by a bounded channel of capacity 1:
//!
//! * the **reader** runs `XREADGROUP GROUP g c COUNT 2000 BLOCK 100 STREAMS s >`, applies each
//!   entry to an in-memory `HashMap` (SKU → `on_hand`, `version`), and hands the batch's
//!   coalesced states (one row per SKU touched by the batch) and entry ids to the committer; it
//!   then reads the next batch while the committer is still committing;
//! * the **committer** writes each batch in one transaction holding one statement,
//!   `INSERT … SELECT FROM UNNEST($1::text[], $2::int8[], $3::int8[]) ON CONFLICT (sku) DO
//!   UPDATE`, commits, then sends one `XACK` with the batch's ids.
//!
//! What it does not do: no actors, no deduplication or applied-input records, no outbox or
//! emitted events, no pending-entry recovery, claiming, dead letters, retries or reconnects
//! (any error ends the run), no metrics, tracing or HTTP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

/// Entries per `XREADGROUP`, the unit of commit (Troupe's `runtime.read_count` default).
pub const READ_COUNT: usize = 2000;
/// `XREADGROUP` BLOCK in milliseconds.
pub const READ_BLOCK_MS: u64 = 100;

/// The upsert of one batch: every SKU it touched, with its state after the batch.
const UPSERT: &str = "INSERT INTO stock (sku, on_hand, version) \
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[]) \
     ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, version = EXCLUDED.version";

/// Where the baseline reads and writes.
pub struct Target<'a> {
    /// Redis URL.
    pub redis_url: &'a str,
    /// The stream holding the baseline's copy of the load.
    pub stream: &'a str,
    /// Its consumer group (created by [`prepare`]).
    pub group: &'a str,
    /// The baseline's own database (`stock` created by [`prepare`]).
    pub database_url: &'a str,
    /// How many entries the load holds: the reader stops once it has read them all.
    pub events: usize,
}

/// One batch as the reader hands it to the committer.
struct Batch {
    /// Stream ids of the batch's entries, for the `XACK`.
    ids: Vec<String>,
    /// SKUs touched by the batch, each once.
    skus: Vec<String>,
    /// `on_hand` of each SKU after the batch.
    on_hand: Vec<i64>,
    /// `version` (events applied so far) of each SKU after the batch.
    versions: Vec<i64>,
}

/// The state the reader holds per SKU.
struct Stock {
    on_hand: i64,
    version: i64,
    /// The last batch that touched this SKU, to list each SKU once per batch.
    batch: u64,
}

/// The `data` field of a `stock.adjusted` envelope; other fields (`warehouse`) are ignored.
#[derive(serde::Deserialize)]
struct Adjustment {
    delta: i64,
}

/// Creates the `stock` table in the baseline's (fresh) database and the consumer group at the
/// start of its stream. Not part of the measured time.
pub async fn prepare(target: &Target<'_>) -> Result<()> {
    let pg = connect_pg(target.database_url).await?;
    pg.batch_execute(
        "CREATE TABLE stock (sku text PRIMARY KEY, on_hand bigint NOT NULL, version bigint NOT NULL)",
    )
    .await
    .context("baseline: create table stock")?;
    let mut redis = connect_redis(target.redis_url).await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(target.stream)
        .arg(target.group)
        .arg("0")
        .query_async(&mut redis)
        .await
        .context("baseline: XGROUP CREATE")?;
    Ok(())
}

/// What the committer measured.
pub struct Commits {
    /// Batches committed.
    pub batches: usize,
    /// Mean time of one batch's transaction (BEGIN, upsert, COMMIT), in seconds.
    pub mean_seconds: f64,
}

/// Runs the baseline until every entry of the load is committed and acknowledged.
pub async fn run(target: &Target<'_>) -> Result<Commits> {
    // Separate connections: a blocking XREADGROUP would hold up an XACK multiplexed behind it.
    let reader_redis = connect_redis(target.redis_url).await?;
    let committer_redis = connect_redis(target.redis_url).await?;
    let pg = connect_pg(target.database_url).await?;
    let (tx, rx) = mpsc::channel(1);
    let reader = tokio::spawn(read(
        reader_redis,
        target.stream.to_owned(),
        target.group.to_owned(),
        target.events,
        tx,
    ));
    let committer = tokio::spawn(commit(
        pg,
        committer_redis,
        target.stream.to_owned(),
        target.group.to_owned(),
        rx,
    ));
    let (read, (acked, commits)) = tokio::try_join!(flatten(reader), flatten(committer))?;
    ensure!(
        read == acked,
        "baseline: read {read} entries but acknowledged {acked}"
    );
    Ok(commits)
}

/// The reader task: reads, applies, coalesces and hands over batches until `events` entries
/// have been read. Returns how many it read.
async fn read(
    mut redis: MultiplexedConnection,
    stream: String,
    group: String,
    events: usize,
    tx: mpsc::Sender<Batch>,
) -> Result<usize> {
    let mut stock: HashMap<String, Stock> = HashMap::new();
    let mut read = 0;
    let mut batch_no = 0_u64;
    while read < events {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg("baseline-1")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut redis)
            .await
            .context("baseline: XREADGROUP")?;
        let entries = stream_entries(reply)?;
        if entries.is_empty() {
            continue;
        }
        batch_no += 1;
        let mut ids = Vec::with_capacity(entries.len());
        let mut skus = Vec::new();
        for entry in entries {
            let (id, key, data) = entry_fields(entry)?;
            let adjustment: Adjustment =
                serde_json::from_slice(&data).with_context(|| format!("baseline: data of {id}"))?;
            let state = match stock.get_mut(key.as_str()) {
                Some(state) => state,
                None => stock.entry(key.clone()).or_insert(Stock {
                    on_hand: 0,
                    version: 0,
                    batch: 0,
                }),
            };
            state.on_hand += adjustment.delta;
            state.version += 1;
            if state.batch != batch_no {
                state.batch = batch_no;
                skus.push(key);
            }
            ids.push(id);
        }
        read += ids.len();
        let mut on_hand = Vec::with_capacity(skus.len());
        let mut versions = Vec::with_capacity(skus.len());
        for sku in &skus {
            let state = stock.get(sku).context("baseline: touched SKU missing")?;
            on_hand.push(state.on_hand);
            versions.push(state.version);
        }
        let batch = Batch {
            ids,
            skus,
            on_hand,
            versions,
        };
        // Waits while the committer still has a batch queued: at most one batch committing,
        // one queued and one being read.
        if tx.send(batch).await.is_err() {
            bail!("baseline: the committer stopped");
        }
    }
    Ok(read)
}

/// The committer task: one transaction with one upsert per batch, then one `XACK`. Returns how
/// many entries it acknowledged, and its commit times.
async fn commit(
    mut pg: Client,
    mut redis: MultiplexedConnection,
    stream: String,
    group: String,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<(usize, Commits)> {
    let upsert = pg.prepare(UPSERT).await.context("baseline: prepare")?;
    let (mut acked, mut batches, mut in_transactions) = (0, 0, Duration::ZERO);
    while let Some(batch) = rx.recv().await {
        let started = Instant::now();
        let tx = pg.transaction().await.context("baseline: BEGIN")?;
        tx.execute(&upsert, &[&batch.skus, &batch.on_hand, &batch.versions])
            .await
            .context("baseline: upsert")?;
        tx.commit().await.context("baseline: COMMIT")?;
        in_transactions += started.elapsed();
        batches += 1;
        let n: usize = redis::cmd("XACK")
            .arg(&stream)
            .arg(&group)
            .arg(&batch.ids)
            .query_async(&mut redis)
            .await
            .context("baseline: XACK")?;
        ensure!(
            n == batch.ids.len(),
            "baseline: XACK acknowledged {n} of {} entries",
            batch.ids.len()
        );
        acked += n;
    }
    let commits = Commits {
        batches,
        mean_seconds: in_transactions.as_secs_f64() / batches.max(1) as f64,
    };
    Ok((acked, commits))
}

/// Reads the baseline's table: SKU → (`on_hand`, `version`).
pub async fn totals(database_url: &str) -> Result<HashMap<String, (i64, i64)>> {
    let pg = connect_pg(database_url).await?;
    let rows = pg
        .query("SELECT sku, on_hand, version FROM stock", &[])
        .await
        .context("baseline: read totals")?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
        .collect()
}

/// Connects to Postgres and drives the connection on its own task.
async fn connect_pg(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("baseline: connect to postgres")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("baseline: postgres connection: {e}");
        }
    });
    Ok(client)
}

/// A dedicated multiplexed Redis connection (its own socket).
async fn connect_redis(url: &str) -> Result<MultiplexedConnection> {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("baseline: connect to redis")
}

/// Joins a task, turning a panic or cancellation into an error.
async fn flatten<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    task.await.context("baseline task")?
}

/// The entry list of a single-stream `XREADGROUP` reply (RESP2 or RESP3); empty on timeout.
fn stream_entries(reply: Value) -> Result<Vec<Value>> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams.into_iter().next().and_then(|stream| match stream {
            Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
            _ => None,
        }),
        Value::Map(streams) => streams.into_iter().next().map(|(_, entries)| entries),
        other => bail!("baseline: unexpected XREADGROUP reply {other:?}"),
    };
    match entries {
        Some(Value::Array(entries)) => Ok(entries),
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(other) => bail!("baseline: unexpected entry list {other:?}"),
    }
}

/// The stream id, `key` and `data` of one entry `[id, [field, value, …]]`; checks `type`.
fn entry_fields(entry: Value) -> Result<(String, String, Vec<u8>)> {
    let Value::Array(parts) = entry else {
        bail!("baseline: unexpected entry {entry:?}");
    };
    let mut parts = parts.into_iter();
    let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (parts.next(), parts.next())
    else {
        bail!("baseline: entry without id or fields");
    };
    let id = String::from_utf8(id)?;
    let (mut key, mut data, mut kind) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
        (fields.next(), fields.next())
    {
        match name.as_slice() {
            b"key" => key = Some(String::from_utf8(value)?),
            b"data" => data = Some(value),
            b"type" => kind = Some(value),
            _ => {}
        }
    }
    ensure!(
        kind.as_deref() == Some(b"stock.adjusted".as_slice()),
        "baseline: entry {id} is not a stock.adjusted event"
    );
    match (key, data) {
        (Some(key), Some(data)) => Ok((id, key, data)),
        _ => bail!("baseline: entry {id} lacks key or data"),
    }
}
