//! Telling idle connections that may have died from healthy ones without a round trip each.
//!
//! Idle connections are not pinged before use: a ping per borrow would add a round trip to
//! every statement. But when the server restarts or the network drops, every idle connection
//! dies at once, and each would fail the request that next borrows it. So the moment any
//! connection is found broken is remembered, and a connection that has been idle since before
//! that moment is pinged before it is lent (and closed if the ping fails).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// When a connection was last found broken, in microseconds since [`epoch`] plus one (zero:
/// never).
static LOST_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_micros() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX).saturating_add(1)
}

/// Records that a connection to the server was found broken.
pub(super) fn connection_lost() {
    LOST_AT.fetch_max(now_micros(), Ordering::Relaxed);
}

/// Whether a connection idle for `idle_for` may have died with the last lost connection.
fn suspect(idle_for: Duration) -> bool {
    let lost = LOST_AT.load(Ordering::Relaxed);
    lost != 0 && now_micros().saturating_sub(u64::try_from(idle_for.as_micros()).unwrap_or(u64::MAX)) <= lost
}

/// Whether an idle connection, idle for `idle_for`, may be lent: yes without a round trip
/// unless it is suspect, then only if it answers a ping.
pub(super) async fn usable(conn: &mut PgConnection, idle_for: Duration) -> Result<bool, sqlx::Error> {
    if !suspect(idle_for) {
        return Ok(true);
    }
    Ok(conn.ping().await.is_ok())
}
