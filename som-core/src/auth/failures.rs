//! Failed logins per username, from any address: after `limit` failures within the window, the
//! username is refused (without hashing anything) until the oldest failure leaves the window.
//!
//! An attempt takes its slot *before* the password is hashed ([`LoginFailures::begin`]): the
//! attempts still being checked count against the limit as if they had failed, so parallel
//! guesses cannot get more than `limit` passwords checked in one window. A slot becomes a
//! recorded failure ([`Attempt::failed`]), is cleared with every failure by a success
//! ([`Attempt::succeeded`]), or is given back when the attempt ends otherwise (dropped: the
//! database was unavailable, the caller went away).
//!
//! Entries are keyed by a keyed 64-bit digest of the username (never the name itself), names
//! longer than any username can be are never tracked, and the table holds at most
//! [`MAX_TRACKED`] usernames, so its memory is bounded whatever is sent.
//!
//! Kept in process memory: each `som serve` process counts on its own, so with several
//! processes an attacker gets at most `limit` guesses per window per process.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::DynClock;
use crate::domain::Username;
use crate::util::lock;

/// Usernames tracked at most (about 200 bytes each with the default limit); beyond this,
/// expired entries are pruned first, and a new username is then let through untracked (with a
/// warning) until room frees up. Refusing it instead would let anyone who fills the table
/// lock every other account out.
pub const MAX_TRACKED: usize = 100_000;

/// Recent failed logins, per username.
#[derive(Debug)]
pub struct LoginFailures {
    limit: u32,
    window: Duration,
    keys: RandomState,
    clock: DynClock,
    table: Table,
}

/// Entries by username digest, shared with the attempts that hold slots in them.
type Table = Arc<Mutex<HashMap<u64, Entry>>>;

#[derive(Debug, Default)]
struct Entry {
    /// When each failure happened, in the clock's ticks.
    failures: VecDeque<Duration>,
    in_flight: u32,
}

