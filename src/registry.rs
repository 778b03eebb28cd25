//! The domains a binary can run, each registered with one line, and the set of those running.
//!
//! ```ignore
//! Registry::new()
//!     .serve_configured::<Inventory>(http::inventory::Routes) // a domain and its HTTP face
//!     .domain(Audit)                             // a domain without routes
//! ```
//!
//! Everything else finds a domain here: start-up starts the ones `domains.enabled` names, the
//! HTTP app mounts every registered domain's routes and merges their OpenAPI paths into the
//! document, readiness and liveness ask every running domain, the dead-letter API knows their
//! streams, and handlers reach a domain through its typed handle
//! ([`RunningDomains::handle`]). The runtime's metrics carry the domain's name as a label, so a
//! registered domain has them from its first input, and the event catalogue
//! (`/api-docs/asyncapi.json`) describes its streams from its event enums.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::ServiceConfig;

use crate::actors::handle::DomainHandle;
use crate::actors::runtime::{RunningDomain, StartError, start_shared};
use crate::asyncapi::{self, DomainEvents, EnumSchema};
use crate::domain::{Configurable, Domain};
use crate::settings::{self, DomainsSettings, Settings};
use crate::streams::RedisClients;
use crate::ws::TopicSource;

/// The HTTP face of a domain: its routes and their OpenAPI description. Implemented next to
/// the handlers (in `crate::http`), so that domain code stays free of actix.
pub trait DomainRoutes: Send + Sync + 'static {
    /// Registers the routes. Handlers reach the domain through
    /// `AppState::domains.handle::<D>()`, which is `None` when this instance does not run it.
    fn configure(&self, cfg: &mut ServiceConfig);
    /// The OpenAPI paths, schemas and tags of those routes, merged into `/api-docs/openapi.json`.
    fn openapi(&self) -> utoipa::openapi::OpenApi;
}

/// For a domain that only consumes and emits events.
pub struct NoRoutes;

impl DomainRoutes for NoRoutes {
    fn configure(&self, _: &mut ServiceConfig) {}

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        utoipa::openapi::OpenApiBuilder::new().build()
    }
}

