//! Typed configuration, layered `config/default.toml` → `config/$TROUPE_ENV.toml` →
//! `TROUPE__SECTION__KEY` environment variables, and validated once at start-up.
//!
//! Every problem is reported as a [`SettingsError`] that names the offending key, so an
//! operator reading one line of output knows what to fix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override file settings (`TROUPE__HTTP__PORT`).
pub const ENV_PREFIX: &str = "TROUPE";
/// Environment variable that names the environment file layered over `default.toml`.
pub const ENV_NAME_VAR: &str = "TROUPE_ENV";

/// A configuration problem, naming the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file or environment value could not be read or has the wrong type.
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    /// A value has the right type but is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key, as in the TOML files (`http.port`).
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole configuration of one Troupe process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Identity of this process among its peers.
    pub instance: InstanceSettings,
    /// The HTTP server.
    pub http: HttpSettings,
    /// The Redis server that carries the streams.
    pub redis: RedisSettings,
    /// The Postgres database that holds state.
    pub database: DatabaseSettings,
    /// Readiness checks.
    pub health: HealthSettings,
    /// Logs and metrics.
    pub telemetry: TelemetrySettings,
    /// Which reference domains this process runs.
    pub domains: DomainsSettings,
    /// How domains consume, process and publish.
    pub runtime: RuntimeSettings,
    /// Real-time delivery over WebSocket (`GET /ws`).
    #[serde(default)]
    pub ws: WsSettings,
    /// Fault injection for crash testing (off by default).
    #[serde(default)]
    pub faults: FaultSettings,
}

/// Real-time delivery over WebSocket (`GET /ws`); see `docs/websocket.md`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSettings {
    /// The server pings every client this often, and closes a connection that sent no pong
    /// for twice as long.
    pub heartbeat_seconds: u64,
    /// Messages waiting to be written to one client. A client that lets it fill (it reads
    /// too slowly) is disconnected with close code 1008, so it never holds up the others.
    /// Keep it above `read_count`: one read of the streams can be a burst for one topic.
    pub send_queue: usize,
    /// Largest frame a client may send, in bytes (close code 1009 beyond it).
    pub max_frame_bytes: usize,
    /// Topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Connections one instance accepts; more are refused with 503 `too_many_connections`.
    pub max_connections: usize,
    /// Most stream entries one `since` replay scans; beyond it the client gets `too_old`.
    pub replay_max_entries: usize,
    /// Entries per XREAD of the topic streams.
    pub read_count: usize,
    /// How long one XREAD of the topic streams waits for new entries.
    pub read_block_ms: u64,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            heartbeat_seconds: 15,
            send_queue: 1024,
            max_frame_bytes: 16 * 1024,
            max_subscriptions: 100,
            max_connections: 10_000,
            replay_max_entries: 100_000,
            read_count: 500,
            read_block_ms: 1000,
        }
    }
}

impl WsSettings {
    /// The ping interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds)
    }
}

