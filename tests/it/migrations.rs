//! Embedded migrations: several instances starting together must not race on the same DDL.

use crate::helpers::Isolation;

#[actix_web::test]
async fn instances_starting_together_migrate_once_without_errors() {
    let isolation = Isolation::new().await;
    let url = isolation.settings.database.url.clone();

    let runs =
        futures_util::future::join_all((0..4).map(|_| troupe::store::migrations::run(&url))).await;

    let mut applied_by = 0;
    for run in runs {
        let applied = run.expect("every concurrent migration run succeeds");
        if !applied.is_empty() {
            applied_by += 1;
        }
    }
    assert_eq!(applied_by, 1, "exactly one run applies the migrations");
    let again = troupe::store::migrations::run(&url).await.expect("re-run");
    assert!(again.is_empty(), "nothing is pending afterwards: {again:?}");
}
