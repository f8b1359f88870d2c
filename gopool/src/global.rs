//! The process-wide default pool.

use std::sync::OnceLock;

use crate::pool::Pool;
use crate::shared::Config;

static DEFAULT: OnceLock<Pool> = OnceLock::new();

/// The process-wide pool behind [`go`], created on first use with the
/// [`Builder`](crate::Builder) defaults and the name `gopool`.
///
/// It lives for the whole process; its idle workers retire after the default
/// idle time. Shutting it down is permanent: every later [`go`] drops its task.
pub fn default_pool() -> &'static Pool {
    DEFAULT.get_or_init(|| Pool::from_config(Config::default()))
}

/// Runs `f` on the [`default_pool`].
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
///
/// let (tx, rx) = mpsc::channel();
/// ferropoll_gopool::go(move || tx.send(6 * 7).unwrap());
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn go(f: impl FnOnce() + Send + 'static) {
    default_pool().go(f);
}
