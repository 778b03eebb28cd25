//! Fault injection: abort the process at a named boundary so tests (ours and users') can crash
//! at every step. Off unless `faults.crash_at` is set; see `docs/architecture.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::settings::{CrashPoint, FaultSettings};

/// Checks boundaries against the configured crash point. Cheap to clone and to call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    armed: Option<(CrashPoint, u64)>,
    hits: Arc<AtomicU64>,
}

impl Faults {
    /// From the settings.
    pub fn new(settings: &FaultSettings) -> Self {
        Self {
            armed: settings.crash_at.map(|p| (p, settings.crash_after.max(1))),
            hits: Arc::default(),
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
