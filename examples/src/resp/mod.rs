//! A Redis-protocol (RESP2) server on ferropoll-transport: the library
//! behind the `resp-server` binary and its tests.
//!
//! Each connection is served inline on its loop thread. A round parses
//! every complete command in the input, executes it and writes its reply
//! into the output buffer, then flushes once: a pipelined batch of any size
//! costs one `sendmsg`. A round stops early once the unsent replies pass
//! the transport's output high-water mark (a client that pipelines without
//! reading its replies, e.g. many `GET`s of a large value): the rest of its
//! input runs once the client has read, so such a client cannot make the
//! server buffer without bound. Commands that lie in the first input node run on
//! borrowed bytes and are consumed with one `skip` (no copy, no reference
//! count); the others go through an incremental parser that consumes each
//! element as it completes, so a large value is neither re-scanned nor
//! re-copied while it arrives, and is stored as a zero-copy view. Small
//! values are copied into the store on purpose: a view would keep a whole
//! input node alive for a few bytes. An incomplete command waits for more
//! input (the transport's input high-water mark is raised to its size when
//! needed). Malformed input gets `-ERR Protocol error: …` and the
//! connection is closed; unknown commands get an error reply and the
//! connection goes on. Sizes are bounded by [`Limits`]; no length read from
//! the wire is used to allocate before the bytes are there.
//!
//! The key space is a [`Store`] of `parking_lot::Mutex<HashMap>` shards (a
//! power of two, at least four per loop), with lazy expiry plus a sweeper
//! thread that samples keys with a deadline every 100 ms.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let server = ferropoll_examples::resp::start("127.0.0.1:0", 1)?;
//! let mut client = std::net::TcpStream::connect(server.local_addr())?;
//! client.write_all(b"SET k v\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")?;
//! let mut reply = [0u8; 12];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"+OK\r\n$1\r\nv\r\n");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Supported: PING, ECHO, GET, SET (EX/PX/NX/XX/KEEPTTL), DEL, EXISTS,
//! INCR, DECR, INCRBY, DECRBY, MGET, MSET, APPEND, STRLEN, EXPIRE, PEXPIRE,
//! PERSIST, TTL, PTTL, DBSIZE, FLUSHDB, FLUSHALL, LPUSH, RPUSH, LPOP, RPOP
//! (with count), LRANGE, LLEN, SELECT 0, QUIT, and COMMAND / CONFIG GET
//! answers that `redis-cli` and `redis-benchmark` accept. Inline commands
//! are split on whitespace; quotes are not interpreted.

mod commands;
mod parse;
mod reply;
mod store;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Buf;
use ferropoll_linkbuffer::LINK_MIN;
use ferropoll_transport::{Connection, EventLoop, Handler, Listener, Stats};
use parking_lot::{Condvar, Mutex};

use commands::{Borrowed, Flow, execute};
use parse::{Fast, Partial, Step, parse_fast};
pub use parse::{Limits, ProtocolError};
pub use store::Store;

/// Starts a RESP server on `addr` with `loops` event-loop threads and the
/// default [`Limits`].
///
/// # Errors
///
/// Binding or starting the loops failed.
pub fn start(addr: impl ToSocketAddrs, loops: usize) -> io::Result<RespServer> {
    Builder::new().loops(loops).start(addr)
}

/// Configures a [`RespServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    loops: usize,
    limits: Limits,
    shards: Option<usize>,
    sweep_every: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: one loop per core, default [`Limits`], shards: the next
    /// power of two at or above max(4 × loops, 16), a sweep every 100 ms.
    pub fn new() -> Builder {
        Builder {
            loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
            shards: None,
            sweep_every: Duration::from_millis(100),
        }
    }
    /// Event-loop threads (at least 1).
    pub fn loops(&mut self, n: usize) -> &mut Self {
        self.loops = n.max(1);
        self
    }
    /// Request size limits.
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }
    /// Number of store shards (rounded up to a power of two).
    pub fn shards(&mut self, n: usize) -> &mut Self {
        self.shards = Some(n);
        self
    }
    /// Interval of the active-expiry sweep.
    pub fn sweep_every(&mut self, d: Duration) -> &mut Self {
        self.sweep_every = d.max(Duration::from_millis(1));
        self
    }

    /// Binds `addr` and starts serving.
    ///
    /// # Errors
    ///
    /// Binding or starting the loops failed.
    pub fn start(&self, addr: impl ToSocketAddrs) -> io::Result<RespServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let store = Arc::new(Store::new(self.shards.unwrap_or((self.loops * 4).max(16))));
        let handler = RespHandler {
            store: store.clone(),
            limits: self.limits,
        };
        let lp = EventLoop::builder()
            .name("resp")
            .num_loops(self.loops)
            .build(handler)?;
        lp.listen(Listener::from(listener))?;
        let sweeper = Sweeper::start(store.clone(), self.sweep_every)?;
        Ok(RespServer {
            lp,
            addr: local,
            store,
            sweeper: Some(sweeper),
        })
    }
}