impl Entry {
    fn prune(&mut self, now: Duration, window: Duration) {
        while self.failures.front().is_some_and(|t| now.saturating_sub(*t) >= window) {
            self.failures.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.failures.is_empty() && self.in_flight == 0
    }
}

/// A login attempt holding its slot while its password is checked.
#[derive(Debug)]
#[must_use = "an attempt gives its slot back when dropped; record its outcome"]
pub struct Attempt {
    slot: Option<Slot>,
}

/// An attempt's place: its table, its username's digest, the limit and the clock.
#[derive(Debug)]
struct Slot {
    table: Table,
    key: u64,
    limit: u32,
    clock: DynClock,
}

impl LoginFailures {
    /// Refuses a username after `limit` failures within `window` as `clock` measures it;
    /// `limit` 0 never refuses.
    pub fn new(limit: u32, window: Duration, clock: DynClock) -> Self {
        LoginFailures { limit, window, keys: RandomState::new(), clock, table: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Takes a slot for an attempt at `username`, or `Err` with the time until the username may
    /// try again when its failures and the attempts still running reach the limit.
    pub fn begin(&self, username: &str) -> Result<Attempt, Duration> {
        if self.limit == 0 || !could_be_username(username) {
            // No such account can exist: nothing to guess, nothing worth remembering.
            return Ok(Attempt { slot: None });
        }
        let key = self.keys.hash_one(username);
        let now = self.clock.ticks();
        let mut table = lock(&self.table);
        if table.len() >= MAX_TRACKED && !table.contains_key(&key) {
            let window = self.window;
            table.retain(|_, e| {
                e.prune(now, window);
                !e.is_idle()
            });
            if table.len() >= MAX_TRACKED {
                tracing::warn!(tracked = MAX_TRACKED, "failed-login table full; a new username is not tracked");
                return Ok(Attempt { slot: None });
            }
        }
        let entry = table.entry(key).or_default();
        entry.prune(now, self.window);
        let taken = entry.failures.len() + entry.in_flight as usize;
        if taken >= self.limit as usize {
            let wait = match entry.failures.front() {
                Some(oldest) if entry.failures.len() >= self.limit as usize => {
                    self.window.saturating_sub(now.saturating_sub(*oldest))
                }
                // Attempts still running hold the slots; they end within seconds.
                _ => Duration::from_secs(1),
            };
            return Err(wait.max(Duration::from_secs(1)));
        }
        entry.in_flight += 1;
        let slot = Slot { table: Arc::clone(&self.table), key, limit: self.limit, clock: Arc::clone(&self.clock) };
        Ok(Attempt { slot: Some(slot) })
    }
}

impl Attempt {
    /// The password was wrong: the slot becomes a failure in the window.
    pub fn failed(mut self) {
        if let Some(Slot { table, key, limit, clock }) = self.slot.take() {
            let mut table = lock(&table);
            if let Some(entry) = table.get_mut(&key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                entry.failures.push_back(clock.ticks());
                while entry.failures.len() > limit as usize {
                    entry.failures.pop_front();
                }
            }
        }
    }

    /// The login succeeded: the username's failures are forgotten.
    pub fn succeeded(mut self) {
        if let Some(Slot { table, key, .. }) = self.slot.take() {
            let mut table = lock(&table);
            if let Some(entry) = table.get_mut(&key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                entry.failures.clear();
                if entry.is_idle() {
                    table.remove(&key);
                }
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(Slot { table, key, .. }) = self.slot.take() {
            let mut table = lock(&table);
            if let Some(entry) = table.get_mut(&key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                if entry.is_idle() {
                    table.remove(&key);
                }
            }
        }
    }
}

/// False for names no account can have (longer than the longest username), which are never
/// tracked.
fn could_be_username(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= Username::MAX_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_refused_after_its_failures_until_the_window_passes() {
        let clock = crate::clock::ManualClock::starting_now();
        let failures = LoginFailures::new(3, Duration::from_secs(300), clock.clone());
        for _ in 0..3 {
            failures.begin("alice").unwrap().failed();
        }
        let wait = failures.begin("alice").unwrap_err();
        assert!(wait >= Duration::from_secs(1), "Retry-After is at least a second");
        assert!(failures.begin("bob").is_ok(), "other usernames are unaffected");
        clock.advance(Duration::from_secs(299));
        assert_eq!(failures.begin("alice").unwrap_err(), Duration::from_secs(1), "refused until the window passes");
        clock.advance(Duration::from_secs(1));
        failures.begin("alice").expect("the window passed").failed();
        failures.begin("alice").unwrap().succeeded();
        for _ in 0..2 {
            failures.begin("alice").unwrap().failed();
        }
        assert!(failures.begin("alice").is_ok(), "a success forgot the earlier failures");
        assert!(LoginFailures::new(0, Duration::from_secs(1), clock).begin("x").is_ok());
    }

    #[test]
    fn attempts_still_being_checked_hold_their_slots() {
        let failures = LoginFailures::new(3, Duration::from_secs(60), crate::clock::SystemClock::shared());
        let running: Vec<Attempt> = (0..3).map(|_| failures.begin("alice").unwrap()).collect();
        assert!(failures.begin("alice").is_err(), "a fourth parallel guess was let through");
        drop(running);
        // Given back (not failed): the slots are free again.
        let running: Vec<Attempt> = (0..3).map(|_| failures.begin("alice").unwrap()).collect();
        running.into_iter().for_each(Attempt::failed);
        assert!(failures.begin("alice").is_err());
    }

    #[test]
    fn parallel_guesses_never_check_more_than_the_limit() {
        let failures = Arc::new(LoginFailures::new(10, Duration::from_secs(60), crate::clock::SystemClock::shared()));
        let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The ten let through are all still being checked when the rest ask (if an eleventh
        // got a slot, the barrier would let it and nine others through and the count fail).
        let all_checking = Arc::new(std::sync::Barrier::new(10));
        let threads: Vec<_> = (0..50)
            .map(|_| {
                let (failures, checked) = (Arc::clone(&failures), Arc::clone(&checked));
                let all_checking = Arc::clone(&all_checking);
                std::thread::spawn(move || {
                    if let Ok(attempt) = failures.begin("alice") {
                        checked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        all_checking.wait();
                        attempt.failed();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), 10);
    }

    #[test]
    fn memory_is_bounded_whatever_names_are_sent() {
        let failures = LoginFailures::new(5, Duration::from_secs(60), crate::clock::SystemClock::shared());
        let long = "x".repeat(64 * 1024);
        for _ in 0..100 {
            failures.begin(&long).unwrap().failed();
        }
        assert!(lock(&failures.table).is_empty(), "a name no account can have was tracked");
        for i in 0..MAX_TRACKED + 100 {
            if let Ok(attempt) = failures.begin(&format!("user{i}")) {
                attempt.failed();
            }
        }
        assert_eq!(lock(&failures.table).len(), MAX_TRACKED);
        failures.begin("someone-new").expect("a full table does not lock new names out").failed();
        assert_eq!(lock(&failures.table).len(), MAX_TRACKED);
    }
}