/// How domains consume, process and publish.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Partition actors per domain; each owns the keys hashed to it.
    pub partitions: usize,
    /// Entries per XREADGROUP (COUNT): the unit of processing and of commit.
    pub read_count: usize,
    /// How long one XREADGROUP waits for new entries (BLOCK).
    pub read_block_ms: u64,
    /// Entries pending this long on another consumer are presumed abandoned and claimed
    /// (XAUTOCLAIM min-idle). Must exceed the longest time a live consumer may take on a batch.
    pub claim_min_idle_ms: u64,
    /// How often a reader looks for abandoned entries.
    pub claim_interval_ms: u64,
    /// Deliveries after which a failing entry moves to the dead-letter stream.
    pub max_deliveries: u64,
    /// Time an actor request (batch, command, query) may take before the caller gives up.
    pub ask_timeout_ms: u64,
    /// Outbox rows published per relay round.
    pub relay_batch: i64,
    /// How often the relay looks for events when nothing woke it.
    pub relay_interval_ms: u64,
    /// Output stream entries older than this are trimmed, unless a group still needs them.
    pub output_retention_seconds: u64,
    /// Published outbox rows are kept this long, so events Redis loses after they were
    /// published can be published again. Keep it within the consumers' dedupe window.
    pub outbox_retention_seconds: u64,
    /// Wait for Redis to write published events to its append-only file (`WAITAOF`) before
    /// recording them as published, where Redis supports it (7.2 and later, `appendonly yes`).
    pub relay_wait_aof: bool,
    /// How often consumer lag, pending counts and the outbox backlog are measured.
    pub stats_interval_ms: u64,
    /// First restart delay of a failed actor.
    pub backoff_initial_ms: u64,
    /// Longest restart delay.
    pub backoff_max_ms: u64,
    /// Restarts allowed within `restart_window_seconds` before the domain is declared failed.
    pub max_restarts: u32,
    /// Window for `max_restarts`.
    pub restart_window_seconds: u64,
    /// Longest entity key, in bytes (HTTP path keys and stream entry keys alike).
    pub max_key_bytes: usize,
    /// Largest stream entry (sum of its field names and values); larger ones are dead-lettered
    /// as `too_large`.
    pub max_entry_bytes: usize,
    /// Largest unit of work, in bytes of its entries: a read batch over it is processed in
    /// several units.
    pub max_unit_bytes: usize,
    /// How long the ids of applied inputs are remembered for deduplication.
    pub dedupe_window_seconds: u64,
    /// Dead letters older than this are trimmed.
    pub dead_letter_retention_seconds: u64,
    /// Most entries kept per dead-letter stream (oldest trimmed first).
    pub dead_letter_max_len: u64,
    /// A domain with pending input that commits nothing for this long is reported stalled.
    pub stall_timeout_seconds: u64,
    /// Consumers of the domain's group idle this long and owning no pending entry are removed.
    pub consumer_idle_grace_seconds: u64,
    /// Entities no input or read used for this long are evicted from memory (and loaded again
    /// from Postgres when next needed).
    pub entity_idle_seconds: u64,
    /// Most entities a domain holds in memory; past it, the least recently used are evicted
    /// after a commit (never one with uncommitted changes). Shared evenly by the partitions.
    pub max_entities_in_memory: usize,
    /// How often the domain looks for durable timers that are due. A timer fires at most this
    /// long after it is due, plus the time of the unit that fires it, while the domain keeps up.
    pub timer_poll_ms: u64,
    /// Most due timers fired in one unit of work; more due at once fire in several.
    pub timer_batch: usize,
}

/// A named boundary at which the process can be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPoint {
    /// After entries were read, before anything was applied.
    AfterRead,
    /// After a batch committed to Postgres, before its entries were acknowledged.
    AfterCommitBeforeAck,
    /// After the relay published events, before it recorded them as published.
    AfterPublishBeforeMark,
}

/// Fault injection: abort the process at a named boundary, for crash tests.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Where to abort; unset means never.
    #[serde(default)]
    pub crash_at: Option<CrashPoint>,
    /// Abort on the n-th time the boundary is reached (default 1).
    #[serde(default = "one")]
    pub crash_after: u64,
    /// Holds every command's reply this long after its commit (0: off): a reply lost or late
    /// after the commit, for tests of `outcome_unknown` and `Idempotency-Key` retries.
    #[serde(default)]
    pub delay_command_reply_ms: u64,
    /// Blocks the partition thread for `block_handler_ms` the first time a handler runs for
    /// this key, as a handler stuck on a lock or a slow call would (tests of the watchdog).
    #[serde(default)]
    pub block_handler_key: Option<String>,
    /// How long [`Self::block_handler_key`] blocks.
    #[serde(default)]
    pub block_handler_ms: u64,
}

fn one() -> u64 {
    1
}

/// Identity of this process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    /// Consumer name used in every consumer group. Empty means "derive one": the hostname plus
    /// the HTTP port, which is stable across restarts of the same deployment so a restarted
    /// process finds its own pending entries again.
    #[serde(default)]
    pub id: String,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted JSON body, in bytes (413 beyond it).
    pub json_limit_bytes: usize,
    /// Time given to in-flight work on SIGINT/SIGTERM before the process exits.
    pub shutdown_grace_seconds: u64,
}

