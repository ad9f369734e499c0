//! Read replicas (`SOM_DATABASE_READ_URLS`): streaming standbys that serve the reads allowed to
//! lag (see [`crate::storage::freshness`]).
//!
//! A watcher samples the primary's WAL position (`pg_current_wal_lsn()`) every [`POLL`], with
//! the wall-clock time it asked, and asks each replica whether it is still in recovery and how
//! far it has replayed (`pg_last_wal_replay_lsn()`). From those two:
//!
//! - a replica's **lag** is how long ago the primary had the oldest change the replica has not
//!   replayed (zero when it has replayed the newest sample). It is used while it answers, is in
//!   recovery and lags at most `SOM_REPLICA_MAX_LAG`; otherwise skipped until it is again.
//! - a caller who wrote at time *W* reads from a replica only once it has replayed at least the
//!   primary's position sampled at or after *W*: that sample was asked for after the write's
//!   commit was acknowledged, so it covers the commit. Until then the read goes to the primary.
//!
//! A read that fails on a replica because the replica went away is run again on the primary,
//! and the replica is skipped until the watcher finds it answering.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::statements::Statements;
use crate::storage::ReplicaStatus;
use crate::storage::freshness::wall_micros;
use crate::util::lock;

/// How often the primary's position is sampled and the replicas checked.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Longest a check, or a read's wait for a replica connection, may take before the replica
/// counts as down (a replica that does not answer must not hold reads up for long).
const REPLICA_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Streaming,
    Lagging,
    Promoted,
    Down,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Streaming => "streaming",
            State::Lagging => "lagging",
            State::Promoted => "promoted",
            State::Down => "down",
        }
    }
}

/// What the watcher last saw of a replica.
#[derive(Debug, Clone)]
struct Seen {
    state: State,
    /// The WAL position it had replayed.
    replayed: i64,
    lag: Option<Duration>,
    error: Option<String>,
}

pub(super) struct Replica {
    location: String,
    options: PgConnectOptions,
    pub(super) statements: Arc<Statements>,
    seen: Mutex<Seen>,
    reads: AtomicU64,
}

impl Replica {
    /// Counts a read it served.
    pub(super) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// A read found it gone: skipped until the watcher finds it answering again.
    pub(super) fn failed(&self, error: &crate::error::Error) {
        tracing::warn!(replica = %self.location, %error, "read replica failed; reading from the primary");
        self.statements.close_idle();
        let mut seen = lock(&self.seen);
        seen.state = State::Down;
        seen.error = Some(error.to_string());
    }
}

pub(super) struct Replicas {
    members: Vec<Replica>,
    /// The primary's WAL position as sampled: (wall microseconds when asked, position), oldest
    /// first.
    samples: Mutex<VecDeque<(i64, i64)>>,
    max_lag: Duration,
    next: AtomicUsize,
}

impl Replicas {
    /// Replicas at `urls` (already parsed into `options`), used while they lag at most
    /// `max_lag`; watched from a task on the current runtime for as long as they are in use.
    pub(super) fn start(
        members: Vec<(String, PgConnectOptions)>,
        primary: PgConnectOptions,
        pool_size: u32,
        max_lag: Duration,
    ) -> Arc<Replicas> {
        let members = members
            .into_iter()
            .map(|(location, options)| Replica {
                statements: Arc::new(Statements::new(options.clone(), pool_size, REPLICA_TIMEOUT)),
                location,
                options,
                seen: Mutex::new(Seen { state: State::Starting, replayed: 0, lag: None, error: None }),
                reads: AtomicU64::new(0),
            })
            .collect();
        let replicas =
            Arc::new(Replicas { members, samples: Mutex::new(VecDeque::new()), max_lag, next: AtomicUsize::new(0) });
        tokio::spawn(watch(Arc::downgrade(&replicas), primary));
        replicas
    }

