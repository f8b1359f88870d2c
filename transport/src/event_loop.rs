//! `EventLoop`: a group of loop threads, their builder, stats and shutdown.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::addr::{Addr, Listener};
use crate::conn::Connection;
use crate::handler::{Dispatch, Handler, NoHandler};
use crate::reactor::{LoopShared, Reactor, Task, on_loop_thread};
use crate::sys;

/// How accepted (and dialed) connections are spread over the loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each new connection goes to the next loop in turn.
    #[default]
    RoundRobin,
    /// Each new connection goes to the loop with the fewest open ones.
    LeastConnections,
}

pub(crate) enum Mode {
    Inline,
    Pool(Option<ferropoll_gopool::Pool>),
    Blocking,
}

pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) num_loops: usize,
    pub(crate) balance: Balance,
    pub(crate) mode: Mode,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) input_high_water: usize,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) backlog: i32,
}

/// Runs `f` on the given pool, or gopool's default pool.
pub(crate) fn spawn_on(pool: &Option<ferropoll_gopool::Pool>, f: impl FnOnce() + Send + 'static) {
    match pool {
        Some(p) => p.go(f),
        None => ferropoll_gopool::go(f),
    }
}

/// State shared by the loops of one `EventLoop`.
pub(crate) struct Group {
    pub(crate) loops: Vec<Arc<LoopShared>>,
    pub(crate) open: AtomicUsize,
    pub(crate) force: AtomicBool,
    shut: AtomicBool,
    rr: AtomicUsize,
    balance: Balance,
    alive: Mutex<usize>,
    alive_cv: Condvar,
    addrs: Mutex<Vec<Addr>>,
}

impl Group {
    pub(crate) fn pick_loop(&self) -> Arc<LoopShared> {
        let n = self.loops.len();
        let i = match self.balance {
            _ if n == 1 => 0,
            Balance::RoundRobin => self.rr.fetch_add(1, Ordering::Relaxed) % n,
            Balance::LeastConnections => (0..n)
                .min_by_key(|&i| self.loops[i].counters.open.load(Ordering::Relaxed))
                .unwrap_or(0),
        };
        self.loops[i].clone()
    }

    pub(crate) fn loop_exited(&self) {
        let mut alive = self.alive.lock();
        *alive -= 1;
        self.alive_cv.notify_all();
    }

    fn wait_loops(&self, until: Instant) -> bool {
        let mut alive = self.alive.lock();
        while *alive > 0 {
            if self.alive_cv.wait_until(&mut alive, until).timed_out() {
                return *alive == 0;
            }
        }
        true
    }
}

/// Configures and builds an [`EventLoop`].
///
/// Defaults: one loop per core, round-robin balance, inline dispatch, no
/// read/write/idle timeout, at most 100,000 connections (excess connections
/// are accepted and closed at once), input high-water mark 4 MiB per
/// connection, no TCP keepalive, listen backlog 4096 (the kernel caps it at
/// `net.core.somaxconn`). An idle connection holds no buffer memory; each
/// open one costs a few hundred bytes of bookkeeping.
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    num_loops: usize,
    balance: Balance,
    dispatch: Dispatch,
    pool: Option<ferropoll_gopool::Pool>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_connections: usize,
    input_high_water: usize,
    keepalive: Option<Duration>,
    backlog: i32,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: "ferropoll".into(),
            num_loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            balance: Balance::RoundRobin,
            dispatch: Dispatch::Inline,
            pool: None,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            max_connections: 100_000,
            input_high_water: 4 << 20,
            keepalive: None,
            backlog: 4096,
        }
    }
}

