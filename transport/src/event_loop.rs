//! `EventLoop`: a group of loop threads, their builder, stats and shutdown.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
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
use crate::timer::{Callback, TimerHandle, deadline_in};
use crate::udp::{UdpEndpoint, UdpEntry, UdpHandler};

/// How accepted (and dialed) connections are spread over the loops.
///
/// Listeners registered with [`EventLoop::listen`] are placed round robin
/// whatever the policy. Per-loop `SO_REUSEPORT` listeners
/// ([`Builder::reuse_port`]) bypass the policy: each loop keeps what it
/// accepts and the kernel spreads connections by a hash of the 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each new connection goes to the next loop in turn.
    #[default]
    RoundRobin,
    /// Each new connection goes to the loop with the fewest open ones.
    LeastConnections,
    /// Each new connection goes to the loop picked by a hash of the peer's
    /// address (IP and port, as gnet's `SourceAddrHash`), so a given source
    /// address always lands on the same loop: see
    /// [`Balance::source_addr_loop`]. Peers without an address (unnamed
    /// Unix sockets) go round robin.
    SourceAddrHash,
}

impl Balance {
    /// The loop index that [`Balance::SourceAddrHash`] gives `peer` among
    /// `num_loops` loops (FNV-1a of the address bytes and port; stable
    /// across runs and processes). `num_loops` of 0 counts as 1.
    ///
    /// ```
    /// use ferropoll_transport::Balance;
    ///
    /// let peer = "127.0.0.1:40000".parse().unwrap();
    /// let i = Balance::source_addr_loop(&peer, 4);
    /// assert!(i < 4);
    /// assert_eq!(i, Balance::source_addr_loop(&peer, 4));
    /// ```
    pub fn source_addr_loop(peer: &SocketAddr, num_loops: usize) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match peer.ip() {
            IpAddr::V4(ip) => eat(&ip.octets()),
            IpAddr::V6(ip) => eat(&ip.octets()),
        }
        eat(&peer.port().to_be_bytes());
        (h % num_loops.max(1) as u64) as usize
    }
}

