//! The synchronisation primitives the pool is built on, behind one seam.
//!
//! Normal builds get `std` atomics, `parking_lot` locks, OS threads and a
//! crossbeam `SegQueue`. Under `--cfg loom` the same names resolve to loom's
//! model-checked types, so the loom tests exercise the real state machine,
//! parking and wake-up code of `shared.rs` and `worker.rs` — only the task
//! queue is modelled (a loom `Mutex<VecDeque>`, since crossbeam is not
//! loom-aware) and time is replaced by a single "deadline passed" step.
//! The idea follows tokio's `src/loom/mod.rs`.

#[cfg(not(loom))]
pub(crate) use self::real::*;

#[cfg(loom)]
pub(crate) use self::model::*;

#[cfg(not(loom))]
mod real {
    use std::time::{Duration, Instant};

    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

    pub(crate) mod thread {
        pub(crate) use std::thread::{Builder, JoinHandle, yield_now};

        /// Waits a little before re-checking a condition owned by another
        /// thread: spins at first, then yields, then sleeps so a long wait
        /// costs no CPU.
        pub(crate) fn backoff(round: u32) {
            if round < 6 {
                for _ in 0..1u32 << round {
                    std::hint::spin_loop();
                }
            } else if round < 64 {
                yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// A mutex whose guard a [`Condvar`] can wait on.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    /// The guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// When a parked worker gives up waiting: a point in time, or never.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Deadline(Option<Instant>);

    impl Deadline {
        /// `after` from now; a duration too large for `Instant` means never.
        pub(crate) fn after(after: Duration) -> Self {
            Deadline(Instant::now().checked_add(after))
        }

        pub(crate) fn never() -> Self {
            Deadline(None)
        }

        pub(crate) fn expired(&self) -> bool {
            self.0.is_some_and(|at| Instant::now() >= at)
        }
    }

    /// A condition variable used with [`Mutex`].
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }

        /// Blocks until notified, spuriously woken, or `deadline` passes.
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: &mut Deadline) {
            match deadline.0 {
                Some(at) => {
                    self.0.wait_until(guard, at);
                }
                None => self.0.wait(guard),
            }
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }

    /// How long a worker that ran out of work looks for more before parking.
    ///
    /// About twice the median park-to-run wake-up latency measured on the
    /// project's machine (~10 µs): a task that arrives within it is picked
    /// up without a futex call on either side.
    const SPIN_FOR: Duration = Duration::from_micros(20);

    /// The budget of one spell of spinning.
    #[derive(Debug)]
    pub(crate) struct SpinBudget {
        started: Option<Instant>,
        rounds: u32,
    }

    impl SpinBudget {
        pub(crate) fn new() -> Self {
            SpinBudget {
                started: None,
                rounds: 0,
            }
        }

        /// Waits one round; false once the budget is spent.
        pub(crate) fn spin(&mut self) -> bool {
            let started = *self.started.get_or_insert_with(Instant::now);
            self.rounds += 1;
            if self.rounds.is_multiple_of(8) && started.elapsed() >= SPIN_FOR {
                return false;
            }
            // Look at the shared state word only every few pauses, so the
            // spinner does not keep stealing its cache line from submitters.
            for _ in 0..8 {
                std::hint::spin_loop();
            }
            true
        }
    }

    /// The task queue: unbounded, lock-free, multi-producer multi-consumer.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(crossbeam_queue::SegQueue<T>);

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue(crossbeam_queue::SegQueue::new())
        }

        pub(crate) fn push(&self, value: T) {
            self.0.push(value);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.pop()
        }
    }
}

#[cfg(loom)]
mod model {
    use std::collections::VecDeque;
    use std::time::Duration;

    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

    pub(crate) mod thread {
        pub(crate) use loom::thread::{Builder, JoinHandle, yield_now};

        pub(crate) fn backoff(_round: u32) {
            yield_now();
        }
    }

    /// A loom mutex whose guard a [`Condvar`] can wait on in place.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// The guard of [`Mutex`]; holds its mutex so a timed wait can release
    /// and retake it.
    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a loom::sync::Mutex<T>,
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: &self.0,
                guard: Some(self.0.lock().unwrap()),
            }
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().unwrap()
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().unwrap()
        }
    }

    /// Loom has no clock: a zero idle time is a deadline that passes after
    /// one wait (so the model explores a time-out racing a wake-up), any
    /// other is never reached.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Deadline {
        zero: bool,
        waited: bool,
    }

    impl Deadline {
        pub(crate) fn after(after: Duration) -> Self {
            Deadline {
                zero: after.is_zero(),
                waited: false,
            }
        }

        pub(crate) fn never() -> Self {
            Deadline {
                zero: false,
                waited: false,
            }
        }

        pub(crate) fn expired(&self) -> bool {
            self.zero && self.waited
        }
    }

    /// A loom condition variable used with [`Mutex`].
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>, deadline: &mut Deadline) {
            let inner = guard.guard.take().unwrap();
            if deadline.zero {
                // A timed wait that times out: let go of the lock, let
                // anyone run, take the lock again.
                drop(inner);
                loom::thread::yield_now();
                guard.guard = Some(guard.mutex.lock().unwrap());
                deadline.waited = true;
            } else {
                guard.guard = Some(self.0.wait(inner).unwrap());
            }
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }

    /// One round of spinning, then park: loom explores the rest.
    #[derive(Debug)]
    pub(crate) struct SpinBudget {
        spent: bool,
    }

    impl SpinBudget {
        pub(crate) fn new() -> Self {
            SpinBudget { spent: false }
        }

        pub(crate) fn spin(&mut self) -> bool {
            if self.spent {
                return false;
            }
            self.spent = true;
            loom::thread::yield_now();
            true
        }
    }

    /// The task queue, modelled as a locked `VecDeque`.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(loom::sync::Mutex<VecDeque<T>>);

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue(loom::sync::Mutex::new(VecDeque::new()))
        }

        pub(crate) fn push(&self, value: T) {
            self.0.lock().unwrap().push_back(value);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }
    }
}