/// A running RESP server. Dropping it stops the loops (closing every
/// connection) and the sweeper.
#[derive(Debug)]
pub struct RespServer {
    lp: EventLoop,
    addr: SocketAddr,
    store: Arc<Store>,
    sweeper: Option<Sweeper>,
}

impl RespServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// The key space.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The event loop's counters.
    pub fn stats(&self) -> Stats {
        self.lp.stats()
    }
    /// Stops accepting, lets running rounds finish, closes the connections.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the loops did not stop within `deadline`.
    pub fn shutdown(mut self, deadline: Duration) -> io::Result<()> {
        self.sweeper.take();
        self.lp.shutdown(deadline)
    }
}

impl Drop for RespServer {
    fn drop(&mut self) {
        self.sweeper.take();
        let _ = self.lp.shutdown(Duration::ZERO);
    }
}

/// The active-expiry thread; stops when dropped.
#[derive(Debug)]
struct Sweeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    fn start(store: Arc<Store>, every: Duration) -> io::Result<Sweeper> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("resp-sweeper".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock();
                while !*stopped {
                    if cv.wait_for(&mut stopped, every).timed_out() {
                        drop(stopped);
                        store.sweep(16);
                        stopped = lock.lock();
                    }
                }
            })?;
        Ok(Sweeper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct RespHandler {
    store: Arc<Store>,
    limits: Limits,
}

/// Per-connection parser state.
#[derive(Default)]
struct ConnState {
    partial: Partial,
    ranges: Vec<(usize, usize)>,
    /// Readable bytes the incremental parser needs before it can go on.
    need: usize,
}

/// How a round ended.
enum End {
    Done,
    Quit,
    Error(ProtocolError),
}

impl Handler for RespHandler {
    type State = ConnState;

    fn on_connect(&self, _conn: &Connection) -> ConnState {
        ConnState::default()
    }

    fn on_request(&self, st: &mut ConnState, conn: &Connection) -> io::Result<()> {
        let mut r = conn.reader();
        if r.len() < st.need {
            // A large value is still arriving: nothing to parse yet. `wait`
            // raises the input high-water mark to the size if needed.
            return r.wait(st.need);
        }
        st.need = 0;
        let mut w = conn.writer();
        let lim = &self.limits;
        let end = 'round: loop {
            if !st.partial.in_progress() {
                // Fast path: whole commands in the first input node, run on
                // borrowed bytes and consumed with one skip.
                let chunk = r.chunk();
                if chunk.is_empty() {
                    break End::Done;
                }
                let mut off = 0;
                let mut slow = false;
                let mut stop = None;
                while off < chunk.len() {
                    match parse_fast(&chunk[off..], lim, &mut st.ranges) {
                        Fast::Command(n) if n < LINK_MIN => {
                            let args = Borrowed {
                                buf: &chunk[off..off + n],
                                ranges: &st.ranges,
                            };
                            off += n;
                            if execute(&self.store, &args, &mut w) == Flow::Quit {
                                stop = Some(End::Quit);
                                break;
                            }
                            if w.is_full() {
                                // The peer is not reading its answers: stop
                                // here; the loop runs the rest once it does.
                                stop = Some(End::Done);
                                break;
                            }
                        }
                        Fast::Empty(n) => off += n,
                        // Large commands go through the incremental parser,
                        // which keeps large values as views of the input.
                        Fast::Command(_) | Fast::Incomplete => {
                            slow = true;
                            break;
                        }
                        Fast::Error(e) => {
                            stop = Some(End::Error(e));
                            break;
                        }
                    }
                }
                r.skip(off)?;
                if let Some(end) = stop {
                    break 'round end;
                }
                if !slow {
                    continue;
                }
            }
            match st.partial.step(&mut r, lim) {
                Step::Command(args) => {
                    if execute(&self.store, &args[..], &mut w) == Flow::Quit {
                        break End::Quit;
                    }
                    if w.is_full() {
                        break End::Done;
                    }
                }
                Step::Empty => {}
                Step::NeedMore(n) => {
                    st.need = n;
                    break End::Done;
                }
                Step::Error(e) => break End::Error(e),
            }
        };
        match end {
            End::Done => {
                if w.unflushed_len() > 0 {
                    w.flush()?;
                }
                if st.need > 0 {
                    // Registers the wait (and raises the high-water mark).
                    match r.wait(st.need) {
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            End::Quit => {
                w.flush()?;
                conn.close();
                Ok(())
            }
            End::Error(e) => {
                let msg = format!("ERR {e}");
                reply::error(&mut w, &[msg.as_bytes()]);
                w.flush()?;
                conn.close();
                Ok(())
            }
        }
    }
}
