//! The loop thread: one epoll set, its connections, listeners and timers.
//!
//! Generic over the handler (monomorphised, no dynamic dispatch on the hot
//! path) while the `EventLoop` handle stays a plain type: other threads talk
//! to a loop only through its task queue and eventfd ([`LoopShared`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use parking_lot::Mutex;

use crate::addr::{Addr, Listener};
use crate::conn::*;
use crate::event_loop::{Config, Group, Mode};
use crate::handler::Handler;
use crate::slab::{RESERVED, Slab};
use crate::sys::{self, Epoll, EventFd, Events, Interest};
use crate::timer::{Callback, TimerKind, Timers, UserTimer, UserTimers};
use crate::udp::{SendQueue, UdpEndpoint, UdpEntry, UdpOut};

const WAKER: u64 = u64::MAX;
const LISTENER: u64 = RESERVED;
/// Keys of UDP sockets: `UDP + index` (listeners use `LISTENER + index`
/// below it).
const UDP: u64 = RESERVED + (1 << 62);
/// `recvmmsg` batches per readiness of one UDP socket before the others
/// get a turn.
const UDP_ROUNDS: usize = 8;
/// Bytes one connection may read per readiness before the others get a turn.
const READ_BUDGET: usize = 1 << 20;
/// Space offered to one `read`.
const MIN_READ: usize = 4096;
/// Accepts per readiness before the connections get a turn.
const ACCEPT_BUDGET: usize = 1024;
/// Pause after `EMFILE`/`ENFILE` before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Bound of a lingering close when no write timeout is set.
const DEFAULT_LINGER: Duration = Duration::from_secs(5);

/// Work sent to a loop from other threads.
pub(crate) enum Task {
    Attach(Connection),
    Close(Connection),
    Resume(Connection),
    WriteBlocked(Connection),
    ArmTimers(Connection),
    HandlerExited(Connection),
    Listen(Listener, SyncSender<io::Result<()>>),
    Shutdown,
    /// Run a closure on the loop thread.
    Run(Box<dyn FnOnce() + Send>),
    /// Start a user timer.
    AddTimer {
        seq: u64,
        at: Instant,
        cancelled: Arc<AtomicBool>,
        callback: Callback,
    },
    /// Drop a user timer.
    CancelTimer(u64),
    /// Serve a UDP socket (reply when registered, unless sent from the loop).
    AddUdp(UdpEntry, Option<SyncSender<io::Result<()>>>),
    /// Stop serving a UDP socket.
    CloseUdp(UdpEndpoint),
    /// Accept on a listener of this loop only; its connections stay here
    /// (per-loop `SO_REUSEPORT` listeners).
    ListenLocal(Listener, SyncSender<io::Result<()>>),
}

/// Per-loop counters, summed by `EventLoop::stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) accept_pauses: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) dgrams_in: AtomicU64,
    pub(crate) dgrams_out: AtomicU64,
    pub(crate) dgrams_truncated: AtomicU64,
    pub(crate) dgrams_failed: AtomicU64,
}

/// The part of a loop other threads see.
pub(crate) struct LoopShared {
    pub(crate) index: usize,
    queue: SegQueue<Task>,
    waker: EventFd,
    notified: AtomicBool,
    /// The loop thread has exited: tasks are dropped (a queued task holds a
    /// connection, whose handle holds this: a cycle that would leak).
    exited: AtomicBool,
    pub(crate) cfg: Arc<Config>,
    pub(crate) counters: Counters,
}

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

impl LoopShared {
    pub(crate) fn new(index: usize, cfg: Arc<Config>) -> io::Result<LoopShared> {
        Ok(LoopShared {
            index,
            queue: SegQueue::new(),
            waker: EventFd::new()?,
            notified: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            cfg,
            counters: Counters::default(),
        })
    }

    fn id(&self) -> usize {
        self as *const LoopShared as usize
    }

    /// Whether the calling thread is this loop's thread.
    pub(crate) fn is_current(&self) -> bool {
        CURRENT.with(|c| c.get()) == self.id()
    }

    /// Queues `task`; wakes the loop unless it is the caller or already due.
    pub(crate) fn send(&self, task: Task) {
        self.queue.push(task);
        if self.exited.load(Ordering::SeqCst) {
            self.drop_tasks();
            return;
        }
        if !self.is_current()
            && !self.notified.swap(true, Ordering::SeqCst)
            && let Err(e) = self.waker.wake()
        {
            tracing::error!(error = %e, "cannot wake event loop");
        }
    }
}

impl LoopShared {
    fn drop_tasks(&self) {
        while let Some(task) = self.queue.pop() {
            if let Task::Attach(c) = task {
                abandon(&self.counters, &c);
            }
        }
    }
}

