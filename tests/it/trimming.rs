//! What keeps Redis bounded, against a real Redis: output streams trimmed past their retention
//! but never past what a group has not read and acknowledged; dead-letter streams trimmed by
//! length and age; consumers of instances that went away removed once they own nothing.

use redis::aio::MultiplexedConnection;
use troupe::streams::entry::EntryId;
use troupe::streams::outbox_relay::trim;

use std::time::Duration;

use troupe::streams::group::{ensure_group, group_stats};

use crate::helpers::oracle::{Expected, adjustments, write};
use crate::helpers::{AppOptions, Isolation, TestApp, eventually, spawn_app_on, spawn_app_with};

fn id(ms: u64) -> EntryId {
    EntryId { ms, seq: 0 }
}

async fn remaining(conn: &mut MultiplexedConnection, key: &str) -> Vec<u64> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| e.id.parse::<EntryId>().unwrap().ms)
        .collect()
}

/// XREADGROUPs up to `count` new entries for `group` and returns their ids.
async fn read(conn: &mut MultiplexedConnection, key: &str, group: &str, count: usize) -> Vec<u64> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("c1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    reply.keys[0]
        .ids
        .iter()
        .map(|e| e.id.parse::<EntryId>().unwrap().ms)
        .collect()
}

async fn ack(conn: &mut MultiplexedConnection, key: &str, group: &str, ids: &[u64]) {
    let mut cmd = redis::cmd("XACK");
    cmd.arg(key).arg(group);
    for ms in ids {
        cmd.arg(id(*ms).to_string());
    }
    let _: u64 = cmd.query_async(conn).await.unwrap();
}

#[tokio::test]
async fn trimming_keeps_what_a_group_has_not_read_and_acknowledged() {
    let iso = Isolation::new().await;
    let mut conn = iso.redis().await;
    let key = iso.key("trimmed.events");
    for ms in 1..=10u64 {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(id(ms).to_string())
            .arg("n")
            .arg(ms)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // Without groups, the retention point alone decides.
    assert_eq!(trim(&mut conn, &key, id(3)).await.unwrap(), 2);
    assert_eq!(
        remaining(&mut conn, &key).await,
        (3..=10).collect::<Vec<_>>()
    );

    // Group `slow` has read 3..=6 and acknowledged 3 and 4; group `late` starts after 8.
    for (group, start) in [("slow", "0"), ("late", "8-0")] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(group)
            .arg(start)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(read(&mut conn, &key, "slow", 4).await, vec![3, 4, 5, 6]);
    ack(&mut conn, &key, "slow", &[3, 4]).await;

    // A retention point past everything stops at `slow`'s oldest unacknowledged entry, 5.
    assert_eq!(trim(&mut conn, &key, id(100)).await.unwrap(), 2);
    assert_eq!(
        remaining(&mut conn, &key).await,
        (5..=10).collect::<Vec<_>>()
    );

    // Once `slow` has acknowledged 5 and 6 but not yet read 7, it is the unread 7 that stops it.
    ack(&mut conn, &key, "slow", &[5, 6]).await;
    assert_eq!(trim(&mut conn, &key, id(100)).await.unwrap(), 2);
    assert_eq!(
        remaining(&mut conn, &key).await,
        (7..=10).collect::<Vec<_>>()
    );

    // `slow` catches up completely; now `late`, which has read nothing, keeps 9 and 10.
    assert_eq!(read(&mut conn, &key, "slow", 10).await, vec![7, 8, 9, 10]);
    ack(&mut conn, &key, "slow", &[7, 8, 9, 10]).await;
    assert_eq!(trim(&mut conn, &key, id(100)).await.unwrap(), 2);
    assert_eq!(remaining(&mut conn, &key).await, vec![9, 10]);

    // With every group done, the retention point decides again.
    assert_eq!(read(&mut conn, &key, "late", 10).await, vec![9, 10]);
    ack(&mut conn, &key, "late", &[9, 10]).await;
    assert_eq!(trim(&mut conn, &key, id(10)).await.unwrap(), 1);
    assert_eq!(remaining(&mut conn, &key).await, vec![10]);
}

const INPUT: &str = "inventory.adjustments";
const DLQ: &str = "inventory.adjustments.dlq";

/// Writes `n` entries that cannot be decoded, so each is dead-lettered at once; returns their
/// stream ids.
async fn poison(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("bad{i}");
        let fields = [
            ("id", id.as_str()),
            ("type", "stock.adjusted"),
            ("data", "{not json"),
        ];
        ids.push(app.xadd(INPUT, &fields).await);
    }
    ids
}