/// Why a registry was refused or a domain it holds did not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `domains.enabled` names a domain that is not registered.
    #[error("domains.enabled: unknown domain {name:?} (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// Two registered domains have the same name, or one type is registered twice.
    #[error("two domains are registered as {0:?}")]
    Duplicate(&'static str),
    /// `domains.enabled` names a domain twice.
    #[error("domains.enabled: {0:?} is listed twice")]
    EnabledTwice(String),
    /// Two domains' event types have schemas of one name that differ (the catalogue would
    /// describe one of them wrongly).
    #[error("two different event schemas are both named {0:?}; rename one of the types")]
    SchemaConflict(String),
    /// A domain declares an output stream that is not a valid stream name, that it declares
    /// twice, or that another domain writes (each stream has one writer, whose relay
    /// orders it).
    #[error("domain {domain:?}: output stream {stream:?} {problem}")]
    Output {
        /// The domain declaring it.
        domain: &'static str,
        /// The stream.
        stream: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `[domains.<name>]` section names no registered domain.
    #[error("[domains.{name}]: no domain of that name is registered (known: {known})")]
    UnknownSection {
        /// The section's name.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// A domain's settings section does not configure it.
    #[error("[domains.{domain}]: {problem}")]
    Settings {
        /// The domain.
        domain: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A topic kind is malformed or published by two domains.
    #[error("domain {domain}: topic kind {kind:?}: {problem}")]
    TopicKind {
        /// The domain declaring it.
        domain: &'static str,
        /// The kind.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A domain did not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

type StartFuture<'a> = Pin<Box<dyn Future<Output = Result<Started, StartError>> + 'a>>;

/// One registered domain, its type erased.
trait Entry: Send + Sync {
    fn name(&self) -> &'static str;
    fn streams(&self) -> Vec<String>;
    fn routes(&self) -> &dyn DomainRoutes;
    fn events(&self) -> DomainEvents;
    fn domain_type(&self) -> std::any::TypeId;
    /// The real-time topics it publishes, if any.
    fn topic_source(&self) -> Option<TopicSource>;
    /// Whether `section` (`[domains.<name>]`, `None` when absent) configures this domain.
    fn check_section(&self, section: Option<&serde_json::Value>) -> Result<(), String>;
    fn start<'a>(&'a self, settings: &'a Settings, redis: &'a RedisClients) -> StartFuture<'a>;
}

struct Registered<D: Domain, R: DomainRoutes> {
    /// The domain; for a configurable one, as an empty section configures it (its name,
    /// streams and event types).
    domain: Arc<D>,
    routes: R,
    /// Builds a configurable domain from its section.
    configure: Option<Configure<D>>,
}

/// Builds a configurable domain from its settings section.
type Configure<D> = fn(&serde_json::Value) -> Result<D, String>;

impl<D: Domain, R: DomainRoutes> Registered<D, R> {
    /// The domain as `settings` configure it.
    fn configured(&self, settings: &Settings) -> Result<Arc<D>, String> {
        let section = settings.domains.sections.get(self.domain.name());
        self.check_section_of(section)?;
        match (self.configure, section) {
            (Some(configure), Some(section)) => configure(section).map(Arc::new),
            _ => Ok(self.domain.clone()),
        }
    }

    fn check_section_of(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        match (self.configure, section) {
            (Some(configure), Some(section)) => configure(section).map(|_| ()),
            (None, Some(section)) if !is_empty_table(section) => Err(
                "this domain takes no settings (it is not registered with serve_configured)"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }
}

/// `[domains.<name>]` with nothing in it.
fn is_empty_table(section: &serde_json::Value) -> bool {
    section.as_object().is_some_and(serde_json::Map::is_empty)
}

/// `D` as `section` configures it.
fn configure_from<D: Configurable>(section: &serde_json::Value) -> Result<D, String> {
    let parsed = settings::deserialize_section::<D::Settings>(section)?;
    D::from_settings(parsed)
}

impl<D: Domain, R: DomainRoutes> Entry for Registered<D, R>
where
    D::Event: utoipa::ToSchema,
    D::Output: utoipa::ToSchema,
{
    fn name(&self) -> &'static str {
        self.domain.name()
    }

    fn streams(&self) -> Vec<String> {
        self.domain
            .subscriptions()
            .into_iter()
            .map(|s| s.stream)
            .collect()
    }

    fn routes(&self) -> &dyn DomainRoutes {
        &self.routes
    }

    fn domain_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<D>()
    }

    fn topic_source(&self) -> Option<TopicSource> {
        TopicSource::of(self.domain.clone())
    }

    fn check_section(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        self.check_section_of(section)
    }

    fn events(&self) -> DomainEvents {
        DomainEvents {
            domain: self.domain.name(),
            inputs: self.streams(),
            outputs: crate::domain::output_streams(self.domain.as_ref()),
            input_schema: EnumSchema::of::<D::Event>(),
            output_schema: EnumSchema::of::<D::Output>(),
            output_homes: crate::domain::EventCatalogue::of::<D>()
                .map(|catalogue| catalogue.outputs)
                .unwrap_or_default()
                .iter()
                .filter_map(|event_type| {
                    let home = self.domain.output_stream_of(event_type)?;
                    Some((event_type.to_string(), home))
                })
                .collect(),
        }
    }

    fn start<'a>(&'a self, settings: &'a Settings, redis: &'a RedisClients) -> StartFuture<'a> {
        Box::pin(async move {
            let domain = self
                .configured(settings)
                .map_err(|problem| StartError::Settings {
                    domain: self.domain.name(),
                    problem,
                })?;
            let running = start_shared(domain, settings, redis).await?;
            Ok(Started {
                handle: Box::new(running.handle.clone()),
                stop: Box::new(running),
                streams: self.streams(),
            })
        })
    }
}

/// The domains a binary can run. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<Arc<dyn Entry>>,
}

impl Registry {
    /// No domains.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `domain` with its HTTP routes. Its event enums derive `utoipa::ToSchema`
    /// as well, for the event catalogue.
    pub fn serve<D: Domain>(mut self, domain: D, routes: impl DomainRoutes) -> Self
    where
        D::Event: utoipa::ToSchema,
        D::Output: utoipa::ToSchema,
    {
        self.entries.push(Arc::new(Registered {
            domain: Arc::new(domain),
            routes,
            configure: None,
        }));
        self
    }

    /// Registers a domain with a settings section, `[domains.<name>]`, and its HTTP routes
    /// (`NoRoutes` for none): it is built from its section when it starts.
    ///
    /// # Panics
    /// If an empty section does not configure it: every setting needs a default (see
    /// [`Configurable`]).
    pub fn serve_configured<D: Configurable>(mut self, routes: impl DomainRoutes) -> Self
    where
        D::Event: utoipa::ToSchema,
        D::Output: utoipa::ToSchema,
    {
        let empty = serde_json::Value::Object(serde_json::Map::new());
        let domain = configure_from::<D>(&empty).unwrap_or_else(|problem| {
            panic!(
                "{}: an empty settings section must configure the domain (give every setting a default): {problem}",
                std::any::type_name::<D>()
            )
        });
        self.entries.push(Arc::new(Registered {
            domain: Arc::new(domain),
            routes,
            configure: Some(configure_from::<D>),
        }));
        self
    }

    /// Registers `domain` without HTTP routes.
    pub fn domain<D: Domain>(self, domain: D) -> Self
    where
        D::Event: utoipa::ToSchema,
        D::Output: utoipa::ToSchema,
    {
        self.serve(domain, NoRoutes)
    }

    /// Where each topic kind comes from: one source per domain that publishes topics,
    /// whether this instance runs the domain or not (its clients may watch any).
    pub fn topic_sources(&self) -> Vec<TopicSource> {
        self.entries
            .iter()
            .filter_map(|e| e.topic_source())
            .collect()
    }

    fn check_topics(&self) -> Result<(), RegistryError> {
        let sources = self.topic_sources();
        for (i, source) in sources.iter().enumerate() {
            for kind in source.kinds() {
                let refuse = |problem: String| RegistryError::TopicKind {
                    domain: source.domain(),
                    kind,
                    problem,
                };
                crate::ws::topics::check_kind(kind).map_err(refuse)?;
                if let Some(other) = sources[..i].iter().find(|s| s.kinds().contains(kind)) {
                    return Err(refuse(format!("{} publishes it already", other.domain())));
                }
            }
        }
        Ok(())
    }

    /// The registered domains' names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name()).collect()
    }

    /// Checks that names and types are registered once, that their event schemas do not
    /// clash and their output streams have one writer, that `domains.enabled` names only
    /// registered domains, each once, and that every `[domains.<name>]` section belongs to a
    /// registered domain and configures it.
    pub fn check(&self, domains: &DomainsSettings) -> Result<(), RegistryError> {
        let enabled = &domains.enabled;
        let names = self.names();
        for (name, section) in &domains.sections {
            let Some(entry) = self.entries.iter().find(|e| e.name() == name) else {
                return Err(RegistryError::UnknownSection {
                    name: name.clone(),
                    known: names.join(", "),
                });
            };
            entry
                .check_section(Some(section))
                .map_err(|problem| RegistryError::Settings {
                    domain: entry.name(),
                    problem,
                })?;
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let earlier = &self.entries[..i];
            if earlier
                .iter()
                .any(|e| e.name() == entry.name() || e.domain_type() == entry.domain_type())
            {
                return Err(RegistryError::Duplicate(entry.name()));
            }
        }
        for (i, name) in enabled.iter().enumerate() {
            if enabled[..i].contains(name) {
                return Err(RegistryError::EnabledTwice(name.clone()));
            }
        }
        let events: Vec<DomainEvents> = self.entries.iter().map(|e| e.events()).collect();
        if let Some(name) = asyncapi::schema_conflict(&events) {
            return Err(RegistryError::SchemaConflict(name));
        }
        check_outputs(&events)?;
        self.check_topics()?;
        match enabled.iter().find(|e| !names.contains(&e.as_str())) {
            Some(name) => Err(RegistryError::Unknown {
                name: name.clone(),
                known: names.join(", "),
            }),
            None => Ok(()),
        }
    }

    /// Registers every domain's routes (enabled or not: a domain this instance does not run
    /// answers 503 `domain_not_enabled`, so the API is the same on every instance).
    pub fn configure(&self, cfg: &mut ServiceConfig) {
        for entry in &self.entries {
            entry.routes().configure(cfg);
        }
    }

    /// `base` with every domain's OpenAPI paths, schemas and tags merged in.
    pub fn openapi(&self, mut base: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
        for entry in &self.entries {
            base.merge(entry.routes().openapi());
        }
        base
    }

    /// The event catalogue of every registered domain (an AsyncAPI 3.0 document).
    pub fn asyncapi(&self) -> serde_json::Value {
        let domains: Vec<DomainEvents> = self.entries.iter().map(|e| e.events()).collect();
        asyncapi::document(&domains, &self.topic_sources(), env!("CARGO_PKG_VERSION"))
    }

    /// Starts the domains `settings.domains.enabled` names, in that order.
    pub async fn start(
        &self,
        settings: &Settings,
        redis: &RedisClients,
    ) -> Result<RunningDomains, RegistryError> {
        self.check(&settings.domains)?;
        let mut started = Vec::new();
        for name in &settings.domains.enabled {
            let Some(entry) = self.entries.iter().find(|e| e.name() == name) else {
                unreachable!("checked above");
            };
            match entry.start(settings, redis).await {
                Ok(s) => started.push(s),
                Err(e) => {
                    // Those already started would otherwise run on, headless.
                    for s in started {
                        s.stop.abort();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(RunningDomains::new(started))
    }
}

/// Every output stream has a valid name and one writer.
fn check_outputs(domains: &[DomainEvents]) -> Result<(), RegistryError> {
    let mut writers: Vec<(&str, &'static str)> = Vec::new();
    for d in domains {
        for stream in &d.outputs {
            let refuse = |problem: String| RegistryError::Output {
                domain: d.domain,
                stream: stream.clone(),
                problem,
            };
            crate::domain::validate_key(stream, MAX_STREAM_NAME_BYTES)
                .map_err(|e| refuse(e.to_string()))?;
            if stream.ends_with(".dlq") || stream.starts_with("troupe:") {
                return Err(refuse(
                    "collides with the runtime's own keys (dead-letter streams end in .dlq, markers start with troupe:)"
                        .to_owned(),
                ));
            }
            if d.inputs.contains(stream) {
                return Err(refuse(
                    "is also an input of this domain: it would consume what it publishes"
                        .to_owned(),
                ));
            }
            match writers.iter().find(|(s, _)| s == stream) {
                Some((_, writer)) if *writer == d.domain => {
                    return Err(refuse("is declared twice".to_owned()));
                }
                Some((_, writer)) => {
                    return Err(refuse(format!("is written by domain {writer:?} already")));
                }
                None => writers.push((stream, d.domain)),
            }
        }
    }
    Ok(())
}

/// Longer stream names would make every Redis key and metric label of theirs unwieldy.
const MAX_STREAM_NAME_BYTES: usize = 200;

/// A running domain's handle, its type erased.
trait AnyHandle: Send + Sync {
    fn name(&self) -> &'static str;
    fn status(&self) -> Result<(), String>;
    fn readiness(&self) -> Result<(), String>;
    fn as_any(&self) -> &dyn Any;
}

impl<D: Domain> AnyHandle for DomainHandle<D> {
    fn name(&self) -> &'static str {
        DomainHandle::name(self)
    }

    fn status(&self) -> Result<(), String> {
        DomainHandle::status(self).map_err(|e| e.to_string())
    }

    fn readiness(&self) -> Result<(), String> {
        DomainHandle::readiness(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What stops a running domain, its type erased.
trait Stop: Send {
    fn abort(self: Box<Self>);
    fn shutdown(self: Box<Self>, grace: Duration) -> Pin<Box<dyn Future<Output = ()>>>;
}

impl<D: Domain> Stop for RunningDomain<D> {
    fn abort(self: Box<Self>) {
        RunningDomain::abort(*self);
    }

    fn shutdown(self: Box<Self>, grace: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(RunningDomain::shutdown(*self, grace))
    }
}

struct Started {
    handle: Box<dyn AnyHandle>,
    stop: Box<dyn Stop>,
    streams: Vec<String>,
}

/// The domains this instance runs, held by name, as the HTTP layer and shutdown see them.
pub struct RunningDomains {
    handles: Vec<Box<dyn AnyHandle>>,
    streams: Vec<String>,
    running: Mutex<Vec<Box<dyn Stop>>>,
}

impl RunningDomains {
    fn new(started: Vec<Started>) -> Self {
        let mut handles = Vec::with_capacity(started.len());
        let mut streams = Vec::new();
        let mut running = Vec::with_capacity(started.len());
        for s in started {
            handles.push(s.handle);
            streams.extend(s.streams);
            running.push(s.stop);
        }
        Self {
            handles,
            streams,
            running: Mutex::new(running),
        }
    }

    /// The typed handle on domain `D`, if this instance runs it.
    pub fn handle<D: Domain>(&self) -> Option<&DomainHandle<D>> {
        self.handles
            .iter()
            .find_map(|h| h.as_any().downcast_ref::<DomainHandle<D>>())
    }

    /// The names of the running domains, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.handles.iter().map(|h| h.name()).collect()
    }

    /// Logical names of every stream the running domains consume.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// Liveness of each running domain: `Err` once it failed for good.
    pub fn statuses(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.handles
            .iter()
            .map(|h| (h.name(), h.status()))
            .collect()
    }

    /// Readiness of each running domain: `Err` while it has failed or is stalled.
    pub fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.handles
            .iter()
            .map(|h| (h.name(), h.readiness()))
            .collect()
    }

    /// Stops every domain at once (tests; a crash is equivalent).
    pub fn abort(&self) {
        for stop in self.take() {
            stop.abort();
        }
    }

    /// Stops every domain, all at once, each within `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        futures_util::future::join_all(self.take().into_iter().map(|s| s.shutdown(grace))).await;
    }

    fn take(&self) -> Vec<Box<dyn Stop>> {
        // A poisoned lock only means a panic elsewhere while taking; what is left is still ours.
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *running)
    }
}
