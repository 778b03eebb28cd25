//! Restart policy: exponential backoff with jitter per child, and a restart-intensity limit per
//! domain beyond which the domain is declared failed instead of restarting forever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Exponential backoff with "equal jitter": each delay is half the exponential step plus a
/// random part of the other half, so restarts of many children spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles per attempt, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next restart.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt.min(31)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the initial delay, after the child made progress.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counts restarts in a sliding window.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    window: Duration,
    max: u32,
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Allows `max` restarts per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            window,
            max,
            times: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false if it exceeds the allowed intensity.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() <= self.max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let second = b.next_delay();
        assert!(
            second >= Duration::from_millis(100) && second <= Duration::from_millis(200),
            "{second:?}"
        );
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn intensity_limit_trips_within_the_window_only() {
        let mut w = RestartWindow::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(w.allow(t0));
        assert!(w.allow(t0 + Duration::from_secs(1)));
        assert!(!w.allow(t0 + Duration::from_secs(2)));
        assert!(w.allow(t0 + Duration::from_secs(30)));
    }
}