impl Builder {
    /// Thread-name prefix of the loops (default `ferropoll`).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = name.into();
        self
    }
    /// Number of loop threads (default: the number of cores; at least 1).
    pub fn num_loops(&mut self, n: usize) -> &mut Self {
        self.num_loops = n.max(1);
        self
    }
    /// How new connections are spread over the loops.
    pub fn balance(&mut self, b: Balance) -> &mut Self {
        self.balance = b;
        self
    }
    /// Where `on_request` runs.
    pub fn dispatch(&mut self, d: Dispatch) -> &mut Self {
        self.dispatch = d;
        self
    }
    /// The pool of [`Dispatch::Pool`] (default: gopool's default pool).
    pub fn pool(&mut self, pool: ferropoll_gopool::Pool) -> &mut Self {
        self.pool = Some(pool);
        self
    }
    /// Default read timeout of new connections (see [`Connection::set_read_timeout`]).
    pub fn read_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.read_timeout = d;
        self
    }
    /// Default write timeout of new connections (see [`Connection::set_write_timeout`]).
    pub fn write_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.write_timeout = d;
        self
    }
    /// Default idle timeout of new connections (see [`Connection::set_idle_timeout`]).
    pub fn idle_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.idle_timeout = d;
        self
    }
    /// Most open connections; a connection accepted beyond it is closed at once.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.max_connections = n;
        self
    }
    /// Unread input per connection at which the loop stops reading it (it
    /// resumes when the consumer drains half of it; a blocked read of more
    /// bytes raises the mark to its size). The same bound applies to pending
    /// output: the loop stops reading a connection whose unsent output
    /// passes it, and other threads' flushes wait.
    pub fn input_high_water(&mut self, bytes: usize) -> &mut Self {
        self.input_high_water = bytes.max(1);
        self
    }
    /// TCP keepalive idle time and probe interval (`None`: off).
    pub fn keepalive(&mut self, d: Option<Duration>) -> &mut Self {
        self.keepalive = d;
        self
    }
    /// Listen backlog (default 4096, capped by the kernel at `somaxconn`).
    pub fn backlog(&mut self, n: i32) -> &mut Self {
        self.backlog = n.max(1);
        self
    }

    /// Starts the loop threads with `handler` for every connection.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::time::Duration;
    /// use ferropoll_transport::{EventLoop, Listener, handler_fn};
    ///
    /// let echo = handler_fn(|conn| {
    ///     let mut r = conn.reader();
    ///     let n = r.len();
    ///     let data = r.slice(n)?;
    ///     drop(r);
    ///     let mut w = conn.writer();
    ///     w.append(data);
    ///     w.flush()
    /// });
    /// let server = EventLoop::builder().num_loops(1).build(echo)?;
    /// let addr = server.listen(Listener::bind_tcp("127.0.0.1:0")?)?;
    ///
    /// let mut client = std::net::TcpStream::connect(addr.as_tcp().unwrap())?;
    /// client.write_all(b"hello")?;
    /// let mut back = [0u8; 5];
    /// client.read_exact(&mut back)?;
    /// assert_eq!(&back, b"hello");
    /// server.shutdown(Duration::from_secs(1))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build<H: Handler>(&self, handler: H) -> io::Result<EventLoop> {
        let mode = match self.dispatch {
            Dispatch::Inline => Mode::Inline,
            Dispatch::Pool => Mode::Pool(self.pool.clone()),
        };
        self.start(handler, mode)
    }

    /// Starts loops for dialed connections read with blocking reads (no handler).
    pub(crate) fn build_blocking(&self) -> io::Result<EventLoop> {
        self.start(NoHandler, Mode::Blocking)
    }

    fn start<H: Handler>(&self, handler: H, mode: Mode) -> io::Result<EventLoop> {
        let cfg = Arc::new(Config {
            name: self.name.clone(),
            num_loops: self.num_loops,
            balance: self.balance,
            mode,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            input_high_water: self.input_high_water,
            keepalive: self.keepalive,
            backlog: self.backlog,
        });
        let loops = (0..cfg.num_loops)
            .map(|i| LoopShared::new(i, cfg.clone()).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let group = Arc::new(Group {
            loops,
            open: AtomicUsize::new(0),
            force: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            rr: AtomicUsize::new(0),
            balance: cfg.balance,
            alive: Mutex::new(0),
            alive_cv: Condvar::new(),
            addrs: Mutex::new(Vec::new()),
        });
        let handler = Arc::new(handler);
        let reactors = group
            .loops
            .iter()
            .map(|l| Reactor::new(l.clone(), group.clone(), handler.clone()))
            .collect::<io::Result<Vec<_>>>()?;
        let handle = Arc::new(Handle {
            group: group.clone(),
            threads: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
            stopped_cv: Condvar::new(),
        });
        for (i, r) in reactors.into_iter().enumerate() {
            *group.alive.lock() += 1;
            let g = group.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-loop-{i}", cfg.name))
                .spawn(move || {
                    // A panic here is a bug of the transport (handler panics
                    // are caught per connection); say so loudly and let
                    // shutdown go on instead of waiting for this loop.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.run()));
                    if run.is_err() {
                        tracing::error!(loop_index = i, "event loop thread panicked");
                        g.loop_exited();
                    }
                });
            match spawned {
                Ok(t) => handle.threads.lock().push(t),
                Err(e) => {
                    *group.alive.lock() -= 1;
                    let lp = EventLoop { inner: handle };
                    let _ = lp.shutdown(Duration::ZERO);
                    return Err(e);
                }
            }
        }
        Ok(EventLoop { inner: handle })
    }
}

struct Handle {
    group: Arc<Group>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopped: Mutex<bool>,
    stopped_cv: Condvar,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.group.shut.load(Ordering::Acquire) {
            let _ = shutdown(self, Duration::ZERO);
        }
    }
}

