//! Failed logins per username, from any address: after `limit` failures within the window, the
//! username is refused (without hashing anything) until the oldest failure leaves the window.
//!
//! Kept in process memory: each `som serve` process counts on its own, so with several
//! processes an attacker gets at most `limit` guesses per window per process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Usernames tracked at most; beyond this, expired entries are pruned first and new usernames
/// are then tracked only as room frees up.
const MAX_TRACKED: usize = 20_000;

/// Recent failed logins, per username.
#[derive(Debug)]
pub struct LoginFailures {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginFailures {
    /// Refuses a username after `limit` failures within `window`; `limit` 0 never refuses.
    pub fn new(limit: u32, window: Duration) -> Self {
        LoginFailures { limit, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err` with the time until the username may try again when it has used up its failures.
    pub fn check(&self, username: &str) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(times) = failures.get_mut(username) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= self.limit as usize => {
                Err(self.window.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login for `username`.
    pub fn record_failure(&self, username: &str) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED && !failures.contains_key(username) {
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let times = failures.entry(username.to_owned()).or_default();
        times.push_back(now);
        while times.len() > self.limit as usize {
            times.pop_front();
        }
    }

    /// Forgets the failures of `username` after a successful login.
    pub fn record_success(&self, username: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_refused_after_its_failures_until_the_window_passes() {
        let failures = LoginFailures::new(3, Duration::from_millis(300));
        for _ in 0..3 {
            assert!(failures.check("alice").is_ok());
            failures.record_failure("alice");
        }
        let wait = failures.check("alice").unwrap_err();
        assert!(wait >= Duration::from_secs(1), "Retry-After is at least a second");
        assert!(failures.check("bob").is_ok(), "other usernames are unaffected");
        std::thread::sleep(Duration::from_millis(350));
        assert!(failures.check("alice").is_ok(), "the window passed");
        failures.record_failure("alice");
        failures.record_success("alice");
        assert!(failures.check("alice").is_ok());
        assert!(LoginFailures::new(0, Duration::from_secs(1)).check("x").is_ok());
    }
}
