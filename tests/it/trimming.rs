//! Output-stream trimming against a real Redis: entries older than the retention point go, but
//! never one that some consumer group has not yet read and acknowledged.

use redis::aio::MultiplexedConnection;
use troupe::streams::entry::EntryId;
use troupe::streams::outbox_relay::trim;

use crate::helpers::Isolation;

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
