//! Runtime events: every state change and failure of a running domain is one [`RuntimeEvent`],
//! and [`RuntimeEvent::record`] writes its log line and moves its metric together, so the log
//! and the dashboards cannot tell different stories (a dead letter that is logged but not
//! counted, a restart counted under another label). Errors are passed as errors and logged
//! with their whole cause chain ([`error_chain`]).
//!
//! Measurements that are not events — handler and commit durations, batch sizes, lag and
//! backlog gauges — are recorded where they are measured, with the names of
//! [`super::metrics`].

use std::time::Duration;

use super::error_chain;
use super::metrics::{
    ACTOR_RESTARTS_TOTAL, CONSUMERS_REMOVED_TOTAL, DEAD_LETTERS_TOTAL, DEAD_LETTERS_TRIMMED_TOTAL,
    DOMAIN_STALLED, DOMAIN_UP, ENTITIES_QUARANTINED, ENTITY_EVICTIONS_TOTAL, ENTITY_LOADS_TOTAL,
    EVENTS_TOTAL, OUTBOX_PUBLISHED_TOTAL, OUTBOX_REPUBLISHED_TOTAL, RELAY_RECONCILED_TOTAL,
    TIMER_LATENESS_SECONDS, TIMERS_TOTAL,
};

/// An error with its causes, as runtime events carry it.
pub type Cause<'a> = &'a (dyn std::error::Error + 'static);

/// What became of inputs of one stream (the `outcome` label of `troupe_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOutcome {
    /// Applied and committed.
    Applied,
    /// Recorded as applied already (by envelope id): acknowledged without applying.
    Duplicate,
    /// Moved to the dead-letter stream.
    DeadLettered,
    /// Failed and left pending, to be delivered again.
    Failed,
    /// Of a type the subscription skips: acknowledged without applying.
    Skipped,
}

impl InputOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            InputOutcome::Applied => "applied",
            InputOutcome::Duplicate => "duplicate",
            InputOutcome::DeadLettered => "dead_lettered",
            InputOutcome::Failed => "failed",
            InputOutcome::Skipped => "skipped",
        }
    }
}

/// Why entities left memory (the `reason` label of `troupe_entity_evictions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Unused for `runtime.entity_idle_seconds`.
    Idle,
    /// The partition held more than its share of `runtime.max_entities_in_memory`.
    Capacity,
}

/// How the relay brought Redis's marker and the outbox in line (the `outcome` label of
/// `troupe_relay_reconciled_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciliation {
    /// Redis lost published events: those after its marker are published again.
    RedisBehind {
        /// Redis's marker.
        marker_seq: i64,
        /// What Postgres records as published.
        published_seq: i64,
    },
    /// Events published before a crash are recorded as published.
    RecordThrough {
        /// Redis's marker.
        marker_seq: i64,
    },
    /// A marker of the earlier format was rewritten.
    Upgrade {
        /// Redis's marker.
        marker_seq: i64,
    },
    /// Postgres went back: the marker moves down so new events are not skipped.
    PostgresWentBack {
        /// Redis's marker.
        marker_seq: i64,
        /// Where it moves.
        moved_to: i64,
    },
    /// The outbox no longer holds the marker's event: everything retained is published again.
    RepublishAll {
        /// Redis's marker.
        marker_seq: i64,
        /// What Postgres records as published.
        published_seq: i64,
    },
}

impl Reconciliation {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Reconciliation::RedisBehind { .. } => "redis_behind",
            Reconciliation::RecordThrough { .. } => "record_through",
            Reconciliation::Upgrade { .. } => "upgrade",
            Reconciliation::PostgresWentBack { .. } => "postgres_went_back",
            Reconciliation::RepublishAll { .. } => "republish_all",
        }
    }
}

