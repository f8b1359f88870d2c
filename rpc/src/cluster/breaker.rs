//! A circuit breaker per instance, on a rolling error rate.
//!
//! Closed: calls flow and their outcomes are counted in a ring of time
//! buckets covering the window. When the window holds at least
//! `min_calls` outcomes and the failed share reaches `failure_ratio`, the
//! breaker opens: the balancer skips the instance for `open_for`. Then it
//! is half-open: one probe call at a time is let through; `probes`
//! successes in a row close it (with a fresh window), a failure opens it
//! again. As in Hystrix and resilience4j, but counting only failures that
//! say something about the instance (it is unreachable, too slow, or broke
//! an invariant), never a NOT_FOUND that the application meant.
//!
//! Times are passed in, so that tests drive the state machine without
//! sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::status::Code;

/// Settings of the per-instance [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The rolling window the error rate is computed over. Default 10 s.
    pub window: Duration,
    /// Buckets the window is split into (the window rolls by one bucket at
    /// a time). Default 10.
    pub buckets: u32,
    /// Fewest outcomes in the window before the rate counts. Default 20.
    pub min_calls: u32,
    /// Failed share that opens the breaker, in percent. Default 50.
    pub failure_percent: u32,
    /// How long it stays open before a probe is let through. Default 5 s.
    pub open_for: Duration,
    /// Successful probes in a row that close it again. Default 1.
    pub probes: u32,
    /// `false` disables the breaker (it never opens). Default `true`.
    pub enabled: bool,
}

impl BreakerConfig {
    /// Checks the settings (the cluster builder calls it).
    ///
    /// # Errors
    ///
    /// A sentence naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.buckets == 0 || self.window.is_zero() {
            return Err("breaker window and buckets must not be zero".to_owned());
        }
        if self.window / self.buckets < Duration::from_millis(1) {
            return Err(format!(
                "breaker buckets of {:?} / {} are under 1 ms",
                self.window, self.buckets
            ));
        }
        if self.failure_percent == 0 || self.failure_percent > 100 {
            return Err(format!(
                "failure_percent {} must be in 1..=100",
                self.failure_percent
            ));
        }
        if self.probes == 0 {
            return Err("breaker probes must not be 0".to_owned());
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            buckets: 10,
            min_calls: 20,
            failure_percent: 50,
            open_for: Duration::from_secs(5),
            probes: 1,
            enabled: true,
        }
    }
}

impl BreakerConfig {
    /// A breaker that never opens.
    pub fn disabled() -> BreakerConfig {
        BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        }
    }
}

/// Whether a call's outcome counts against its instance: UNAVAILABLE,
/// DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and DATA_LOSS do; statuses the
/// application chose (NOT_FOUND, INVALID_ARGUMENT, ...) do not.
pub fn is_instance_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One probe at a time is let through.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Index of the bucket's time slot since the breaker's epoch.
    slot: u64,
    ok: u32,
    failed: u32,
}

struct Inner {
    buckets: Vec<Bucket>,
    open_until: Instant,
    probe_in_flight: bool,
    probe_successes: u32,
}

