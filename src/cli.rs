//! The command line: `troupe [serve|migrate|check-config]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Troupe: supervised actors per domain on Redis Streams, state in Postgres.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about)]
pub struct Cli {
    /// Directory holding default.toml and the $TROUPE_ENV.toml files.
    #[arg(
        long,
        env = "TROUPE_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    pub config_dir: PathBuf,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve HTTP and run the enabled domains (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["troupe"]).unwrap();
        assert_eq!(cli.command, None);
        let cli = Cli::try_parse_from(["troupe", "check-config", "--config-dir", "x"]).unwrap();
        assert_eq!(cli.command, Some(Command::CheckConfig));
        assert_eq!(cli.config_dir, PathBuf::from("x"));
    }
}
