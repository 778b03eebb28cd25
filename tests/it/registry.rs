//! The registry: a domain registered with one line gets its routes, its OpenAPI paths, its
//! metrics and its readiness, and handlers reach it through its typed handle.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use troupe::domain::{Configurable, Context, Domain, DomainError, NoEvents, Subscription};
use troupe::http::{ApiError, AppState};
use troupe::registry::{DomainRoutes, Registry, RegistryError};
use troupe::settings::DomainsSettings;
use troupe::startup::{Application, StartupError};
use utoipa::OpenApi;

use crate::helpers::{AppOptions, Isolation, eventually, spawn_app_with};

/// Counts what it is told to add, per key, up to its configured `max_total`.
struct Counter {
    max_total: i64,
}

/// `[domains.counter]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterSettings {
    #[serde(default = "unlimited")]
    max_total: i64,
}

fn unlimited() -> i64 {
    i64::MAX
}

impl Configurable for Counter {
    type Settings = CounterSettings;

    fn from_settings(settings: CounterSettings) -> Result<Self, String> {
        if settings.max_total <= 0 {
            return Err(format!(
                "max_total must be positive, not {}",
                settings.max_total
            ));
        }
        Ok(Counter {
            max_total: settings.max_total,
        })
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Count {
    total: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
enum CounterEvent {
    #[serde(rename = "counter.added")]
    Added { n: i64 },
}

impl Domain for Counter {
    type State = Count;
    type Event = CounterEvent;
    type Output = NoEvents;
    type Timer = NoEvents;
    type Command = std::convert::Infallible;
    type Reply = ();

    fn name(&self) -> &'static str {
        "counter"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new("counter.adds")]
    }

    fn handle(
        &self,
        state: &mut Count,
        event: CounterEvent,
        _: &mut Context<NoEvents>,
    ) -> Result<(), DomainError> {
        let CounterEvent::Added { n } = event;
        state.total = state
            .total
            .checked_add(n)
            .filter(|total| *total <= self.max_total)
            .ok_or_else(|| {
                DomainError::Invalid(format!("total would exceed {}", self.max_total))
            })?;
        Ok(())
    }
}

/// The counter's HTTP face.
struct CounterRoutes;

impl DomainRoutes for CounterRoutes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.service(get_count);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        CounterApi::openapi()
    }
}

#[derive(OpenApi)]
#[openapi(paths(get_count), tags((name = "counter", description = "Counts")))]
struct CounterApi;

/// `GET /api/v1/counters/{key}`.
#[utoipa::path(
    get,
    path = "/api/v1/counters/{key}",
    tag = "counter",
    params(("key" = String, Path, description = "The counter")),
    responses((status = 200, description = "The total"), (status = 404, description = "Never added to"))
)]
#[get("/api/v1/counters/{key}")]
async fn get_count(
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    match troupe::http::domain::<Counter>(&state)?.get(&key).await? {
        Some(e) => Ok(HttpResponse::Ok()
            .json(serde_json::json!({"total": e.state.total, "version": e.version}))),
        None => Err(ApiError::NotFound {
            what: "counter",
            id: key,
        }),
    }
}

fn with_counter() -> Registry {
    troupe::shop::registry().serve_configured::<Counter>(CounterRoutes)
}

#[actix_web::test]
async fn a_domain_registered_with_one_line_gets_routes_openapi_metrics_and_readiness() {
    let app = spawn_app_with(AppOptions {
        registry: Some(with_counter()),
        configure: Some(|s| s.domains.enabled = vec!["inventory".into(), "counter".into()]),
        ..Default::default()
    })
    .await;
    for (i, n) in [3, 4, 5].into_iter().enumerate() {
        app.xadd(
            "counter.adds",
            &[
                ("id", &format!("add-{i}")),
                ("type", "counter.added"),
                ("key", "c1"),
                ("data", &format!(r#"{{"n":{n}}}"#)),
            ],
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "the counter's route serves its state",
        || async {
            let response = app.get("/api/v1/counters/c1").await;
            response.status() == 200
                && response.json::<Value>().await.unwrap()
                    == serde_json::json!({"total": 12, "version": 3})
        },
    )
    .await;
    assert_eq!(app.get("/api/v1/counters/nobody").await.status(), 404);

    let doc: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/api/v1/counters/{key}"]["get"].is_object(),
        "{doc}"
    );
    assert!(
        doc["paths"]["/api/v1/inventory/{sku}"]["get"].is_object(),
        "{doc}"
    );
    assert!(doc["paths"]["/health/ready"]["get"].is_object(), "{doc}");
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        tags.contains(&"counter") && tags.contains(&"inventory"),
        "{tags:?}"
    );

    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["domains"]["counter"]["ok"], true, "{ready}");
    assert_eq!(
        ready["checks"]["domains"]["inventory"]["ok"], true,
        "{ready}"
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("troupe_events_total{") && l.contains(r#"domain="counter""#)),
        "{metrics}"
    );
    // Its stream is one the dead-letter API knows.
    assert_eq!(
        app.get("/admin/dead-letters/counter.adds").await.status(),
        200
    );
}

#[actix_web::test]
async fn a_registered_domain_this_instance_does_not_run_answers_503() {
    let app = spawn_app_with(AppOptions {
        registry: Some(with_counter()),
        ..Default::default()
    })
    .await;
    let response = app.get("/api/v1/counters/c1").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "domain_not_enabled", "{body}");
    let doc: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/counters/{key}"].is_object());
}