/// Redis connection settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every key this process touches; lets tests and tenants share a server.
    #[serde(default)]
    pub key_prefix: String,
    /// Time allowed to open a connection.
    pub connect_timeout_ms: u64,
    /// Time allowed for a non-blocking command's reply.
    pub response_timeout_ms: u64,
}

/// Postgres connection settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Largest number of pooled connections.
    pub pool_max_size: usize,
    /// Time allowed to open a connection, and to wait for a free one.
    pub connect_timeout_ms: u64,
    /// Time each Postgres call of a unit of work (its commit, and the reads around it) may
    /// take; a connection that does not answer in time is closed and the unit retried. Below
    /// `runtime.ask_timeout_ms`.
    pub commit_timeout_ms: u64,
}

/// Readiness check settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time each dependency check may take before it counts as failed.
    pub check_timeout_ms: u64,
    /// Whether `/health/live` answers 503 once a domain has failed for good, so that an
    /// orchestrator restarts the process.
    pub live_fails_with_domain: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for development.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs and metrics settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter directive (`info`, `troupe=debug,actix_web=info`).
    pub log_filter: String,
}

/// Domain selection, and each domain's own section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DomainsSettings {
    /// Domains this process runs; one binary can be one service per domain or all in one.
    pub enabled: Vec<String>,
    /// `[domains.<name>]`: the settings of domain `<name>`, handed to it as it starts (see
    /// `domain::Configurable`). The registry refuses a section of a domain it does not know,
    /// or of one that takes no settings, so a misspelt section is an error, not ignored.
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `TROUPE__DOMAINS__<NAME>__…`, a variable of a domain's own section (not `domains.enabled`).
fn is_domain_section_var(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let section_prefix = format!("{ENV_PREFIX}__DOMAINS__");
    name.starts_with(&section_prefix) && name != format!("{section_prefix}ENABLED")
}

/// A domain's section as its settings type `T`. Values convert as the runtime's own settings
/// do, whichever source they came from: `"10"` from the environment is a number where `T`
/// wants one, `10` from a file is text where `T` wants text, `"true"`/`"yes"`/`"on"` are bools.
pub fn deserialize_section<T: serde::de::DeserializeOwned>(
    section: &serde_json::Value,
) -> Result<T, String> {
    T::deserialize(lenient(section)).map_err(|e| e.to_string())
}

/// `value` in the `config` crate's form, whose deserializer converts between text and scalars.
fn lenient(value: &serde_json::Value) -> config::Value {
    use config::ValueKind;
    use serde_json::Value as Json;
    let kind = match value {
        Json::Null => ValueKind::Nil,
        Json::Bool(b) => ValueKind::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ValueKind::I64(i),
            (None, Some(u)) => ValueKind::U64(u),
            (None, None) => ValueKind::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(text) => ValueKind::String(text.clone()),
        Json::Array(items) => ValueKind::Array(items.iter().map(lenient).collect()),
        Json::Object(table) => ValueKind::Table(
            table
                .iter()
                .map(|(key, value)| (key.clone(), lenient(value)))
                .collect(),
        ),
    };
    config::Value::new(None, kind)
}

/// Each leaf of a domain's section replaced by `***`: the runtime cannot tell which of a
/// domain's settings are secrets, so a summary shows their names only.
fn redacted_section(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Json::Object(table) => Json::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), redacted_section(value)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(redacted_section).collect()),
        _ => Json::String("***".into()),
    }
}

impl DomainsSettings {
    /// `enabled`, without sections.
    pub fn enabling(enabled: &[&str]) -> Self {
        Self {
            enabled: enabled.iter().map(|&name| name.to_owned()).collect(),
            sections: Default::default(),
        }
    }
}

impl Settings {
    /// Loads the settings from `config_dir`, the environment named by `TROUPE_ENV` and the
    /// process environment, then validates them.
    pub fn load(config_dir: &Path) -> Result<Self, SettingsError> {
        let env_name = std::env::var(ENV_NAME_VAR).ok().filter(|s| !s.is_empty());
        Self::load_from(config_dir, env_name.as_deref(), None)
    }

