//! Configuration of a [`Pool`].

use std::any::Any;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::pool::Pool;
use crate::shared::Config;
use crate::state;

/// Configures and builds a [`Pool`]; get one with [`Pool::builder`].
///
/// Setters take `&mut self` and can be chained; [`build`](Builder::build)
/// checks the settings and can be called more than once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ferropoll_gopool::Pool;
///
/// let pool = Pool::builder()
///     .name("handlers")
///     .max_workers(64)
///     .max_idle(Duration::from_secs(30))
///     .panic_handler(|payload| eprintln!("handler panicked: {payload:?}"))
///     .build()?;
/// pool.go(|| println!("hello from a worker"));
/// pool.shutdown();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Default [`max_workers`](Builder::max_workers): 512, as tokio's
    /// blocking pool. Each live worker is an OS thread with its own stack
    /// (reserved virtual memory, see [`stack_size`](Builder::stack_size);
    /// only the pages it touches are resident).
    pub const DEFAULT_MAX_WORKERS: usize = 512;
    /// The largest accepted [`max_workers`](Builder::max_workers).
    pub const MAX_WORKERS: usize = state::MAX_WORKERS;
    /// Default [`max_idle`](Builder::max_idle): 10 seconds.
    pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(10);
    /// Default [`max_queued`](Builder::max_queued): 2^24 tasks. A queued
    /// task costs at least 16 bytes of queue slot plus its boxed closure.
    pub const DEFAULT_MAX_QUEUED: usize = 1 << 24;
    /// The largest accepted [`max_queued`](Builder::max_queued): 2^30 − 1.
    pub const MAX_QUEUED: usize = state::MAX_QUEUED;

    /// A builder with the defaults: name `gopool`, 512 workers at most,
    /// 10 s idle time, 2^24 queued tasks at most, the platform's default
    /// stack size, panics reported on stderr.
    pub fn new() -> Builder {
        Builder {
            config: Config::default(),
        }
    }

    /// Names the pool; its threads are called `<name>-<n>` (Linux shows the
    /// first 15 bytes).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.config.name = name.into();
        self
    }

    /// The most worker threads alive at once, 1 to
    /// [`MAX_WORKERS`](Builder::MAX_WORKERS). When every worker is busy, new
    /// tasks wait in the queue.
    pub fn max_workers(&mut self, n: usize) -> &mut Self {
        self.config.max_workers = n;
        self
    }

    /// How long a worker with nothing to do stays parked before its thread
    /// exits. `Duration::ZERO` retires workers as soon as they run out of
    /// work; `Duration::MAX` keeps them until shutdown.
    pub fn max_idle(&mut self, d: Duration) -> &mut Self {
        self.config.max_idle = d;
        self
    }

    /// The most tasks waiting at once, 1 to
    /// [`MAX_QUEUED`](Builder::MAX_QUEUED); past it
    /// [`Pool::try_go`] fails with [`GoError::is_full`](crate::GoError::is_full).
    pub fn max_queued(&mut self, n: usize) -> &mut Self {
        self.config.max_queued = n;
        self
    }

    /// The stack size of each worker thread, in bytes (default: the
    /// platform's, 2 MiB on Linux).
    pub fn stack_size(&mut self, bytes: usize) -> &mut Self {
        self.config.stack_size = Some(bytes);
        self
    }

    /// Receives the payload of every task that panics, on the worker thread
    /// that ran it; the worker then goes on. Without one, the pool prints a
    /// line on stderr. A handler that panics itself is reported on stderr.
    pub fn panic_handler(
        &mut self,
        f: impl Fn(Box<dyn Any + Send>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.config.panic_handler = Some(std::sync::Arc::new(f));
        self
    }

    /// Builds the pool. No thread starts until the first task.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `max_workers` or `max_queued` is
    /// 0 or above its maximum, or the name contains a NUL byte.
    pub fn build(&mut self) -> io::Result<Pool> {
        let c = &self.config;
        if c.max_workers == 0 || c.max_workers > Self::MAX_WORKERS {
            return Err(invalid(format!(
                "max_workers must be 1..={}, got {}",
                Self::MAX_WORKERS,
                c.max_workers
            )));
        }
        if c.max_queued == 0 || c.max_queued > Self::MAX_QUEUED {
            return Err(invalid(format!(
                "max_queued must be 1..={}, got {}",
                Self::MAX_QUEUED,
                c.max_queued
            )));
        }
        if c.name.contains('\0') {
            return Err(invalid(
                "the pool name must not contain NUL bytes".to_owned(),
            ));
        }
        Ok(Pool::from_config(self.config.clone()))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            name: "gopool".to_owned(),
            max_workers: Builder::DEFAULT_MAX_WORKERS,
            max_idle: Builder::DEFAULT_MAX_IDLE,
            max_queued: Builder::DEFAULT_MAX_QUEUED,
            stack_size: None,
            panic_handler: None,
        }
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("Builder")
            .field("name", &c.name)
            .field("max_workers", &c.max_workers)
            .field("max_idle", &c.max_idle)
            .field("max_queued", &c.max_queued)
            .field("stack_size", &c.stack_size)
            .field("panic_handler", &c.panic_handler.as_ref().map(|_| "custom"))
            .finish()
    }
}
