//! Optimistic concurrency on entity state: a write computed from a version Postgres no longer
//! holds never lands, and the runtime reloads the entity instead of overwriting it.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use troupe::store::StoreError;
use troupe::store::entities::{EntityWrite, load_keys, upsert};

use crate::helpers::{Adjustment, Isolation, eventually, spawn_app};

fn write(key: &str, on_hand: i64, version: i64, expected_version: i64) -> EntityWrite {
    EntityWrite {
        key: key.to_owned(),
        state_json: format!(r#"{{"on_hand":{on_hand},"reserved":0}}"#),
        version,
        expected_version,
    }
}

#[tokio::test]
async fn entity_writes_land_only_at_their_expected_version() {
    let iso = Isolation::new().await;
    troupe::store::migrations::run(&iso.settings.database.url)
        .await
        .unwrap();
    let mut conn = iso.db().await;
    let version_of = async |conn: &mut _, key: &str| {
        let rows = load_keys(conn, "inventory", &[key.to_owned()])
            .await
            .unwrap();
        rows.into_iter()
            .next()
            .map(|r| (r.version, r.state["on_hand"].as_i64().unwrap()))
    };

    upsert(
        &mut conn,
        "inventory",
        &[write("A", 1, 1, 0), write("B", 1, 1, 0)],
    )
    .await
    .unwrap();
    // A second creation of A is stale: someone created it first.
    let created_twice = upsert(&mut conn, "inventory", &[write("A", 9, 1, 0)]).await;
    assert!(
        matches!(
            created_twice,
            Err(StoreError::StaleEntities { stale: 1, of: 1 })
        ),
        "{created_twice:?}"
    );
    upsert(&mut conn, "inventory", &[write("A", 2, 2, 1)])
        .await
        .unwrap();
    // B is current, A is computed from version 1 although Postgres holds 2: one of two stale.
    let lost_update = upsert(
        &mut conn,
        "inventory",
        &[write("A", 7, 2, 1), write("B", 3, 2, 1)],
    )
    .await;
    assert!(
        matches!(
            lost_update,
            Err(StoreError::StaleEntities { stale: 1, of: 2 })
        ),
        "{lost_update:?}"
    );
    assert_eq!(version_of(&mut conn, "A").await, Some((2, 2)));
    // Outside a transaction the current write (B) landed; the runtime always writes inside one,
    // where the error rolls the whole unit back.
    assert_eq!(version_of(&mut conn, "B").await, Some((2, 3)));
}

#[actix_web::test]
async fn an_entity_changed_behind_the_runtimes_back_is_reloaded_not_overwritten() {
    let app = spawn_app().await;
    let stock = async |sku: &str| -> (i64, i64) {
        let body: serde_json::Value = app
            .get(&format!("/api/v1/inventory/{sku}"))
            .await
            .json()
            .await
            .unwrap_or_default();
        (
            body["on_hand"].as_i64().unwrap_or(-1),
            body["version"].as_i64().unwrap_or(-1),
        )
    };
    app.write_adjustments(&[Adjustment {
        id: "a1".into(),
        sku: "S",
        delta: 5,
    }])
    .await;
    eventually(
        Duration::from_secs(20),
        "the first event applies",
        || async { stock("S").await == (5, 1) },
    )
    .await;

    // Another writer (or a commit whose success was never reported) moved S on in Postgres.
    diesel::sql_query(
        "UPDATE troupe_entity_state SET state = jsonb_set(state, '{on_hand}', '100'), version = 2 \
         WHERE key = 'S'",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    app.write_adjustments(&[Adjustment {
        id: "a2".into(),
        sku: "S",
        delta: 1,
    }])
    .await;

    eventually(
        Duration::from_secs(30),
        "the event applies to the reloaded state",
        || async { stock("S").await == (101, 3) },
    )
    .await;
    assert_eq!(
        app.sql_i64(
            "SELECT (state->>'on_hand')::int8 AS v FROM troupe_entity_state WHERE key = 'S'"
        )
        .await,
        101,
        "postgres kept the other writer's change"
    );
    assert_eq!(app.pending("inventory.adjustments", "inventory").await, 0);
}