/// Something that happened in a running domain. Build one and [`record`](Self::record) it.
#[derive(Debug)]
pub enum RuntimeEvent<'a> {
    /// The domain's supervisor started its actors (`troupe_domain_up` = 1,
    /// `troupe_domain_stalled` and `troupe_entities_quarantined` = 0).
    DomainStarted {
        /// The domain.
        domain: &'static str,
        /// How many input streams it reads.
        streams: usize,
    },
    /// The domain gave up restarting its actors (`troupe_domain_up` = 0); health reports
    /// `reason`.
    DomainFailed {
        /// The domain.
        domain: &'static str,
        /// What health endpoints show.
        reason: &'a str,
        /// The last failure.
        error: Option<Cause<'a>>,
    },
    /// A supervised actor failed and is started again after `delay`
    /// (`troupe_actor_restarts_total{actor}`).
    ActorRestarted {
        /// The domain.
        domain: &'static str,
        /// `reader`, `relay`, `timers` (a bounded label).
        actor: &'static str,
        /// Which one (a reader's stream).
        child: &'a str,
        /// Why it failed.
        error: Option<Cause<'a>>,
        /// Whether Redis or Postgres being unreachable stopped it.
        outage: bool,
        /// When it starts again.
        delay: Duration,
    },
    /// Inputs of one stream reached `outcome` (`troupe_events_total{stream, outcome}`).
    Inputs {
        /// The domain.
        domain: &'static str,
        /// The stream (logical name).
        stream: &'a str,
        /// What became of them.
        outcome: InputOutcome,
        /// How many.
        count: usize,
    },
    /// An entry was moved to its stream's dead-letter stream
    /// (`troupe_dead_letters_total{stream, reason}`).
    DeadLettered {
        /// The domain.
        domain: &'static str,
        /// The stream (logical name).
        stream: &'a str,
        /// The entry's id.
        entry_id: &'a str,
        /// The stable reason code.
        reason: &'static str,
        /// What failed, as stored with the dead letter.
        error: &'a str,
        /// How often it was delivered.
        deliveries: u64,
    },
    /// Dead letters past their retention or length were removed
    /// (`troupe_dead_letters_trimmed_total`).
    DeadLettersTrimmed {
        /// The domain.
        domain: &'static str,
        /// The input stream whose dead letters they were.
        stream: &'a str,
        /// How many.
        count: u64,
    },
    /// A consumer idle past the grace period, owning nothing, left the domain's group
    /// (`troupe_consumers_removed_total`).
    ConsumerRemoved {
        /// The domain.
        domain: &'static str,
        /// The stream.
        stream: &'a str,
        /// Its name.
        consumer: &'a str,
    },
    /// Input waits and nothing has committed for `runtime.stall_timeout_seconds`
    /// (`troupe_domain_stalled` = 1).
    Stalled {
        /// The domain.
        domain: &'static str,
        /// For people (and readiness).
        reason: &'a str,
        /// Keys in handlers, with seconds spent.
        keys: &'a [(String, u64)],
        /// Since the last progress.
        idle: Duration,
    },
    /// The stalled domain progresses again (`troupe_domain_stalled` = 0).
    StallEnded {
        /// The domain.
        domain: &'static str,
    },
    /// A key's stored state does not load: the key is quarantined, its inputs dead-lettered
    /// as `unloadable_state` until the row is repaired (`troupe_entities_quarantined` + 1).
    Quarantined {
        /// The domain.
        domain: &'static str,
        /// The key.
        key: &'a str,
        /// Why its row does not load.
        error: &'a str,
    },
    /// A quarantined key's state loads again (`troupe_entities_quarantined` − 1).
    Released {
        /// The domain.
        domain: &'static str,
        /// The key.
        key: &'a str,
    },
    /// Entities were loaded from Postgres on first use (`troupe_entity_loads_total`).
    EntitiesLoaded {
        /// The domain.
        domain: &'static str,
        /// How many.
        count: usize,
    },
    /// Entities left memory (`troupe_entity_evictions_total{reason}`).
    EntitiesEvicted {
        /// The domain.
        domain: &'static str,
        /// Why.
        reason: Eviction,
        /// How many.
        count: usize,
    },
    /// A committed unit scheduled and cancelled timers
    /// (`troupe_timers_total{outcome="scheduled"|"cancelled"}`).
    TimersCommitted {
        /// The domain.
        domain: &'static str,
        /// Scheduled.
        scheduled: usize,
        /// Cancelled.
        cancelled: usize,
    },
    /// Due timers fired and committed (`troupe_timers_total{outcome="fired"}`, and their
    /// lateness in `troupe_timer_lateness_seconds`).
    TimersFired {
        /// The domain.
        domain: &'static str,
        /// How long after it was due each firing committed.
        lateness: &'a [Duration],
    },
    /// A timer's firing failed; it is tried again later (`troupe_timers_total{outcome="retried"}`).
    TimerRetried {
        /// The domain.
        domain: &'static str,
        /// The timer.
        timer: &'a str,
        /// Its entity.
        key: &'a str,
        /// Attempts so far.
        attempts: i32,
        /// Why it failed.
        error: &'a str,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// A timer failed for good and is set aside (`troupe_timers_total{outcome="dead"}`).
    TimerDead {
        /// The domain.
        domain: &'static str,
        /// The timer.
        timer: &'a str,
        /// Its entity.
        key: &'a str,
        /// The stable reason code.
        reason: &'static str,
        /// Why it failed.
        error: &'a str,
    },
    /// The relay published outbox events (`troupe_outbox_published_total`, and
    /// `troupe_outbox_republished_total` for those Redis had lost).
    Published {
        /// The domain.
        domain: &'static str,
        /// How many.
        count: u64,
        /// Of them, published before.
        republished: u64,
    },
    /// The relay found Redis's marker out of step with the outbox and repaired it
    /// (`troupe_relay_reconciled_total{outcome}`).
    Reconciled {
        /// The domain.
        domain: &'static str,
        /// What it found and did.
        how: Reconciliation,
    },
}

