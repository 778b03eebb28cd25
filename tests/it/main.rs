#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests: the real application against real Redis and Postgres servers (started by
//! `scripts/dev.sh test`). Every test gets its own database and Redis key prefix, so the suite
//! runs in parallel.

mod helpers;

mod asyncapi;
mod commands;
mod config;
mod crashes;
mod customers;
mod dead_letters;
mod dedupe;
mod guide;
mod health;
mod http_telemetry;
mod inventory;
mod migrations;
mod outages;
mod outputs;
mod poison;
mod registry;
mod relay;
mod residency;
mod routing;
mod shop;
mod stale_state;
mod supervision;
mod timers;
mod trimming;
mod websocket;

/// The entry of a child process started by `ChildService::start_test_domains`: serves the
/// test-only domains the registry named by `CHILD_REGISTRY` holds, over the settings the
/// environment gives (as `troupe serve` would), until killed. Ignored in a normal run.
#[test]
#[ignore = "the entry point of child processes, not a test"]
fn child_entry() {
    let Ok(name) = std::env::var(helpers::child::CHILD_REGISTRY) else {
        return;
    };
    let registry = match name.as_str() {
        "reminders" => troupe::registry::Registry::new().domain(timers::Reminders),
        other => panic!("no test registry named {other:?}"),
    };
    let mut settings = troupe::settings::Settings::load(&helpers::config_dir()).unwrap();
    settings.domains.enabled = registry.names().into_iter().map(str::to_owned).collect();
    troupe::telemetry::init_tracing(&settings.telemetry);
    actix_web::rt::System::new().block_on(async {
        troupe::startup::Application::build(settings, registry)
            .await
            .unwrap()
            .run_until_stopped()
            .await
            .unwrap();
    });
}
