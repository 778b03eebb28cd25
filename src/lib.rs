//! Troupe: a runtime for event-driven services.
//!
//! Each business domain is plain Rust (a state per entity and a handler that applies events to
//! it); the runtime runs it as supervised actors fed by Redis Streams consumer groups, persists
//! state, applied-input records and emitted events to Postgres in one transaction, and serves
//! REST, WebSocket notifications and Prometheus metrics. See `docs/architecture.md`.

pub mod actors;
pub mod asyncapi;
pub mod cli;
pub mod domain;
pub mod domains;
pub mod faults;
pub mod http;
pub mod registry;
pub mod settings;
pub mod shop;
pub mod startup;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod ws;
