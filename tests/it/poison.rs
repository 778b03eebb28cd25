//! No input can stall a domain: keys, ids, sizes and states that Postgres could not store are
//! refused where they enter or fail only their own input, and everything else goes on.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe::actors::runtime::start_domain;
use troupe::domain::{Context, Domain, DomainError, NoEvents, Subscription};
use troupe::streams::RedisClients;

use crate::helpers::oracle::{Expected, STREAM, adjustments, assert_applied, write};
use crate::helpers::{AppOptions, TestApp, eventually, spawn_app, spawn_app_with};

const DLQ: &str = "inventory.adjustments.dlq";

async fn adjust(app: &TestApp, sku_path: &str) -> reqwest::Response {
    app.inventory().adjust(sku_path, 1).send().await
}

#[actix_web::test]
async fn keys_postgres_cannot_store_are_refused_at_the_http_edge_and_writes_go_on() {
    // Below the shop's own 64-character SKU rule, so the runtime's byte limit is what refuses.
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.runtime.max_key_bytes = 40),
        ..Default::default()
    })
    .await;
    let long = "K".repeat(3_000);
    for path in [
        "%00",
        "a%00b",
        "line%0Abreak",
        "%7F",
        long.as_str(),
        &"k".repeat(41),
        &"k".repeat(65),
    ] {
        let res = adjust(&app, path).await;
        assert_eq!(res.status(), 400, "{path:.20}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_key", "{body}");
        let get = app.get(&format!("/api/v1/inventory/{path}")).await;
        assert_eq!(get.status(), 400, "GET {path:.20}");
    }
    let limit = "k".repeat(40);
    assert_eq!(
        adjust(&app, &limit).await.status(),
        200,
        "runtime.max_key_bytes is the limit"
    );
    assert_eq!(
        adjust(&app, "SKU-%C3%A9").await.status(),
        200,
        "UTF-8 is fine"
    );
    for _ in 0..3 {
        assert_eq!(adjust(&app, "SKU-1").await.status(), 200);
    }
    let sku: Value = app
        .get("/api/v1/inventory/SKU-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (sku["on_hand"].as_i64(), sku["version"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[actix_web::test]
async fn poison_entries_are_dead_lettered_with_their_reason_and_the_rest_applies() {
    // Small byte limits: a 2 KB entry is too large, and each read splits into many units.
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| {
            s.runtime.max_entry_bytes = 1_024;
            s.runtime.max_unit_bytes = 4_096;
        }),
        ..Default::default()
    })
    .await;
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 500, &mut expected)).await;
    let data = r#"{"delta":1,"warehouse":"w"}"#;
    // Over runtime.max_key_bytes (256), under the entry limit.
    let long_key = "K".repeat(300);
    let poison: [(&str, &str, String); 4] = [
        ("p-nul-key", "bad\u{0}key", data.into()),
        ("p-long-key", &long_key, data.into()),
        ("p-nul-id\u{0}", "O01", data.into()),
        (
            "p-large",
            "O02",
            format!(r#"{{"delta":1,"warehouse":"{}"}}"#, "w".repeat(2_000)),
        ),
    ];
    for (id, key, data) in &poison {
        app.xadd(
            STREAM,
            &[
                ("id", id),
                ("type", "stock.adjusted"),
                ("key", key),
                ("data", data),
            ],
        )
        .await;
    }
    app.xadd_bytes(
        STREAM,
        &[
            ("id", b"p-not-utf8"),
            ("type", b"stock.adjusted"),
            ("key", b"\xff\xfe"),
            ("data", data.as_bytes()),
        ],
    )
    .await;
    write(&app, &adjustments(500, 1_000, &mut expected)).await;

    assert_applied(&app, &expected, 1_000).await;
    let mut got = app.dead_letter_field(DLQ, "reason").await;
    got.sort();
    assert_eq!(
        got,
        [
            "invalid_id",
            "invalid_key",
            "invalid_key",
            "not_utf8",
            "too_large"
        ]
    );
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[actix_web::test]
async fn a_unit_postgres_refuses_is_split_until_the_input_responsible_is_dead_lettered() {
    let app = spawn_app().await;
    // A rule the runtime cannot know about: Postgres refuses any commit that writes POISON.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "ALTER TABLE troupe_entity_state ADD CONSTRAINT no_poison CHECK (key <> 'POISON')",
        ),
        &mut app.db().await,
    )
    .await
    .unwrap();
    let mut expected = Expected::default();
    write(&app, &adjustments(0, 300, &mut expected)).await;
    app.xadd(
        STREAM,
        &[
            ("id", "poison"),
            ("type", "stock.adjusted"),
            ("key", "POISON"),
            ("data", r#"{"delta":1,"warehouse":"w"}"#),
        ],
    )
    .await;
    write(&app, &adjustments(300, 600, &mut expected)).await;

    assert_applied(&app, &expected, 600).await;
    assert_eq!(
        app.dead_letter_field(DLQ, "reason").await,
        ["commit_refused"]
    );
    assert_eq!(app.get("/api/v1/inventory/POISON").await.status(), 404);
}

