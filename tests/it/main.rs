#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests: the real application against real Redis and Postgres servers (started by
//! `scripts/dev.sh test`). Every test gets its own database and Redis key prefix, so the suite
//! runs in parallel.

mod helpers;

mod asyncapi;
mod commands;
mod config;
mod crashes;
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
mod stale_state;
mod supervision;
mod timers;
mod trimming;
