//! Fault injection: abort the process at a named boundary so tests (ours and users') can crash
//! at every step. Off unless `faults.crash_at` is set; see `docs/architecture.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::settings::{CrashPoint, FaultSettings};

/// Checks boundaries against the configured crash point. Cheap to clone and to call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    armed: Option<(CrashPoint, u64)>,
    hits: Arc<AtomicU64>,
    command_reply_delay: Option<Duration>,
    block_handler: Option<(String, Duration)>,
    blocked: Arc<AtomicBool>,
}

impl Faults {
    /// From the settings.
    pub fn new(settings: &FaultSettings) -> Self {
        Self {
            armed: settings.crash_at.map(|p| (p, settings.crash_after.max(1))),
            hits: Arc::default(),
            command_reply_delay: (settings.delay_command_reply_ms > 0)
                .then(|| Duration::from_millis(settings.delay_command_reply_ms)),
            block_handler: settings
                .block_handler_key
                .clone()
                .map(|key| (key, Duration::from_millis(settings.block_handler_ms))),
            blocked: Arc::default(),
        }
    }

    /// Called on a partition's thread before a handler runs for `key`: blocks the thread
    /// (deliberately, like a handler stuck in a blocking call) the first time `key` is
    /// `faults.block_handler_key`.
    pub fn entering_handler(&self, key: &str) {
        if let Some((blocked_key, duration)) = &self.block_handler
            && blocked_key == key
            && !self.blocked.swap(true, Ordering::SeqCst)
        {
            tracing::warn!(
                key,
                block_ms = duration.as_millis() as u64,
                "fault injection: blocking a handler"
            );
            std::thread::sleep(*duration);
        }
    }

    /// Called after a command committed, before its reply is sent: waits
    /// `faults.delay_command_reply_ms`, as a reply delayed or lost after the commit would.
    pub async fn command_committed(&self) {
        if let Some(delay) = self.command_reply_delay {
            tracing::warn!(
                delay_ms = delay.as_millis() as u64,
                "fault injection: holding a committed command's reply"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Called at `point`; aborts the process (no unwinding, no destructors, like `kill -9`) on
    /// the configured hit of the configured point.
    pub fn reached(&self, point: CrashPoint) {
        let Some((armed, after)) = self.armed else {
            return;
        };
        if armed == point && self.hits.fetch_add(1, Ordering::SeqCst) + 1 == after {
            eprintln!("troupe: fault injection: aborting at {point:?}");
            std::process::abort();
        }
    }
}