impl RuntimeEvent<'_> {
    /// Writes the event's log line and moves its metric.
    pub fn record(self) {
        match self {
            RuntimeEvent::DomainStarted { domain, streams } => {
                metrics::gauge!(DOMAIN_UP, "domain" => domain).set(1.0);
                // The series exists from the start, so an alert on it sees the domain.
                metrics::gauge!(DOMAIN_STALLED, "domain" => domain).set(0.0);
                // A new domain quarantines keys anew.
                metrics::gauge!(ENTITIES_QUARANTINED, "domain" => domain).set(0.0);
                tracing::info!(domain, streams, "domain started");
            }
            RuntimeEvent::DomainFailed {
                domain,
                reason,
                error,
            } => {
                metrics::gauge!(DOMAIN_UP, "domain" => domain).set(0.0);
                let error = error.map(error_chain);
                tracing::error!(
                    domain,
                    reason,
                    error,
                    "domain failed; giving up on restarts"
                );
            }
            RuntimeEvent::ActorRestarted {
                domain,
                actor,
                child,
                error,
                outage,
                delay,
            } => {
                metrics::counter!(ACTOR_RESTARTS_TOTAL, "domain" => domain, "actor" => actor)
                    .increment(1);
                let error = error.map_or_else(|| "stopped unexpectedly".to_owned(), error_chain);
                tracing::warn!(
                    domain,
                    actor,
                    child,
                    error,
                    outage,
                    delay_ms = delay.as_millis() as u64,
                    "restarting failed actor"
                );
            }
            RuntimeEvent::Inputs {
                domain,
                stream,
                outcome,
                count,
            } => {
                if count == 0 {
                    return;
                }
                metrics::counter!(EVENTS_TOTAL, "domain" => domain, "stream" => stream.to_owned(), "outcome" => outcome.label())
                    .increment(count as u64);
                tracing::debug!(
                    domain,
                    stream,
                    outcome = outcome.label(),
                    count,
                    "inputs concluded"
                );
            }
            RuntimeEvent::DeadLettered {
                domain,
                stream,
                entry_id,
                reason,
                error,
                deliveries,
            } => {
                metrics::counter!(DEAD_LETTERS_TOTAL, "domain" => domain, "stream" => stream.to_owned(), "reason" => reason)
                    .increment(1);
                tracing::warn!(
                    domain,
                    stream,
                    entry.id = entry_id,
                    reason,
                    error,
                    deliveries,
                    "entry moved to the dead-letter stream"
                );
            }
            RuntimeEvent::DeadLettersTrimmed {
                domain,
                stream,
                count,
            } => {
                if count == 0 {
                    return;
                }
                metrics::counter!(DEAD_LETTERS_TRIMMED_TOTAL, "domain" => domain, "stream" => stream.to_owned())
                    .increment(count);
                tracing::info!(
                    domain,
                    stream,
                    trimmed = count,
                    "trimmed dead letters past their retention or length"
                );
            }
            RuntimeEvent::ConsumerRemoved {
                domain,
                stream,
                consumer,
            } => {
                metrics::counter!(CONSUMERS_REMOVED_TOTAL, "domain" => domain, "stream" => stream.to_owned())
                    .increment(1);
                tracing::info!(
                    domain,
                    stream,
                    consumer,
                    "removed a consumer idle past the grace period with nothing pending"
                );
            }
            RuntimeEvent::Stalled {
                domain,
                reason,
                keys,
                idle,
            } => {
                metrics::gauge!(DOMAIN_STALLED, "domain" => domain).set(1.0);
                tracing::error!(
                    domain,
                    keys = ?keys,
                    idle_s = idle.as_secs(),
                    reason,
                    "domain stalled: input waits and nothing progresses"
                );
            }
            RuntimeEvent::StallEnded { domain } => {
                metrics::gauge!(DOMAIN_STALLED, "domain" => domain).set(0.0);
                tracing::info!(domain, "domain no longer stalled");
            }
            RuntimeEvent::Quarantined { domain, key, error } => {
                metrics::gauge!(ENTITIES_QUARANTINED, "domain" => domain).increment(1.0);
                tracing::error!(
                    domain,
                    key,
                    error,
                    "stored state cannot be loaded; the key is quarantined: its inputs are dead-lettered (unloadable_state) until the row is repaired"
                );
            }
            RuntimeEvent::Released { domain, key } => {
                metrics::gauge!(ENTITIES_QUARANTINED, "domain" => domain).decrement(1.0);
                tracing::info!(
                    domain,
                    key,
                    "stored state loads again; the key is out of quarantine"
                );
            }
            RuntimeEvent::EntitiesLoaded { domain, count } => {
                if count == 0 {
                    return;
                }
                metrics::counter!(ENTITY_LOADS_TOTAL, "domain" => domain).increment(count as u64);
                tracing::debug!(domain, count, "loaded entities on first use");
            }
            RuntimeEvent::EntitiesEvicted {
                domain,
                reason,
                count,
            } => {
                if count == 0 {
                    return;
                }
                let (label, message) = match reason {
                    Eviction::Idle => ("idle", "evicted idle entities"),
                    Eviction::Capacity => (
                        "capacity",
                        "evicted least recently used entities over capacity",
                    ),
                };
                metrics::counter!(ENTITY_EVICTIONS_TOTAL, "domain" => domain, "reason" => label)
                    .increment(count as u64);
                tracing::debug!(domain, evicted = count, reason = label, "{message}");
            }
            RuntimeEvent::TimersCommitted {
                domain,
                scheduled,
                cancelled,
            } => {
                if scheduled + cancelled == 0 {
                    return;
                }
                metrics::counter!(TIMERS_TOTAL, "domain" => domain, "outcome" => "scheduled")
                    .increment(scheduled as u64);
                metrics::counter!(TIMERS_TOTAL, "domain" => domain, "outcome" => "cancelled")
                    .increment(cancelled as u64);
                tracing::debug!(
                    domain,
                    scheduled,
                    cancelled,
                    "timers scheduled and cancelled"
                );
            }
            RuntimeEvent::TimersFired { domain, lateness } => {
                if lateness.is_empty() {
                    return;
                }
                metrics::counter!(TIMERS_TOTAL, "domain" => domain, "outcome" => "fired")
                    .increment(lateness.len() as u64);
                let histogram = metrics::histogram!(TIMER_LATENESS_SECONDS, "domain" => domain);
                for late in lateness {
                    histogram.record(late.as_secs_f64());
                }
                let latest_ms = lateness.iter().max().map_or(0, |l| l.as_millis() as u64);
                tracing::debug!(
                    domain,
                    fired = lateness.len(),
                    latest_ms,
                    "fired due timers"
                );
            }
            RuntimeEvent::TimerRetried {
                domain,
                timer,
                key,
                attempts,
                error,
                retry_in,
            } => {
                metrics::counter!(TIMERS_TOTAL, "domain" => domain, "outcome" => "retried")
                    .increment(1);
                tracing::warn!(
                    domain,
                    timer.id = timer,
                    key,
                    attempts,
                    error,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "timer failed; trying it again later"
                );
            }
            RuntimeEvent::TimerDead {
                domain,
                timer,
                key,
                reason,
                error,
            } => {
                metrics::counter!(TIMERS_TOTAL, "domain" => domain, "outcome" => "dead")
                    .increment(1);
                tracing::error!(
                    domain,
                    timer.id = timer,
                    key,
                    reason,
                    error,
                    "timer failed for good; set aside as dead"
                );
            }
            RuntimeEvent::Published {
                domain,
                count,
                republished,
            } => {
                metrics::counter!(OUTBOX_PUBLISHED_TOTAL, "domain" => domain).increment(count);
                if republished > 0 {
                    metrics::counter!(OUTBOX_REPUBLISHED_TOTAL, "domain" => domain)
                        .increment(republished);
                }
                tracing::debug!(domain, count, republished, "published outbox events");
            }
            RuntimeEvent::Reconciled { domain, how } => {
                metrics::counter!(RELAY_RECONCILED_TOTAL, "domain" => domain, "outcome" => how.label())
                    .increment(1);
                log_reconciled(domain, how);
            }
        }
    }
}