    /// Like [`Settings::load`] with an explicit environment name and, when `env` is given,
    /// those variables instead of the process environment (tests use this to avoid global
    /// state).
    pub fn load_from(
        config_dir: &Path,
        env_name: Option<&str>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from(config_dir.join("default.toml")).required(true));
        if let Some(name) = env_name {
            let file: PathBuf = config_dir.join(format!("{name}.toml"));
            builder = builder.add_source(config::File::from(file).required(true));
        }
        // The runtime's own keys are parsed (`TROUPE__HTTP__PORT=9001` is a number); a
        // domain's section is kept as written, because only the domain's types know that a
        // label `0123` is text. `deserialize_section` converts on demand.
        let (section_vars, runtime_vars): (config::Map<_, _>, config::Map<_, _>) = env
            .unwrap_or_else(|| std::env::vars().collect())
            .into_iter()
            .partition(|(name, _)| is_domain_section_var(name));
        let environment = |vars, parsed| {
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(parsed)
                .list_separator(",")
                .with_list_parse_key("domains.enabled")
                .source(Some(vars))
        };
        let settings: Settings = builder
            .add_source(environment(runtime_vars, true))
            .add_source(environment(section_vars, false))
            .build()?
            .try_deserialize()?;
        settings.validated()
    }

    fn validated(mut self) -> Result<Self, SettingsError> {
        let invalid = |key, problem: String| Err(SettingsError::Invalid { key, problem });

        let redis_url = url::Url::parse(&self.redis.url);
        match redis_url {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {}
            Ok(u) => return invalid("redis.url", format!("unsupported scheme {:?}", u.scheme())),
            Err(e) => return invalid("redis.url", format!("not a URL: {e}")),
        }
        match url::Url::parse(&self.database.url) {
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
                if u.path().trim_start_matches('/').is_empty() {
                    return invalid("database.url", "names no database".into());
                }
            }
            Ok(u) => {
                return invalid(
                    "database.url",
                    format!("unsupported scheme {:?}", u.scheme()),
                );
            }
            Err(e) => return invalid("database.url", format!("not a URL: {e}")),
        }
        if self.database.pool_max_size == 0 {
            return invalid("database.pool_max_size", "must be at least 1".into());
        }
        let positive = [
            (
                "database.connect_timeout_ms",
                self.database.connect_timeout_ms,
            ),
            (
                "database.commit_timeout_ms",
                self.database.commit_timeout_ms,
            ),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
            ("health.check_timeout_ms", self.health.check_timeout_ms),
            (
                "http.shutdown_grace_seconds",
                self.http.shutdown_grace_seconds,
            ),
            ("http.json_limit_bytes", self.http.json_limit_bytes as u64),
            ("runtime.partitions", self.runtime.partitions as u64),
            ("runtime.read_count", self.runtime.read_count as u64),
            ("runtime.read_block_ms", self.runtime.read_block_ms),
            ("runtime.claim_min_idle_ms", self.runtime.claim_min_idle_ms),
            ("runtime.claim_interval_ms", self.runtime.claim_interval_ms),
            ("runtime.max_deliveries", self.runtime.max_deliveries),
            ("runtime.ask_timeout_ms", self.runtime.ask_timeout_ms),
            (
                "runtime.relay_batch",
                self.runtime.relay_batch.max(0) as u64,
            ),
            ("runtime.relay_interval_ms", self.runtime.relay_interval_ms),
            (
                "runtime.output_retention_seconds",
                self.runtime.output_retention_seconds,
            ),
            (
                "runtime.outbox_retention_seconds",
                self.runtime.outbox_retention_seconds,
            ),
            ("runtime.stats_interval_ms", self.runtime.stats_interval_ms),
            (
                "runtime.backoff_initial_ms",
                self.runtime.backoff_initial_ms,
            ),
            ("runtime.max_restarts", u64::from(self.runtime.max_restarts)),
            (
                "runtime.restart_window_seconds",
                self.runtime.restart_window_seconds,
            ),
            ("faults.crash_after", self.faults.crash_after),
            ("runtime.max_key_bytes", self.runtime.max_key_bytes as u64),
            (
                "runtime.max_entry_bytes",
                self.runtime.max_entry_bytes as u64,
            ),
            ("runtime.max_unit_bytes", self.runtime.max_unit_bytes as u64),
            (
                "runtime.dedupe_window_seconds",
                self.runtime.dedupe_window_seconds,
            ),
            (
                "runtime.dead_letter_retention_seconds",
                self.runtime.dead_letter_retention_seconds,
            ),
            (
                "runtime.dead_letter_max_len",
                self.runtime.dead_letter_max_len,
            ),
            (
                "runtime.stall_timeout_seconds",
                self.runtime.stall_timeout_seconds,
            ),
            (
                "runtime.consumer_idle_grace_seconds",
                self.runtime.consumer_idle_grace_seconds,
            ),
            (
                "runtime.entity_idle_seconds",
                self.runtime.entity_idle_seconds,
            ),
            (
                "runtime.max_entities_in_memory",
                self.runtime.max_entities_in_memory as u64,
            ),
            ("runtime.timer_poll_ms", self.runtime.timer_poll_ms),
            ("ws.heartbeat_seconds", self.ws.heartbeat_seconds),
            ("ws.send_queue", self.ws.send_queue as u64),
            ("ws.max_frame_bytes", self.ws.max_frame_bytes as u64),
            ("ws.max_subscriptions", self.ws.max_subscriptions as u64),
            ("ws.max_connections", self.ws.max_connections as u64),
            ("ws.replay_max_entries", self.ws.replay_max_entries as u64),
            ("ws.read_count", self.ws.read_count as u64),
            ("ws.read_block_ms", self.ws.read_block_ms),
            ("runtime.timer_batch", self.runtime.timer_batch as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0".into());
            }
        }
        // Windows beyond this overflow Postgres intervals, and pruning would fail every round.
        const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
        for (key, value) in [
            (
                "runtime.dedupe_window_seconds",
                self.runtime.dedupe_window_seconds,
            ),
            (
                "runtime.outbox_retention_seconds",
                self.runtime.outbox_retention_seconds,
            ),
            (
                "runtime.dead_letter_retention_seconds",
                self.runtime.dead_letter_retention_seconds,
            ),
            (
                "runtime.output_retention_seconds",
                self.runtime.output_retention_seconds,
            ),
        ] {
            if value > TEN_YEARS {
                return invalid(key, format!("must be at most {TEN_YEARS} (ten years)"));
            }
        }
        // Each domain's pool serves its partitions' concurrent commits, the relay's own session
        // and the stats loop at once, and at least one HTTP read of stored state beside them.
        let needed = self.runtime.partitions.saturating_add(3);
        if self.database.pool_max_size < needed {
            return invalid(
                "database.pool_max_size",
                format!(
                    "must be at least runtime.partitions + 3 ({needed}): a domain commits each \
                     partition's share at once, its relay keeps a connection, and HTTP reads \
                     need one"
                ),
            );
        }
        if self.runtime.max_entities_in_memory < self.runtime.partitions {
            return invalid(
                "runtime.max_entities_in_memory",
                format!(
                    "must be at least runtime.partitions ({}): each partition holds its share",
                    self.runtime.partitions
                ),
            );
        }
        if self.runtime.max_unit_bytes < self.runtime.max_entry_bytes {
            return invalid(
                "runtime.max_unit_bytes",
                "must not be below runtime.max_entry_bytes".into(),
            );
        }
        if self.runtime.backoff_max_ms < self.runtime.backoff_initial_ms {
            return invalid(
                "runtime.backoff_max_ms",
                "must not be below runtime.backoff_initial_ms".into(),
            );
        }
        if self.database.commit_timeout_ms >= self.runtime.ask_timeout_ms {
            return invalid(
                "database.commit_timeout_ms",
                "must be below runtime.ask_timeout_ms".into(),
            );
        }
        // An entry in hand waits for the batch in flight, then is processed: each bounded by
        // ask_timeout. Claiming sooner would take entries from a consumer still working on them.
        let busiest = self
            .runtime
            .ask_timeout_ms
            .saturating_mul(2)
            .saturating_add(self.runtime.read_block_ms);
        if self.runtime.claim_min_idle_ms <= busiest {
            return invalid(
                "runtime.claim_min_idle_ms",
                format!(
                    "must exceed 2 × runtime.ask_timeout_ms + runtime.read_block_ms ({busiest}), \
                     or entries are claimed from consumers still working on them"
                ),
            );
        }
        // An idle domain proves it is caught up once per read; a stall timeout shorter than
        // that would report every idle domain stalled.
        if self.runtime.stall_timeout_seconds.saturating_mul(1000) <= self.runtime.read_block_ms {
            return invalid(
                "runtime.stall_timeout_seconds",
                "must exceed runtime.read_block_ms, or idle domains are reported stalled".into(),
            );
        }
        if self.runtime.read_count > 100_000 {
            return invalid("runtime.read_count", "must be at most 100000".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter) {
            return invalid("telemetry.log_filter", e.to_string());
        }
        // Which names exist is the registry's to say (`Registry::check`), at start-up.
        for name in &mut self.domains.enabled {
            *name = name.trim().to_owned();
        }
        self.domains.enabled.retain(|name| !name.is_empty());
        if self.domains.enabled.is_empty() {
            return invalid("domains.enabled", "lists no domain".into());
        }
        self.instance.id = self.instance.id.trim().to_owned();
        if self.instance.id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            self.instance.id = format!("{host}-{}", self.http.port);
        } else if self
            .instance
            .id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid("instance.id", "must not contain whitespace".into());
        }
        Ok(self)
    }
}

