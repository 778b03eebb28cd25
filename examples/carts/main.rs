//! The guide's example (docs/guide.md): the shop with one more domain, `carts`.
//!
//! `TROUPE__DOMAINS__ENABLED=inventory,carts cargo run --example carts` serves it like
//! `troupe serve` (same settings, same config directory).

mod domain;
mod http;

use anyhow::Context as _;
use troupe::settings::Settings;
use troupe::startup::Application;

fn main() -> anyhow::Result<()> {
    let settings = Settings::load(std::path::Path::new("config")).context("settings")?;
    troupe::telemetry::init_tracing(&settings.telemetry);
    // The one line that adds the domain (in the shop itself it goes in `src/shop.rs`).
    let registry = troupe::shop::registry().serve(domain::Carts, http::Routes);
    actix_web::rt::System::new().block_on(async {
        Application::build(settings, registry)
            .await?
            .run_until_stopped()
            .await?;
        anyhow::Ok(())
    })
}
