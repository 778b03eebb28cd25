//! Unit-testing a domain with no server: given these events, when this event or command, expect
//! this state and these effects. Inputs go through the same decoding and apply path as in
//! production ([`decode_event`], [`apply_event`], [`apply_command`]).
//!
//! ```
//! # use troupe::domain::testkit::{TestKit, event};
//! # use troupe::domains::inventory::Inventory;
//! let mut kit = TestKit::new(Inventory);
//! kit.given([event("SKU-1", "stock.adjusted", serde_json::json!({"delta": 5, "warehouse": "w1"}))]);
//! kit.when(event("SKU-1", "stock.adjusted", serde_json::json!({"delta": -2, "warehouse": "w1"})))
//!     .unwrap();
//! assert_eq!(kit.state("SKU-1").unwrap().on_hand, 3);
//! assert_eq!(kit.entity("SKU-1").unwrap().version, 2);
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    Domain, Effects, Entity, Failure, MalformedEntry, OtherTypes, apply_command, apply_event,
    decode_event, route,
};
use crate::domain::keys::Limits;

/// An event as a test writes it: what a producer would put in the envelope.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// Envelope `key`.
    pub key: String,
    /// Envelope `type`.
    pub event_type: String,
    /// Envelope `data`, as JSON.
    pub data: Value,
}

/// Builds a [`TestEvent`].
pub fn event(key: &str, event_type: &str, data: Value) -> TestEvent {
    TestEvent {
        key: key.to_owned(),
        event_type: event_type.to_owned(),
        data,
    }
}

/// Why an input given to the kit was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestFailure {
    /// The runtime would dead-letter it at once.
    #[error("malformed: {0}")]
    Malformed(#[from] MalformedEntry),
    /// The handler failed or panicked, or its result cannot be stored; the runtime would
    /// dead-letter it at once if [`Failure::is_permanent`], otherwise retry it first.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// An in-memory harness for one domain.
pub struct TestKit<D: Domain> {
    domain: D,
    handled_types: Vec<String>,
    skips_other_types: bool,
    limits: Limits,
    entities: BTreeMap<String, Entity<D::State>>,
}

impl<D: Domain> TestKit<D> {
    /// A harness with no entities.
    pub fn new(domain: D) -> Self {
        let subscriptions = domain.subscriptions();
        let skips_other_types = subscriptions
            .iter()
            .any(|s| s.other_types == OtherTypes::Skip);
        let handled_types = subscriptions
            .into_iter()
            .flat_map(|s| s.event_types)
            .collect();
        Self {
            domain,
            handled_types,
            skips_other_types,
            limits: Limits::default(),
            entities: BTreeMap::new(),
        }
    }

    /// Applies `events` as history. Panics if one is not applied: history is a precondition.
    pub fn given(&mut self, events: impl IntoIterator<Item = TestEvent>) -> &mut Self {
        for e in events {
            let description = format!("{} {}", e.event_type, e.key);
            if let Err(failure) = self.when(e) {
                panic!("given event {description} was not applied: {failure}");
            }
        }
        self
    }

    /// Applies one event as the runtime would (routed by [`Domain::entity_key`]); on success
    /// the entity is updated and the effects are returned, on failure nothing changes. A type
    /// no subscription handles is malformed, or, if a subscription skips other types, skipped
    /// with no effects.
    pub fn when(&mut self, e: TestEvent) -> Result<Effects, TestFailure> {
        let decoded =
            match decode_event::<D>(&self.handled_types, &e.event_type, &e.data.to_string()) {
                Ok(decoded) => decoded,
                Err(MalformedEntry::UnknownType(_)) if self.skips_other_types => {
                    return Ok(Effects::default());
                }
                Err(malformed) => return Err(malformed.into()),
            };
        let key = route(&self.domain, &self.limits, e.key, &e.event_type, &decoded)?;
        let current = self.entities.get(&key).cloned().unwrap_or_default();
        let applied = apply_event(&self.domain, &self.limits, &key, &current, decoded)?;
        self.entities.insert(key, applied.entity);
        Ok(applied.effects)
    }

    /// Executes a command as the runtime would and returns its reply and effects.
    pub fn command(
        &mut self,
        key: &str,
        command: D::Command,
    ) -> Result<(D::Reply, Effects), Failure> {
        let current = self.entities.get(key).cloned().unwrap_or_default();
        let (applied, reply) = apply_command(&self.domain, &self.limits, key, &current, command)?;
        self.entities.insert(key.to_owned(), applied.entity);
        Ok((reply, applied.effects))
    }

    /// The state of `key`, if any input was applied to it.
    pub fn state(&self, key: &str) -> Option<&D::State> {
        self.entities.get(key).map(|e| &e.state)
    }

    /// The entity (state and version) of `key`.
    pub fn entity(&self, key: &str) -> Option<&Entity<D::State>> {
        self.entities.get(key)
    }
}
