//! `Connection`: a cheap shared handle to one socket, its input and output.
//!
//! # Input: inbox and reader
//!
//! The loop thread reads the socket into the *inbox* (a `LinkBuffer` behind a
//! short-held lock). A [`Reader`] owns the *reader* buffer (another
//! `LinkBuffer`, locked for the guard's life) and pulls the inbox into it by
//! linking nodes, never copying. So a consumer that holds a `Reader` for a
//! long time (a pool handler blocked in `next(n)`) never stops the loop from
//! reading; the loop never waits for a consumer. Blocking reads wait on a
//! condition variable tied to the inbox lock, so a wake-up cannot be lost.
//! Invariant: every byte in the reader buffer precedes every byte in the inbox.
//!
//! # Output
//!
//! One `LinkBuffer` behind a lock with a `pending` flag. `flush` sends from the
//! calling thread with one `sendmsg` of up to 64 iovecs; only when the socket
//! is full does it set `pending` — under the same lock, so the loop's
//! `EPOLLOUT` handling cannot miss it — and the loop finishes the send. The
//! lock serialises writers, so two threads never interleave bytes in a flush.
//!
//! # State
//!
//! One atomic word of flags. `is_active()` is a load of it: the loop clears
//! activity as soon as it sees `EPOLLRDHUP`/`EPOLLHUP`/`EPOLLERR`, even when
//! nobody reads. The descriptor is closed only by the loop (under the output
//! lock, so no `sendmsg` can race with the close and hit a reused number).

use std::fmt;
use std::io::{self, IoSlice};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::addr::Addr;
use crate::event_loop::OutputFull;
use crate::reactor::{LoopShared, Task};
use crate::sys;
use crate::timer::{Callback, TimerHandle, deadline_in};

/// Close was requested (by the user, an error, a timeout or shutdown).
pub(crate) const CLOSING: u32 = 1;
/// The peer shut down its side or reset the connection.
pub(crate) const PEER_CLOSED: u32 = 1 << 1;
/// No more input will arrive (read returned 0 or failed).
pub(crate) const INPUT_EOF: u32 = 1 << 2;
/// The descriptor is closed and the close callbacks have run.
pub(crate) const FINALIZED: u32 = 1 << 3;
/// A pool handler owns the connection's rounds.
pub(crate) const RUNNING: u32 = 1 << 4;
/// Reading is paused at the input high-water mark.
pub(crate) const PAUSED: u32 = 1 << 5;
/// Reads block (pool dispatch, or a dialed connection without a handler).
pub(crate) const BLOCKING: u32 = 1 << 6;
/// Pending output passed the high-water mark: the loop stops reading.
pub(crate) const OUT_FULL: u32 = 1 << 7;
/// A read was skipped because of `OUT_FULL`.
pub(crate) const READ_DEFERRED: u32 = 1 << 8;
/// Loop bookkeeping: a read / write / idle timer entry is in the heap.
pub(crate) const READ_ARMED: u32 = 1 << 9;
pub(crate) const WRITE_ARMED: u32 = 1 << 10;
pub(crate) const IDLE_ARMED: u32 = 1 << 11;
/// Closing waits for pending output to drain.
pub(crate) const LINGER: u32 = 1 << 12;
/// Registered with the loop's epoll set.
pub(crate) const REGISTERED: u32 = 1 << 13;
/// Output may be pending: the loop must look at it on `EPOLLOUT`. Set before
/// the last send attempt that found the socket full (see `send_locked`), so
/// the loop can skip the output lock on the common writable-and-idle edge.
pub(crate) const OUT_PENDING: u32 = 1 << 14;

const INACTIVE: u32 = CLOSING | PEER_CLOSED | FINALIZED;
const NO_TIMEOUT: u64 = u64::MAX;

pub(crate) enum Which {
    Read = 0,
    Write = 1,
    Idle = 2,
}

type CloseCallback = Box<dyn FnOnce(&Connection) + Send>;