/// One instance's circuit breaker; see the module docs.
///
/// ```
/// use std::time::{Duration, Instant};
/// use ferropoll_rpc::cluster::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let cfg = BreakerConfig { min_calls: 4, open_for: Duration::from_secs(1), ..BreakerConfig::default() };
/// let b = CircuitBreaker::new(cfg);
/// let t = Instant::now();
/// for _ in 0..4 {
///     assert!(b.try_acquire(t));
///     b.record(false, t);
/// }
/// assert_eq!(b.state(), BreakerState::Open);
/// assert!(!b.try_acquire(t));
/// // after the open period, one probe goes through; its success closes it
/// let later = t + Duration::from_secs(1);
/// assert!(b.try_acquire(later));
/// assert_eq!(b.state(), BreakerState::HalfOpen);
/// b.record(true, later);
/// assert_eq!(b.state(), BreakerState::Closed);
/// ```
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    epoch: Instant,
    bucket_len: Duration,
    /// The state, readable without the lock (the balancer asks per call).
    state: AtomicU8,
    inner: Mutex<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> CircuitBreaker {
        let buckets = cfg.buckets.max(1);
        let now = Instant::now();
        CircuitBreaker {
            bucket_len: (cfg.window / buckets).max(Duration::from_millis(1)),
            epoch: now,
            state: AtomicU8::new(CLOSED),
            inner: Mutex::new(Inner {
                buckets: vec![Bucket::default(); buckets as usize],
                open_until: now,
                probe_in_flight: false,
                probe_successes: 0,
            }),
            cfg,
        }
    }

    /// The current state (an open breaker whose period ended reads as
    /// open until a call tries it).
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call could go through at `now`, without claiming it (for
    /// the balancer: cheap when closed).
    pub fn allows(&self, now: Instant) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => now >= self.inner.lock().open_until,
            _ => !self.inner.lock().probe_in_flight,
        }
    }

    /// Claims the right to send a call at `now`: always when closed; when
    /// open, only once the open period ended (the breaker turns half-open
    /// and this call is its probe); when half-open, only if no probe is in
    /// flight. Every successful claim must be followed by one
    /// [`record`](Self::record) (or [`release`](Self::release)).
    pub fn try_acquire(&self, now: Instant) -> bool {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return true;
        }
        let mut inner = self.inner.lock();
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN if now >= inner.open_until => {
                self.state.store(HALF_OPEN, Ordering::Release);
                inner.probe_in_flight = true;
                inner.probe_successes = 0;
                true
            }
            OPEN => false,
            _ if inner.probe_in_flight => false,
            _ => {
                inner.probe_in_flight = true;
                true
            }
        }
    }

    /// A claimed call was not sent after all (nothing to learn from it).
    pub fn release(&self) {
        if self.state.load(Ordering::Acquire) == HALF_OPEN {
            self.inner.lock().probe_in_flight = false;
        }
    }

    /// Records a call's outcome at `now` (`ok`: it did not fail in a way
    /// that counts, see [`is_instance_failure`]).
    pub fn record(&self, ok: bool, now: Instant) {
        if !self.cfg.enabled {
            return;
        }
        let mut inner = self.inner.lock();
        match self.state.load(Ordering::Acquire) {
            CLOSED => {
                let slot = self.slot(now);
                let n = inner.buckets.len() as u64;
                let b = &mut inner.buckets[(slot % n) as usize];
                if b.slot != slot {
                    *b = Bucket {
                        slot,
                        ok: 0,
                        failed: 0,
                    };
                }
                if ok {
                    b.ok += 1;
                    return;
                }
                b.failed += 1;
                let (mut total, mut failed) = (0u64, 0u64);
                for b in &inner.buckets {
                    if b.slot + n > slot {
                        total += u64::from(b.ok) + u64::from(b.failed);
                        failed += u64::from(b.failed);
                    }
                }
                if total >= u64::from(self.cfg.min_calls.max(1))
                    && failed * 100 >= total * u64::from(self.cfg.failure_percent)
                {
                    self.open(&mut inner, now);
                }
            }
            HALF_OPEN => {
                inner.probe_in_flight = false;
                if ok {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= self.cfg.probes.max(1) {
                        // Slot 0 lies before every window (see `slot`).
                        inner.buckets.fill(Bucket::default());
                        self.state.store(CLOSED, Ordering::Release);
                    }
                } else {
                    self.open(&mut inner, now);
                }
            }
            // Calls that were in flight when it opened: ignore.
            _ => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.open_until = now + self.cfg.open_for;
        inner.probe_in_flight = false;
        self.state.store(OPEN, Ordering::Release);
        tracing::debug!(open_for = ?self.cfg.open_for, "circuit breaker opened");
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        // + the window, so that the zeroed initial buckets are outside it.
        u64::try_from(since / self.bucket_len.as_nanos()).unwrap_or(u64::MAX / 4)
            + u64::from(self.cfg.buckets.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            buckets: 10,
            min_calls: 10,
            failure_percent: 50,
            open_for: Duration::from_secs(2),
            probes: 2,
            enabled: true,
        }
    }

    #[test]
    fn stays_closed_below_min_calls_and_below_ratio() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for _ in 0..9 {
            b.record(false, t);
        }
        assert_eq!(b.state(), BreakerState::Closed, "9 < min_calls");
        let b = CircuitBreaker::new(cfg());
        for k in 0..100 {
            b.record(k % 3 != 0, t); // 34 % failures
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_half_opens_and_closes() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for k in 0..10 {
            b.record(k % 2 == 0, t); // 50 %
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows(t + Duration::from_secs(1)));
        assert!(!b.try_acquire(t + Duration::from_secs(1)));

        let t2 = t + Duration::from_secs(2);
        assert!(b.allows(t2));
        assert!(b.try_acquire(t2));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // One probe at a time.
        assert!(!b.allows(t2));
        assert!(!b.try_acquire(t2));
        b.record(true, t2);
        assert_eq!(b.state(), BreakerState::HalfOpen, "probes = 2");
        assert!(b.try_acquire(t2));
        b.record(true, t2);
        assert_eq!(b.state(), BreakerState::Closed);
        // A fresh window: 9 failures do not reopen it.
        for _ in 0..9 {
            b.record(false, t2);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for _ in 0..10 {
            b.record(false, t);
        }
        let t2 = t + Duration::from_secs(2);
        assert!(b.try_acquire(t2));
        b.record(false, t2);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire(t2 + Duration::from_secs(1)));
        assert!(b.try_acquire(t2 + Duration::from_secs(2)));
    }

    #[test]
    fn a_released_probe_frees_the_slot() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for _ in 0..10 {
            b.record(false, t);
        }
        let t2 = t + Duration::from_secs(2);
        assert!(b.try_acquire(t2));
        assert!(!b.try_acquire(t2));
        b.release();
        assert!(b.try_acquire(t2));
    }

    #[test]
    fn old_failures_roll_out_of_the_window() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        for _ in 0..9 {
            b.record(false, t);
        }
        // 11 s later the 9 failures are gone: 9 more do not open it.
        let later = t + Duration::from_secs(11);
        for _ in 0..9 {
            b.record(false, later);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(false, later);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn disabled_never_opens() {
        let b = CircuitBreaker::new(BreakerConfig::disabled());
        let t = Instant::now();
        for _ in 0..1000 {
            b.record(false, t);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failure_codes() {
        assert!(is_instance_failure(Code::Unavailable));
        assert!(is_instance_failure(Code::DeadlineExceeded));
        assert!(!is_instance_failure(Code::NotFound));
        assert!(!is_instance_failure(Code::Ok));
    }
}
