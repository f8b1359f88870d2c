//! The pool's state word and the pure transitions over it.
//!
//! Everything that decides *who runs a task* lives in one `u64`, changed only
//! by compare-and-swap: the queued-task count, the number of parked idle
//! workers nobody has claimed yet, the number of live workers, a `SEARCHING`
//! bit and a `SHUTDOWN` bit. Because a submitter counting its task and a
//! worker deciding to park are read-modify-writes of the same word, one of
//! them always sees the other — the lost wake-up of a "check the queue, then
//! sleep" worker cannot happen, and no `SeqCst` fence pairing is needed.
//!
//! `SEARCHING` marks the one worker that is looking for work: spinning after
//! its last task, or woken or spawned and not yet running. While it is set a
//! submitter wakes and spawns nobody — the searcher will see the task — so a
//! stream of tiny tasks costs no futex calls. A searcher that takes a task
//! while more are queued hands the role on (wakes or spawns the next worker),
//! the way Go's scheduler ramps up spinning threads: a burst reaches `n`
//! parked workers in `n` wake-up latencies, never with a thundering herd.
//!
//! Layout, low to high: queued (30 bits), idle (16), workers (16),
//! `SEARCHING`, `SHUTDOWN`.

const QUEUED_BITS: u32 = 30;
const IDLE_SHIFT: u32 = QUEUED_BITS;
const WORKERS_SHIFT: u32 = IDLE_SHIFT + 16;
const FIELD16: u64 = 0xFFFF;
const QUEUED_MASK: u64 = (1 << QUEUED_BITS) - 1;
const IDLE_ONE: u64 = 1 << IDLE_SHIFT;
const WORKERS_ONE: u64 = 1 << WORKERS_SHIFT;
const SEARCHING: u64 = 1 << 62;
const SHUTDOWN: u64 = 1 << 63;

const _: () = assert!(WORKERS_SHIFT + 16 == 62, "fields overlap the flag bits");

/// The largest queue bound the state word can count.
pub(crate) const MAX_QUEUED: usize = QUEUED_MASK as usize;
/// The largest number of workers the state word can count.
pub(crate) const MAX_WORKERS: usize = FIELD16 as usize;

/// A snapshot of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(pub(crate) u64);

/// What the thread that changed the state must do next for other workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Nothing: a searcher or a busy worker will take the work.
    None,
    /// Wake one parked worker (an idle unit was claimed for it).
    Wake,
    /// Start one new worker (it was counted already).
    Spawn,
}

/// What a worker does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A task was claimed: pop it and run it.
    Run,
    /// Look for work for a while; this worker holds `SEARCHING`.
    Spin,
    /// Park; this worker was counted idle.
    Park,
    /// Leave: the pool is shut down and nothing is queued. Already uncounted.
    Exit,
}

/// Why a task was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    Shutdown,
    Full,
}

impl State {
    pub(crate) fn queued(self) -> usize {
        (self.0 & QUEUED_MASK) as usize
    }

    pub(crate) fn idle(self) -> usize {
        ((self.0 >> IDLE_SHIFT) & FIELD16) as usize
    }

    pub(crate) fn workers(self) -> usize {
        ((self.0 >> WORKERS_SHIFT) & FIELD16) as usize
    }

    pub(crate) fn searching(self) -> bool {
        self.0 & SEARCHING != 0
    }

    pub(crate) fn is_shutdown(self) -> bool {
        self.0 & SHUTDOWN != 0
    }

    /// Counts one more task, or says why not, and decides who will run it.
    pub(crate) fn submit(
        self,
        max_queued: usize,
        max_workers: usize,
    ) -> Result<(State, Signal), Reject> {
        if self.is_shutdown() {
            return Err(Reject::Shutdown);
        }
        if self.queued() >= max_queued {
            return Err(Reject::Full);
        }
        let next = State(self.0 + 1);
        if next.searching() {
            return Ok((next, Signal::None));
        }
        Ok(next.hand_off(max_workers))
    }

    /// Gives the `SEARCHING` role (currently unheld) to a parked worker, or
    /// to a new one, if there is room.
    fn hand_off(self, max_workers: usize) -> (State, Signal) {
        debug_assert!(!self.searching());
        if self.idle() > 0 {
            (State((self.0 - IDLE_ONE) | SEARCHING), Signal::Wake)
        } else if self.workers() < max_workers {
            (State((self.0 + WORKERS_ONE) | SEARCHING), Signal::Spawn)
        } else {
            (self, Signal::None)
        }
    }