pub(crate) struct Output {
    pub(crate) buf: LinkBuffer,
    pub(crate) pending: bool,
    pub(crate) fd: Option<OwnedFd>,
}

pub(crate) struct ConnInner {
    pub(crate) fd: RawFd,
    id: u64,
    pub(crate) key: AtomicU64,
    pub(crate) flags: AtomicU32,
    pub(crate) lp: Arc<LoopShared>,
    pub(crate) inbox: Mutex<LinkBuffer>,
    pub(crate) readable: Condvar,
    pub(crate) reader: Mutex<LinkBuffer>,
    pub(crate) output: Mutex<Output>,
    pub(crate) drained: Condvar,
    /// Bytes ever read from the socket (written by the loop only).
    pub(crate) bytes_in: AtomicU64,
    /// Bytes in the inbox plus the reader buffer not yet consumed, as of the
    /// last settlement (loop adds on read, readers subtract on consumption).
    pub(crate) unread: AtomicUsize,
    /// Bytes a blocked reader waits for (the pause threshold rises to it).
    pub(crate) want: AtomicUsize,
    timeouts: [AtomicU64; 3],
    /// Loop time (ns) of the last input.
    pub(crate) last_read: AtomicU64,
    /// Loop time (ns) since when an incomplete request made no progress (0: none).
    pub(crate) stall_since: AtomicU64,
    /// Loop time (ns) since when output has been pending.
    pub(crate) write_since: AtomicU64,
    pub(crate) callbacks: Mutex<Vec<CloseCallback>>,
    peer: Addr,
}