/// Whether the domain's group has read and acknowledged everything on its input stream.
async fn consumed(app: &TestApp) -> bool {
    let stats = group_stats(&mut app.redis().await, &app.key(INPUT))
        .await
        .unwrap();
    stats
        .get("inventory")
        .is_some_and(|g| g.lag == Some(0) && g.pending == 0)
}

#[actix_web::test]
async fn dead_letter_streams_keep_only_their_newest_entries_up_to_the_length_limit() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.dead_letter_max_len = 5),
        ..Default::default()
    })
    .await;
    let written = poison(&app, 12).await;
    eventually(
        Duration::from_secs(20),
        "all dead-lettered and trimmed to 5",
        || async {
            consumed(&app).await && app.dead_letter_field(DLQ, "original_id").await == written[7..]
        },
    )
    .await;
}

#[actix_web::test]
async fn dead_letters_older_than_the_retention_are_trimmed() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.dead_letter_retention_seconds = 1),
        ..Default::default()
    })
    .await;
    poison(&app, 3).await;
    eventually(Duration::from_secs(20), "dead-lettered", || async {
        consumed(&app).await
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "dead letters past a second trimmed",
        || async { app.xlen(DLQ).await == 0 },
    )
    .await;
}

#[actix_web::test]
async fn consumers_idle_past_the_grace_period_that_own_nothing_are_removed() {
    // Before the app starts: a consumer of an instance that went away, and one that still owns
    // a pending entry (which the app claims only after runtime.claim_min_idle_ms).
    let mut iso = Isolation::new().await;
    iso.settings.runtime.consumer_idle_grace_seconds = 1;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 1, &mut expected)).await;
    let key = iso.key(INPUT);
    let mut conn = iso.redis().await;
    ensure_group(&mut conn, &key, "inventory").await.unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&key)
        .arg("inventory")
        .arg("gone")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("inventory")
        .arg("holding")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = spawn_app_on(iso, AppOptions::default()).await;
    write(&app, &adjustments(1, 10, &mut expected)).await;
    // The app's own consumer exists from its reader's first XREADGROUP, which on a loaded
    // machine can come after the first tidy round.
    eventually(
        Duration::from_secs(20),
        "the idle consumer removed, the app's own present",
        || async {
            let left = consumers(&app).await;
            !left.contains(&"gone".to_owned()) && left.contains(&app.settings.instance.id)
        },
    )
    .await;
    let left = consumers(&app).await;
    assert!(left.contains(&"holding".to_owned()), "{left:?}");
}

async fn consumers(app: &TestApp) -> Vec<String> {
    let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(app.key(INPUT))
        .arg("inventory")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    info.consumers.into_iter().map(|c| c.name).collect()
}

#[actix_web::test]
async fn the_relay_trims_its_output_stream_past_the_retention_on_its_timer() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.output_retention_seconds = 1),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 400, &mut expected)).await;
    eventually(Duration::from_secs(20), "events published", || async {
        app.xlen("inventory.events").await > 0
    })
    .await;
    // No group reads the output stream, so nothing holds the trim back; the relay is idle.
    eventually(
        Duration::from_secs(30),
        "events older than a second trimmed",
        || async { consumed(&app).await && app.xlen("inventory.events").await == 0 },
    )
    .await;
}