impl Settings {
    /// The effective settings as pretty JSON, with URL passwords and the values of domains'
    /// own settings replaced by `***`.
    pub fn redacted_summary(&self) -> String {
        let mut copy = self.clone();
        copy.redis.url = redact_url(&copy.redis.url);
        copy.database.url = redact_url(&copy.database.url);
        for section in copy.domains.sections.values_mut() {
            *section = redacted_section(section);
        }
        serde_json::to_string_pretty(&copy).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

impl DatabaseSettings {
    /// Connection and pool wait timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Transaction timeout of a unit of work.
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }
}

impl RedisSettings {
    /// Connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Reply timeout for non-blocking commands.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }
}

impl RuntimeSettings {
    /// XREADGROUP BLOCK time.
    pub fn read_block(&self) -> Duration {
        Duration::from_millis(self.read_block_ms)
    }
    /// XAUTOCLAIM min-idle.
    pub fn claim_min_idle(&self) -> Duration {
        Duration::from_millis(self.claim_min_idle_ms)
    }
    /// Interval between claim scans.
    pub fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.claim_interval_ms)
    }
    /// Actor request timeout.
    pub fn ask_timeout(&self) -> Duration {
        Duration::from_millis(self.ask_timeout_ms)
    }
    /// Relay polling interval.
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms)
    }
    /// Stats interval.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }
    /// Timer polling interval.
    pub fn timer_poll(&self) -> Duration {
        Duration::from_millis(self.timer_poll_ms)
    }

    /// `stall_timeout_seconds` as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout_seconds)
    }
}

