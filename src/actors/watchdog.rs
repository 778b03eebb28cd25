//! The progress watchdog: a domain that has input waiting and makes no progress for
//! `runtime.stall_timeout_seconds` is reported *stalled* — readiness answers 503 naming the
//! domain, the key each partition is handling and for how long; `troupe_domain_stalled` is 1;
//! a log line says the same once, and another when it recovers.
//!
//! Progress is tracked per input stream: a batch that settled input (committed, acknowledged as
//! duplicate, dead-lettered) or a read that found nothing new (the stream is caught up). The
//! domain is stalled when any of its streams is, so an idle stream cannot hide a stuck one. A handler that blocks its
//! partition's thread, an entry retried forever, or a commit that never returns all stop it.
//! The watchdog itself runs on the domain's home thread (supervisor, processor, readers), not
//! a partition's, so a handler blocking its partition's thread cannot silence it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::telemetry::events::RuntimeEvent;

/// What the watchdog watches, shared by the reader, the processor, the partitions and the
/// readiness check.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// Per input stream (logical name): milliseconds after `epoch` of its last progress.
    last_progress_ms: Vec<(String, AtomicU64)>,
    /// Per partition: the key whose input is in its handler, and since when.
    handling: Vec<Mutex<Option<(String, Instant)>>>,
    /// Why the domain is stalled, while it is.
    stalled: Mutex<Option<String>>,
}

impl Progress {
    /// Progress of a domain with `partitions` partitions reading `streams`, as of now.
    pub fn new(partitions: usize, streams: &[String]) -> Self {
        Self {
            epoch: Instant::now(),
            last_progress_ms: streams
                .iter()
                .map(|s| (s.clone(), AtomicU64::new(0)))
                .collect(),
            handling: (0..partitions).map(|_| Mutex::new(None)).collect(),
            stalled: Mutex::new(None),
        }
    }

    /// Input of `stream` was settled, or the stream has nothing waiting.
    pub fn progressed(&self, stream: &str) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        if let Some((_, last)) = self.last_progress_ms.iter().find(|(s, _)| s == stream) {
            last.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Every stream has progressed now (the domain starts).
    pub fn all_progressed(&self) {
        for (stream, _) in &self.last_progress_ms {
            self.progressed(stream);
        }
    }

    /// Partition `partition` is about to run a handler for `key`.
    pub fn handling(&self, partition: usize, key: &str) {
        if let Some(Ok(mut slot)) = self.handling.get(partition).map(Mutex::lock) {
            *slot = Some((key.to_owned(), Instant::now()));
        }
    }

    /// Partition `partition` is out of its handlers.
    pub fn handled(&self, partition: usize) {
        if let Some(Ok(mut slot)) = self.handling.get(partition).map(Mutex::lock) {
            *slot = None;
        }
    }

    /// Why the domain is stalled, if it is (as of the last [`Self::watch`]).
    pub fn stalled(&self) -> Option<String> {
        self.stalled.lock().ok().and_then(|s| s.clone())
    }

    /// One watchdog step: compares the time since the last progress with `timeout`, records
    /// the verdict for readiness and the metric, and logs when it changes.
    pub fn watch(&self, domain: &'static str, timeout: Duration) {
        let now = self.epoch.elapsed();
        let stalest = self
            .last_progress_ms
            .iter()
            .map(|(stream, last)| (stream.as_str(), last.load(Ordering::Relaxed)))
            .min_by_key(|(_, last)| *last);
        let Some((stream, last)) = stalest else {
            return;
        };
        let idle = now.saturating_sub(Duration::from_millis(last));
        let verdict = (idle >= timeout).then(|| self.reason(stream, idle));
        let Ok(mut stalled) = self.stalled.lock() else {
            return;
        };
        match (&*stalled, &verdict) {
            (None, Some(reason)) => RuntimeEvent::Stalled {
                domain,
                reason,
                keys: &self.keys_in_handlers(),
                idle,
            }
            .record(),
            (Some(_), None) => RuntimeEvent::StallEnded { domain }.record(),
            _ => {}
        }
        *stalled = verdict;
    }

    fn keys_in_handlers(&self) -> Vec<(String, u64)> {
        self.handling
            .iter()
            .filter_map(|slot| slot.lock().ok().and_then(|s| s.clone()))
            .map(|(key, since)| (key, since.elapsed().as_secs()))
            .collect()
    }

    fn reason(&self, stream: &str, idle: Duration) -> String {
        let keys = self.keys_in_handlers();
        let mut reason = format!("stalled: no progress on {stream} for {} s", idle.as_secs());
        for (key, secs) in keys {
            // Keys are validated (printable, bounded), so they can go into the message as is.
            reason.push_str(&format!(
                "; a handler has been running on key {key:?} for {secs} s"
            ));
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_progress_for_the_timeout_is_a_stall_naming_the_key_in_the_handler() {
        let p = Progress::new(2, &["a".into(), "b".into()]);
        p.all_progressed();
        p.watch("d", Duration::from_secs(60));
        assert_eq!(p.stalled(), None);
        p.handling(1, "SKU-7");
        p.watch("d", Duration::ZERO);
        let reason = p.stalled().unwrap();
        assert!(reason.contains("\"SKU-7\""), "{reason}");
        p.handled(1);
        p.all_progressed();
        p.watch("d", Duration::from_secs(60));
        assert_eq!(p.stalled(), None);
    }

    #[test]
    fn an_idle_stream_does_not_hide_a_stuck_one() {
        let p = Progress::new(1, &["busy".into(), "idle".into()]);
        std::thread::sleep(Duration::from_millis(30));
        p.progressed("idle");
        p.watch("d", Duration::from_millis(20));
        let reason = p.stalled().unwrap();
        assert!(reason.contains("busy"), "{reason}");
    }
}