    /// A replica that is streaming and has replayed the primary as of `written_at` (any
    /// streaming one when `None`), taking turns; `None` when there is none.
    pub(super) fn choose(&self, written_at: Option<i64>) -> Option<&Replica> {
        let floor = match written_at {
            None => None,
            Some(w) => {
                let samples = lock(&self.samples);
                // The first sample asked for at or after the write; none yet: the primary.
                let i = samples.partition_point(|(at, _)| *at < w);
                Some(samples.get(i)?.1)
            }
        };
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| &self.members[(start + i) % n]).find(|m| {
            let seen = lock(&m.seen);
            seen.state == State::Streaming && floor.is_none_or(|f| seen.replayed >= f)
        })
    }

    pub(super) fn status(&self) -> Vec<ReplicaStatus> {
        self.members
            .iter()
            .map(|m| {
                let seen = lock(&m.seen).clone();
                ReplicaStatus {
                    location: m.location.clone(),
                    state: seen.state.as_str(),
                    lag: seen.lag,
                    reads: m.reads.load(Ordering::Relaxed),
                    error: seen.error,
                }
            })
            .collect()
    }

    /// Keeps a sample of the primary's position asked for at `at`, forgetting those older than
    /// any usable replica can need.
    fn sampled(&self, at: i64, position: i64) {
        let keep = i64::try_from((self.max_lag + Duration::from_secs(2)).as_micros()).unwrap_or(i64::MAX);
        let mut samples = lock(&self.samples);
        samples.push_back((at, position));
        while samples.front().is_some_and(|(t, _)| *t < at.saturating_sub(keep)) {
            samples.pop_front();
        }
    }

    /// How far behind a replica that replayed up to `replayed` is, by the samples. When the
    /// primary has not been sampled for a while (it does not answer), a replica cannot be
    /// shown to be closer than the newest sample: its lag grows from there.
    fn lag(&self, replayed: i64, now: i64) -> Option<Duration> {
        let samples = lock(&self.samples);
        let newest = samples.back()?;
        if replayed >= newest.1 {
            let poll = i64::try_from(POLL.as_micros()).unwrap_or(i64::MAX);
            let unsampled = now.saturating_sub(newest.0).saturating_sub(poll).max(0);
            return Some(Duration::from_micros(u64::try_from(unsampled).unwrap_or(0)));
        }
        // The oldest sample it has not replayed (or, if it has replayed none kept, the oldest).
        let i = samples.partition_point(|(_, p)| *p <= replayed);
        let since = samples.get(i).map_or(newest.0, |s| s.0);
        Some(Duration::from_micros(u64::try_from(now.saturating_sub(since)).unwrap_or(0)))
    }

    fn saw(&self, member: &Replica, check: std::result::Result<(bool, i64), String>) {
        let seen = match check {
            Err(error) => Seen { state: State::Down, replayed: 0, lag: None, error: Some(error) },
            Ok((false, replayed)) => Seen { state: State::Promoted, replayed, lag: None, error: None },
            Ok((true, replayed)) => {
                let lag = self.lag(replayed, wall_micros());
                let state = match lag {
                    Some(lag) if lag > self.max_lag => State::Lagging,
                    _ => State::Streaming,
                };
                Seen { state, replayed, lag, error: None }
            }
        };
        let mut current = lock(&member.seen);
        if current.state != seen.state {
            if seen.state == State::Streaming {
                tracing::info!(replica = %member.location, "read replica in use");
            } else {
                tracing::warn!(replica = %member.location, state = seen.state.as_str(), error = ?seen.error, lag = ?seen.lag, "read replica skipped");
            }
        }
        if seen.state == State::Down {
            member.statements.close_idle();
        }
        *current = seen;
    }
}

/// Samples the primary and checks every replica each [`POLL`] while `replicas` is in use.
async fn watch(replicas: Weak<Replicas>, primary: PgConnectOptions) {
    let mut primary_conn: Option<PgConnection> = None;
    let mut conns: Vec<Option<PgConnection>> = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(replicas) = replicas.upgrade() else { return };
        conns.resize_with(replicas.members.len(), || None);
        let at = wall_micros();
        if let Ok(position) =
            ask(&mut primary_conn, &primary, "SELECT (pg_current_wal_lsn() - '0/0')::bigint", |r| r.try_get(0)).await
        {
            replicas.sampled(at, position);
        }
        for (member, conn) in replicas.members.iter().zip(conns.iter_mut()) {
            let check = ask(
                conn,
                &member.options,
                "SELECT pg_is_in_recovery(), COALESCE((pg_last_wal_replay_lsn() - '0/0')::bigint, 0)",
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )
            .await;
            replicas.saw(member, check);
        }
    }
}