/// Keeps a note per key; its state takes whatever text and ratio the events produce.
struct Notes;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Note {
    text: String,
    ratio: f64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
enum NoteEvent {
    #[serde(rename = "note.set")]
    Set { text: String, divide_by: f64 },
}

impl Domain for Notes {
    type State = Note;
    type Event = NoteEvent;
    type Output = NoEvents;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "notes"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("notes.input")]
    }

    fn handle(
        &self,
        note: &mut Note,
        event: NoteEvent,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        let NoteEvent::Set { text, divide_by } = event;
        note.ratio = (text.len() as f64 - 1.0) / divide_by; // 0/0: NaN
        note.text = text;
        Ok(())
    }

    fn execute(
        &self,
        _: &mut Note,
        command: Self::Command,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        match command {}
    }
}

#[actix_web::test]
async fn a_state_postgres_cannot_store_fails_only_the_input_that_produced_it() {
    let app = spawn_app().await;
    let redis = RedisClients::connect(&app.settings.redis).await.unwrap();
    let notes = start_domain(Notes, &app.settings, &redis).await.unwrap();
    let inputs = [
        ("n1", "N", r#"{"text":"first","divide_by":1}"#),
        ("n2", "N", r#"{"text":"nul \u0000 inside","divide_by":1}"#),
        ("n3", "N", r#"{"text":"x","divide_by":0}"#),
        ("n4", "N", r#"{"text":"last","divide_by":2}"#),
        ("m1", "M", r#"{"text":"other key","divide_by":1}"#),
    ];
    for (id, key, data) in inputs {
        app.xadd(
            "notes.input",
            &[
                ("id", id),
                ("type", "note.set"),
                ("key", key),
                ("data", data),
            ],
        )
        .await;
    }
    eventually(
        Duration::from_secs(30),
        "both poison inputs dead-lettered, nothing pending",
        || async {
            app.xlen("notes.input.dlq").await == 2 && app.pending("notes.input", "notes").await == 0
        },
    )
    .await;
    assert_eq!(
        app.dead_letter_field("notes.input.dlq", "reason").await,
        ["unstorable", "unstorable"]
    );
    let n = notes.handle.get("N").await.unwrap().unwrap();
    assert_eq!((n.state.text.as_str(), n.version), ("last", 2));
    assert_eq!(n.state.ratio, 1.5);
    let m = notes.handle.get("M").await.unwrap().unwrap();
    assert_eq!(m.version, 1);
    let stored = app
        .sql_i64("SELECT count(*)::int8 AS v FROM troupe_entity_state WHERE domain = 'notes'")
        .await;
    assert_eq!(stored, 2);
    notes.abort();
}

#[actix_web::test]
async fn a_stored_state_that_no_longer_loads_quarantines_its_key_and_the_rest_goes_on() {
    use crate::helpers::Isolation;
    use crate::helpers::child::ChildService;

    let iso = Isolation::new().await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 400, &mut expected)).await;
    let child = ChildService::start(&iso, &[]);
    let applied = "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state";
    eventually(
        Duration::from_secs(60),
        "the first load applied",
        || async {
            iso.sql_i64(
                "SELECT COUNT(*) AS v FROM pg_tables WHERE tablename = 'troupe_entity_state'",
            )
            .await
                == 1
                && iso.sql_i64(applied).await == 400
        },
    )
    .await;
    child.kill().await;

    // A row no longer decodes into the domain's state (edited by hand, say).
    let broken_version = iso
        .sql_i64(
            "WITH b AS (UPDATE troupe_entity_state SET state = '\"broken\"'::jsonb \
             WHERE key = 'O05' RETURNING version) SELECT version AS v FROM b",
        )
        .await;
    // The domain starts all the same, and applies everything but that key's inputs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let child = ChildService::start(&iso, &[("TROUPE__HTTP__PORT", &port)]);
    let entity = |sku: &str| format!("http://127.0.0.1:{port}/api/v1/inventory/{sku}");
    let before = expected.skus.clone();
    write(&iso, &adjustments(400, 800, &mut expected)).await;
    let o05_inputs = 10; // 400..800 holds ten inputs for each of the 40 SKUs
    let others: i64 = expected
        .skus
        .iter()
        .filter(|(sku, _)| sku.as_str() != "O05")
        .map(|(_, (_, version))| version)
        .sum();
    eventually(
        Duration::from_secs(60),
        "everything but O05 applied, O05's inputs dead-lettered",
        || async {
            iso.sql_i64(
                "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state \
                 WHERE key <> 'O05'",
            )
            .await
                == others
                && iso.xlen(DLQ).await == o05_inputs
                && iso.pending(STREAM, "inventory").await == 0
        },
    )
    .await;
    assert_eq!(
        iso.dead_letter_field(DLQ, "reason").await,
        vec!["unloadable_state"; o05_inputs as usize]
    );
    let client = reqwest::Client::new();
    let res = client.get(entity("O05")).send().await.unwrap();
    assert_eq!(
        res.status(),
        503,
        "a quarantined entity is not served as missing"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "entity_unavailable");
    assert_eq!(
        client.get(entity("O06")).send().await.unwrap().status(),
        200
    );

    // Repaired, the key is back: its next inputs apply on the repaired state.
    let (on_hand, version) = before["O05"];
    assert_eq!(version, broken_version);
    iso.sql_i64(&format!(
        "WITH r AS (UPDATE troupe_entity_state SET state = jsonb_build_object('on_hand', {on_hand}::int8, 'reserved', 0) \
         WHERE key = 'O05' RETURNING 1) SELECT COUNT(*)::int8 AS v FROM r"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    iso.xadd(
        STREAM,
        &[
            ("id", "repaired-1"),
            ("type", "stock.adjusted"),
            ("key", "O05"),
            ("data", r#"{"delta":2,"warehouse":"w"}"#),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the repaired key applies again",
        || async {
            iso.sql_i64("SELECT version AS v FROM troupe_entity_state WHERE key = 'O05'")
                .await
                == broken_version + 1
        },
    )
    .await;
    assert_eq!(
        client.get(entity("O05")).send().await.unwrap().status(),
        200
    );
    child.kill().await;
}

#[actix_web::test]
async fn inputs_applied_before_their_stored_state_broke_are_duplicates_not_dead_letters() {
    use crate::helpers::Isolation;
    use crate::helpers::child::ChildService;
    use std::os::unix::process::ExitStatusExt;

    // The first process commits everything and dies before acknowledging it.
    let iso = Isolation::new().await;
    let mut expected = Expected::default();
    write(&iso, &adjustments(0, 400, &mut expected)).await;
    let child = ChildService::start(
        &iso,
        &[("TROUPE__FAULTS__CRASH_AT", "after_commit_before_ack")],
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the process crashes");
    assert_eq!(status.signal(), Some(6), "aborted: {status:?}");
    let applied_before = iso
        .sql_i64("SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state")
        .await;
    assert!(applied_before > 0, "the first unit committed");
    assert!(
        iso.pending(STREAM, "inventory").await > 0,
        "and was not acknowledged"
    );

    // A row breaks; the redelivered inputs of its key were applied already.
    #[derive(diesel::QueryableByName)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::Text)]
        key: String,
    }
    use diesel_async::RunQueryDsl;
    let broken: Key = diesel::sql_query(
        "WITH b AS (UPDATE troupe_entity_state SET state = '\"broken\"'::jsonb \
         WHERE key = (SELECT min(key) FROM troupe_entity_state) RETURNING key) SELECT key FROM b",
    )
    .get_result(&mut iso.db().await)
    .await
    .unwrap();
    let broken = broken.key;
    let child = ChildService::start(&iso, &[]);
    eventually(
        Duration::from_secs(60),
        "every entry acknowledged or dead-lettered",
        || async { iso.pending(STREAM, "inventory").await == 0 },
    )
    .await;
    let others: i64 = expected
        .skus
        .iter()
        .filter(|(sku, _)| **sku != broken)
        .map(|(_, (_, version))| version)
        .sum();
    let applied_others = iso
        .sql_i64(&format!(
            "SELECT COALESCE(SUM(version), 0)::int8 AS v FROM troupe_entity_state WHERE key <> '{broken}'"
        ))
        .await;
    assert_eq!(applied_others, others, "every other input applied once");
    // Those of its inputs that were applied are acknowledged as duplicates; only those not
    // applied yet (none, if its partition committed them all) are dead-lettered.
    let applied = iso
        .sql_i64(&format!(
            "SELECT version AS v FROM troupe_entity_state WHERE key = '{broken}'"
        ))
        .await;
    let inputs = expected.skus[&broken].1;
    assert!(applied > 0);
    assert_eq!(iso.xlen(DLQ).await as i64, inputs - applied, "{broken}");
    child.kill().await;
}
