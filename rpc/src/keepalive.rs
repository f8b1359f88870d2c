//! Liveness of connections whose peer went silent: client keepalive pings
//! and the server's limits on them.
//!
//! A server that is partitioned away or frozen sends nothing at all — no
//! FIN, no RST — so its connections stay established and `is_active()`
//! stays true. A client with [`Keepalive`] on pings every connection on
//! which nothing was read for [`Keepalive::interval`] (idle) or
//! [`Keepalive::interval_with_calls`] (calls waiting for their answers);
//! when nothing at all is read for [`Keepalive::timeout`] after a ping, the
//! connection is declared dead:
//! its calls fail UNAVAILABLE at once (a cluster client retries the
//! idempotent ones elsewhere and ejects the instance) instead of waiting
//! for their deadlines. Any byte read counts as a sign of life, so a busy
//! connection is never pinged.
//!
//! Servers bound how often a client may ping ([`PingPolicy`], as gRPC's
//! keepalive enforcement does): a PING that arrives sooner than
//! [`PingPolicy::min_interval`] after the previous one, with no request in
//! between, is a strike; more than [`PingPolicy::max_strikes`] strikes in a
//! row close the connection with an ERROR frame (RESOURCE_EXHAUSTED, "too
//! many pings").

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Client keepalive settings ([`ClientOptions::keepalive`](crate::ClientOptions::keepalive)).
///
/// With the defaults, calls waiting on a server that went silent fail
/// UNAVAILABLE `interval_with_calls + timeout` (1.5 s) after its last byte
/// — before a 2 s deadline, so that a cluster client can still retry them
/// elsewhere; an idle connection is found dead within `interval + timeout`
/// (2 s) of its last byte, plus up to one more `interval` when that byte
/// came just after a ping: at most `2 × interval + timeout` = 3 s.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::{ClientOptions, Keepalive};
/// let opts = ClientOptions {
///     keepalive: Some(Keepalive { interval: Duration::from_secs(5), ..Keepalive::default() }),
///     ..ClientOptions::default()
/// };
/// assert_eq!(opts.keepalive.unwrap().timeout, Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// A connection with no call waiting on which nothing was read for
    /// this long is pinged. Default 1 s.
    pub interval: Duration,
    /// A connection with calls waiting on which nothing was read for this
    /// long is pinged. Default 500 ms: shorter, because callers wait. Keep
    /// both intervals above the server's [`PingPolicy::min_interval`]
    /// (250 ms by default), or the server closes the connection.
    pub interval_with_calls: Duration,
    /// After a ping, a connection on which nothing at all is read for this
    /// long is closed and its calls fail UNAVAILABLE. Default 1 s: several
    /// TCP retransmission timeouts (200 ms at least each), so that a lost
    /// packet or two do not kill a healthy connection.
    pub timeout: Duration,
    /// Ping connections with no call waiting too (default `true`): a cluster
    /// client then learns that an idle instance died before it sends calls
    /// there. `false` pings only connections with calls waiting.
    pub without_calls: bool,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(1),
            interval_with_calls: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            without_calls: true,
        }
    }
}

/// How often a server lets a client ping ([`ServerBuilder::ping_policy`](crate::ServerBuilder::ping_policy)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPolicy {
    /// PINGs closer together than this, with no request between them, are
    /// strikes. Default 250 ms (half the client's shortest default
    /// keepalive interval, room for network jitter). `Duration::ZERO`
    /// allows any rate.
    pub min_interval: Duration,
    /// Strikes in a row tolerated; the next one closes the connection.
    /// Default 2.
    pub max_strikes: u32,
}

impl PingPolicy {
    /// The defaults, as a constant.
    pub const DEFAULT: PingPolicy = PingPolicy {
        min_interval: Duration::from_millis(250),
        max_strikes: 2,
    };

    /// No limit on pings.
    pub const UNLIMITED: PingPolicy = PingPolicy {
        min_interval: Duration::ZERO,
        max_strikes: u32::MAX,
    };
}

impl Default for PingPolicy {
    fn default() -> Self {
        PingPolicy::DEFAULT
    }
}

/// Nanoseconds since a process-wide epoch, never 0 (0 means "never").
pub(crate) fn now_ns(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1));
    u64::try_from(now.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The instant `ns` stands for (see [`now_ns`]).
pub(crate) fn instant_of(ns: u64, now: Instant) -> Instant {
    let now_n = now_ns(now);
    if ns >= now_n {
        now + Duration::from_nanos(ns - now_n)
    } else {
        now.checked_sub(Duration::from_nanos(now_n - ns))
            .unwrap_or(now)
    }
}

/// The server side's per-connection ping accounting.
#[derive(Debug, Default)]
pub(crate) struct PingStrikes {
    /// When the last PING arrived (`now_ns`), 0: none since the last request.
    last_ping: AtomicU64,
    strikes: AtomicU32,
}

impl PingStrikes {
    /// A request arrived: pings after it start afresh.
    pub(crate) fn on_request(&self) {
        if self.last_ping.load(Ordering::Relaxed) != 0 {
            self.last_ping.store(0, Ordering::Relaxed);
        }
        if self.strikes.load(Ordering::Relaxed) != 0 {
            self.strikes.store(0, Ordering::Relaxed);
        }
    }

    /// A PING arrived at `now`; returns the strikes so far if they are over
    /// `policy`'s limit (the connection must close).
    pub(crate) fn on_ping(&self, now: Instant, policy: &PingPolicy) -> Option<u32> {
        let now = now_ns(now);
        let last = self.last_ping.swap(now, Ordering::Relaxed);
        let min = u64::try_from(policy.min_interval.as_nanos()).unwrap_or(u64::MAX);
        if last == 0 || now.saturating_sub(last) >= min {
            return None;
        }
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
        (strikes > policy.max_strikes).then_some(strikes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_too_close_together_strike_out_and_requests_reset_them() {
        let p = PingPolicy {
            min_interval: Duration::from_millis(100),
            max_strikes: 2,
        };
        let s = PingStrikes::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(s.on_ping(ms(0), &p), None);
        assert_eq!(s.on_ping(ms(10), &p), None); // strike 1
        assert_eq!(s.on_ping(ms(20), &p), None); // strike 2
        s.on_request();
        assert_eq!(s.on_ping(ms(30), &p), None); // first after a request
        assert_eq!(s.on_ping(ms(40), &p), None); // strike 1
        assert_eq!(s.on_ping(ms(200), &p), None); // far enough: no strike
        assert_eq!(s.on_ping(ms(210), &p), None); // strike 2
        assert_eq!(s.on_ping(ms(220), &p), Some(3)); // strike 3: over
        let u = PingStrikes::default();
        for i in 0..100 {
            assert_eq!(u.on_ping(ms(i), &PingPolicy::UNLIMITED), None);
        }
    }

    #[test]
    fn nanosecond_stamps_round_trip() {
        let now = Instant::now();
        let ns = now_ns(now);
        assert!(ns > 0);
        let later = now + Duration::from_millis(5);
        assert_eq!(instant_of(now_ns(later), now), later);
        assert_eq!(instant_of(ns, later), now);
    }
}
