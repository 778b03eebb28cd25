//! The `troupe` binary: parse the command line, load the settings (exit 2 if they are bad),
//! install telemetry, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use troupe::cli::{Cli, Command};
use troupe::settings::Settings;
use troupe::startup::Application;

// Batches are allocated on one thread and freed on the partitions' threads; glibc's allocator
// spent ~40% of the process's CPU on that in the drain benchmark (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = troupe::shop::registry();
    let settings = match Settings::load(&cli.config_dir) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("troupe: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = registry.check(&settings.domains) {
        eprintln!("troupe: configuration error: {e}");
        return ExitCode::from(2);
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!("configuration OK\n{}", settings.redacted_summary());
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            troupe::telemetry::init_tracing(&settings.telemetry);
            report(actix_web::rt::System::new().block_on(async {
                let applied = troupe::store::migrations::run(&settings.database.url).await?;
                tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
                anyhow::Ok(())
            }))
        }
        Command::Serve => {
            troupe::telemetry::init_tracing(&settings.telemetry);
            report(actix_web::rt::System::new().block_on(async {
                Application::build(settings, registry)
                    .await?
                    .run_until_stopped()
                    .await?;
                anyhow::Ok(())
            }))
        }
    }
}

fn report(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "troupe failed");
            eprintln!("troupe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
