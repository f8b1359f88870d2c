//! The state shared by a pool's handles and workers, and the protocol over it:
//! submit, claim, park, wake, retire, shut down.
//!
//! The decisions are the pure transitions of [`State`]; this module applies
//! them with compare-and-swap and carries out what they ask — pushing and
//! popping tasks, waking one parked worker, starting one thread.
//!
//! Parked workers wait on their own condition variable under one mutex, on a
//! LIFO stack: the most recently parked worker is woken first, so under a
//! light load the others reach their idle time and retire instead of being
//! kept warm in turn. A waker that claimed an idle worker (in the state word)
//! but finds the stack empty — the worker has counted itself idle and not
//! parked yet — leaves a token that the worker takes instead of sleeping.

use std::any::Any;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::Duration;

use crate::loom::thread::{self, JoinHandle};
use crate::loom::{Arc, AtomicBool, AtomicU64, AtomicUsize, Condvar, Deadline, Mutex, Queue};
use crate::state::{Reject, Signal, State, Step};
use crate::worker;

/// A submitted closure.
pub(crate) type Task = Box<dyn FnOnce() + Send + 'static>;

/// Receives the payload of a task that panicked.
pub(crate) type PanicHandler = std::sync::Arc<dyn Fn(Box<dyn Any + Send>) + Send + Sync + 'static>;

/// A pool's settings, validated by the builder.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_workers: usize,
    pub(crate) max_idle: Duration,
    pub(crate) max_queued: usize,
    pub(crate) stack_size: Option<usize>,
    pub(crate) panic_handler: Option<PanicHandler>,
}

/// One parked worker's place on the stack.
pub(crate) struct Slot {
    cv: Condvar,
    /// Set (under the sleepers lock) by the waker that popped this slot.
    notified: AtomicBool,
}

impl Slot {
    pub(crate) fn new() -> Slot {
        Slot {
            cv: Condvar::new(),
            notified: AtomicBool::new(false),
        }
    }
}

struct Sleepers {
    parked: Vec<Arc<Slot>>,
    /// Wake-ups claimed for workers that had counted themselves idle but
    /// were not on `parked` yet.
    tokens: usize,
}

/// How a park ended.
pub(crate) enum Parked {
    /// A waker claimed this worker: it now holds `SEARCHING` (or the pool is
    /// shutting down).
    Woken,
    /// The idle time ran out and the worker was uncounted: it must exit.
    Retired,
}