fn log_reconciled(domain: &'static str, how: Reconciliation) {
    match how {
        Reconciliation::RedisBehind {
            marker_seq,
            published_seq,
        } => tracing::warn!(
            domain,
            marker_seq,
            published_seq,
            "Redis is behind what was published (it lost writes or was restored); publishing the retained events after its marker again"
        ),
        Reconciliation::RecordThrough { marker_seq } => tracing::info!(
            domain,
            marker_seq,
            "events published before a restart are recorded as published"
        ),
        Reconciliation::Upgrade { marker_seq } => tracing::info!(
            domain,
            marker_seq,
            "relay marker of the earlier format rewritten"
        ),
        Reconciliation::PostgresWentBack {
            marker_seq,
            moved_to,
        } => tracing::error!(
            domain,
            marker_seq,
            moved_to,
            "Redis's relay marker names an event the outbox does not hold there: Postgres went back \
             (restore, reset or lost commits); moving the marker down so new events are not skipped"
        ),
        Reconciliation::RepublishAll {
            marker_seq,
            published_seq,
        } => tracing::error!(
            domain,
            marker_seq,
            published_seq,
            "the outbox no longer holds the event at Redis's marker (Redis behind by more than \
             runtime.outbox_retention_seconds?); publishing every retained event again; older ones may be missing"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::captured_logs::Captured;

    /// One call writes the event's log line and moves its metric with the labels documented
    /// on it (through the process's Prometheus recorder, under a domain no other test uses).
    #[test]
    fn an_event_moves_its_metric_with_its_labels() {
        let prometheus = super::super::metrics::recorder();
        let domain = "telemetry_events_test";
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            RuntimeEvent::DeadLettered {
                domain,
                stream: "s",
                entry_id: "1-0",
                reason: "invalid",
                error: "bad",
                deliveries: 1,
            }
            .record();
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
        assert_eq!(line["level"], "WARN", "{output}");
        assert_eq!(line["fields"]["domain"], domain, "{output}");
        assert_eq!(line["fields"]["reason"], "invalid", "{output}");
        assert_eq!(line["fields"]["entry.id"], "1-0", "{output}");
        for (outcome, count) in [(InputOutcome::Applied, 3), (InputOutcome::Failed, 0)] {
            RuntimeEvent::Inputs {
                domain,
                stream: "s",
                outcome,
                count,
            }
            .record();
        }
        let rendered = prometheus.render();
        let series: Vec<&str> = rendered
            .lines()
            .filter(|l| l.contains(domain) && !l.starts_with('#'))
            .collect();
        assert!(
            series.contains(&r#"troupe_dead_letters_total{domain="telemetry_events_test",stream="s",reason="invalid"} 1"#),
            "{series:?}"
        );
        assert!(
            series.contains(&r#"troupe_events_total{domain="telemetry_events_test",stream="s",outcome="applied"} 3"#),
            "{series:?}"
        );
        // Nothing concluded, nothing counted (and no empty series created).
        assert_eq!(series.len(), 2, "{series:?}");
    }
}