/// Runs one statement on the watcher's own connection to a server (connecting first if it has
/// none), within [`REPLICA_TIMEOUT`]; on failure the connection is dropped.
async fn ask<T>(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    sql: &'static str,
    read: impl Fn(&sqlx::postgres::PgRow) -> std::result::Result<T, sqlx::Error>,
) -> std::result::Result<T, String> {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(PgConnection::connect_with(options).await?);
        }
        let c = conn.as_mut().unwrap_or_else(|| unreachable!("connected above"));
        let row = sqlx::query(sql).fetch_one(c).await?;
        read(&row)
    };
    let outcome = match tokio::time::timeout(REPLICA_TIMEOUT, attempt).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {REPLICA_TIMEOUT:?}"),
    };
    *conn = None;
    Err(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(replayed: &[(State, i64)]) -> Replicas {
        let options: PgConnectOptions = "postgres://nobody@127.0.0.1:1/none".parse().unwrap_or_else(|_| unreachable!());
        let members = replayed
            .iter()
            .map(|&(state, replayed)| Replica {
                location: format!("replica at {replayed}"),
                statements: Arc::new(Statements::new(options.clone(), 1, REPLICA_TIMEOUT)),
                options: options.clone(),
                seen: Mutex::new(Seen { state, replayed, lag: None, error: None }),
                reads: AtomicU64::new(0),
            })
            .collect();
        let r = Replicas {
            members,
            samples: Mutex::new(VecDeque::new()),
            max_lag: Duration::from_secs(5),
            next: AtomicUsize::new(0),
        };
        for (at, position) in [(100, 10), (200, 20), (300, 30)] {
            r.sampled(at, position);
        }
        r
    }

    #[test]
    fn lag_is_how_long_ago_the_primary_had_the_oldest_change_not_replayed() {
        let r = replicas(&[]);
        assert_eq!(r.lag(30, 350), Some(Duration::ZERO), "replayed the newest sample");
        assert_eq!(
            r.lag(30, 300 + 100_000 + 2_000_000),
            Some(Duration::from_secs(2)),
            "the primary unsampled for 2 s beyond a poll: not known to be closer"
        );
        assert_eq!(r.lag(20, 350), Some(Duration::from_micros(50)), "missing what the primary had at 300");
        assert_eq!(r.lag(5, 350), Some(Duration::from_micros(250)), "missing everything kept");
    }

    #[test]
    fn a_writer_reads_from_a_replica_only_once_it_replayed_a_sample_taken_after_the_write() {
        let r = replicas(&[(State::Streaming, 15)]);
        assert!(r.choose(None).is_some(), "no write to wait for");
        assert!(r.choose(Some(100)).is_some(), "the sample at 100 (position 10) is replayed");
        assert!(r.choose(Some(150)).is_none(), "the first sample after 150 is at position 20");
        assert!(r.choose(Some(400)).is_none(), "no sample after the write yet: the primary");
        let r = replicas(&[(State::Streaming, 20)]);
        assert!(r.choose(Some(150)).is_some());
    }

    #[test]
    fn only_streaming_replicas_are_chosen_and_they_take_turns() {
        let r = replicas(&[(State::Lagging, 30), (State::Down, 30), (State::Promoted, 30), (State::Starting, 30)]);
        assert!(r.choose(None).is_none());
        let r = replicas(&[(State::Streaming, 30), (State::Streaming, 30)]);
        let first = r.choose(None).map(std::ptr::from_ref);
        let second = r.choose(None).map(std::ptr::from_ref);
        assert_ne!(first, second);
    }
}