    /// The next step of a worker that is free: it has just finished a task,
    /// started, woken, or stopped spinning.
    ///
    /// `searching` says whether this worker holds `SEARCHING`; `may_spin`
    /// is false once its spin budget is spent.
    pub(crate) fn next_step(
        self,
        searching: bool,
        may_spin: bool,
        max_workers: usize,
    ) -> (State, Step, Signal) {
        debug_assert!(!searching || self.searching() || self.is_shutdown());
        if self.queued() > 0 {
            let mut next = State(self.0 - 1);
            let mut signal = Signal::None;
            if searching {
                next = State(next.0 & !SEARCHING);
                if next.queued() > 0 && !next.is_shutdown() {
                    (next, signal) = next.hand_off(max_workers);
                }
            }
            return (next, Step::Run, signal);
        }
        let released = if searching {
            State(self.0 & !SEARCHING)
        } else {
            self
        };
        if self.is_shutdown() {
            return (State(released.0 - WORKERS_ONE), Step::Exit, Signal::None);
        }
        if may_spin {
            if searching {
                return (self, Step::Spin, Signal::None);
            }
            if !self.searching() {
                return (State(self.0 | SEARCHING), Step::Spin, Signal::None);
            }
        }
        (State(released.0 + IDLE_ONE), Step::Park, Signal::None)
    }

    /// A parked worker whose idle time ran out leaves, if an unclaimed idle
    /// unit is left for it; `None` means a waker has claimed every parked
    /// worker, this one included, and is on its way.
    pub(crate) fn retire(self) -> Option<State> {
        (self.idle() > 0).then(|| State(self.0 - IDLE_ONE - WORKERS_ONE))
    }

    /// Marks the pool shut down and claims every idle worker; returns the
    /// number the caller must wake.
    pub(crate) fn shut_down(self) -> (State, usize) {
        let idle = self.idle();
        (State((self.0 - idle as u64 * IDLE_ONE) | SHUTDOWN), idle)
    }

    /// A spawn that failed: uncount the worker, release `SEARCHING` (it was
    /// the new worker's) and pass the role on if tasks wait. `true` in the
    /// result means no worker is left to run what is queued.
    pub(crate) fn spawn_failed(self, max_workers: usize) -> (State, Signal, bool) {
        let next = State((self.0 - WORKERS_ONE) & !SEARCHING);
        if next.queued() == 0 || (next.is_shutdown() && next.idle() == 0) {
            let orphaned = next.queued() > 0 && next.workers() == 0;
            return (next, Signal::None, orphaned);
        }
        // Do not retry the spawn that just failed: wake a parked worker if
        // there is one, else rely on the busy ones.
        if next.idle() > 0 {
            let (next, signal) = next.hand_off(max_workers);
            return (next, signal, false);
        }
        (next, Signal::None, next.workers() == 0)
    }

    /// Claims a queued task for the submitting thread itself (used only when
    /// no worker can be started).
    pub(crate) fn claim_inline(self) -> Option<State> {
        (self.queued() > 0).then(|| State(self.0 - 1))
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queued())
            .field("idle", &self.idle())
            .field("workers", &self.workers())
            .field("searching", &self.searching())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    const MAXQ: usize = 1 << 20;

    fn state(queued: usize, idle: usize, workers: usize, searching: bool) -> State {
        let mut s = queued as u64 | (idle as u64) << IDLE_SHIFT | (workers as u64) << WORKERS_SHIFT;
        if searching {
            s |= SEARCHING;
        }
        State(s)
    }

    #[test]
    fn fields_round_trip() {
        let s = state(MAX_QUEUED, MAX_WORKERS, MAX_WORKERS, true);
        assert_eq!(
            (s.queued(), s.idle(), s.workers()),
            (MAX_QUEUED, MAX_WORKERS, MAX_WORKERS)
        );
        assert!(s.searching() && !s.is_shutdown());
        let (s, woken) = s.shut_down();
        assert_eq!(woken, MAX_WORKERS);
        assert_eq!(
            (s.queued(), s.idle(), s.workers()),
            (MAX_QUEUED, 0, MAX_WORKERS)
        );
        assert!(s.is_shutdown() && s.searching());
    }

