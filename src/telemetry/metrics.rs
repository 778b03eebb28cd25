//! The Prometheus recorder and the metrics the runtime exports.
//!
//! Metric names are declared here once, with their descriptions. Labels come only from bounded
//! sets: HTTP method, route template (never the raw path), status code, domain, stream,
//! outcome.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests by `method`, `route` (template) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram: HTTP request duration by `method` and `route` (template).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";

/// Counter: stream entries by `domain`, `stream` and `outcome` (applied, duplicate,
/// dead_lettered, failed).
pub const EVENTS_TOTAL: &str = "troupe_events_total";
/// Histogram: time to apply one input in a handler, by `domain`.
pub const HANDLE_SECONDS: &str = "troupe_handle_seconds";
/// Histogram: time to commit one batch, by `domain`.
pub const PERSIST_SECONDS: &str = "troupe_persist_seconds";
/// Histogram: entries per processed batch, by `domain` and `stream`.
pub const BATCH_SIZE: &str = "troupe_batch_size";
/// Gauge: entries not yet delivered to the domain's group, by `domain` and `stream`.
pub const CONSUMER_LAG: &str = "troupe_consumer_lag";
/// Gauge: entries delivered and not acknowledged, by `domain` and `stream`.
pub const CONSUMER_PENDING: &str = "troupe_consumer_pending";
/// Gauge: how long the oldest pending entry has been pending (since its last delivery), by
/// `domain` and `stream`.
pub const CONSUMER_OLDEST_PENDING_SECONDS: &str = "troupe_consumer_oldest_pending_seconds";
/// Counter: supervised restarts, by `domain` and `actor` (reader, relay, partition).
pub const ACTOR_RESTARTS_TOTAL: &str = "troupe_actor_restarts_total";
/// Gauge: outbox rows waiting to be published, by `domain`.
pub const OUTBOX_BACKLOG: &str = "troupe_outbox_backlog";
/// Counter: events published from the outbox, by `domain`.
pub const OUTBOX_PUBLISHED_TOTAL: &str = "troupe_outbox_published_total";
/// Counter: outbox events marked for publishing again because Redis lost them, by `domain`.
pub const OUTBOX_REPUBLISHED_TOTAL: &str = "troupe_outbox_republished_total";
/// Counter: times the relay found Redis's marker out of step with the outbox, by `domain` and
/// `outcome` (redis_behind, record_through, postgres_went_back, republish_all).
pub const RELAY_RECONCILED_TOTAL: &str = "troupe_relay_reconciled_total";
/// Gauge: 1 while the domain has pending input and has committed nothing for
/// `runtime.stall_timeout_seconds`, by `domain`.
pub const DOMAIN_STALLED: &str = "troupe_domain_stalled";
/// Counter: dead-letter entries removed by age or length, by `domain` and `stream`.
pub const DEAD_LETTERS_TRIMMED_TOTAL: &str = "troupe_dead_letters_trimmed_total";
/// Counter: idle consumers removed from the domain's groups, by `domain` and `stream`.
pub const CONSUMERS_REMOVED_TOTAL: &str = "troupe_consumers_removed_total";
/// Counter: entries moved to a dead-letter stream, by `domain`, `stream` and `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "troupe_dead_letters_total";
/// Gauge: 1 while the domain runs, 0 once it failed for good, by `domain`.
pub const DOMAIN_UP: &str = "troupe_domain_up";
/// Gauge: entities held in memory (including keys known to have no row), by `domain`.
pub const ENTITIES_IN_MEMORY: &str = "troupe_entities_in_memory";
/// Gauge: keys whose stored state does not load (their inputs are dead-lettered), by `domain`.
pub const ENTITIES_QUARANTINED: &str = "troupe_entities_quarantined";
/// Counter: entities loaded from Postgres on first use, by `domain`.
pub const ENTITY_LOADS_TOTAL: &str = "troupe_entity_loads_total";
/// Counter: entities evicted from memory, by `domain` and `reason` (`idle`, `capacity`).
pub const ENTITY_EVICTIONS_TOTAL: &str = "troupe_entity_evictions_total";
/// Counter: durable timers by `domain` and `outcome` (`scheduled`, `cancelled`, `fired`,
/// `retried`: a firing failed and is tried again later, `dead`: set aside for good).
pub const TIMERS_TOTAL: &str = "troupe_timers_total";
/// Histogram: how long after it was due a timer's firing committed, by `domain`.
pub const TIMER_LATENESS_SECONDS: &str = "troupe_timer_lateness_seconds";
/// Gauge: live timers due and not yet fired, by `domain`.
pub const TIMERS_DUE: &str = "troupe_timers_due";

