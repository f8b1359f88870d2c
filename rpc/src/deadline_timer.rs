//! A timer thread that expires the calls of a network client at their
//! deadlines, so that a [`CallFuture`](crate::CallFuture) nobody polls still
//! resolves to DEADLINE_EXCEEDED on time (a blocking `wait` needs no help:
//! it waits with the deadline itself).
//!
//! One thread per client, started by the first call that needs it. It
//! sleeps until the earliest deadline it was told about; arming it is one
//! atomic load when the new deadline is not earlier (the common case: later
//! calls have later deadlines), so calls do not pay a wake-up each. It is a
//! stand-in for a timer on the client's event loop, which the transport does
//! not offer publicly yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// What the timer expires: called with the current time, returns the next
/// deadline to wake up for.
pub(crate) trait Expire: Send + Sync + 'static {
    fn expire(&self, now: Instant) -> Option<Instant>;
}

struct State {
    wake_at: Option<Instant>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// `wake_at` in ns since `epoch` (`u64::MAX`: none), read without the lock.
    armed_ns: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Moves the wake-up earlier if `t` is earlier; returns whether it did.
    fn arm_locked(&self, state: &mut State, t: Instant) -> bool {
        if state.wake_at.is_none_or(|w| t < w) {
            state.wake_at = Some(t);
            self.armed_ns.store(self.ns(t), Ordering::Release);
            return true;
        }
        false
    }
}

pub(crate) struct DeadlineTimer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DeadlineTimer {
    /// Starts the thread; it calls `target.expire` while `target` lives.
    pub(crate) fn start(name: &str, target: Weak<dyn Expire>) -> std::io::Result<DeadlineTimer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                wake_at: None,
                stop: false,
            }),
            cv: Condvar::new(),
            armed_ns: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || run(&shared, &target))?
        };
        Ok(DeadlineTimer {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes sure the thread wakes up at `deadline` (or earlier).
    pub(crate) fn arm(&self, deadline: Instant) {
        let s = &self.shared;
        if s.ns(deadline) >= s.armed_ns.load(Ordering::Acquire) {
            return;
        }
        let mut state = s.state.lock();
        if s.arm_locked(&mut state, deadline) {
            s.cv.notify_one();
        }
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.cv.notify_one();
        if let Some(t) = self.thread.take() {
            // Not from the timer thread itself (a waker it ran might drop
            // the last client handle): it exits on its own then.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn run(shared: &Shared, target: &Weak<dyn Expire>) {
    let mut state = shared.state.lock();
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        match state.wake_at {
            None => shared.cv.wait(&mut state),
            Some(at) if at > now => {
                let _ = shared.cv.wait_until(&mut state, at);
            }
            Some(_) => {
                state.wake_at = None;
                shared.armed_ns.store(u64::MAX, Ordering::Release);
                drop(state);
                let Some(target) = target.upgrade() else {
                    return;
                };
                let next = target.expire(now);
                drop(target);
                state = shared.state.lock();
                if let Some(next) = next {
                    // Never spin: a deadline already due is retried 1 ms later.
                    let next = next.max(now + Duration::from_millis(1));
                    shared.arm_locked(&mut state, next);
                }
            }
        }
    }
}