impl HealthSettings {
    /// Time each readiness check may take.
    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(&dir, None, Some(env))
    }

    #[test]
    fn defaults_load_and_derive_an_instance_id() {
        let s = load(&[]).unwrap();
        assert_eq!(s.http.port, 8080);
        assert!(s.instance.id.ends_with("-8080"), "{}", s.instance.id);
        assert!(!s.redacted_summary().contains("troupe:troupe@"));
    }

    #[test]
    fn environment_overrides_files_including_lists() {
        let s = load(&[
            ("TROUPE__HTTP__PORT", "9001"),
            ("TROUPE__DOMAINS__ENABLED", "inventory"),
            ("TROUPE__INSTANCE__ID", "worker-7"),
        ])
        .unwrap();
        assert_eq!(s.http.port, 9001);
        assert_eq!(s.domains.enabled, vec!["inventory".to_string()]);
        assert_eq!(s.instance.id, "worker-7");
        let s = load(&[("TROUPE__FAULTS__CRASH_AT", "after_commit_before_ack")]).unwrap();
        assert_eq!(s.faults.crash_at, Some(CrashPoint::AfterCommitBeforeAck));
        assert_eq!(s.faults.crash_after, 1);
        let err = load(&[("TROUPE__FAULTS__CRASH_AT", "sometime")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometime"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load(&[("TROUPE__HTTP__PORT", "eighty")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.port"), "{err}");
        let err = load(&[("TROUPE__DATABASE__URL", "mysql://x/y")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("database.url:"), "{err}");
        let err = load(&[("TROUPE__DOMAINS__ENABLED", " ")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("domains.enabled:"), "{err}");
        // Which names exist is the registry's to say (tests/it/registry.rs, tests/it/config.rs).
        let s = load(&[("TROUPE__DOMAINS__ENABLED", " inventory , billing")]).unwrap();
        assert_eq!(s.domains.enabled, ["inventory", "billing"]);
    }

    #[test]
    fn a_domains_own_section_comes_from_the_environment_as_written() {
        let s = load(&[
            ("TROUPE__DOMAINS__COUNTER__MAX_TOTAL", "10"),
            ("TROUPE__DOMAINS__COUNTER__LABEL", "shop"),
        ])
        .unwrap();
        assert_eq!(
            s.domains.enabled,
            [
                "inventory",
                "customers",
                "payments",
                "reservations",
                "orders",
                "notifications"
            ]
        );
        // Kept as written: the domain's own types decide what a value is (the registry
        // deserializes leniently), so a label "0123" or "true" is not turned into a number or
        // a bool on the way.
        assert_eq!(
            s.domains.sections.get("counter"),
            Some(&serde_json::json!({"max_total": "10", "label": "shop"}))
        );
        assert_eq!(s.domains.sections.len(), 1, "{:?}", s.domains.sections);
        let s = load(&[
            ("TROUPE__DOMAINS__COUNTER__LABEL", "0123"),
            ("TROUPE__DOMAINS__COUNTER__FLAG", "true"),
            ("TROUPE__HTTP__PORT", "9002"),
        ])
        .unwrap();
        assert_eq!(
            s.domains.sections.get("counter"),
            Some(&serde_json::json!({"label": "0123", "flag": "true"}))
        );
        assert_eq!(s.http.port, 9002, "the runtime's own keys are still parsed");
    }

    #[test]
    fn the_summary_shows_domain_settings_by_name_only() {
        let s = load(&[
            ("TROUPE__DOMAINS__PAYMENTS__GATEWAY_TOKEN", "hunter2-secret"),
            ("TROUPE__DOMAINS__PAYMENTS__RETRIES", "3"),
        ])
        .unwrap();
        let summary = s.redacted_summary();
        assert!(!summary.contains("hunter2-secret"), "{summary}");
        assert!(summary.contains("gateway_token"), "{summary}");
        assert!(summary.contains("retries"), "{summary}");
        assert!(summary.contains("\"enabled\""), "{summary}");
    }

    #[test]
    fn a_pool_too_small_for_the_partitions_is_refused() {
        let err = load(&[("TROUPE__DATABASE__POOL_MAX_SIZE", "4")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("database.pool_max_size:"), "{err}");
        assert!(load(&[("TROUPE__DATABASE__POOL_MAX_SIZE", "5")]).is_ok());
        let err = load(&[("TROUPE__RUNTIME__MAX_ENTITIES_IN_MEMORY", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("runtime.max_entities_in_memory:"), "{err}");
    }

    #[test]
    fn retention_windows_postgres_cannot_express_are_refused() {
        let err = load(&[(
            "TROUPE__RUNTIME__DEDUPE_WINDOW_SECONDS",
            "18446744073709551615",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("runtime.dedupe_window_seconds:"), "{err}");
        assert!(load(&[("TROUPE__RUNTIME__OUTBOX_RETENTION_SECONDS", "315360000")]).is_ok());
    }

    #[test]
    fn timeouts_that_would_race_each_other_are_refused() {
        // Claiming entries a live consumer may still hold in hand or in flight.
        let err = load(&[("TROUPE__RUNTIME__CLAIM_MIN_IDLE_MS", "21000")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("runtime.claim_min_idle_ms:"), "{err}");
        assert!(load(&[("TROUPE__RUNTIME__CLAIM_MIN_IDLE_MS", "21001")]).is_ok());
        // A commit outliving the reader's wait for it.
        let err = load(&[("TROUPE__DATABASE__COMMIT_TIMEOUT_MS", "10000")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("database.commit_timeout_ms:"), "{err}");
    }
}
