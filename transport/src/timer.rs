//! Per-loop timer heaps with lazy deletion.
//!
//! Connection deadlines live in the connection (an atomic the loop reads);
//! the heap only says "look at this connection at time t". Extending a
//! deadline costs nothing: when an entry pops, the loop compares it with the
//! connection's current deadline and pushes a new entry if it moved. A closed
//! connection's entries pop later and find a stale key. So the hot path
//! (every read refreshing the idle deadline) never touches the heap.
//!
//! User timers (gnet's `OnTick`, evio's `Tick`: [`EventLoop::after`] and
//! [`EventLoop::every`](crate::EventLoop::every)) sit in a second heap keyed
//! by (deadline, sequence number), so timers due at the same time fire in
//! the order they were created. Their callbacks live in a map beside the
//! heap: a cancel removes the callback at once (dropping what it captured)
//! and leaves a stale heap entry that pops later and finds nothing; the heap
//! is rebuilt when stale entries outnumber live ones, so cancelling long
//! timers in a loop cannot grow it without bound.
//!
//! [`EventLoop::after`]: crate::EventLoop::after

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::reactor::{LoopShared, Task};

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Read timeout: an incomplete request made no progress.
    Read,
    /// Write timeout: pending output did not drain.
    Write,
    /// Idle timeout.
    Idle,
    /// Lingering close: pending output after a graceful close.
    Linger,
    /// Resume accepting on a listener after `EMFILE`/`ENFILE`.
    Accept,
}

/// Timers ordered by deadline (nanoseconds since the loop's epoch).
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, TimerKind)>>,
}

impl Timers {
    pub(crate) fn push(&mut self, deadline: u64, key: u64, kind: TimerKind) {
        self.heap.push(Reverse((deadline, key, kind)));
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Pops one entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(u64, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((d, _, _))) if *d <= now => {
                let Reverse((_, key, kind)) = self.heap.pop()?;
                Some((key, kind))
            }
            _ => None,
        }
    }
}

/// A timer scheduled on a loop with [`EventLoop::after`],
/// [`EventLoop::every`](crate::EventLoop::every) or
/// [`Connection::after`](crate::Connection::after).
///
/// A cheap `Clone`; dropping it does not cancel the timer.
///
/// [`EventLoop::after`]: crate::EventLoop::after
#[derive(Clone)]
pub struct TimerHandle {
    seq: u64,
    cancelled: Arc<AtomicBool>,
    lp: Weak<LoopShared>,
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle")
            .field("seq", &self.seq)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

/// `now + d`, or a century from now when that overflows (`Duration::MAX`
/// means "never" to a caller, not a panic).
pub(crate) fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl TimerHandle {
    /// Queues `callback` on `lp`, due at `at`.
    pub(crate) fn schedule(lp: &Arc<LoopShared>, at: Instant, callback: Callback) -> TimerHandle {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::new(AtomicBool::new(false));
        lp.send(Task::AddTimer {
            seq,
            at,
            cancelled: cancelled.clone(),
            callback,
        });
        TimerHandle {
            seq,
            cancelled,
            lp: Arc::downgrade(lp),
        }
    }

    /// Cancels the timer: its callback does not run again (an interval
    /// timer's tick already running on the loop finishes) and is dropped
    /// soon, on its loop. Returns whether this call cancelled it (false if
    /// it was cancelled before). Cancelling a one-shot timer that already
    /// fired does nothing.
    pub fn cancel(&self) -> bool {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(lp) = self.lp.upgrade() {
            lp.send(Task::CancelTimer(self.seq));
        }
        true
    }

    /// Whether [`cancel`](TimerHandle::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// What a user timer runs.
pub(crate) enum Callback {
    /// Once, at the deadline.
    Once(Box<dyn FnOnce() + Send>),
    /// At the deadline and every `interval` nanoseconds after it.
    Every {
        f: Box<dyn FnMut() + Send>,
        interval: u64,
    },
}

/// A user timer waiting in a loop.
pub(crate) struct UserTimer {
    /// Loop time (ns) at which it is due.
    pub(crate) deadline: u64,
    /// Set by [`TimerHandle::cancel`](crate::TimerHandle::cancel).
    pub(crate) cancelled: Arc<AtomicBool>,
    pub(crate) callback: Callback,
}

/// User timers ordered by (deadline, sequence number).
#[derive(Default)]
pub(crate) struct UserTimers {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    live: HashMap<u64, UserTimer>,
}

impl UserTimers {
    pub(crate) fn insert(&mut self, seq: u64, timer: UserTimer) {
        self.heap.push(Reverse((timer.deadline, seq)));
        self.live.insert(seq, timer);
    }

    /// Drops the timer `seq` (if still there).
    pub(crate) fn cancel(&mut self, seq: u64) {
        if self.live.remove(&seq).is_some() && self.heap.len() > 64 + 2 * self.live.len() {
            self.heap = self
                .live
                .iter()
                .map(|(&seq, t)| Reverse((t.deadline, seq)))
                .collect();
        }
    }

    /// Whether the heap top is a live entry (not cancelled, not moved).
    fn top_is_live(&self) -> Option<bool> {
        let Reverse((d, seq)) = *self.heap.peek()?;
        Some(self.live.get(&seq).is_some_and(|t| t.deadline == d))
    }

    /// The earliest live deadline (stale tops are dropped on the way).
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        while !self.top_is_live()? {
            self.heap.pop();
        }
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Removes and returns one live timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(u64, UserTimer)> {
        loop {
            let Reverse((d, seq)) = *self.heap.peek()?;
            if d > now {
                return None;
            }
            self.heap.pop();
            if self.live.get(&seq).is_some_and(|t| t.deadline == d) {
                return self.live.remove(&seq).map(|t| (seq, t));
            }
        }
    }

    /// Drops every timer.
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    fn once(deadline: u64) -> UserTimer {
        UserTimer {
            deadline,
            cancelled: Arc::new(AtomicBool::new(false)),
            callback: Callback::Once(Box::new(|| {})),
        }
    }

    #[test]
    fn user_timers_pop_by_deadline_then_creation_order() {
        let mut t = UserTimers::default();
        t.insert(3, once(20));
        t.insert(1, once(20));
        t.insert(2, once(10));
        assert_eq!(t.next_deadline(), Some(10));
        assert!(t.pop_due(9).is_none());
        let order: Vec<u64> = std::iter::from_fn(|| t.pop_due(20).map(|(s, _)| s)).collect();
        assert_eq!(order, vec![2, 1, 3]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn cancelled_user_timers_never_pop_and_the_heap_stays_bounded() {
        let mut t = UserTimers::default();
        t.insert(0, once(5));
        for seq in 1..10_000 {
            t.insert(seq, once(1_000 + seq));
            t.cancel(seq);
        }
        assert!(t.heap_len() <= 64 + 2, "heap grew to {}", t.heap_len());
        assert_eq!(t.next_deadline(), Some(5));
        t.cancel(0);
        assert_eq!(t.next_deadline(), None);
        assert!(t.pop_due(u64::MAX).is_none());
    }

    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let mut t = Timers::default();
        t.push(30, 3, TimerKind::Idle);
        t.push(10, 1, TimerKind::Read);
        t.push(20, 2, TimerKind::Write);
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((1, TimerKind::Read)));
        assert_eq!(t.pop_due(25), Some((2, TimerKind::Write)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.next_deadline(), Some(30));
    }
}