/// A connection: a cheap `Clone + Send + Sync` handle.
///
/// Read with [`reader`](Connection::reader), write with
/// [`writer`](Connection::writer) and [`flush`](Connection::flush). Handles
/// stay valid after the connection closes (reads then return what was left
/// and `UnexpectedEof`; flushes fail with `NotConnected`).
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<ConnInner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .field("active", &self.is_active())
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Connection {
    pub(crate) fn new(fd: OwnedFd, peer: Addr, lp: Arc<LoopShared>, blocking: bool) -> Connection {
        let cfg = &lp.cfg;
        let t = |d: Option<Duration>| {
            AtomicU64::new(d.map_or(NO_TIMEOUT, |d| {
                d.as_nanos().min(u64::MAX as u128 - 1) as u64
            }))
        };
        let timeouts = [
            t(cfg.read_timeout),
            t(cfg.write_timeout),
            t(cfg.idle_timeout),
        ];
        Connection {
            inner: Arc::new(ConnInner {
                fd: fd.as_raw_fd(),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                key: AtomicU64::new(u64::MAX),
                flags: AtomicU32::new(if blocking { BLOCKING } else { 0 }),
                lp,
                inbox: Mutex::new(LinkBuffer::new()),
                readable: Condvar::new(),
                reader: Mutex::new(LinkBuffer::new()),
                output: Mutex::new(Output {
                    buf: LinkBuffer::new(),
                    pending: false,
                    fd: Some(fd),
                }),
                drained: Condvar::new(),
                bytes_in: AtomicU64::new(0),
                unread: AtomicUsize::new(0),
                want: AtomicUsize::new(0),
                timeouts,
                last_read: AtomicU64::new(0),
                stall_since: AtomicU64::new(0),
                write_since: AtomicU64::new(0),
                callbacks: Mutex::new(Vec::new()),
                peer,
            }),
        }
    }

    /// A process-unique id (never reused).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether the connection is open in both directions as far as anyone
    /// knows: false once either side closed it, the peer shut down or reset
    /// it, or an error occurred. An atomic load.
    pub fn is_active(&self) -> bool {
        self.inner.flags.load(Ordering::Acquire) & INACTIVE == 0
    }

    /// The reading guard. In pool dispatch and for dialed connections used
    /// without a handler its reads block until enough bytes arrive; inline
    /// they never block. Only one `Reader` exists at a time (this waits for
    /// another thread's to drop).
    pub fn reader(&self) -> Reader<'_> {
        let mut r = Reader {
            conn: &self.inner,
            buf: self.inner.reader.lock(),
            base: 0,
        };
        r.base = r.buf.len();
        r.pull();
        r
    }

    /// The writing guard: the output `LinkBuffer` (write API, `BufMut`) and
    /// [`Writer::flush`]. Writers are serialised: one guard at a time.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            conn: &self.inner,
            out: self.inner.output.lock(),
        }
    }

    /// Sends everything written so far (see [`Writer::flush`]).
    pub fn flush(&self) -> io::Result<()> {
        self.writer().flush()
    }

    /// Closes the connection (idempotent). `is_active()` is false at once;
    /// the loop closes the socket and runs `on_disconnect` and the close
    /// callbacks after any running handler has returned. Output still
    /// pending is sent first, bounded by the write timeout (5 s by default).
    pub fn close(&self) {
        self.inner.request_close();
    }

    /// Runs `f` once when the connection closes, after the handler has
    /// exited. If the connection is already closed, runs it now.
    pub fn add_close_callback(&self, f: impl FnOnce(&Connection) + Send + 'static) {
        let mut cbs = self.inner.callbacks.lock();
        if self.inner.flags.load(Ordering::Acquire) & FINALIZED != 0 {
            drop(cbs);
            f(self);
        } else {
            cbs.push(Box::new(f));
        }
    }

    /// Read timeout: how long a blocking read waits, and (inline) how long an
    /// incomplete request may make no progress before the connection closes.
    pub fn set_read_timeout(&self, d: Option<Duration>) {
        self.inner.set_timeout(Which::Read, d);
    }

    /// Write timeout: how long output may stay pending before the connection
    /// closes (a partial frame must not be sent later).
    pub fn set_write_timeout(&self, d: Option<Duration>) {
        self.inner.set_timeout(Which::Write, d);
    }

    /// Idle timeout: the connection closes after this long with no input and
    /// nothing pending to send.
    pub fn set_idle_timeout(&self, d: Option<Duration>) {
        self.inner.set_timeout(Which::Idle, d);
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.inner.timeout(Which::Read)
    }

    /// The socket's local address (fails once the socket is closed).
    pub fn local_addr(&self) -> io::Result<Addr> {
        let out = self.inner.output.lock();
        match &out.fd {
            Some(fd) => sys::local_addr(fd.as_raw_fd()),
            None => Err(not_connected()),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.inner.peer
    }

    /// Index of the loop serving this connection (`0..num_loops`).
    pub fn loop_index(&self) -> usize {
        self.inner.lp.index
    }

    /// Runs `f` on this connection's loop thread, soon — from any thread
    /// (gnet's `Conn.AsyncWrite`-style hand-off): e.g. a pool worker or a
    /// timer of another loop writing to this connection without contending
    /// with its loop. `f` runs even if the connection has closed meanwhile
    /// (check [`is_active`](Self::is_active)); it is dropped unrun if the
    /// loop has stopped. A panic in `f` is caught and counted.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the connection is already closed.
    pub fn execute(&self, f: impl FnOnce(&Connection) + Send + 'static) -> io::Result<()> {
        if self.inner.flag(FINALIZED) {
            return Err(not_connected());
        }
        let conn = self.clone();
        self.inner.lp.send(Task::Run(Box::new(move || f(&conn))));
        Ok(())
    }

    /// Runs `f` once on this connection's loop thread after `delay`, driven
    /// by the loop's timer heap (see [`EventLoop::after`](crate::EventLoop::after)).
    /// The timer holds the connection handle until it fires or is cancelled;
    /// it fires even if the connection closed meanwhile.
    pub fn after(
        &self,
        delay: Duration,
        f: impl FnOnce(&Connection) + Send + 'static,
    ) -> TimerHandle {
        let conn = self.clone();
        TimerHandle::schedule(
            &self.inner.lp,
            deadline_in(delay),
            Callback::Once(Box::new(move || f(&conn))),
        )
    }

    pub(crate) fn ptr_eq(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

pub(crate) fn lb_err(e: ferropoll_linkbuffer::Error) -> io::Error {
    let kind = match e {
        ferropoll_linkbuffer::Error::InvalidUtf8 => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, format!("{e:?}"))
}

impl ConnInner {
    pub(crate) fn flag(&self, f: u32) -> bool {
        self.flags.load(Ordering::Acquire) & f != 0
    }

    pub(crate) fn set(&self, f: u32) -> u32 {
        self.flags.fetch_or(f, Ordering::AcqRel)
    }

    pub(crate) fn clear(&self, f: u32) -> u32 {
        self.flags.fetch_and(!f, Ordering::AcqRel)
    }

    pub(crate) fn timeout(&self, w: Which) -> Option<Duration> {
        let ns = self.timeouts[w as usize].load(Ordering::Relaxed);
        (ns != NO_TIMEOUT).then(|| Duration::from_nanos(ns))
    }

    pub(crate) fn timeout_ns(&self, w: Which) -> Option<u64> {
        let ns = self.timeouts[w as usize].load(Ordering::Relaxed);
        (ns != NO_TIMEOUT).then_some(ns)
    }

    fn set_timeout(self: &Arc<Self>, w: Which, d: Option<Duration>) {
        let ns = d.map_or(NO_TIMEOUT, |d| {
            d.as_nanos().min(u64::MAX as u128 - 1) as u64
        });
        self.timeouts[w as usize].store(ns, Ordering::Relaxed);
        if self.flag(REGISTERED) {
            self.lp.send(Task::ArmTimers(Connection {
                inner: self.clone(),
            }));
        }
    }

    /// Bytes consumed so far (bytes read minus bytes unread).
    pub(crate) fn consumed(&self) -> u64 {
        // `unread` first: the loop adds to `bytes_in` before `unread`, so the
        // later `bytes_in` covers every byte counted in the earlier `unread`.
        let unread = self.unread.load(Ordering::Acquire) as u64;
        self.bytes_in.load(Ordering::Acquire).saturating_sub(unread)
    }

    /// Wakes readers blocked in `Reader::wait` (after a flag change or new input).
    pub(crate) fn wake_readers(&self) {
        let _inbox = self.inbox.lock();
        self.readable.notify_all();
    }

    pub(crate) fn request_close(self: &Arc<Self>) {
        let old = self.set(CLOSING);
        if old & (CLOSING | FINALIZED) == 0 {
            self.wake_readers();
            self.lp.send(Task::Close(Connection {
                inner: self.clone(),
            }));
        }
    }

    /// Sends what the output buffer holds. Called with the output lock held,
    /// by `flush` (any thread) or by the loop on `EPOLLOUT`.
    pub(crate) fn send_locked(self: &Arc<Self>, out: &mut Output) -> io::Result<()> {
        let fd = match &out.fd {
            Some(fd) => fd.as_raw_fd(),
            None => {
                out.buf = LinkBuffer::new();
                return Err(not_connected());
            }
        };
        let mut sent_total = 0usize;
        let mut first = true;
        let mut flagged = false;
        let result = loop {
            // The first batch uses a small iovec array (a flush usually holds
            // a few nodes; filling 64 empty slices costs more than the
            // syscall's setup), later ones the full `MAX_IOVECS`.
            let batch = if first {
                send_batch::<8>(fd, &out.buf)
            } else {
                send_batch::<{ sys::MAX_IOVECS }>(fd, &out.buf)
            };
            first = false;
            let (sent, full) = match batch {
                Ok(Some(r)) => r,
                Ok(None) => break Ok(false),
                Err(e) => break Err(e),
            };
            if sent > 0 {
                // Cannot fail: `sent` bytes were readable.
                let _ = out.buf.skip(sent);
                sent_total += sent;
            }
            if full {
                // A short send means the socket buffer is full: EPOLLOUT
                // follows. The loop skips `EPOLLOUT` unless `OUT_PENDING` is
                // set, and the edge may have fired before we set it; so set
                // it, then try once more: a later edge is then seen.
                if !flagged {
                    flagged = true;
                    self.set(OUT_PENDING);
                    continue;
                }
                break Ok(true);
            }
        };
        out.buf.release();
        if sent_total > 0 {
            self.lp
                .counters
                .bytes_out
                .fetch_add(sent_total as u64, Ordering::Relaxed);
        }
        match result {
            Ok(blocked) => {
                if blocked && !out.pending {
                    out.pending = true;
                    self.lp.send(Task::WriteBlocked(Connection {
                        inner: self.clone(),
                    }));
                }
                if !blocked {
                    out.pending = false;
                    if flagged || self.flag(OUT_PENDING) {
                        self.clear(OUT_PENDING);
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(conn = self.id, error = %e, "send failed; closing");
                out.buf = LinkBuffer::new();
                out.pending = false;
                self.clear(OUT_PENDING);
                self.set(PEER_CLOSED);
                self.request_close();
                Err(e)
            }
        }
    }
}

/// Whether paused reading resumes with `unread` bytes left under `limit`.
fn resume_below(unread: usize, limit: usize) -> bool {
    unread <= limit / 2 + 1
}

impl ConnInner {
    /// Stops the loop reading this connection: its unread input passed
    /// `limit`. Returns false when a consumer drained the input while the
    /// loop was reading (it saw no `PAUSED` to clear, so nobody would resume
    /// the reading): then reading goes on.
    pub(crate) fn pause_reading(&self, limit: usize) -> bool {
        self.set(PAUSED);
        // Pairs with the fence in `Reader::settle`: a consumer that
        // subtracted before this point is seen below; one after sees PAUSED.
        std::sync::atomic::fence(Ordering::SeqCst);
        if resume_below(self.unread.load(Ordering::Acquire), limit)
            && self.clear(PAUSED) & PAUSED != 0
        {
            return false;
        }
        true
    }

    /// Unsent output passed the output high-water mark: apply the policy.
    /// `Wait` stops the loop reading (and running inline rounds) until the
    /// output drains; `Fail` drops the output and closes the connection.
    pub(crate) fn output_full(self: &Arc<Self>, out: &mut Output) -> io::Result<()> {
        match self.lp.cfg.output_full {
            OutputFull::Wait => {
                self.set(OUT_FULL);
                Ok(())
            }
            OutputFull::Fail => {
                let unsent = out.buf.len();
                tracing::debug!(conn = self.id, unsent, "output high-water mark: closing");
                out.buf = LinkBuffer::new();
                out.pending = false;
                self.clear(OUT_PENDING);
                self.request_close();
                Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    format!(
                        "{unsent} bytes of unsent output passed the output high-water mark ({}); connection closed",
                        self.lp.cfg.output_high_water
                    ),
                ))
            }
        }
    }
}

/// One `sendmsg` of up to `N` readable chunks of `buf`: `None` when there is
/// nothing to send, else the bytes sent and whether the socket is full.
fn send_batch<const N: usize>(fd: RawFd, buf: &LinkBuffer) -> io::Result<Option<(usize, bool)>> {
    let mut iov = [IoSlice::new(&[]); N];
    let n = buf.readable_vectored(&mut iov);
    if n == 0 {
        return Ok(None);
    }
    let total: usize = iov[..n].iter().map(|s| s.len()).sum();
    match sys::send_vectored(fd, &iov[..n]) {
        Ok(sent) => Ok(Some((sent, sent < total))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some((0, true))),
        Err(e) => Err(e),
    }
}

/// The reading guard of a connection; see [`Connection::reader`].
///
/// It dereferences to the connection's read `LinkBuffer` holding the bytes
/// pulled so far (zero-copy views, `bytes::Buf`), and adds reads that first
/// wait for enough input: [`wait`](Reader::wait), [`next`](Reader::next),
/// [`peek`](Reader::peek), ... In blocking mode they wait up to the read
/// timeout; inline they return `ErrorKind::WouldBlock` when the bytes are not
/// there yet. After the peer closed, missing bytes give `UnexpectedEof`.
/// Dropping the guard releases consumed nodes.
pub struct Reader<'a> {
    conn: &'a Arc<ConnInner>,
    buf: MutexGuard<'a, LinkBuffer>,
    /// Reader-buffer bytes counted in `conn.unread` and not yet settled.
    base: usize,
}

impl Reader<'_> {
    /// Links the inbox's bytes onto the reader buffer; returns how many.
    fn pull(&mut self) -> usize {
        let mut inbox = self.conn.inbox.lock();
        Self::pull_locked(&mut self.buf, &mut inbox, &mut self.base)
    }

    fn pull_locked(buf: &mut LinkBuffer, inbox: &mut LinkBuffer, base: &mut usize) -> usize {
        let n = inbox.len();
        if n > 0 {
            // A zero-copy view: the inbox keeps its adaptive read size and
            // the free tail of its node for the next read.
            if let Ok(part) = inbox.slice(n) {
                buf.append(part);
                buf.flush();
                *base += n;
            }
            inbox.release();
        }
        n
    }

    /// Accounts consumed bytes and resumes a paused connection if it drained.
    fn settle(&mut self) {
        let now = self.buf.len();
        if now < self.base {
            let consumed = self.base - now;
            self.conn.unread.fetch_sub(consumed, Ordering::AcqRel);
            self.base = now;
        }
        // Pairs with the fence in `ConnInner::pause_reading`: either the loop
        // sees this consumption or this sees its `PAUSED`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.conn.flag(PAUSED) {
            let limit = self
                .conn
                .lp
                .cfg
                .input_high_water
                .max(self.conn.want.load(Ordering::Acquire));
            if resume_below(self.conn.unread.load(Ordering::Acquire), limit)
                && self.conn.clear(PAUSED) & PAUSED != 0
            {
                self.conn.lp.send(Task::Resume(Connection {
                    inner: self.conn.clone(),
                }));
            }
        }
    }

    fn closed_error(&self) -> io::Error {
        if self.conn.flag(INPUT_EOF | PEER_CLOSED) {
            io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")
        } else {
            not_connected()
        }
    }

    /// Waits until at least `n` bytes are readable.
    ///
    /// # Errors
    ///
    /// `WouldBlock` (non-blocking mode, not enough input yet), `TimedOut`
    /// (blocking mode, the read timeout passed), `UnexpectedEof` (the peer
    /// closed before `n` bytes came), `NotConnected` (closed locally).
    pub fn wait(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() >= n {
            return Ok(());
        }
        self.pull();
        if self.buf.len() >= n {
            return Ok(());
        }
        let flags = self.conn.flags.load(Ordering::Acquire);
        if flags & BLOCKING == 0 {
            if flags & (INPUT_EOF | CLOSING | FINALIZED) != 0 {
                return Err(self.closed_error());
            }
            // A request larger than the high-water mark raises the mark for
            // this connection, or reading would stay paused forever.
            if n > self.conn.lp.cfg.input_high_water && self.conn.want.load(Ordering::Relaxed) < n {
                self.conn.want.store(n, Ordering::Release);
                self.settle();
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Blocking: account what was consumed so the loop keeps reading.
        self.conn.want.store(n, Ordering::Release);
        self.settle();
        let deadline = self.conn.timeout(Which::Read).map(|d| Instant::now() + d);
        let mut inbox = self.conn.inbox.lock();
        let result = loop {
            Self::pull_locked(&mut self.buf, &mut inbox, &mut self.base);
            if self.buf.len() >= n {
                break Ok(());
            }
            if self.conn.flag(INPUT_EOF | CLOSING | FINALIZED) {
                break Err(self.closed_error());
            }
            match deadline {
                Some(d) => {
                    if self.conn.readable.wait_until(&mut inbox, d).timed_out() {
                        Self::pull_locked(&mut self.buf, &mut inbox, &mut self.base);
                        if self.buf.len() >= n {
                            break Ok(());
                        }
                        break Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
                    }
                }
                None => self.conn.readable.wait(&mut inbox),
            }
        };
        drop(inbox);
        self.conn.want.store(0, Ordering::Release);
        result
    }

    /// The next `n` bytes, consumed (zero-copy when they lie in one node).
    pub fn next(&mut self, n: usize) -> io::Result<&[u8]> {
        self.wait(n)?;
        self.buf.next(n).map_err(lb_err)
    }

    /// The next `n` bytes, not consumed.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        self.wait(n)?;
        self.buf.peek(n).map_err(lb_err)
    }

    /// Consumes `n` bytes.
    pub fn skip(&mut self, n: usize) -> io::Result<()> {
        self.wait(n)?;
        self.buf.skip(n).map_err(lb_err)
    }

    /// One byte.
    pub fn read_byte(&mut self) -> io::Result<u8> {
        self.wait(1)?;
        self.buf.read_byte().map_err(lb_err)
    }

    /// `n` bytes, copied into an owned vector.
    pub fn read_binary(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.wait(n)?;
        self.buf.read_binary(n).map_err(lb_err)
    }

    /// `n` bytes of UTF-8, copied into a string.
    pub fn read_string(&mut self, n: usize) -> io::Result<String> {
        self.wait(n)?;
        self.buf.read_string(n).map_err(lb_err)
    }

    /// `n` bytes as an owned zero-copy `LinkBuffer` view.
    pub fn slice(&mut self, n: usize) -> io::Result<LinkBuffer> {
        self.wait(n)?;
        self.buf.slice(n).map_err(lb_err)
    }

    /// `n` bytes as an owned zero-copy `Bytes`.
    pub fn next_bytes(&mut self, n: usize) -> io::Result<Bytes> {
        self.wait(n)?;
        self.buf.next_bytes(n).map_err(lb_err)
    }

    /// The bytes up to and including `delim`, consumed; waits for more input
    /// while the delimiter is not there.
    pub fn until(&mut self, delim: u8) -> io::Result<&[u8]> {
        let mut searched = 0;
        let pos = loop {
            if let Some(p) = self.find(delim, searched)? {
                break p;
            }
            searched = self.buf.len();
            self.wait(searched + 1)?;
        };
        self.buf.next(pos + 1).map_err(lb_err)
    }

    /// Position of the first `delim` at or after `from`.
    fn find(&mut self, delim: u8, from: usize) -> io::Result<Option<usize>> {
        let len = self.buf.len();
        if from >= len {
            return Ok(None);
        }
        let mut iov = [IoSlice::new(&[]); 64];
        let n = self.buf.readable_vectored(&mut iov);
        let mut off = 0;
        for s in &iov[..n] {
            let end = off + s.len();
            if end > from {
                let start = from.saturating_sub(off);
                if let Some(i) = s[start..].iter().position(|&b| b == delim) {
                    return Ok(Some(off + start + i));
                }
            }
            off = end;
        }
        if off >= len {
            return Ok(None);
        }
        // More nodes than iovecs: search the rest through one copying peek.
        let all = self.buf.peek(len).map_err(lb_err)?;
        Ok(all[off.max(from)..]
            .iter()
            .position(|&b| b == delim)
            .map(|i| off.max(from) + i))
    }

    /// Gives consumed nodes back (done on drop as well).
    pub fn release(&mut self) {
        self.settle();
        self.buf.release();
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.buf.release();
        self.settle();
    }
}