/// What happens when a connection's unsent output passes the output
/// high-water mark ([`Builder::output_high_water`]) because its peer reads
/// slower than the server writes (or not at all).
///
/// Either way the connection's buffered output stays bounded: a peer that
/// does not read cannot make the server buffer without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFull {
    /// Writers wait (the default). When the loop thread's own writes (an
    /// inline handler's answers) pass the mark, the loop stops reading the
    /// connection and stops running its handler until the peer has read
    /// the output down to the mark. A [`flush`](crate::Writer::flush) from
    /// another thread (a pool handler, a client's caller) blocks until
    /// then, up to the write timeout (then the connection closes and the
    /// flush fails with `TimedOut`); reading goes on meanwhile, so a client
    /// whose requests back up still reads the answers that free its server. A handler that writes many responses in one
    /// `on_request` call (pipelining) checks
    /// [`Writer::is_full`](crate::Writer::is_full) between them and returns,
    /// leaving the rest of its input for the next round.
    #[default]
    Wait,
    /// Writers get an error: the flush that leaves more than the mark
    /// unsent fails with `ErrorKind::QuotaExceeded` and the connection
    /// closes at once, its unsent output dropped (a partial frame must not
    /// be sent later). The mark must then exceed the largest single
    /// response.
    Fail,
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
    pub(crate) output_high_water: usize,
    pub(crate) output_full: OutputFull,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) tcp_user_timeout: Option<Duration>,
    pub(crate) backlog: i32,
    pub(crate) reuse_port: bool,
    pub(crate) udp_batch: usize,
    pub(crate) udp_max_datagram: usize,
    pub(crate) udp_gso: bool,
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
    /// The loop a new connection from `peer` (or a listener: `None`) goes to.
    pub(crate) fn pick_loop(&self, peer: Option<&Addr>) -> Arc<LoopShared> {
        let n = self.loops.len();
        let i = match (self.balance, peer) {
            _ if n == 1 => 0,
            (Balance::SourceAddrHash, Some(Addr::Tcp(a))) => Balance::source_addr_loop(a, n),
            (Balance::RoundRobin | Balance::SourceAddrHash, _) => {
                self.rr.fetch_add(1, Ordering::Relaxed) % n
            }
            (Balance::LeastConnections, _) => (0..n)
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
/// connection, output high-water mark 4 MiB per connection (writers wait,
/// [`OutputFull::Wait`]), no TCP keepalive or `TCP_USER_TIMEOUT`, listen backlog 4096 (the kernel caps it at
/// `net.core.somaxconn`), one listening socket per address (no
/// `SO_REUSEPORT`), UDP batches of 32 datagrams of up to 64 KiB, GSO
/// replies on. An idle connection holds no buffer memory; each open one
/// costs a few hundred bytes of bookkeeping. A loop serving UDP sockets keeps one batch buffer
/// (`udp_batch × udp_max_datagram` bytes of address space, 2 MiB by
/// default, of which only the pages datagrams touch are resident).
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
    output_high_water: usize,
    output_full: OutputFull,
    keepalive: Option<Duration>,
    tcp_user_timeout: Option<Duration>,
    backlog: i32,
    reuse_port: bool,
    udp_batch: usize,
    udp_max_datagram: usize,
    udp_gso: bool,
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
            output_high_water: 4 << 20,
            output_full: OutputFull::Wait,
            keepalive: None,
            tcp_user_timeout: None,
            backlog: 4096,
            reuse_port: false,
            udp_batch: 32,
            udp_max_datagram: 64 << 10,
            udp_gso: true,
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
    /// bytes raises the mark to its size). Default 4 MiB.
    pub fn input_high_water(&mut self, bytes: usize) -> &mut Self {
        self.input_high_water = bytes.max(1);
        self
    }
    /// Unsent output per connection past which the peer counts as not
    /// keeping up (default 4 MiB; at least 1). What happens then is
    /// [`Builder::output_full`]'s policy.
    ///
    /// ```
    /// use ferropoll_transport::{EventLoop, OutputFull, handler_fn};
    ///
    /// let server = EventLoop::builder()
    ///     .num_loops(1)
    ///     .output_high_water(256 << 10)
    ///     .output_full(OutputFull::Fail)
    ///     .build(handler_fn(|_conn| Ok(())))?;
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output_high_water(&mut self, bytes: usize) -> &mut Self {
        self.output_high_water = bytes.max(1);
        self
    }
    /// What writers see when a connection's unsent output passes
    /// [`Builder::output_high_water`]: they wait (default) or get an error
    /// and the connection closes. See [`OutputFull`].
    pub fn output_full(&mut self, policy: OutputFull) -> &mut Self {
        self.output_full = policy;
        self
    }
    /// TCP keepalive idle time and probe interval (`None`: off).
    pub fn keepalive(&mut self, d: Option<Duration>) -> &mut Self {
        self.keepalive = d;
        self
    }
    /// `TCP_USER_TIMEOUT` of accepted and dialed TCP connections (`None`,
    /// the default: the kernel's retransmission limits, about 15 minutes):
    /// when sent data stays unacknowledged this long — the peer vanished
    /// without a RST, a silent partition — the kernel fails the socket and
    /// the connection closes. With [`keepalive`](Self::keepalive) on it
    /// also bounds the unanswered keepalive probes.
    pub fn tcp_user_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.tcp_user_timeout = d;
        self
    }
    /// Listen backlog (default 4096, capped by the kernel at `somaxconn`).
    pub fn backlog(&mut self, n: i32) -> &mut Self {
        self.backlog = n.max(1);
        self
    }
    /// Per-loop listening sockets (default off): with it,
    /// [`EventLoop::listen_tcp`] and [`EventLoop::bind_udp`] bind one socket
    /// per loop with `SO_REUSEPORT`, each loop accepts (or receives) on its
    /// own, and the kernel spreads connections and datagrams over them by
    /// a hash of the 4-tuple. Accepted connections then stay on the loop
    /// that accepted them: no hand-off between loops, and [`Balance`] is
    /// not used for them.
    pub fn reuse_port(&mut self, on: bool) -> &mut Self {
        self.reuse_port = on;
        self
    }
    /// Datagrams received per `recvmmsg` (and at most sent per `sendmmsg`)
    /// on UDP sockets; 1 to 64, default 32.
    pub fn udp_batch(&mut self, n: usize) -> &mut Self {
        self.udp_batch = n.clamp(1, sys::MAX_BATCH);
        self
    }
    /// Group the replies a batch queues for one destination into UDP GSO
    /// messages (`UDP_SEGMENT`; default on): equal-size datagrams of at
    /// most 1,200 bytes to one peer go through the kernel's send path once
    /// per group instead of once each. The peer still receives separate
    /// datagrams, in order. Falls back to one datagram per message when
    /// the kernel or device cannot segment.
    pub fn udp_gso(&mut self, on: bool) -> &mut Self {
        self.udp_gso = on;
        self
    }
    /// Size of a UDP batch slot: a longer datagram is reported truncated
    /// ([`UdpHandler::on_truncated`](crate::UdpHandler::on_truncated)).
    /// Default 65,536 bytes (no datagram is truncated); at least 1.
    pub fn udp_max_datagram(&mut self, bytes: usize) -> &mut Self {
        self.udp_max_datagram = bytes.clamp(1, 1 << 20);
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
            output_high_water: self.output_high_water,
            output_full: self.output_full,
            keepalive: self.keepalive,
            tcp_user_timeout: self.tcp_user_timeout,
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            udp_batch: self.udp_batch,
            udp_max_datagram: self.udp_max_datagram,
            udp_gso: self.udp_gso,
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
    /// Times accepting paused for 100 ms because the process or the system
    /// was out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`): about ten a second while the shortage lasts.
    pub accept_pauses: u64,
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
    /// UDP datagrams received (truncated ones included).
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// UDP datagrams longer than a batch slot (see
    /// [`Builder::udp_max_datagram`]).
    pub datagrams_truncated: u64,
    /// UDP datagrams not sent (socket buffer full, or refused by the
    /// kernel) and UDP receive errors.
    pub datagrams_send_failed: u64,
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
        let lp = g.pick_loop(None);
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

    /// Binds `addr` and accepts on it. By default one socket is bound (as
    /// `listen(Listener::bind_tcp(addr)?)`); with [`Builder::reuse_port`],
    /// one `SO_REUSEPORT` socket per loop, each accepted by its own loop. A
    /// port of 0 picks a free port, shared by all the per-loop sockets.
    /// Returns the bound address.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::time::Duration;
    /// use ferropoll_transport::{EventLoop, handler_fn};
    ///
    /// let echo = handler_fn(|conn| {
    ///     let mut r = conn.reader();
    ///     let n = r.len();
    ///     let data = r.slice(n)?;
    ///     drop(r);
    ///     conn.writer().append(data);
    ///     conn.flush()
    /// });
    /// let lp = EventLoop::builder().num_loops(2).reuse_port(true).build(echo)?;
    /// let addr = lp.listen_tcp("127.0.0.1:0")?;
    /// let mut c = std::net::TcpStream::connect(addr.as_tcp().unwrap())?;
    /// c.write_all(b"hi")?;
    /// let mut b = [0u8; 2];
    /// c.read_exact(&mut b)?;
    /// assert_eq!(&b, b"hi");
    /// lp.shutdown(Duration::from_secs(1))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn listen_tcp(&self, addr: impl ToSocketAddrs) -> io::Result<Addr> {
        let g = &self.inner.group;
        let cfg = &g.loops[0].cfg;
        if !cfg.reuse_port {
            return self.listen(Listener::bind_tcp(addr)?);
        }
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match self.listen_reuseport(a) {
                Ok(bound) => return Ok(bound),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }

    fn listen_reuseport(&self, addr: SocketAddr) -> io::Result<Addr> {
        let g = &self.inner.group;
        if g.shut.load(Ordering::Acquire) {
            return Err(io::Error::other("event loop is shut down"));
        }
        let backlog = g.loops[0].cfg.backlog;
        let mut bound = addr;
        let mut sockets = Vec::with_capacity(g.loops.len());
        for _ in &g.loops {
            let fd = sys::bind_reuseport(bound, true, backlog)?;
            let l = std::net::TcpListener::from(fd);
            bound = l.local_addr()?;
            sockets.push(l);
        }
        let mut waits = Vec::with_capacity(sockets.len());
        for (lp, l) in g.loops.iter().zip(sockets) {
            if lp.is_current() {
                return Err(io::Error::other(
                    "listen cannot be called from its own loop thread",
                ));
            }
            let (tx, rx) = mpsc::sync_channel(1);
            lp.send(Task::ListenLocal(Listener::Tcp(l), tx));
            waits.push(rx);
        }
        for rx in waits {
            rx.recv()
                .map_err(|_| io::Error::other("event loop stopped"))??;
        }
        let bound = Addr::Tcp(bound);
        tracing::info!(addr = %bound, loops = g.loops.len(), "listening (SO_REUSEPORT per loop)");
        g.addrs.lock().push(bound.clone());
        Ok(bound)
    }

    /// Serves the UDP socket `socket` on one of the loops (round robin)
    /// with `handler`; see the [`UdpHandler`] example. Any number of UDP
    /// sockets may be served beside TCP and Unix listeners.
    ///
    /// # Errors
    ///
    /// Switching the socket to non-blocking mode or registering it failed,
    /// or the loop is shut down.
    pub fn listen_udp(
        &self,
        socket: UdpSocket,
        handler: impl UdpHandler,
    ) -> io::Result<UdpEndpoint> {
        let g = &self.inner.group;
        let lp = g.pick_loop(None);
        self.register_udp(socket, lp, Arc::new(handler))
    }

    /// Binds UDP `addr` and serves it with `handler`: one socket (on one
    /// loop) by default; with [`Builder::reuse_port`], one `SO_REUSEPORT`
    /// socket per loop sharing the handler (the kernel spreads datagrams
    /// by source address and port). Returns the endpoints (one per socket).
    pub fn bind_udp(
        &self,
        addr: impl ToSocketAddrs,
        handler: impl UdpHandler,
    ) -> io::Result<Vec<UdpEndpoint>> {
        let g = &self.inner.group;
        let handler: Arc<dyn UdpHandler> = Arc::new(handler);
        if !g.loops[0].cfg.reuse_port {
            let socket = UdpSocket::bind(addr)?;
            return Ok(vec![self.register_udp(
                socket,
                g.pick_loop(None),
                handler,
            )?]);
        }
        let mut bound = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        let mut out = Vec::with_capacity(g.loops.len());
        for lp in &g.loops {
            let socket = UdpSocket::from(sys::bind_reuseport(bound, false, 0)?);
            bound = socket.local_addr()?;
            out.push(self.register_udp(socket, lp.clone(), handler.clone())?);
        }
        Ok(out)
    }

    /// A UDP "connection" to `addr`: a socket bound to an ephemeral port
    /// and connected to `addr` (so only its datagrams are received, and
    /// ICMP errors are reported), served by these loops with `handler`.
    /// Send with [`UdpEndpoint::send`] / [`send_many`](UdpEndpoint::send_many)
    /// from any thread, or [`UdpOut::send`](crate::UdpOut::send) from the
    /// handler.
    pub fn dial_udp(
        &self,
        addr: impl ToSocketAddrs,
        handler: impl UdpHandler,
    ) -> io::Result<UdpEndpoint> {
        let peer = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to dial"))?;
        let local: SocketAddr = if peer.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(peer)?;
        let lp = self.inner.group.pick_loop(None);
        self.register_udp(socket, lp, Arc::new(handler))
    }

    fn register_udp(
        &self,
        socket: UdpSocket,
        lp: Arc<LoopShared>,
        handler: Arc<dyn UdpHandler>,
    ) -> io::Result<UdpEndpoint> {
        if self.inner.group.shut.load(Ordering::Acquire) {
            return Err(io::Error::other("event loop is shut down"));
        }
        let endpoint = UdpEndpoint::new(socket, lp.clone())?;
        let entry = UdpEntry {
            endpoint: endpoint.clone(),
            handler,
        };
        if lp.is_current() {
            // The loop handles the task after the current callback; a
            // registration error then shows as a closed endpoint.
            lp.send(Task::AddUdp(entry, None));
        } else {
            let (tx, rx) = mpsc::sync_channel(1);
            lp.send(Task::AddUdp(entry, Some(tx)));
            rx.recv()
                .map_err(|_| io::Error::other("event loop stopped"))??;
        }
        Ok(endpoint)
    }

    /// Listens on `listener` and blocks until the loop is shut down.
    pub fn serve(&self, listener: impl Into<Listener>) -> io::Result<()> {
        self.listen(listener)?;
        self.wait();
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
            s.accept_pauses += c.accept_pauses.load(Ordering::Relaxed);
            s.closed += c.closed.load(Ordering::Relaxed);
            s.bytes_in += c.bytes_in.load(Ordering::Relaxed);
            s.bytes_out += c.bytes_out.load(Ordering::Relaxed);
            s.handler_panics += c.panics.load(Ordering::Relaxed);
            s.timeouts += c.timeouts.load(Ordering::Relaxed);
            s.datagrams_in += c.dgrams_in.load(Ordering::Relaxed);
            s.datagrams_out += c.dgrams_out.load(Ordering::Relaxed);
            s.datagrams_truncated += c.dgrams_truncated.load(Ordering::Relaxed);
            s.datagrams_send_failed += c.dgrams_failed.load(Ordering::Relaxed);
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

    /// Blocks until the loop is shut down (by [`shutdown`](Self::shutdown)
    /// from another thread). With [`listen`](Self::listen),
    /// [`listen_tcp`](Self::listen_tcp) and [`listen_udp`](Self::listen_udp)
    /// this serves any number of listeners at once, as gnet's multi-address
    /// binding; [`serve`](Self::serve) is `listen` + `wait` for one.
    pub fn wait(&self) {
        let mut stopped = self.inner.stopped.lock();
        while !*stopped {
            self.inner.stopped_cv.wait(&mut stopped);
        }
    }

    /// The loop `loop_index`, if it exists and is still running.
    pub(crate) fn live_loop(&self, loop_index: usize) -> io::Result<&Arc<LoopShared>> {
        let g = &self.inner.group;
        if g.shut.load(Ordering::Acquire) {
            return Err(io::Error::other("event loop is shut down"));
        }
        g.loops.get(loop_index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no loop {loop_index} (there are {})", g.loops.len()),
            )
        })
    }

    /// Runs `f` on loop `loop_index`'s thread, soon (after the events it is
    /// handling now). Callable from any thread, the loop's own included.
    /// A panic in `f` is caught and counted in
    /// [`Stats::handler_panics`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a loop index out of range; an error once the
    /// loop is shut down.
    pub fn schedule(&self, loop_index: usize, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.live_loop(loop_index)?.send(Task::Run(Box::new(f)));
        Ok(())
    }

    /// Runs `f` once on loop `loop_index`'s thread after `delay` (gnet's
    /// `OnTick`, evio's `Tick`), driven by that loop's timer heap — no
    /// extra thread. It fires no earlier than the deadline, and normally
    /// within a millisecond or so of it (`epoll_wait` has millisecond
    /// resolution; a busy loop handles its ready connections first). Timers
    /// due at the same time fire in creation order. Pending timers are
    /// dropped when the loop shuts down.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant};
    /// use ferropoll_transport::{EventLoop, handler_fn};
    ///
    /// let lp = EventLoop::builder().num_loops(1).build(handler_fn(|_| Ok(())))?;
    /// let (tx, rx) = mpsc::channel();
    /// let start = Instant::now();
    /// lp.after(0, Duration::from_millis(20), move || tx.send(Instant::now()).unwrap())?;
    /// let fired = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert!(fired - start >= Duration::from_millis(20));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`schedule`](Self::schedule).
    pub fn after(
        &self,
        loop_index: usize,
        delay: Duration,
        f: impl FnOnce() + Send + 'static,
    ) -> io::Result<TimerHandle> {
        let lp = self.live_loop(loop_index)?;
        let at = deadline_in(delay);
        Ok(TimerHandle::schedule(lp, at, Callback::Once(Box::new(f))))
    }

    /// Runs `f` on loop `loop_index`'s thread every `interval`, the first
    /// time after one `interval`, until the returned handle is cancelled.
    /// Ticks keep to the grid `start + k × interval`; a tick missed because
    /// the loop was busy is skipped, not run late in a burst. A panic in
    /// `f` stops the timer.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    /// use ferropoll_transport::{EventLoop, handler_fn};
    /// use ferropoll_transport::testing::wait_until;
    ///
    /// let lp = EventLoop::builder().num_loops(1).build(handler_fn(|_| Ok(())))?;
    /// let ticks = Arc::new(AtomicUsize::new(0));
    /// let t = ticks.clone();
    /// let timer = lp.every(0, Duration::from_millis(5), move || {
    ///     t.fetch_add(1, Ordering::Relaxed);
    /// })?;
    /// assert!(wait_until(Duration::from_secs(5), || ticks.load(Ordering::Relaxed) >= 3));
    /// timer.cancel();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`schedule`](Self::schedule); `InvalidInput` for a zero interval.
    pub fn every(
        &self,
        loop_index: usize,
        interval: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> io::Result<TimerHandle> {
        if interval.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "timer interval must not be zero",
            ));
        }
        let lp = self.live_loop(loop_index)?;
        let at = deadline_in(interval);
        let interval = interval.as_nanos().min(u64::MAX as u128 / 2) as u64;
        Ok(TimerHandle::schedule(
            lp,
            at,
            Callback::Every {
                f: Box::new(f),
                interval,
            },
        ))
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
        if is_tcp && let Some(k) = cfg.keepalive {
            sys::set_keepalive(std::os::fd::AsRawFd::as_raw_fd(&fd), k)?;
        }
        if is_tcp && let Some(t) = cfg.tcp_user_timeout {
            sys::set_user_timeout(std::os::fd::AsRawFd::as_raw_fd(&fd), t)?;
        }
        let target = g.pick_loop(Some(&peer));
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
    let end = deadline_in(deadline);
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
