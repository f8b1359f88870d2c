//! The [`Pool`] handle.

use std::fmt;

use crate::builder::Builder;
use crate::error::GoError;
use crate::loom::Arc;
use crate::shared::{Config, Shared};

/// A pool of OS-thread workers that run closures, for work that may block.
///
/// A cheap handle: clones share one pool. Workers start on demand — a task
/// wakes a parked worker if there is one, or starts a thread if fewer than
/// [`max_workers`](Builder::max_workers) are alive, or else waits in the
/// queue for a busy worker. A worker with nothing to do parks and retires
/// after [`max_idle`](Builder::max_idle).
///
/// Dropping the last handle shuts the pool down without waiting: queued
/// tasks still run, then the workers exit. [`shutdown`](Pool::shutdown)
/// does the same and waits.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use ferropoll_gopool::Pool;
///
/// let pool = Pool::new("example", 4);
/// let done = Arc::new(AtomicUsize::new(0));
/// for _ in 0..100 {
///     let done = done.clone();
///     pool.go(move || {
///         done.fetch_add(1, Ordering::Relaxed);
///     });
/// }
/// pool.shutdown(); // runs what is queued, joins the workers
/// assert_eq!(done.load(Ordering::Relaxed), 100);
/// ```
#[derive(Clone)]
pub struct Pool {
    handle: std::sync::Arc<Handle>,
}

/// Owned by the user-facing clones only; workers hold `Shared` directly, so
/// this drops when the last `Pool` does.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

impl Pool {
    /// A [`Builder`] with the defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A pool with the default settings but `name` and `max_workers`.
    ///
    /// Never fails: `max_workers` is clamped to 1..=[`Builder::MAX_WORKERS`]
    /// and NUL bytes are removed from `name`. Use [`Pool::builder`] to have
    /// such input rejected instead.
    pub fn new(name: &str, max_workers: usize) -> Pool {
        Pool::from_config(Config {
            name: name.replace('\0', ""),
            max_workers: max_workers.clamp(1, Builder::MAX_WORKERS),
            ..Config::default()
        })
    }

    pub(crate) fn from_config(config: Config) -> Pool {
        Pool {
            handle: std::sync::Arc::new(Handle {
                shared: Arc::new(Shared::new(config)),
            }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Runs `f` on a worker.
    ///
    /// Returns at once — after starting a thread (tens of microseconds) if
    /// no worker is free and fewer than `max_workers` exist. If the pool is shut down or its queue is full, `f`
    /// is dropped without running and the first such drop is reported on
    /// stderr; use [`try_go`](Pool::try_go) to handle that case yourself.
    /// A panic in `f` goes to the panic handler; the worker carries on.
    /// If the pool has no worker and the OS refuses to start one, `f` (and
    /// anything else queued) runs on the calling thread instead, after a
    /// line on stderr.
    pub fn go(&self, f: impl FnOnce() + Send + 'static) {
        if let Err(err) = self.try_go(f) {
            self.shared().report_rejection(err.reject());
        }
    }

    /// Runs `f` on a worker, or hands it back.
    ///
    /// # Errors
    ///
    /// [`GoError`] holding `f` when the pool is shut down
    /// ([`GoError::is_shutdown`]) or its queue holds
    /// [`max_queued`](Builder::max_queued) tasks ([`GoError::is_full`]).
    pub fn try_go(&self, f: impl FnOnce() + Send + 'static) -> Result<(), GoError> {
        Shared::submit(self.shared(), Box::new(f))
            .map_err(|(reject, task)| GoError::new(reject, task))
    }

    /// Worker threads alive now: running a task, looking for one, or parked.
    pub fn worker_count(&self) -> usize {
        self.shared().state().workers()
    }

    /// Workers parked with nothing to do (and not yet claimed by a waker).
    pub fn idle_count(&self) -> usize {
        self.shared().state().idle()
    }

    /// Tasks accepted and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.shared().state().queued()
    }

    /// Whether [`shutdown`](Pool::shutdown) was called (or every handle
    /// dropped); a shut-down pool accepts no more tasks.
    pub fn is_shutdown(&self) -> bool {
        self.shared().state().is_shutdown()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared().config.name
    }

    /// The most workers alive at once.
    pub fn max_workers(&self) -> usize {
        self.shared().config.max_workers
    }

    /// Stops accepting tasks, runs every task already queued, and waits
    /// until all workers have exited. Idempotent; later [`go`](Pool::go)
    /// calls drop their task, [`try_go`](Pool::try_go) calls fail.
    ///
    /// Called from a task running on this same pool it cannot wait for its
    /// own thread: it then only stops the pool and returns.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared().state();
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("workers", &state.workers())
            .field("idle", &state.idle())
            .field("queued", &state.queued())
            .field("shutdown", &state.is_shutdown())
            .finish()
    }
}
