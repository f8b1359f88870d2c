//! The error of [`Pool::try_go`](crate::Pool::try_go).

use std::fmt;

use crate::shared::Task;
use crate::state::Reject;

/// A task the pool did not accept, handed back.
///
/// # Examples
///
/// ```
/// use ferropoll_gopool::Pool;
///
/// let pool = Pool::new("example", 2);
/// pool.shutdown();
/// let err = pool.try_go(|| println!("ran by the caller instead")).unwrap_err();
/// assert!(err.is_shutdown());
/// (err.into_task())(); // run it here, or drop it
/// ```
pub struct GoError {
    reject: Reject,
    // A mutex only to make the error `Sync` (a closure need not be).
    task: parking_lot::Mutex<Task>,
}

impl GoError {
    pub(crate) fn new(reject: Reject, task: Task) -> GoError {
        GoError {
            reject,
            task: parking_lot::Mutex::new(task),
        }
    }

    pub(crate) fn reject(&self) -> Reject {
        self.reject
    }

    /// The pool was shut down (by [`Pool::shutdown`](crate::Pool::shutdown)
    /// or by dropping its last handle).
    pub fn is_shutdown(&self) -> bool {
        self.reject == Reject::Shutdown
    }

    /// The queue held [`max_queued`](crate::Builder::max_queued) tasks.
    pub fn is_full(&self) -> bool {
        self.reject == Reject::Full
    }

    /// The task that was not accepted.
    #[must_use = "the task is dropped unless it is run or kept"]
    pub fn into_task(self) -> Box<dyn FnOnce() + Send + 'static> {
        self.task.into_inner()
    }
}

impl fmt::Debug for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoError")
            .field("reason", &self.reject)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reject {
            Reject::Shutdown => f.write_str("task rejected: the pool is shut down"),
            Reject::Full => f.write_str("task rejected: the pool's queue is full"),
        }
    }
}

impl std::error::Error for GoError {}
