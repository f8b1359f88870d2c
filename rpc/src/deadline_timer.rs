//! The deadline timer of a network client: expires its calls at their
//! deadlines, so that a [`CallFuture`](crate::CallFuture) nobody polls
//! still resolves to DEADLINE_EXCEEDED on time (a blocking `wait` needs no
//! help: it waits with the deadline itself), and drives the keepalive and
//! the safety net of deferred sends.
//!
//! It is one timer on the client's own event loop
//! ([`EventLoop::after`]): no thread of its own. The expiry runs on the
//! loop thread, set for the earliest deadline it was told about. Arming is
//! one atomic load when the new deadline is not earlier than the one set
//! (the common case: later calls have later deadlines), so calls do not
//! each pay a message to the loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferropoll_transport::{EventLoop, TimerHandle};
use parking_lot::Mutex;

/// What the timer expires: called with the current time, returns the next
/// deadline to wake up for.
pub(crate) trait Expire: Send + Sync + 'static {
    fn expire(&self, now: Instant) -> Option<Instant>;
}

struct Inner {
    lp: EventLoop,
    target: Weak<dyn Expire>,
    /// The loop timer set now and when it fires.
    set: Mutex<Option<(Instant, TimerHandle)>>,
    /// The set deadline in ns since `epoch` (`u64::MAX`: none), read
    /// without the lock.
    armed_ns: AtomicU64,
    epoch: Instant,
}

impl Inner {
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

/// See the module docs. Dropping it cancels the timer.
pub(crate) struct DeadlineTimer {
    inner: Arc<Inner>,
}

impl DeadlineTimer {
    /// A timer on loop 0 of `lp` that calls `target.expire` while `target`
    /// lives.
    pub(crate) fn new(lp: EventLoop, target: Weak<dyn Expire>) -> DeadlineTimer {
        DeadlineTimer {
            inner: Arc::new(Inner {
                lp,
                target,
                set: Mutex::new(None),
                armed_ns: AtomicU64::new(u64::MAX),
                epoch: Instant::now(),
            }),
        }
    }

    /// Makes sure the expiry runs at `deadline` (or earlier).
    pub(crate) fn arm(&self, deadline: Instant) {
        arm(&self.inner, deadline);
    }
}

fn arm(inner: &Arc<Inner>, deadline: Instant) {
    if inner.ns(deadline) >= inner.armed_ns.load(Ordering::Acquire) {
        return;
    }
    let mut set = inner.set.lock();
    if set.as_ref().is_some_and(|(at, _)| *at <= deadline) {
        return;
    }
    let weak = Arc::downgrade(inner);
    let delay = deadline.saturating_duration_since(Instant::now());
    match inner.lp.after(0, delay, move || fire(&weak)) {
        Ok(handle) => {
            if let Some((_, old)) = set.replace((deadline, handle)) {
                old.cancel();
            }
            inner.armed_ns.store(inner.ns(deadline), Ordering::Release);
        }
        // The loop is shutting down: its calls are being failed anyway.
        Err(e) => tracing::debug!("rpc deadline timer not set: {e}"),
    }
}

/// The timer fired (on the loop thread).
fn fire(weak: &Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    {
        let mut set = inner.set.lock();
        *set = None;
        inner.armed_ns.store(u64::MAX, Ordering::Release);
    }
    let Some(target) = inner.target.upgrade() else {
        return;
    };
    let now = Instant::now();
    let next = target.expire(now);
    drop(target);
    if let Some(next) = next {
        // Never spin: a deadline already due is retried 1 ms later.
        arm(&inner, next.max(now + Duration::from_millis(1)));
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.inner.set.lock().take() {
            handle.cancel();
        }
    }
}
