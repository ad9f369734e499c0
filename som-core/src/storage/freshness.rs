//! Which reads may be a moment old, and what "a moment" may not hide: a caller's own writes.
//!
//! A backend with read replicas (PostgreSQL with `SOM_DATABASE_READ_URLS`) serves a read from a
//! replica only inside [`may_lag`], which the facade wraps around the reads that decide nothing
//! (lists, details, histories) and only for users: every read that decides a write, every read
//! of the system caller (the CLI, the worker) and everything in a transaction stays on the
//! primary. `may_lag` carries when the caller last wrote (by the wall clock, in microseconds
//! since the Unix epoch; see [`RecentWrites`]), and the backend uses a replica only once it has
//! replayed everything the primary had at some moment after that write.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::UserId;
use crate::util::lock;

tokio::task_local! {
    static MAY_LAG: Option<i64>;
}

/// Now by the wall clock, in microseconds since the Unix epoch: the time base of writes and of
/// a backend's samples of its primary, comparable across processes on hosts whose clocks agree.
pub fn wall_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Runs `read` allowing its storage reads to be served by a replica that has replayed the
/// primary as of at least `written_at` (the caller's last write; `None`: no write to wait for).
pub async fn may_lag<F: Future>(written_at: Option<i64>, read: F) -> F::Output {
    MAY_LAG.scope(written_at, read).await
}

/// Inside [`may_lag`]: `Some(written_at)`. Outside: `None`, and the read goes to the primary.
pub fn lag_allowed() -> Option<Option<i64>> {
    MAY_LAG.try_with(|w| *w).ok()
}

/// How long a user's last write still decides where their reads go, with replicas used while
/// they lag at most `max_lag`: that long, plus time for the primary to have been sampled after
/// the write. Older writes every usable replica has replayed.
pub fn remembered_for(max_lag: Duration) -> Duration {
    max_lag + Duration::from_secs(2)
}

/// When each user last wrote, and from when on a replica may serve them, forgotten once every
/// usable replica must have replayed the write anyway.
#[derive(Debug)]
pub struct RecentWrites {
    at: Mutex<HashMap<UserId, Written>>,
    /// How long a write is remembered: the longest lag a replica may have and still be used,
    /// plus time for the backend to have sampled the primary after it.
    horizon: Duration,
}

/// A user's last write.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// When it was made, as its process's clock said (what is handed on to other processes).
    at: i64,
    /// The time a replica must have replayed the primary as of: `at`, or later when the write
    /// may still be in flight or was made by a host whose clock may be behind this one's.
    wait_for: i64,
}

/// Entries kept before old ones are swept.
const SWEEP_ABOVE: usize = 4096;

impl RecentWrites {
    /// Remembers writes for `horizon`.
    pub fn new(horizon: Duration) -> RecentWrites {
        RecentWrites { at: Mutex::new(HashMap::new()), horizon }
    }

    fn horizon_micros(&self) -> i64 {
        i64::try_from(self.horizon.as_micros()).unwrap_or(i64::MAX)
    }

    /// Records that `user` wrote at `at` (wall microseconds) and that their reads must wait
    /// for the primary as of `wait_for` (at least `at`); earlier times than those already
    /// recorded change nothing.
    pub fn wrote(&self, user: UserId, at: i64, wait_for: i64) {
        let mut map = lock(&self.at);
        if map.len() >= SWEEP_ABOVE {
            let oldest = wall_micros().saturating_sub(self.horizon_micros());
            map.retain(|_, w| w.wait_for >= oldest);
        }
        let entry = map.entry(user).or_insert(Written { at, wait_for });
        entry.at = entry.at.max(at);
        entry.wait_for = entry.wait_for.max(wait_for).max(at);
    }

    fn recent(&self, user: UserId) -> Option<Written> {
        let written = *lock(&self.at).get(&user)?;
        (written.wait_for >= wall_micros().saturating_sub(self.horizon_micros())).then_some(written)
    }

    /// The time `user`'s reads must wait for, if their last write is recent enough to matter.
    pub fn wait_for(&self, user: UserId) -> Option<i64> {
        self.recent(user).map(|w| w.wait_for)
    }

    /// When `user` last wrote, if recently enough to matter.
    pub fn last(&self, user: UserId) -> Option<i64> {
        self.recent(user).map(|w| w.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_may_lag_only_inside_the_scope_and_carry_the_write() {
        assert_eq!(lag_allowed(), None);
        assert_eq!(may_lag(Some(7), async { lag_allowed() }).await, Some(Some(7)));
        assert_eq!(may_lag(None, async { lag_allowed() }).await, Some(None));
    }

    #[test]
    fn a_users_last_write_is_the_latest_and_is_forgotten_after_the_horizon() {
        let writes = RecentWrites::new(Duration::from_secs(10));
        let (alice, bob) = (UserId::new(1), UserId::new(2));
        let now = wall_micros();
        writes.wrote(alice, now, now);
        writes.wrote(alice, now - 5, now - 5);
        assert_eq!(writes.last(alice), Some(now));
        assert_eq!(writes.wait_for(alice), Some(now));
        assert_eq!(writes.last(bob), None);
        writes.wrote(bob, now - 11_000_000, now - 11_000_000);
        assert_eq!(writes.last(bob), None, "older than the horizon: every usable replica has it");
    }

    #[test]
    fn waiting_longer_than_the_write_does_not_move_the_write_handed_on() {
        let writes = RecentWrites::new(Duration::from_secs(10));
        let alice = UserId::new(1);
        let now = wall_micros();
        writes.wrote(alice, now - 2_000_000, now - 1_000_000);
        writes.wrote(alice, now - 2_000_000, now - 1_000_000);
        assert_eq!(writes.last(alice), Some(now - 2_000_000), "the time handed on is the write's own");
        assert_eq!(writes.wait_for(alice), Some(now - 1_000_000));
    }
}