pub(crate) struct Shared {
    state: AtomicU64,
    queue: Queue<Task>,
    sleepers: Mutex<Sleepers>,
    /// Join handles of live workers, by worker number. A retiring worker
    /// removes (detaches) its own; `shutdown` joins the rest.
    handles: Mutex<BTreeMap<usize, JoinHandle<()>>>,
    next_worker: AtomicUsize,
    /// Rejections by `go` already reported on stderr: bit 0 shutdown, bit 1 full.
    reported: AtomicUsize,
    pub(crate) config: Config,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            state: AtomicU64::new(0),
            queue: Queue::new(),
            sleepers: Mutex::new(Sleepers {
                parked: Vec::new(),
                tokens: 0,
            }),
            handles: Mutex::new(BTreeMap::new()),
            next_worker: AtomicUsize::new(1),
            reported: AtomicUsize::new(0),
            config,
        }
    }

    pub(crate) fn state(&self) -> State {
        State(self.state.load(Acquire))
    }

    /// Applies `f` to the state word until the compare-and-swap holds.
    fn update<T, E>(&self, mut f: impl FnMut(State) -> Result<(State, T), E>) -> Result<T, E> {
        let mut current = self.state.load(Acquire);
        loop {
            let (next, out) = f(State(current))?;
            if next.0 == current {
                return Ok(out);
            }
            match self
                .state
                .compare_exchange_weak(current, next.0, AcqRel, Acquire)
            {
                Ok(_) => return Ok(out),
                Err(actual) => current = actual,
            }
        }
    }

    fn update_infallible<T>(&self, mut f: impl FnMut(State) -> (State, T)) -> T {
        match self.update(|s| Ok::<_, Infallible>(f(s))) {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }

    /// Queues `task` and makes sure a worker will run it.
    pub(crate) fn submit(this: &Arc<Shared>, task: Task) -> Result<(), (Reject, Task)> {
        let (max_queued, max_workers) = (this.config.max_queued, this.config.max_workers);
        let signal = match this.update(|s| s.submit(max_queued, max_workers)) {
            Ok(signal) => signal,
            Err(reject) => return Err((reject, task)),
        };
        // Counted first, pushed second: a worker that claims the count before
        // the push lands waits for it in `run_claimed`. Nothing between the
        // two can unwind, so every count is followed by its task.
        this.queue.push(task);
        Shared::signal(this, signal);
        Ok(())
    }

    /// Carries out what a transition asked for.
    pub(crate) fn signal(this: &Arc<Shared>, signal: Signal) {
        match signal {
            Signal::None => {}
            Signal::Wake => this.wake_one(),
            Signal::Spawn => Shared::spawn_worker(this),
        }
    }

    /// A free worker's next step (see [`State::next_step`]).
    pub(crate) fn next_step(&self, searching: bool, may_spin: bool) -> (Step, Signal) {
        let max_workers = self.config.max_workers;
        self.update_infallible(|s| {
            let (next, step, signal) = s.next_step(searching, may_spin, max_workers);
            (next, (step, signal))
        })
    }

    /// Pops the task a transition claimed and runs it, catching a panic.
    pub(crate) fn run_claimed(&self) {
        let mut round = 0;
        let task = loop {
            if let Some(task) = self.queue.pop() {
                break task;
            }
            // The submitter counted the task and has not pushed it yet.
            thread::backoff(round);
            round = round.saturating_add(1);
        };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(task)) {
            self.report_panic(payload);
        }
    }

    fn report_panic(&self, payload: Box<dyn Any + Send>) {
        let Some(handler) = &self.config.panic_handler else {
            eprintln!(
                "ferropoll-gopool: a task of pool `{}` panicked: {}",
                self.config.name,
                panic_message(payload.as_ref())
            );
            return;
        };
        if let Err(second) = panic::catch_unwind(AssertUnwindSafe(|| handler(payload))) {
            eprintln!(
                "ferropoll-gopool: the panic handler of pool `{}` panicked: {}",
                self.config.name,
                panic_message(second.as_ref())
            );
            // Its payload's destructor might panic as well: keep it.
            std::mem::forget(second);
        }
    }

    /// Tells stderr, once per pool and reason, that `go` dropped a task.
    pub(crate) fn report_rejection(&self, reject: Reject) {
        let (bit, why) = match reject {
            Reject::Shutdown => (1, "the pool is shut down"),
            Reject::Full => (2, "the queue is full"),
        };
        if self.reported.fetch_or(bit, Relaxed) & bit == 0 {
            eprintln!(
                "ferropoll-gopool: pool `{}` dropped a task given to go(): {why} \
                 (reported once; use try_go to handle rejections)",
                self.config.name
            );
        }
    }

    fn wake_one(&self) {
        let mut sleepers = self.sleepers.lock();
        match sleepers.parked.pop() {
            Some(slot) => {
                slot.notified.store(true, Relaxed);
                drop(sleepers);
                slot.cv.notify_one();
            }
            None => sleepers.tokens += 1,
        }
    }

    /// Parks a worker that counted itself idle until a waker claims it or
    /// its idle time runs out.
    pub(crate) fn park(&self, slot: &Arc<Slot>) -> Parked {
        let mut sleepers = self.sleepers.lock();
        if sleepers.tokens > 0 {
            sleepers.tokens -= 1;
            return Parked::Woken;
        }
        slot.notified.store(false, Relaxed);
        sleepers.parked.push(Arc::clone(slot));
        let mut deadline = Deadline::after(self.config.max_idle);
        loop {
            slot.cv.wait(&mut sleepers, &mut deadline);
            if slot.notified.load(Relaxed) {
                return Parked::Woken;
            }
            if deadline.expired() {
                if self
                    .update(|s| s.retire().map(|next| (next, ())).ok_or(()))
                    .is_ok()
                {
                    sleepers.parked.retain(|parked| !Arc::ptr_eq(parked, slot));
                    return Parked::Retired;
                }
                // Every idle worker is claimed, this one included: a waker
                // is on its way to this stack.
                deadline = Deadline::never();
            }
        }
    }

    fn spawn_worker(this: &Arc<Shared>) {
        let number = this.next_worker.fetch_add(1, Relaxed);
        let mut builder = thread::Builder::new().name(format!("{}-{number}", this.config.name));
        if let Some(size) = this.config.stack_size {
            builder = builder.stack_size(size);
        }
        let shared = Arc::clone(this);
        // Hold the map while spawning so the worker cannot look for its
        // handle (to retire) before it is there.
        let mut handles = this.handles.lock();
        match builder.spawn(move || worker::run(shared, number)) {
            Ok(handle) => {
                handles.insert(number, handle);
            }
            Err(err) => {
                drop(handles);
                Shared::spawn_failed(this, &err);
            }
        }
    }

    fn spawn_failed(this: &Arc<Shared>, err: &std::io::Error) {
        eprintln!(
            "ferropoll-gopool: pool `{}` could not start a worker: {err}",
            this.config.name
        );
        let max_workers = this.config.max_workers;
        let (signal, orphaned) = this.update_infallible(|s| {
            let (next, signal, orphaned) = s.spawn_failed(max_workers);
            (next, (signal, orphaned))
        });
        Shared::signal(this, signal);
        if orphaned {
            // No worker is alive to run what is queued: run it here rather
            // than leave it stranded.
            while this
                .update(|s| s.claim_inline().map(|next| (next, ())).ok_or(()))
                .is_ok()
            {
                this.run_claimed();
            }
        }
    }

    /// A retired worker detaches its own handle.
    pub(crate) fn forget_handle(&self, number: usize) {
        let handle = self.handles.lock().remove(&number);
        drop(handle);
    }

    /// Stops accepting tasks and wakes every parked worker; queued tasks
    /// still run, then the workers exit. Does not wait.
    pub(crate) fn begin_shutdown(&self) {
        let woken = self.update_infallible(State::shut_down);
        for _ in 0..woken {
            self.wake_one();
        }
    }

    /// [`begin_shutdown`](Self::begin_shutdown), then waits for every worker
    /// to exit — unless called from one of this pool's own workers, which
    /// cannot wait for itself.
    pub(crate) fn shutdown(&self) {
        self.begin_shutdown();
        if worker::is_worker_of(self) {
            return;
        }
        let mut round = 0;
        loop {
            // A BTreeMap, not a HashMap: a deterministic join order keeps
            // loom's replay of an execution exact.
            let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.handles.lock())
                .into_values()
                .collect();
            if handles.is_empty() {
                if self.state().workers() == 0 {
                    return;
                }
                // A worker is being spawned (counted, handle not stored yet),
                // or another `shutdown` is joining it.
                thread::backoff(round);
                round = round.saturating_add(1);
                continue;
            }
            for handle in handles {
                // Tasks run under catch_unwind: a worker never panics.
                let _ = handle.join();
            }
        }
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string payload)"
    }
}