#[actix_web::test]
async fn unknown_and_twice_registered_names_are_refused() {
    let mut iso = Isolation::new().await;
    iso.settings.domains.enabled = vec!["inventory".into(), "counter".into()];
    let refused = Application::build(iso.settings.clone(), troupe::shop::registry()).await;
    match refused {
        Err(StartupError::Domains(RegistryError::Unknown { name, known })) => {
            assert_eq!(name, "counter");
            assert_eq!(known, troupe::shop::registry().names().join(", "));
            assert!(known.starts_with("inventory, customers"), "{known}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("an unknown domain started"),
    }
    let twice = with_counter().serve_configured::<Counter>(CounterRoutes);
    assert!(matches!(
        twice.check(&DomainsSettings::enabling(&["inventory"])),
        Err(RegistryError::Duplicate("counter"))
    ));
    // A domain listed twice would run twice, in one consumer group under one consumer name.
    assert!(matches!(
        with_counter().check(&DomainsSettings::enabling(&["counter", "inventory", "counter"])),
        Err(RegistryError::EnabledTwice(name)) if name == "counter"
    ));
}

#[actix_web::test]
async fn a_domain_is_configured_by_its_own_settings_section() {
    let app = spawn_app_with(AppOptions {
        registry: Some(with_counter()),
        configure: Some(|s| {
            s.domains.enabled = vec!["counter".into()];
            s.domains
                .sections
                .insert("counter".into(), serde_json::json!({"max_total": 10}));
        }),
        ..Default::default()
    })
    .await;
    for (i, n) in [3, 4, 5, 2].into_iter().enumerate() {
        app.xadd(
            "counter.adds",
            &[
                ("id", &format!("add-{i}")),
                ("type", "counter.added"),
                ("key", "c1"),
                ("data", &format!(r#"{{"n":{n}}}"#)),
            ],
        )
        .await;
    }
    // 3 + 4 = 7; 5 would make 12 > 10 and is refused; 2 makes 9.
    eventually(
        Duration::from_secs(20),
        "the configured limit holds",
        || async {
            let response = app.get("/api/v1/counters/c1").await;
            response.status() == 200
                && response.json::<Value>().await.unwrap()
                    == serde_json::json!({"total": 9, "version": 3})
        },
    )
    .await;
    assert_eq!(
        app.dead_letter_field("counter.adds.dlq", "reason").await,
        ["invalid"]
    );
}

#[test]
fn settings_sections_that_do_not_configure_their_domain_are_refused() {
    let with = |name: &str, section: Value| {
        let mut domains = DomainsSettings::enabling(&["inventory", "counter"]);
        domains.sections.insert(name.into(), section);
        with_counter().check(&domains)
    };
    assert!(with("counter", serde_json::json!({"max_total": 5})).is_ok());
    assert!(
        with("counter", serde_json::json!({"max_total": "5"})).is_ok(),
        "as the environment gives it: text, converted where a number is wanted"
    );
    assert!(
        with("counter", serde_json::json!({})).is_ok(),
        "all defaults"
    );
    for (name, section, expected) in [
        (
            "countr",
            serde_json::json!({"max_total": 5}),
            "no domain of that name",
        ),
        (
            "counter",
            serde_json::json!({"max_total": 0}),
            "must be positive",
        ),
        (
            "counter",
            serde_json::json!({"max_totl": 5}),
            "unknown field",
        ),
        (
            "counter",
            serde_json::json!({"max_total": "ten"}),
            "invalid type",
        ),
        (
            "customers",
            serde_json::json!({"anything": 1}),
            "takes no settings",
        ),
        (
            "inventory",
            serde_json::json!({"publish_stock_level": false}),
            "unknown field",
        ),
    ] {
        match with(name, section.clone()) {
            Err(e) => assert!(
                e.to_string().contains(expected) && e.to_string().contains(name),
                "[domains.{name}] {section}: {e}"
            ),
            Ok(()) => panic!("[domains.{name}] {section} was accepted"),
        }
    }
}