/// Closes a connection that never got (or lost) its loop.
fn abandon(counters: &Counters, conn: &Connection) {
    let inner = &conn.inner;
    if inner.set(CLOSING | FINALIZED) & FINALIZED == 0 {
        inner.output.lock().fd = None;
        inner.wake_readers();
        counters.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the calling thread is any loop's thread.
pub(crate) fn on_loop_thread() -> bool {
    CURRENT.with(|c| c.get()) != 0
}

struct Slot<S> {
    conn: Connection,
    state: Mutex<Option<S>>,
}

struct ListenerEntry {
    listener: Listener,
    warned: bool,
    /// Accepting is paused (out of descriptors or memory) until the one
    /// pending `TimerKind::Accept` timer fires; readiness events meanwhile
    /// are left to that timer, so they cannot stack up timers of their own.
    paused: bool,
    /// Accepted connections stay on this loop (no balancing).
    local: bool,
}

pub(crate) struct Reactor<H: Handler> {
    shared: Arc<LoopShared>,
    group: Arc<Group>,
    handler: Arc<H>,
    epoll: Epoll,
    events: Events,
    conns: Slab<Arc<Slot<H::State>>>,
    listeners: Vec<Option<ListenerEntry>>,
    timers: Timers,
    user_timers: UserTimers,
    ready: VecDeque<u64>,
    ready_listeners: Vec<usize>,
    udp: Vec<Option<UdpEntry>>,
    ready_udp: Vec<usize>,
    /// The batch buffer of `recvmmsg`, allocated with the first UDP socket.
    udp_recv: Option<sys::RecvBuf>,
    udp_queue: SendQueue,
    epoch: Instant,
    now: u64,
    shutting_down: bool,
}

impl<H: Handler> Reactor<H> {
    pub(crate) fn new(
        shared: Arc<LoopShared>,
        group: Arc<Group>,
        handler: Arc<H>,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(shared.waker.raw(), WAKER, Interest::Readable)?;
        Ok(Reactor {
            shared,
            group,
            handler,
            epoll,
            events: Events::with_capacity(256),
            conns: Slab::new(),
            listeners: Vec::new(),
            timers: Timers::default(),
            user_timers: UserTimers::default(),
            ready: VecDeque::new(),
            ready_listeners: Vec::new(),
            udp: Vec::new(),
            ready_udp: Vec::new(),
            udp_recv: None,
            udp_queue: SendQueue::default(),
            epoch: Instant::now(),
            now: 0,
            shutting_down: false,
        })
    }

    fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    fn tick(&mut self) {
        self.now = self.epoch.elapsed().as_nanos() as u64;
    }

    pub(crate) fn run(mut self) {
        CURRENT.with(|c| c.set(self.shared.id()));
        loop {
            let busy = !self.ready.is_empty()
                || !self.ready_listeners.is_empty()
                || !self.ready_udp.is_empty()
                || !self.shared.queue.is_empty();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                let next = match (
                    self.timers.next_deadline(),
                    self.user_timers.next_deadline(),
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.map(|d| {
                    self.tick();
                    Duration::from_nanos(d.saturating_sub(self.now))
                })
            };
            if let Err(e) = self.epoll.wait(&mut self.events, timeout) {
                tracing::error!(error = %e, "epoll_wait failed; loop stops");
                break;
            }
            self.tick();
            for i in 0..self.events.len() {
                let (key, ready) = self.events.get(i);
                if key == WAKER {
                    // Drain first, then clear: a sender that still saw
                    // `notified` set pushed before the clear, so the queue
                    // drain below gets its task; one that sees it clear writes
                    // the eventfd after our read, so the next wait reports it.
                    // (Clearing first loses that write: epoll re-polls the
                    // eventfd, finds the counter read to zero, reports nothing,
                    // and `notified` stays set for good.)
                    self.shared.waker.drain();
                    self.shared.notified.store(false, Ordering::SeqCst);
                } else if key >= UDP {
                    self.udp_read((key - UDP) as usize);
                } else if key >= LISTENER {
                    self.accept((key - LISTENER) as usize);
                } else {
                    self.conn_event(key, ready);
                }
            }
            for _ in 0..self.ready.len() {
                if let Some(key) = self.ready.pop_front()
                    && let Some(slot) = self.conns.get(key).cloned()
                {
                    self.read_and_dispatch(&slot);
                }
            }
            for l in std::mem::take(&mut self.ready_listeners) {
                self.accept(l);
            }
            for u in std::mem::take(&mut self.ready_udp) {
                self.udp_read(u);
            }
            while let Some(task) = self.shared.queue.pop() {
                self.task(task);
            }
            self.fire_timers();
            self.fire_user_timers();
            if self.group.force.load(Ordering::Acquire)
                || (self.shutting_down && self.conns.is_empty())
            {
                break;
            }
        }
        self.teardown();
    }

    fn teardown(&mut self) {
        self.listeners.clear();
        self.close_all_udp();
        self.user_timers.clear();
        // Forced: close what remains. Handlers still running on the pool keep
        // their state; `on_disconnect` runs only for connections no handler holds.
        for key in self.conns.keys() {
            if let Some(slot) = self.conns.remove(key) {
                if slot.conn.inner.set(CLOSING) & RUNNING != 0 {
                    // Its handler still runs: close the socket, skip the callbacks.
                    self.abandon(&slot.conn);
                } else {
                    self.conns_finalize_removed(&slot);
                }
            }
        }
        // Tasks queued late (e.g. an attach racing with shutdown): dropped,
        // their connections closed.
        self.shared.exited.store(true, Ordering::SeqCst);
        while let Some(task) = self.shared.queue.pop() {
            if let Task::Attach(c) = task {
                self.abandon(&c);
            }
        }
        CURRENT.with(|c| c.set(0));
        self.group.loop_exited();
    }

    fn abandon(&self, conn: &Connection) {
        if !conn.inner.flag(FINALIZED) {
            self.group.open.fetch_sub(1, Ordering::AcqRel);
        }
        abandon(&self.shared.counters, conn);
    }

    // ----- tasks --------------------------------------------------------

    fn task(&mut self, task: Task) {
        match task {
            Task::Attach(conn) => self.attach(conn),
            Task::Close(conn) => {
                if let Some(slot) = self.lookup(&conn) {
                    self.close(&slot, true, "closed locally");
                }
            }
            Task::Resume(conn) => {
                if let Some(slot) = self.lookup(&conn) {
                    self.read_and_dispatch(&slot);
                }
            }
            Task::WriteBlocked(conn) => {
                if let Some(slot) = self.lookup(&conn) {
                    let inner = &slot.conn.inner;
                    inner.write_since.store(self.now, Ordering::Relaxed);
                    self.arm_write(&slot);
                }
            }
            Task::ArmTimers(conn) => {
                if let Some(slot) = self.lookup(&conn) {
                    self.arm_timers(&slot);
                }
            }
            Task::HandlerExited(conn) => {
                if let Some(slot) = self.lookup(&conn) {
                    self.after_round(&slot);
                }
            }
            Task::Listen(l, reply) => {
                let _ = reply.send(self.listen(l, false));
            }
            Task::ListenLocal(l, reply) => {
                let _ = reply.send(self.listen(l, true));
            }
            Task::AddUdp(entry, reply) => {
                let endpoint = entry.endpoint.clone();
                let res = self.add_udp(entry);
                if let Err(e) = &res {
                    endpoint.mark_closed();
                    tracing::error!(error = %e, "UDP socket registration failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(res);
                }
            }
            Task::CloseUdp(endpoint) => self.close_udp(&endpoint),
            Task::Run(f) => {
                if catch_unwind(AssertUnwindSafe(f)).is_err() {
                    self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(loop_index = self.shared.index, "scheduled task panicked");
                }
            }
            Task::AddTimer {
                seq,
                at,
                cancelled,
                callback,
            } => {
                if !cancelled.load(Ordering::Acquire) {
                    let deadline = at.saturating_duration_since(self.epoch).as_nanos() as u64;
                    self.user_timers.insert(
                        seq,
                        UserTimer {
                            deadline,
                            cancelled,
                            callback,
                        },
                    );
                }
            }
            Task::CancelTimer(seq) => self.user_timers.cancel(seq),
            Task::Shutdown => {
                self.shutting_down = true;
                self.listeners.clear();
                self.close_all_udp();
                for key in self.conns.keys() {
                    if let Some(slot) = self.conns.get(key).cloned() {
                        self.close(&slot, true, "shutdown");
                    }
                }
            }
        }
    }

    fn lookup(&self, conn: &Connection) -> Option<Arc<Slot<H::State>>> {
        let key = conn.inner.key.load(Ordering::Acquire);
        self.conns.get(key).filter(|s| s.conn.ptr_eq(conn)).cloned()
    }

    fn listen(&mut self, l: Listener, local: bool) -> io::Result<()> {
        l.set_nonblocking()?;
        sys::listen(l.raw_fd(), self.cfg().backlog)?;
        let idx = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        self.epoll
            .add(l.raw_fd(), LISTENER + idx as u64, Interest::Readable)?;
        self.listeners[idx] = Some(ListenerEntry {
            listener: l,
            warned: false,
            paused: false,
            local,
        });
        // Connections may already wait in the backlog (no edge for them).
        self.ready_listeners.push(idx);
        Ok(())
    }

    // ----- accept -------------------------------------------------------

    fn accept(&mut self, idx: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(entry) = self.listeners.get(idx).and_then(Option::as_ref) else {
                return;
            };
            if entry.paused {
                return; // the pause timer retries
            }
            let is_tcp = entry.listener.is_tcp();
            let local = entry.local;
            match sys::accept(entry.listener.raw_fd()) {
                Ok((sock, peer)) => self.accepted(sock, peer, is_tcp, local),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    if let Some(Some(entry)) = self.listeners.get_mut(idx) {
                        if !entry.warned {
                            entry.warned = true;
                            tracing::warn!(error = %e, "accept: out of resources; pausing accepts for 100 ms");
                        }
                        entry.paused = true;
                    }
                    self.shared
                        .counters
                        .accept_pauses
                        .fetch_add(1, Ordering::Relaxed);
                    let at = self.now + ACCEPT_BACKOFF.as_nanos() as u64;
                    self.timers.push(at, idx as u64, TimerKind::Accept);
                    return;
                }
                // The peer gave up before we accepted (ECONNABORTED, EPERM by
                // a firewall, a network error on the new socket): next one.
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
        self.ready_listeners.push(idx);
    }

    fn accepted(&mut self, sock: std::os::fd::OwnedFd, peer: Addr, is_tcp: bool, local: bool) {
        let cfg = &self.shared.cfg;
        if self.shutting_down {
            return;
        }
        if self.group.open.load(Ordering::Acquire) >= cfg.max_connections {
            self.shared
                .counters
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "max_connections reached; connection refused");
            return; // dropping `sock` closes it
        }
        if is_tcp {
            if let Err(e) = sys::set_nodelay(sock.as_raw_fd()) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
            if let Some(k) = cfg.keepalive
                && let Err(e) = sys::set_keepalive(sock.as_raw_fd(), k)
            {
                tracing::debug!(error = %e, "SO_KEEPALIVE failed");
            }
            if let Some(t) = cfg.tcp_user_timeout
                && let Err(e) = sys::set_user_timeout(sock.as_raw_fd(), t)
            {
                tracing::debug!(error = %e, "TCP_USER_TIMEOUT failed");
            }
        }
        let target = if local {
            self.shared.clone()
        } else {
            self.group.pick_loop(Some(&peer))
        };
        self.shared
            .counters
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        let blocking = !matches!(cfg.mode, Mode::Inline);
        self.group.open.fetch_add(1, Ordering::AcqRel);
        target.counters.open.fetch_add(1, Ordering::AcqRel);
        let conn = Connection::new(sock, peer, target.clone(), blocking);
        tracing::trace!(conn = conn.id(), peer = %conn.peer_addr(), to_loop = target.index, "accepted");
        if Arc::ptr_eq(&target, &self.shared) {
            self.attach(conn);
        } else {
            target.send(Task::Attach(conn));
        }
    }

    // ----- connections --------------------------------------------------

    fn attach(&mut self, conn: Connection) {
        if self.shutting_down {
            self.abandon(&conn);
            return;
        }
        let slot = Arc::new(Slot {
            conn,
            state: Mutex::new(None),
        });
        let key = self.conns.insert(slot.clone());
        let conn = &slot.conn;
        conn.inner.key.store(key, Ordering::Release);
        conn.inner.last_read.store(self.now, Ordering::Relaxed);
        let handler = &self.handler;
        let state = catch_unwind(AssertUnwindSafe(|| {
            handler.on_prepare(conn);
            handler.on_connect(conn)
        }));
        match state {
            Ok(s) => *slot.state.lock() = Some(s),
            Err(_) => {
                self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(conn = conn.id(), "on_prepare/on_connect panicked; closing");
                conn.inner.set(CLOSING);
                self.finalize(&slot, "handler panicked");
                return;
            }
        }
        if let Err(e) = self.epoll.add(conn.inner.fd, key, Interest::Connection) {
            tracing::error!(conn = conn.id(), error = %e, "epoll_ctl(ADD) failed; closing");
            conn.inner.set(CLOSING);
            self.finalize(&slot, "registration failed");
            return;
        }
        conn.inner.set(REGISTERED);
        tracing::debug!(conn = conn.id(), peer = %conn.peer_addr(), "connected");
        self.arm_timers(&slot);
        if conn.inner.flag(CLOSING) {
            self.close(&slot, true, "closed in on_connect");
        }
    }

    fn conn_event(&mut self, key: u64, ready: sys::Ready) {
        let Some(slot) = self.conns.get(key).cloned() else {
            return;
        };
        let inner = &slot.conn.inner;
        if ready.hup_or_error() || ready.read_closed() {
            let old = inner.set(PEER_CLOSED);
            if old & PEER_CLOSED == 0 {
                tracing::trace!(conn = inner_id(&slot), "peer closed");
                // Blocked readers re-check (they still get buffered bytes).
                if old & BLOCKING != 0 {
                    inner.wake_readers();
                }
            }
        }
        if ready.writable() && inner.flag(OUT_PENDING) {
            self.finish_output(&slot);
        }
        if ready.readable() || ready.read_closed() || ready.hup_or_error() {
            self.read_and_dispatch(&slot);
        }
    }

    /// Reads what the socket has (within the budget and the high-water
    /// mark), then lets the handler at it.
    fn read_and_dispatch(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        let flags = inner.flags.load(Ordering::Acquire);
        if flags & FINALIZED != 0 {
            return;
        }
        let mut got = 0usize;
        if flags & OUT_FULL != 0 {
            inner.set(READ_DEFERRED);
        } else if flags & (PAUSED | INPUT_EOF) == 0 {
            let limit = self
                .cfg()
                .input_high_water
                .max(inner.want.load(Ordering::Acquire));
            // Inline, nobody else reads: read straight into the reader buffer
            // (saves the inbox hand-off) when no consumer holds it and the
            // inbox is empty, which keeps reader bytes before inbox bytes.
            // The guard drops at the end of this block, before dispatch.
            let mut direct = if flags & BLOCKING == 0 {
                inner
                    .reader
                    .try_lock()
                    .filter(|_| inner.inbox.lock().is_empty())
            } else {
                None
            };
            loop {
                let (res, offered, unread) = {
                    let mut inbox;
                    let buf = match direct.as_mut() {
                        Some(r) => &mut **r,
                        None => {
                            inbox = inner.inbox.lock();
                            &mut *inbox
                        }
                    };
                    let space = buf.book(MIN_READ);
                    let offered = space.len();
                    let res = sys::read(inner.fd, space);
                    let n = *res.as_ref().unwrap_or(&0);
                    buf.book_ack(n);
                    // Count the bytes before a consumer can see them (the
                    // buffer's lock is still held): a consumer subtracts
                    // what it read from `unread`, which must never go below 0.
                    // Only this thread writes `bytes_in`: no read-modify-write.
                    let total = inner.bytes_in.load(Ordering::Relaxed) + n as u64;
                    inner.bytes_in.store(total, Ordering::Release);
                    let unread = inner.unread.fetch_add(n, Ordering::AcqRel) + n;
                    (res, offered, unread)
                };
                match res {
                    Ok(0) => {
                        inner.set(INPUT_EOF | PEER_CLOSED);
                        break;
                    }
                    Ok(n) => {
                        got += n;
                        if n < offered && !inner.flag(PEER_CLOSED) {
                            // Drained: a later arrival raises a new edge. After
                            // a hang-up no edge follows, so read on to the EOF.
                            break;
                        }
                        if unread > limit && inner.pause_reading(limit) {
                            tracing::trace!(
                                conn = inner_id(slot),
                                unread,
                                "input high-water mark: reading paused"
                            );
                            break;
                        }
                        if got >= READ_BUDGET {
                            self.ready.push_back(inner.key.load(Ordering::Relaxed));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(conn = inner_id(slot), error = %e, "read failed");
                        inner.set(INPUT_EOF | PEER_CLOSED);
                        break;
                    }
                }
            }
        }
        if got > 0 {
            // Only this loop writes its `bytes_in` counter.
            let c = &self.shared.counters.bytes_in;
            c.store(c.load(Ordering::Relaxed) + got as u64, Ordering::Relaxed);
            inner.last_read.store(self.now, Ordering::Relaxed);
        }
        let blocking = inner.flag(BLOCKING);
        if blocking && (got > 0 || inner.flag(INPUT_EOF)) {
            inner.wake_readers();
        }
        self.dispatch(slot);
    }

    fn dispatch(&mut self, slot: &Arc<Slot<H::State>>) {
        match &self.shared.cfg.mode {
            Mode::Inline => {
                self.run_inline(slot);
                self.after_round(slot);
            }
            Mode::Pool(_) => {
                let inner = &slot.conn.inner;
                if inner.unread.load(Ordering::Acquire) > 0 && !inner.flag(CLOSING) {
                    if inner.set(RUNNING) & RUNNING == 0 {
                        self.submit(slot.clone());
                    }
                    // A running handler re-checks for input before it exits.
                } else {
                    self.after_round(slot);
                }
            }
            Mode::Blocking => self.after_round(slot),
        }
    }

    fn run_inline(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        let mut guard = slot.state.lock();
        let Some(state) = guard.as_mut() else { return };
        loop {
            // `OUT_FULL`: the peer is not reading what earlier rounds wrote;
            // run no more rounds until it drains (`finish_output` resumes).
            if inner.unread.load(Ordering::Acquire) == 0
                || inner.flag(CLOSING | FINALIZED | OUT_FULL)
            {
                break;
            }
            let before = inner.consumed();
            let handler = &self.handler;
            let conn = &slot.conn;
            match catch_unwind(AssertUnwindSafe(|| handler.on_request(state, conn))) {
                // `WouldBlock` from a non-blocking read: wait for more input.
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => {
                    tracing::debug!(conn = conn.id(), error = %e, "handler error; closing");
                    inner.set(CLOSING);
                    break;
                }
                Err(_) => {
                    self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(conn = conn.id(), "handler panicked; closing its connection");
                    inner.set(CLOSING);
                    break;
                }
            }
            if inner.consumed() == before {
                break; // incomplete request: wait for more input
            }
        }
    }

    fn submit(&self, slot: Arc<Slot<H::State>>) {
        let handler = self.handler.clone();
        let Mode::Pool(pool) = &self.shared.cfg.mode else {
            return;
        };
        crate::event_loop::spawn_on(pool, move || pool_rounds(slot, handler));
    }

    /// After handler rounds: track stalls for the read timeout, close what
    /// should close.
    fn after_round(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        let flags = inner.flags.load(Ordering::Acquire);
        if flags & (RUNNING | FINALIZED) != 0 {
            return;
        }
        if flags & CLOSING != 0 {
            self.close(slot, true, "closed");
            return;
        }
        let unread = inner.unread.load(Ordering::Acquire);
        if flags & INPUT_EOF != 0 {
            if flags & OUT_FULL != 0 && unread > 0 && matches!(self.shared.cfg.mode, Mode::Inline) {
                // Requests sent before a half-close still get their answers:
                // the rounds go on once the output drains.
                return;
            }
            // Everything read before the hang-up went through the handler.
            self.close(slot, true, "peer closed");
            return;
        }
        // Stall tracking for the non-blocking read timeout. Input waiting
        // for the peer to read its output is not a stall (the write
        // timeout covers that wait).
        if unread > 0 && flags & (BLOCKING | OUT_FULL) == 0 {
            if inner.stall_since.load(Ordering::Relaxed) == 0 {
                inner.stall_since.store(self.now.max(1), Ordering::Relaxed);
            }
            self.arm_read(slot);
        } else {
            inner.stall_since.store(0, Ordering::Relaxed);
            if flags & BLOCKING == 0 && inner.want.load(Ordering::Relaxed) != 0 {
                inner.want.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Closes now, or after pending output drains (`graceful`, bounded).
    fn close(&mut self, slot: &Arc<Slot<H::State>>, graceful: bool, reason: &'static str) {
        let inner = &slot.conn.inner;
        let old = inner.set(CLOSING);
        if old & FINALIZED != 0 {
            return;
        }
        if old & CLOSING == 0 {
            inner.wake_readers();
        }
        if old & RUNNING != 0 {
            return; // the pool handler reports back when it exits
        }
        if graceful && old & LINGER != 0 {
            // Already lingering: the drain or the linger timer finalizes.
            // (A later event — an `EPOLLOUT` edge also reports the peer's
            // EOF — must not cut the pending output short.)
            return;
        }
        if graceful {
            let pending = inner.output.lock().pending;
            if pending {
                inner.set(LINGER);
                let wait = inner
                    .timeout_ns(Which::Write)
                    .unwrap_or(DEFAULT_LINGER.as_nanos() as u64);
                self.timers.push(
                    self.now.saturating_add(wait),
                    inner.key.load(Ordering::Relaxed),
                    TimerKind::Linger,
                );
                return;
            }
        }
        self.finalize(slot, reason);
    }

    fn conns_finalize_removed(&mut self, slot: &Arc<Slot<H::State>>) {
        self.finalize(slot, "event loop stopped");
    }

    fn finalize(&mut self, slot: &Arc<Slot<H::State>>, reason: &'static str) {
        let inner = &slot.conn.inner;
        let key = inner.key.load(Ordering::Acquire);
        if self.conns.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            self.conns.remove(key);
        }
        {
            let mut out = inner.output.lock();
            out.pending = false;
            out.buf = ferropoll_linkbuffer::LinkBuffer::new();
            // Closing the descriptor also removes it from the epoll set.
            out.fd = None;
            inner.drained.notify_all();
        }
        let callbacks = {
            let mut cbs = inner.callbacks.lock();
            inner.set(FINALIZED | CLOSING);
            std::mem::take(&mut *cbs)
        };
        inner.wake_readers();
        tracing::debug!(conn = slot.conn.id(), reason, "closed");
        let mut state = slot.state.lock().take();
        let handler = &self.handler;
        let conn = &slot.conn;
        if let Some(st) = state.as_mut()
            && catch_unwind(AssertUnwindSafe(|| handler.on_disconnect(st, conn))).is_err()
        {
            self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(conn = conn.id(), "on_disconnect panicked");
        }
        drop(state);
        for cb in callbacks {
            if catch_unwind(AssertUnwindSafe(|| cb(conn))).is_err() {
                self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(conn = conn.id(), "close callback panicked");
            }
        }
        self.shared.counters.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.counters.closed.fetch_add(1, Ordering::Relaxed);
        self.group.open.fetch_sub(1, Ordering::AcqRel);
    }

    fn finish_output(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        let (pending, below) = {
            let mut out = inner.output.lock();
            if !out.pending {
                return;
            }
            out.pending = false;
            let _ = inner.send_locked(&mut out);
            let below = out.buf.len() <= self.cfg().output_high_water;
            if !out.pending || below {
                inner.drained.notify_all();
            }
            (out.pending, below)
        };
        if below && inner.flag(OUT_FULL) {
            inner.clear(OUT_FULL);
            // Resume reading if a read was skipped, and the rounds if input
            // waits (they stopped at the mark).
            let deferred = inner.clear(READ_DEFERRED) & READ_DEFERRED != 0;
            if deferred || inner.unread.load(Ordering::Acquire) > 0 {
                self.read_and_dispatch(slot);
            }
        }
        // Re-read `pending`: a round run above may have written more (and
        // closed, lingering for it).
        if !pending && inner.flag(LINGER) && !inner.output.lock().pending {
            self.finalize(slot, "closed after output drained");
        }
    }

    // ----- timers -------------------------------------------------------

    fn arm_timers(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        if let Some(idle) = inner.timeout_ns(Which::Idle)
            && inner.set(IDLE_ARMED) & IDLE_ARMED == 0
        {
            let at = inner
                .last_read
                .load(Ordering::Relaxed)
                .max(self.now)
                .saturating_add(idle);
            self.timers
                .push(at, inner.key.load(Ordering::Relaxed), TimerKind::Idle);
        }
        if inner.stall_since.load(Ordering::Relaxed) != 0 {
            self.arm_read(slot);
        }
        if inner.output.lock().pending {
            self.arm_write(slot);
        }
    }

    fn arm_read(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        if let Some(t) = inner.timeout_ns(Which::Read)
            && inner.set(READ_ARMED) & READ_ARMED == 0
        {
            let at = inner.stall_since.load(Ordering::Relaxed).saturating_add(t);
            self.timers
                .push(at, inner.key.load(Ordering::Relaxed), TimerKind::Read);
        }
    }

    fn arm_write(&mut self, slot: &Arc<Slot<H::State>>) {
        let inner = &slot.conn.inner;
        if let Some(t) = inner.timeout_ns(Which::Write)
            && inner.set(WRITE_ARMED) & WRITE_ARMED == 0
        {
            let at = inner.write_since.load(Ordering::Relaxed).saturating_add(t);
            self.timers
                .push(at, inner.key.load(Ordering::Relaxed), TimerKind::Write);
        }
    }

    fn fire_timers(&mut self) {
        while let Some((key, kind)) = self.timers.pop_due(self.now) {
            if kind == TimerKind::Accept {
                if let Some(Some(entry)) = self.listeners.get_mut(key as usize) {
                    entry.paused = false;
                }
                self.accept(key as usize);
                continue;
            }
            let Some(slot) = self.conns.get(key).cloned() else {
                continue;
            };
            let inner = &slot.conn.inner;
            let now = self.now;
            match kind {
                TimerKind::Idle => {
                    inner.clear(IDLE_ARMED);
                    let Some(idle) = inner.timeout_ns(Which::Idle) else {
                        continue;
                    };
                    let last = inner.last_read.load(Ordering::Relaxed);
                    let busy = inner.flag(RUNNING) || inner.output.lock().pending;
                    if now.saturating_sub(last) >= idle && !busy {
                        self.shared
                            .counters
                            .timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(conn = slot.conn.id(), "idle timeout");
                        self.close(&slot, false, "idle timeout");
                    } else {
                        inner.set(IDLE_ARMED);
                        let at = if busy { now + idle } else { last + idle };
                        self.timers.push(at, key, TimerKind::Idle);
                    }
                }
                TimerKind::Read => {
                    inner.clear(READ_ARMED);
                    let since = inner.stall_since.load(Ordering::Relaxed);
                    let Some(t) = inner.timeout_ns(Which::Read) else {
                        continue;
                    };
                    if since == 0 || inner.flag(BLOCKING) {
                        continue;
                    }
                    if now.saturating_sub(since) >= t {
                        self.shared
                            .counters
                            .timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(conn = slot.conn.id(), "read timeout");
                        self.close(&slot, false, "read timeout");
                    } else {
                        self.arm_read(&slot);
                    }
                }
                TimerKind::Write => {
                    inner.clear(WRITE_ARMED);
                    let Some(t) = inner.timeout_ns(Which::Write) else {
                        continue;
                    };
                    if !inner.output.lock().pending {
                        continue;
                    }
                    let since = inner.write_since.load(Ordering::Relaxed);
                    if now.saturating_sub(since) >= t {
                        self.shared
                            .counters
                            .timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(conn = slot.conn.id(), "write timeout");
                        self.close(&slot, false, "write timeout");
                    } else {
                        self.arm_write(&slot);
                    }
                }
                TimerKind::Linger => {
                    if inner.flag(LINGER) {
                        self.finalize(&slot, "linger timeout");
                    }
                }
                TimerKind::Accept => {}
            }
        }
    }
}

impl<H: Handler> Reactor<H> {
    // ----- UDP ----------------------------------------------------------

    fn add_udp(&mut self, entry: UdpEntry) -> io::Result<()> {
        if self.shutting_down {
            return Err(io::Error::other("event loop is shutting down"));
        }
        let idx = match self.udp.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.udp.push(None);
                self.udp.len() - 1
            }
        };
        let fd = entry.endpoint.inner.socket.as_raw_fd();
        self.epoll.add(fd, UDP + idx as u64, Interest::Readable)?;
        tracing::debug!(local = %entry.endpoint.local_addr(), "serving UDP socket");
        self.udp[idx] = Some(entry);
        // Datagrams may already wait (no edge for them).
        self.ready_udp.push(idx);
        Ok(())
    }

    fn close_udp(&mut self, endpoint: &UdpEndpoint) {
        let found = self
            .udp
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.endpoint.ptr_eq(endpoint)));
        if let Some(idx) = found
            && let Some(entry) = self.udp[idx].take()
        {
            self.deregister_udp(&entry);
        }
    }

    fn close_all_udp(&mut self) {
        for entry in std::mem::take(&mut self.udp).into_iter().flatten() {
            self.deregister_udp(&entry);
        }
        self.ready_udp.clear();
        self.udp_recv = None;
    }

    fn deregister_udp(&self, entry: &UdpEntry) {
        entry.endpoint.mark_closed();
        // Other handles may keep the socket open: take it out of the set.
        let _ = self.epoll.delete(entry.endpoint.inner.socket.as_raw_fd());
    }

    /// Receives batches of datagrams and hands them to the socket's
    /// handler; replies go out with one `sendmmsg` per batch.
    fn udp_read(&mut self, idx: usize) {
        let Some(entry) = self.udp.get(idx).and_then(Option::as_ref) else {
            return;
        };
        let endpoint = entry.endpoint.clone();
        let handler = entry.handler.clone();
        if endpoint.is_closed() {
            return;
        }
        let fd = endpoint.inner.socket.as_raw_fd();
        let cfg = &self.shared.cfg;
        let batch = cfg.udp_batch;
        let gso = cfg.udp_gso;
        let recv = self
            .udp_recv
            .get_or_insert_with(|| sys::RecvBuf::new(batch, cfg.udp_max_datagram));
        let counters = &self.shared.counters;
        let queue = &mut self.udp_queue;
        let fallback_peer = endpoint.peer_addr();
        for _ in 0..UDP_ROUNDS {
            let n = match recv.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // An ICMP error reported on a connected socket (e.g.
                    // ECONNREFUSED for an earlier send): reported once, then
                    // cleared; read on.
                    tracing::debug!(local = %endpoint.local_addr(), error = %e, "UDP receive error");
                    counters.dgrams_failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            // Counted before the handler runs (and replies go out).
            let (mut bytes, mut truncated) = (0u64, 0u64);
            for i in 0..n {
                let (data, meta) = recv.get(i);
                bytes += data.len() as u64;
                truncated += u64::from(meta.truncated);
            }
            counters.dgrams_in.fetch_add(n as u64, Ordering::Relaxed);
            counters.bytes_in.fetch_add(bytes, Ordering::Relaxed);
            if truncated > 0 {
                counters
                    .dgrams_truncated
                    .fetch_add(truncated, Ordering::Relaxed);
                tracing::debug!(local = %endpoint.local_addr(), truncated, "truncated UDP datagrams");
            }
            for i in 0..n {
                let (data, meta) = recv.get(i);
                let Some(peer) = meta.peer.or(fallback_peer) else {
                    continue;
                };
                let mut out = UdpOut::new(&endpoint, queue, counters);
                let res = if meta.truncated {
                    catch_unwind(AssertUnwindSafe(|| {
                        handler.on_truncated(data, meta.len, peer, &mut out)
                    }))
                } else {
                    catch_unwind(AssertUnwindSafe(|| {
                        handler.on_datagram(data, peer, &mut out)
                    }))
                };
                if res.is_err() {
                    counters.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%peer, "UDP handler panicked; datagram dropped");
                }
            }
            queue.flush(fd, counters, gso);
            if n < batch {
                // Drained: a later datagram raises a new edge.
                return;
            }
        }
        self.ready_udp.push(idx);
    }

    /// Runs the user timers that are due, in (deadline, creation) order.
    /// Interval timers are pushed back at their next multiple of the
    /// interval (missed ticks are skipped, not run in a burst).
    fn fire_user_timers(&mut self) {
        while let Some((seq, timer)) = self.user_timers.pop_due(self.now) {
            let UserTimer {
                deadline,
                cancelled,
                callback,
            } = timer;
            if cancelled.load(Ordering::Acquire) {
                continue;
            }
            let ok = match callback {
                Callback::Once(f) => catch_unwind(AssertUnwindSafe(f)).is_ok(),
                Callback::Every { mut f, interval } => {
                    let ok = catch_unwind(AssertUnwindSafe(&mut f)).is_ok();
                    if ok && !cancelled.load(Ordering::Acquire) {
                        // Time moved while the callback ran.
                        self.tick();
                        let mut next = deadline.saturating_add(interval);
                        if next <= self.now {
                            let behind = self.now - deadline;
                            next = deadline
                                .saturating_add((behind / interval + 1).saturating_mul(interval));
                        }
                        self.user_timers.insert(
                            seq,
                            UserTimer {
                                deadline: next,
                                cancelled,
                                callback: Callback::Every { f, interval },
                            },
                        );
                    }
                    ok
                }
            };
            if !ok {
                self.shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    loop_index = self.shared.index,
                    "timer callback panicked; timer stopped"
                );
            }
        }
    }
}

