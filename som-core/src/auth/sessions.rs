//! Live sessions remembered for a moment, so that an authenticated request does not pay a
//! storage round trip to learn that its session is still live.
//!
//! Only live sessions are kept, each for at most the configured time to live
//! (`SOM_SESSION_CACHE_TTL`, 1 s). Every change that can end a session or change what a user
//! may do (logout, revoke-all, a password change, disabling, staff rights, a reused refresh
//! token) empties the cache in the process that makes it, at once; a change made by another
//! process (another server on the same PostgreSQL database, the CLI) takes effect here within
//! the time to live. A lookup that started before an emptying never refills the cache with what
//! it read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::DynClock;

use crate::domain::{User, UserId};

/// Most sessions remembered; beyond it the cache starts afresh.
const MAX_ENTRIES: usize = 100_000;

/// The cache. `ttl` zero turns it off.
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    clock: DynClock,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every emptying.
    epoch: u64,
    /// Each with the clock's ticks when it was seen live.
    live: HashMap<(UserId, String), (User, Duration)>,
    /// Each user with a session in `live`, as last seen.
    users: HashMap<UserId, (User, Duration)>,
}

/// Where a lookup started: [`SessionCache::remember`] ignores it after an emptying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

impl SessionCache {
    /// A cache keeping live sessions for `ttl` as `clock` measures it.
    pub fn new(ttl: Duration, clock: DynClock) -> Self {
        SessionCache { ttl, clock, state: Mutex::new(State::default()) }
    }

    /// Whether something seen at `at` (in the clock's ticks) is still fresh.
    fn fresh(&self, at: Duration) -> bool {
        self.clock.ticks().saturating_sub(at) < self.ttl
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The user of a session remembered as live, if it was seen live less than the time to live
    /// ago; otherwise the epoch to remember what storage says under.
    pub fn get(&self, user: UserId, session: &str) -> Result<User, Epoch> {
        let state = self.state();
        match state.live.get(&(user, session.to_owned())) {
            Some((found, at)) if self.fresh(*at) => Ok(found.clone()),
            _ => Err(Epoch(state.epoch)),
        }
    }

    /// A user seen with a live session less than the time to live ago (what a notification
    /// about them says needs no storage round trip then).
    pub fn user(&self, id: UserId) -> Option<User> {
        let state = self.state();
        match state.users.get(&id) {
            Some((found, at)) if self.fresh(*at) => Some(found.clone()),
            _ => None,
        }
    }

    /// Remembers a session storage found live, unless the cache was emptied since `epoch`.
    pub fn remember(&self, epoch: Epoch, session: &str, user: &User) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.state();
        if state.epoch != epoch.0 {
            return;
        }
        if state.live.len() >= MAX_ENTRIES {
            state.live.clear();
            state.users.clear();
        }
        let now = self.clock.ticks();
        state.live.insert((user.id, session.to_owned()), (user.clone(), now));
        state.users.insert(user.id, (user.clone(), now));
    }

    /// Forgets everything: something changed that may end sessions or change a user's rights.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.epoch = state.epoch.wrapping_add(1);
        state.live.clear();
        state.users.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Username;

    fn user(id: i64) -> User {
        User {
            id: UserId::new(id),
            username: Username::parse(&format!("user{id}")).unwrap(),
            email: None,
            is_staff: false,
            is_active: true,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn live_sessions_are_remembered_for_the_ttl_and_forgotten_on_change() {
        let clock = crate::clock::ManualClock::starting_now();
        let cache = SessionCache::new(Duration::from_millis(200), clock.clone());
        let alice = user(1);
        let epoch = cache.get(alice.id, "s1").unwrap_err();
        cache.remember(epoch, "s1", &alice);
        assert_eq!(cache.get(alice.id, "s1"), Ok(alice.clone()));
        assert_eq!(cache.user(alice.id), Some(alice.clone()));
        assert_eq!(cache.user(UserId::new(2)), None);
        assert!(cache.get(alice.id, "s2").is_err(), "another session");
        assert!(cache.get(UserId::new(2), "s1").is_err(), "another user");
        cache.invalidate();
        assert!(cache.get(alice.id, "s1").is_err(), "emptied at once");
        assert_eq!(cache.user(alice.id), None, "users too");
        // A lookup that began before the emptying does not put back what it read.
        cache.remember(epoch, "s1", &alice);
        assert!(cache.get(alice.id, "s1").is_err());
        let epoch = cache.get(alice.id, "s1").unwrap_err();
        cache.remember(epoch, "s1", &alice);
        assert!(cache.get(alice.id, "s1").is_ok());
        clock.advance(Duration::from_millis(199));
        assert!(cache.get(alice.id, "s1").is_ok(), "kept until the ttl");
        clock.advance(Duration::from_millis(1));
        assert!(cache.get(alice.id, "s1").is_err(), "expired after the ttl");
        assert_eq!(cache.user(alice.id), None, "expired after the ttl");
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let cache = SessionCache::new(Duration::ZERO, crate::clock::SystemClock::shared());
        let alice = user(1);
        let epoch = cache.get(alice.id, "s1").unwrap_err();
        cache.remember(epoch, "s1", &alice);
        assert!(cache.get(alice.id, "s1").is_err());
        assert_eq!(cache.user(alice.id), None);
    }
}
