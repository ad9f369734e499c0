//! Time, read in one place. Every rule with a duration — session age, login windows, the
//! session cache, outbox backoff, idempotency keys' lifetime, refund recovery — asks the
//! [`Clock`] the [`crate::OrderSystem`] was built with: the [`SystemClock`] by default, a
//! [`ManualClock`] in tests, which move time forward by [`ManualClock::advance`] instead of
//! sleeping.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The wall-clock time, to the microsecond (the precision every backend stores).
    fn now(&self) -> DateTime<Utc>;

    /// Time since a fixed point of this clock's choosing; never goes back, whatever the wall
    /// clock does. Durations kept only in memory are measured with it.
    fn ticks(&self) -> Duration;
}

/// A shared clock.
pub type DynClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> DynClock {
        Arc::new(SystemClock::default())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { origin: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(Utc::now())
    }

    fn ticks(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that stands still until moved: [`ManualClock::advance`] moves both its wall time
/// and its ticks.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(DateTime<Utc>, Duration)>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn at(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock { state: Mutex::new((to_micros(start), Duration::ZERO)) })
    }

    /// A clock standing at the system's time now.
    pub fn starting_now() -> Arc<ManualClock> {
        ManualClock::at(Utc::now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut state = crate::util::lock(&self.state);
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        state.0 = state.0.checked_add_signed(step).unwrap_or(DateTime::<Utc>::MAX_UTC);
        state.1 = state.1.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        crate::util::lock(&self.state).0
    }

    fn ticks(&self) -> Duration {
        crate::util::lock(&self.state).1
    }
}

/// `t` to the microsecond.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::starting_now();
        let (t0, k0) = (clock.now(), clock.ticks());
        assert_eq!((clock.now(), clock.ticks()), (t0, k0));
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, chrono::Duration::seconds(90));
        assert_eq!(clock.ticks() - k0, Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_keeps_microseconds() {
        let now = SystemClock::default().now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0);
    }
}
