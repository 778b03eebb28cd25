//! Logs and metrics: the `tracing` subscriber, the Prometheus recorder, and the runtime events
//! that write both.

pub mod events;
pub mod metrics;

/// Log output captured in tests, to check what a log line says.
#[cfg(test)]
pub(crate) mod captured_logs {
    use std::sync::{Arc, Mutex};

    /// A `tracing_subscriber` writer keeping everything written to it.
    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, TelemetrySettings};

/// Installs the global `tracing` subscriber: JSON lines or human-readable output, filtered by
/// `telemetry.log_filter` (or `RUST_LOG` when set). Returns false if a subscriber was already
/// installed (tests start many applications in one process).
pub fn init_tracing(settings: &TelemetrySettings) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
            .is_ok(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .try_init()
            .is_ok(),
    }
}

/// `outer: inner: innermost`, for logging an error with its causes on one line. A cause whose
/// text its error already ends with (`"query failed: {0}"` with the cause as its source) is
/// not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("inner failed")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("outer failed")]
        Plain(#[source] Inner),
        #[error("outer failed: {0}")]
        Repeating(#[source] Inner),
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        assert_eq!(
            error_chain(&Outer::Plain(Inner)),
            "outer failed: inner failed"
        );
        assert_eq!(
            error_chain(&Outer::Repeating(Inner)),
            "outer failed: inner failed"
        );
    }
}