    #[test]
    fn submit_prefers_searcher_then_idle_then_spawn() {
        assert_eq!(
            state(0, 3, 4, true).submit(MAXQ, 8),
            Ok((state(1, 3, 4, true), Signal::None))
        );
        assert_eq!(
            state(0, 3, 4, false).submit(MAXQ, 8),
            Ok((state(1, 2, 4, true), Signal::Wake))
        );
        assert_eq!(
            state(5, 0, 4, false).submit(MAXQ, 8),
            Ok((state(6, 0, 5, true), Signal::Spawn))
        );
        assert_eq!(
            state(5, 0, 8, false).submit(MAXQ, 8),
            Ok((state(6, 0, 8, false), Signal::None))
        );
    }

    #[test]
    fn submit_rejects_when_full_or_shut_down() {
        assert_eq!(state(MAXQ, 0, 1, false).submit(MAXQ, 8), Err(Reject::Full));
        let (down, _) = state(0, 1, 1, false).shut_down();
        assert_eq!(down.submit(MAXQ, 8), Err(Reject::Shutdown));
    }

    #[test]
    fn searcher_that_takes_a_task_hands_the_role_on() {
        // Two queued, one parked: take one, wake the parked worker for the other.
        let (s, step, sig) = state(2, 1, 2, true).next_step(true, true, 8);
        assert_eq!(
            (s, step, sig),
            (state(1, 0, 2, true), Step::Run, Signal::Wake)
        );
        // The last task: the role is simply released.
        let (s, step, sig) = state(1, 1, 2, true).next_step(true, true, 8);
        assert_eq!(
            (s, step, sig),
            (state(0, 1, 2, false), Step::Run, Signal::None)
        );
        // A busy worker taking a task does not touch the role.
        let (s, step, sig) = state(2, 1, 2, true).next_step(false, true, 8);
        assert_eq!(
            (s, step, sig),
            (state(1, 1, 2, true), Step::Run, Signal::None)
        );
    }

    #[test]
    fn free_worker_spins_once_then_parks() {
        let (s, step, _) = state(0, 0, 2, false).next_step(false, true, 8);
        assert_eq!((s, step), (state(0, 0, 2, true), Step::Spin));
        // Someone else is searching: park at once.
        let (s, step, _) = state(0, 0, 2, true).next_step(false, true, 8);
        assert_eq!((s, step), (state(0, 1, 2, true), Step::Park));
        // Budget spent: release the role and park.
        let (s, step, _) = state(0, 0, 2, true).next_step(true, false, 8);
        assert_eq!((s, step), (state(0, 1, 2, false), Step::Park));
    }

    #[test]
    fn shutdown_drains_then_exits() {
        let (s, woken) = state(1, 2, 3, false).shut_down();
        assert_eq!(woken, 2);
        let (s, step, _) = s.next_step(true, true, 8);
        assert_eq!(step, Step::Run);
        let (s, step, _) = s.next_step(false, true, 8);
        assert_eq!(step, Step::Exit);
        assert_eq!(s.workers(), 2);
    }

    #[test]
    fn retire_needs_an_unclaimed_idle_unit() {
        assert_eq!(state(0, 1, 2, false).retire(), Some(state(0, 0, 1, false)));
        assert_eq!(state(0, 0, 2, true).retire(), None);
    }

    #[test]
    fn failed_spawn_passes_the_role_on_or_reports_orphans() {
        // Spawned for a task, nobody else alive: the caller must run it.
        let (s, sig, orphaned) = state(1, 0, 1, true).spawn_failed(8);
        assert_eq!(
            (s, sig, orphaned),
            (state(1, 0, 0, false), Signal::None, true)
        );
        // A parked worker exists: wake it instead.
        let (s, sig, orphaned) = state(1, 1, 2, true).spawn_failed(8);
        assert_eq!(
            (s, sig, orphaned),
            (state(1, 0, 1, true), Signal::Wake, false)
        );
        // Busy workers exist: they will get to it.
        let (s, sig, orphaned) = state(1, 0, 2, true).spawn_failed(8);
        assert_eq!(
            (s, sig, orphaned),
            (state(1, 0, 1, false), Signal::None, false)
        );
    }
}