impl Deref for Reader<'_> {
    type Target = LinkBuffer;
    fn deref(&self) -> &LinkBuffer {
        &self.buf
    }
}

impl DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut LinkBuffer {
        &mut self.buf
    }
}

/// The writing guard of a connection; see [`Connection::writer`].
///
/// Dereferences to the output `LinkBuffer` (`malloc`, `write_binary`,
/// `write_bytes`, `append`, `bytes::BufMut`).
pub struct Writer<'a> {
    conn: &'a Arc<ConnInner>,
    out: MutexGuard<'a, Output>,
}

impl Writer<'_> {
    /// Sends everything written so far with `sendmsg` from this thread. If
    /// the socket is full, the rest is sent by the loop when it becomes
    /// writable; a thread other than the loop's then waits while more than
    /// the high-water mark is pending (bounded by the write timeout).
    ///
    /// # Errors
    ///
    /// `NotConnected` after close; the socket's error (`EPIPE`, reset, ...),
    /// which also closes the connection; `TimedOut` when waiting for room
    /// passed the write timeout (the connection is then closed).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.buf.flush();
        if self.out.pending {
            if self.out.fd.is_none() {
                return Err(not_connected());
            }
            return self.wait_room();
        }
        self.conn.send_locked(&mut self.out)?;
        if self.out.pending {
            self.wait_room()
        } else {
            Ok(())
        }
    }

    /// Whether the output held (unsent plus written but not yet flushed)
    /// passed the output high-water mark
    /// ([`Builder::output_high_water`](crate::Builder::output_high_water)).
    /// A handler that answers many pipelined requests in one round checks
    /// it between responses: when it holds, flush and return, leaving the
    /// rest of the input unconsumed. The loop runs the handler again once
    /// the peer has read the output down to the mark, so a peer that sends
    /// requests but never reads the answers cannot grow the buffer.
    pub fn is_full(&self) -> bool {
        self.out.buf.len() + self.out.buf.unflushed_len() > self.conn.lp.cfg.output_high_water
    }

    /// The output high-water mark this connection's loop was built with
    /// ([`Builder::output_high_water`](crate::Builder::output_high_water)):
    /// [`is_full`](Self::is_full) holds once the output buffer's `len()`
    /// plus `unflushed_len()` passes it. For code that writes into the
    /// buffer through `&mut LinkBuffer` (a sans-IO engine) and checks the
    /// same bound itself.
    pub fn output_high_water(&self) -> usize {
        self.conn.lp.cfg.output_high_water
    }

    /// Back-pressure once output is pending: a writer faster than its peer
    /// must not grow the output buffer without bound. The loop's own thread
    /// cannot wait, so it stops reading and running rounds for this
    /// connection instead (or fails, [`OutputFull::Fail`]). Other threads
    /// wait for room (or fail) and leave reading alone: a client whose
    /// requests back up must go on reading the answers that free the
    /// server, or both sides would stop reading with full outputs.
    fn wait_room(&mut self) -> io::Result<()> {
        let hw = self.conn.lp.cfg.output_high_water;
        if self.out.buf.len() <= hw {
            return Ok(());
        }
        if self.conn.lp.is_current() || self.conn.lp.cfg.output_full == OutputFull::Fail {
            return self.conn.output_full(&mut self.out);
        }
        let deadline = Instant::now()
            + self
                .conn
                .timeout(Which::Write)
                .unwrap_or(Duration::from_secs(3600));
        while self.out.pending && self.out.buf.len() > hw {
            if self.out.fd.is_none() {
                return Err(not_connected());
            }
            if self
                .conn
                .drained
                .wait_until(&mut self.out, deadline)
                .timed_out()
            {
                self.conn.request_close();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
        }
        Ok(())
    }
}

impl Deref for Writer<'_> {
    type Target = LinkBuffer;
    fn deref(&self) -> &LinkBuffer {
        &self.out.buf
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut LinkBuffer {
        &mut self.out.buf
    }
}
