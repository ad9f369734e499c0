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

/// When each user last wrote through this process, forgotten once every usable replica must
/// have replayed it anyway.
#[derive(Debug)]
pub struct RecentWrites {
    at: Mutex<HashMap<UserId, i64>>,
    /// How long a write is remembered: the longest lag a replica may have and still be used,
    /// plus time for the backend to have sampled the primary after it.
    horizon: Duration,
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

    /// Records that `user` wrote at `at` (wall microseconds); an earlier time than one already
    /// recorded changes nothing.
    pub fn wrote(&self, user: UserId, at: i64) {
        let mut map = lock(&self.at);
        if map.len() >= SWEEP_ABOVE {
            let oldest = wall_micros().saturating_sub(self.horizon_micros());
            map.retain(|_, t| *t >= oldest);
        }
        let entry = map.entry(user).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// When `user` last wrote, if recently enough to matter.
    pub fn last(&self, user: UserId) -> Option<i64> {
        let at = *lock(&self.at).get(&user)?;
        (at >= wall_micros().saturating_sub(self.horizon_micros())).then_some(at)
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
        writes.wrote(alice, now);
        writes.wrote(alice, now - 5);
        assert_eq!(writes.last(alice), Some(now));
        assert_eq!(writes.last(bob), None);
        writes.wrote(bob, now - 11_000_000);
        assert_eq!(writes.last(bob), None, "older than the horizon: every usable replica has it");
    }
}
