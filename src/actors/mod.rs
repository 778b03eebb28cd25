//! Supervision and domain actors: the runtime that runs a [`crate::domain::Domain`].
//!
//! Per domain: a [`supervisor::DomainSupervisor`] starts and restarts (with backoff) the
//! [`partition::Partition`] actors that own the entities, one [`reader::Reader`] per subscribed
//! stream, the [`processor::Processor`] that turns each batch into one committed unit of work,
//! the [`relay::Relay`] that publishes the outbox, and the [`timers::TimerPoller`] that fires
//! due durable timers. See `docs/architecture.md`.

pub mod ask;
pub mod backoff;
pub mod context;
pub mod handle;
pub mod partition;
pub mod processor;
pub mod quarantine;
pub mod reader;
pub mod relay;
pub mod runtime;
pub mod supervisor;
pub mod timers;
pub mod watchdog;