/// A group of event-loop threads serving connections with one handler.
///
/// A cheap `Clone` handle; when the last handle drops, the loops stop at
/// once (as `shutdown(Duration::ZERO)`). Build one with
/// [`EventLoop::builder`]; see [`Builder::build`] for an example.
#[derive(Clone)]
pub struct EventLoop {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("loops", &self.inner.group.loops.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A snapshot of an [`EventLoop`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now.
    pub open: usize,
    /// Connections accepted since start (not counting refused ones).
    pub accepted: u64,
    /// Connections refused because of `max_connections`.
    pub rejected: u64,
    /// Connections closed since start.
    pub closed: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Handler panics caught (each closed its connection).
    pub handler_panics: u64,
    /// Connections closed by a read, write or idle timeout.
    pub timeouts: u64,
}

impl EventLoop {
    /// A builder with the defaults listed on [`Builder`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts accepting on `listener` and returns its address. Connections
    /// are accepted on one loop and spread over all of them.
    pub fn listen(&self, listener: impl Into<Listener>) -> io::Result<Addr> {
        let g = &self.inner.group;
        if g.shut.load(Ordering::Acquire) {
            return Err(io::Error::other("event loop is shut down"));
        }
        let listener = listener.into();
        let addr = listener.local_addr()?;
        let lp = g.pick_loop();
        if lp.is_current() {
            return Err(io::Error::other(
                "listen cannot be called from its own loop thread",
            ));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        lp.send(Task::Listen(listener, tx));
        rx.recv()
            .map_err(|_| io::Error::other("event loop stopped"))??;
        tracing::info!(%addr, "listening");
        g.addrs.lock().push(addr.clone());
        Ok(addr)
    }

    /// Listens on `listener` and blocks until the loop is shut down.
    pub fn serve(&self, listener: impl Into<Listener>) -> io::Result<()> {
        self.listen(listener)?;
        let mut stopped = self.inner.stopped.lock();
        while !*stopped {
            self.inner.stopped_cv.wait(&mut stopped);
        }
        Ok(())
    }

    /// Stops accepting, lets running handlers finish and pending output
    /// drain, closes the connections, and joins the loop threads. Returns
    /// when all is done, or at `deadline`: what is left then is closed at
    /// once and `ErrorKind::TimedOut` is returned.
    pub fn shutdown(&self, deadline: Duration) -> io::Result<()> {
        shutdown(&self.inner, deadline)
    }

    /// A snapshot of the counters (sums over the loops).
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            open: self.inner.group.open.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for l in &self.inner.group.loops {
            let c = &l.counters;
            s.accepted += c.accepted.load(Ordering::Relaxed);
            s.rejected += c.rejected.load(Ordering::Relaxed);
            s.closed += c.closed.load(Ordering::Relaxed);
            s.bytes_in += c.bytes_in.load(Ordering::Relaxed);
            s.bytes_out += c.bytes_out.load(Ordering::Relaxed);
            s.handler_panics += c.panics.load(Ordering::Relaxed);
            s.timeouts += c.timeouts.load(Ordering::Relaxed);
        }
        s
    }

    /// Addresses of the listeners started so far.
    pub fn local_addrs(&self) -> Vec<Addr> {
        self.inner.group.addrs.lock().clone()
    }

    /// Number of loop threads.
    pub fn num_loops(&self) -> usize {
        self.inner.group.loops.len()
    }

    /// Connects to a TCP address (each resolved address in turn, `timeout`
    /// each) and serves the connection on these loops, with this loop's
    /// handler. With `TCP_NODELAY` on.
    pub fn dial_tcp(&self, addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Connection> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match sys::connect_tcp(a, timeout) {
                Ok(fd) => return self.adopt(fd, Addr::Tcp(a), true),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to dial")))
    }

    /// Connects to a Unix domain socket and serves the connection on these loops.
    pub fn dial_unix(&self, path: impl AsRef<Path>, timeout: Duration) -> io::Result<Connection> {
        let path = path.as_ref();
        let fd = sys::connect_unix(path, timeout)?;
        self.adopt(fd, Addr::Unix(Some(path.to_path_buf())), false)
    }

    fn adopt(&self, fd: std::os::fd::OwnedFd, peer: Addr, is_tcp: bool) -> io::Result<Connection> {
        let g = &self.inner.group;
        if g.shut.load(Ordering::Acquire) {
            return Err(io::Error::other("event loop is shut down"));
        }
        let cfg = &g.loops[0].cfg;
        if is_tcp {
            if let Some(k) = cfg.keepalive {
                sys::set_keepalive(std::os::fd::AsRawFd::as_raw_fd(&fd), k)?;
            }
        }
        let target = g.pick_loop();
        g.open.fetch_add(1, Ordering::AcqRel);
        target.counters.open.fetch_add(1, Ordering::AcqRel);
        let blocking = !matches!(cfg.mode, Mode::Inline);
        let conn = Connection::new(fd, peer, target.clone(), blocking);
        target.send(Task::Attach(conn.clone()));
        Ok(conn)
    }
}

fn shutdown(h: &Handle, deadline: Duration) -> io::Result<()> {
    let g = &h.group;
    let end = Instant::now() + deadline;
    if !g.shut.swap(true, Ordering::AcqRel) {
        for l in &g.loops {
            l.send(Task::Shutdown);
        }
    }
    let clean = g.wait_loops(end);
    if !clean {
        g.force.store(true, Ordering::Release);
        for l in &g.loops {
            l.send(Task::Shutdown);
        }
        g.wait_loops(Instant::now() + Duration::from_secs(2));
    }
    if !on_loop_thread() {
        let threads = std::mem::take(&mut *h.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
    *h.stopped.lock() = true;
    h.stopped_cv.notify_all();
    if clean {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "shutdown deadline passed; remaining connections were closed",
        ))
    }
}