fn inner_id<S>(slot: &Slot<S>) -> u64 {
    slot.conn.id()
}

/// Handler rounds on a pool worker. Exactly one runs per connection at a
/// time (the `RUNNING` flag); before giving the connection back it re-checks
/// for input that arrived meanwhile, so no wake-up is lost.
fn pool_rounds<H: Handler>(slot: Arc<Slot<H::State>>, handler: Arc<H>) {
    let inner = &slot.conn.inner;
    let conn = &slot.conn;
    loop {
        let seen = inner.bytes_in.load(Ordering::Acquire);
        {
            let mut guard = slot.state.lock();
            while let Some(state) = guard.as_mut() {
                if inner.unread.load(Ordering::Acquire) == 0 || inner.flag(CLOSING | FINALIZED) {
                    break;
                }
                let before = inner.consumed();
                match catch_unwind(AssertUnwindSafe(|| handler.on_request(state, conn))) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(Err(e)) => {
                        tracing::debug!(conn = conn.id(), error = %e, "handler error; closing");
                        inner.set(CLOSING);
                        break;
                    }
                    Err(_) => {
                        inner.lp.counters.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            conn = conn.id(),
                            "handler panicked; closing its connection"
                        );
                        inner.set(CLOSING);
                        break;
                    }
                }
                if inner.consumed() == before {
                    break;
                }
            }
        }
        inner.clear(RUNNING);
        if inner.flag(CLOSING | INPUT_EOF) {
            inner.lp.send(Task::HandlerExited(conn.clone()));
            return;
        }
        let fresh = inner.bytes_in.load(Ordering::Acquire) != seen;
        if fresh && inner.unread.load(Ordering::Acquire) > 0 && inner.set(RUNNING) & RUNNING == 0 {
            continue;
        }
        return;
    }
}
