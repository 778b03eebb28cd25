//! Keys whose stored state cannot be loaded (a row that no longer decodes into the domain's
//! state: edited by hand, written by an incompatible version). Such a key is kept out of memory
//! and its inputs are dead-lettered (`unloadable_state`) and its commands refused, so that one
//! broken row never stops the domain or blocks other keys. The processor tries to load the
//! quarantined keys again now and then; once an operator has repaired the row, the key is back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::telemetry::events::RuntimeEvent;

/// Dead-letter reason of an input whose entity is quarantined.
pub const UNLOADABLE_STATE: &str = "unloadable_state";

/// The quarantined keys of one domain, with why each failed to load.
#[derive(Debug, Default)]
pub struct Quarantine {
    keys: Mutex<HashMap<String, String>>,
    /// Whether any key is quarantined: the check every input makes costs one load while none is.
    any: AtomicBool,
}

impl Quarantine {
    /// Quarantines `key`; logs it the first time.
    pub fn add(&self, domain: &'static str, key: &str, reason: String) {
        if let Ok(mut keys) = self.keys.lock()
            && keys.insert(key.to_owned(), reason.clone()).is_none()
        {
            self.any.store(true, Ordering::Release);
            RuntimeEvent::Quarantined {
                domain,
                key,
                error: &reason,
            }
            .record();
        }
    }

    /// Why `key` is quarantined, if it is.
    pub fn reason(&self, key: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.keys.lock().ok()?.get(key).cloned()
    }

    /// The quarantined keys.
    pub fn keys(&self) -> Vec<String> {
        self.keys
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes `key` out of quarantine (its state loads again).
    pub fn release(&self, domain: &'static str, key: &str) {
        if let Ok(mut keys) = self.keys.lock()
            && keys.remove(key).is_some()
        {
            self.any.store(!keys.is_empty(), Ordering::Release);
            RuntimeEvent::Released { domain, key }.record();
        }
    }
}