/// Gauge: open WebSocket connections on this instance.
pub const WS_CONNECTIONS: &str = "troupe_ws_connections";
/// Counter: event frames sent to WebSocket clients.
pub const WS_MESSAGES_SENT_TOTAL: &str = "troupe_ws_messages_sent_total";
/// Counter: WebSocket connections closed or refused by the server, and client messages
/// refused, by `reason` (`slow_client`, `heartbeat_timeout`, `connection_limit`,
/// `frame_too_large`, `protocol_error`, `invalid_message`).
pub const WS_DROPPED_TOTAL: &str = "troupe_ws_dropped_total";
/// Histogram: from an event's timestamp to its frame being handed to the client's socket.
pub const WS_DELIVERY_SECONDS: &str = "troupe_ws_delivery_seconds";

/// Route label for requests that matched no route, so unknown paths cannot grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder on first call and returns its handle; later
/// calls return the same handle. Render it with [`PrometheusHandle::render`] and call
/// [`PrometheusHandle::run_upkeep`] periodically.
pub fn recorder() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Only fails when another recorder is already installed (an embedding application chose
    // its own); our handle then renders nothing, which is the embedder's choice.
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
    }
    describe();
    handle
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, route and status."
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request duration by method and route template."
    );
    metrics::describe_counter!(
        EVENTS_TOTAL,
        "Stream entries by domain, stream and outcome."
    );
    metrics::describe_histogram!(
        HANDLE_SECONDS,
        metrics::Unit::Seconds,
        "Time to apply one input."
    );
    metrics::describe_histogram!(
        PERSIST_SECONDS,
        metrics::Unit::Seconds,
        "Time to commit one batch."
    );
    metrics::describe_histogram!(
        BATCH_SIZE,
        metrics::Unit::Count,
        "Entries per processed batch."
    );
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "Entries not yet delivered to the domain's consumer group."
    );
    metrics::describe_gauge!(
        CONSUMER_PENDING,
        "Entries delivered to the group and not acknowledged."
    );
    metrics::describe_gauge!(
        CONSUMER_OLDEST_PENDING_SECONDS,
        metrics::Unit::Seconds,
        "How long the group's oldest pending entry has waited since its last delivery."
    );
    metrics::describe_counter!(
        ACTOR_RESTARTS_TOTAL,
        "Supervised actor restarts by domain and actor."
    );
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Outbox rows waiting to be published.");
    metrics::describe_counter!(OUTBOX_PUBLISHED_TOTAL, "Events published from the outbox.");
    metrics::describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Entries moved to a dead-letter stream, by reason."
    );
    metrics::describe_counter!(
        OUTBOX_REPUBLISHED_TOTAL,
        "Outbox events published again because Redis had lost them."
    );
    metrics::describe_counter!(
        RELAY_RECONCILED_TOTAL,
        "Times the relay found Redis's marker out of step with the outbox, by outcome."
    );
    metrics::describe_gauge!(
        DOMAIN_STALLED,
        "1 while the domain has pending input and commits nothing for the stall timeout."
    );
    metrics::describe_counter!(
        DEAD_LETTERS_TRIMMED_TOTAL,
        "Dead-letter entries removed by age or length."
    );
    metrics::describe_counter!(
        CONSUMERS_REMOVED_TOTAL,
        "Idle consumers without pending entries removed from the domain's groups."
    );
    metrics::describe_gauge!(DOMAIN_UP, "1 while the domain runs, 0 once it has failed.");
    metrics::describe_gauge!(
        ENTITIES_IN_MEMORY,
        "Entities held in memory by the domain's partitions."
    );
    metrics::describe_gauge!(
        ENTITIES_QUARANTINED,
        "Keys whose stored state does not load; their inputs are dead-lettered until repaired."
    );
    metrics::describe_counter!(
        ENTITY_LOADS_TOTAL,
        "Entities loaded from Postgres on first use."
    );
    metrics::describe_counter!(
        TIMERS_TOTAL,
        "Durable timers by outcome (scheduled, cancelled, fired, retried, dead)."
    );
    metrics::describe_histogram!(
        TIMER_LATENESS_SECONDS,
        metrics::Unit::Seconds,
        "How long after it was due a timer's firing committed."
    );
    metrics::describe_gauge!(TIMERS_DUE, "Live timers due and not yet fired.");
    metrics::describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections.");
    metrics::describe_counter!(
        WS_MESSAGES_SENT_TOTAL,
        "Event frames sent to WebSocket clients."
    );
    metrics::describe_counter!(
        WS_DROPPED_TOTAL,
        "WebSocket connections closed or refused by the server, and client messages refused, by reason."
    );
    metrics::describe_histogram!(
        WS_DELIVERY_SECONDS,
        metrics::Unit::Seconds,
        "From an event's timestamp to its frame being sent to a WebSocket client."
    );
    metrics::describe_counter!(
        ENTITY_EVICTIONS_TOTAL,
        "Entities evicted from memory, by reason (idle, capacity)."
    );
}
