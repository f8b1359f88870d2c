//! A per-loop timer heap with lazy deletion.
//!
//! Deadlines live in the connection (an atomic the loop reads); the heap only
//! says "look at this connection at time t". Extending a deadline costs
//! nothing: when an entry pops, the loop compares it with the connection's
//! current deadline and pushes a new entry if it moved. A closed connection's
//! entries pop later and find a stale key. So the hot path (every read
//! refreshing the idle deadline) never touches the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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

#[cfg(test)]
mod tests {
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
