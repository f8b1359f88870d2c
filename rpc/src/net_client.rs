//! The network backend of [`Client`](crate::Client): a few multiplexed
//! connections served by one client event loop.
//!
//! Each connection has a [`ClientSession`] (its call table) and an
//! *outbox*. A caller encodes its request into the outbox under a short
//! lock, then tries to become the connection's flusher: the flusher moves
//! everything staged into the connection's writer and sends it with one
//! `sendmsg`, and keeps doing so while other callers stage more meanwhile.
//! Callers that find a flusher at work return at once — their bytes go out
//! with its next send. So under contention many requests share a syscall
//! ("flush combining"), and no caller ever waits behind another's
//! `sendmsg`.
//!
//! Async callers on one executor thread never contend, so they share writes
//! another way: a batch of responses read together wakes a batch of tasks,
//! which typically each start their next call. A call started while some
//! futures of its connection are woken but not yet polled (the call table
//! counts them) stays staged; the last of
//! those futures to take its outcome sends everything staged. One
//! `sendmsg` per wave of responses instead of one per call — under load
//! this cut the server's CPU per call about fivefold (BENCHMARKS.md). The
//! client's deadline timer (a timer on the client loop) sends anything left
//! staged within a millisecond, should a woken future never be polled.
//!
//! Responses are read on the client loop thread: `on_request` hands the
//! input to [`ClientSession::handle_input`], which completes the calls
//! (waking blocked threads or futures). A connection that closes fails its
//! pending calls with UNAVAILABLE (close callback); the next call that
//! picks it sees `!is_active()` and dials a new one. After a failed dial,
//! calls to that slot fail fast with the same UNAVAILABLE for
//! [`ClientOptions::reconnect_backoff`].
//!
//! With [`ClientOptions::keepalive`] on, the same timer also pings every
//! connection on which nothing was read for the keepalive interval and
//! closes one that stays silent for the keepalive timeout after its ping
//! (see [`Keepalive`]); the cluster client ejects its instance at once.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferropoll_linkbuffer::LinkBuffer;
use ferropoll_transport::{Connection, EventLoop, Handler};
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::backend::Backend;
use crate::call::{CallFuture, Flush};
use crate::client::{CallOptions, ClientOptions};
use crate::codec::{self, EncodeBody, Limits};
use crate::deadline_timer::{DeadlineTimer, Expire};
use crate::keepalive::{Keepalive, instant_of, now_ns};
use crate::net_server::announce_partial_frame;
use crate::sansio::ClientSession;
use crate::status::{Code, Status};
use crate::stream::{Outbox, StreamShared};

/// Where the server is.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => f.write_str(a),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One connection and its calls.
pub(crate) struct ConnSession {
    conn: Connection,
    session: ClientSession,
    /// The client's deadline timer (also the safety net of deferred sends).
    timer: Arc<DeadlineTimer>,
    staged: Mutex<LinkBuffer>,
    /// Bytes were staged since the flusher last took them.
    pending: AtomicBool,
    /// A caller is moving staged bytes to the socket.
    flushing: AtomicBool,
    keepalive: Option<Keepalive>,
    /// When bytes last arrived ([`now_ns`]); kept only with keepalive on.
    last_input: AtomicU64,
    /// When the unanswered keepalive ping went out (0: none).
    ping_sent: AtomicU64,
    /// The keepalive declared the server dead: the status it closed with.
    dead: OnceLock<Status>,
    /// Where the keepalive reports a death to the connection's
    /// [`NetClient`], until the cluster client takes it.
    report: Arc<Mutex<Option<Status>>>,
}

impl ConnSession {
    fn is_usable(&self) -> bool {
        self.conn.is_active() && !self.session.is_closed()
    }

    /// Stages a request; sends it now, or leaves that to the future's
    /// first poll (`defer`), so that calls started together share a write.
    fn start_call<Req: EncodeBody + ?Sized, Resp: Message + Default>(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
        defer: bool,
    ) -> CallFuture<Resp> {
        let call = {
            let mut staged = self.staged.lock();
            self.session
                .start_call(&mut staged, service, method, req, options)
        };
        if call.seq() == 0 {
            return call; // failed: nothing staged
        }
        if defer {
            return call.with_flush(Arc::clone(self) as Arc<dyn Flush>);
        }
        self.kick();
        call
    }

    /// Opens a stream on this connection and sends its opening.
    fn start_stream<Req: EncodeBody + ?Sized>(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        first: Option<&Req>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        let opened = {
            let mut staged = self.staged.lock();
            let outbox = Arc::clone(self) as Arc<dyn Outbox>;
            self.session
                .start_stream(&mut staged, outbox, service, method, first, options)
        };
        if opened.is_ok() {
            self.kick();
        }
        opened
    }

    /// The keepalive's step at `now`: pings a connection quiet for the
    /// interval, closes one still quiet a timeout after its ping. Returns
    /// when to look again.
    fn keepalive(&self, now: Instant) -> Option<Instant> {
        let ka = self.keepalive?;
        if !self.is_usable() {
            return None;
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now_n = now_ns(now);
        let last = self.last_input.load(Ordering::Acquire);
        let ping = self.ping_sent.load(Ordering::Acquire);
        if ping != 0 {
            if last < ping {
                let due = ping.saturating_add(nanos(ka.timeout));
                if now_n < due {
                    return Some(instant_of(due, now));
                }
                let status = Status::unavailable(format!(
                    "keepalive: nothing heard from the server for {:?} after a ping; connection closed",
                    ka.timeout
                ));
                tracing::info!(conn = self.conn.id(), peer = %self.conn.peer_addr(), "{status}");
                let _ = self.dead.set(status.clone());
                *self.report.lock() = Some(status.clone());
                self.session.close(status);
                self.conn.close();
                return None;
            }
            // Answered (or any byte since): the connection lives.
            self.ping_sent.store(0, Ordering::Release);
        }
        let waiting = self.session.in_flight() > 0;
        if !waiting && !ka.without_calls {
            // Looked at again later: a call may start meanwhile.
            return Some(now + ka.interval_with_calls.min(ka.interval));
        }
        let interval = if waiting {
            ka.interval_with_calls
        } else {
            ka.interval
        };
        let quiet_until = last.saturating_add(nanos(interval));
        if now_n < quiet_until {
            // A call that starts meanwhile shortens the wait: an idle
            // connection is looked at again every quarter of the shorter
            // interval.
            let short = nanos(ka.interval_with_calls.min(ka.interval));
            let recheck = last
                .saturating_add(short)
                .max(now_n.saturating_add(short / 4));
            return Some(instant_of(quiet_until.min(recheck), now));
        }
        let Ok(seq) = self.session.table().allocate_seq() else {
            return None; // closed
        };
        codec::encode_ping(&mut self.staged.lock(), seq);
        self.ping_sent.store(now_n, Ordering::Release);
        self.kick();
        Some(now + ka.timeout)
    }

    /// Sends what is staged, unless another caller is doing so (it will
    /// send ours too: it re-checks `pending` after each send).
    fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        while self
            .flushing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            if self.pending.swap(false, Ordering::SeqCst) {
                self.send_staged();
            }
            self.flushing.store(false, Ordering::SeqCst);
            if !self.pending.load(Ordering::SeqCst) {
                break;
            }
        }
    }

    /// Moves the staged requests to the connection and sends them.
    fn send_staged(&self) {
        let frames = {
            let mut staged = self.staged.lock();
            if staged.is_empty() && staged.unflushed_len() == 0 {
                return;
            }
            std::mem::replace(&mut *staged, LinkBuffer::new())
        };
        let mut w = self.conn.writer();
        w.append(frames);
        if let Err(e) = w.flush() {
            // The transport closes the connection; the close callback fails
            // the pending calls.
            tracing::debug!(conn = self.conn.id(), "rpc request not sent: {e}");
        }
    }
}

impl Outbox for ConnSession {
    fn send(&self, frames: LinkBuffer) {
        self.staged.lock().append(frames);
        if self.session.table().ready() > 0 {
            // Tasks woken with messages or outcomes are about to run and
            // send too: the last of them sends everything staged.
            Flush::deferred(self);
        } else {
            self.kick();
        }
    }

    fn flush_staged(&self) {
        self.kick();
    }

    fn defers(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        Some(self.session.table().ready_counter())
    }
}

impl Flush for ConnSession {
    fn flush(&self) {
        self.kick();
    }

    fn deferred(&self) {
        // The timer kicks every connection when it wakes: the request goes
        // out within a millisecond even if the woken futures it waits for
        // are never polled.
        self.timer.arm(Instant::now() + Duration::from_millis(1));
    }
}

/// The sessions of the client's open connections by connection id: how the
/// loop's handler finds a connection's session, and what the timer expires.
#[derive(Default)]
struct Registry {
    sessions: Mutex<HashMap<u64, Arc<ConnSession>>>,
}

impl Expire for Registry {
    fn expire(&self, now: Instant) -> Option<Instant> {
        let sessions: Vec<Arc<ConnSession>> = self.sessions.lock().values().cloned().collect();
        sessions
            .iter()
            .filter_map(|cs| {
                cs.kick();
                cs.session.expire(now);
                let keepalive = cs.keepalive(now);
                match (cs.session.next_deadline(), keepalive) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }
}

/// The client loop's handler.
struct ClientHandler {
    registry: Arc<Registry>,
    limits: Limits,
}

impl Handler for ClientHandler {
    type State = Option<Arc<ConnSession>>;

    fn on_connect(&self, _conn: &Connection) -> Self::State {
        None
    }

    fn on_request(&self, state: &mut Self::State, conn: &Connection) -> io::Result<()> {
        if state.is_none() {
            *state = self.registry.sessions.lock().get(&conn.id()).cloned();
        }
        // Not registered yet: the server cannot have answered anything we
        // sent (we register before sending); leave the bytes for later.
        let Some(cs) = state else { return Ok(()) };
        if cs.keepalive.is_some() {
            cs.last_input
                .store(now_ns(Instant::now()), Ordering::Release);
        }
        let mut reader = conn.reader();
        match cs.session.handle_input(&mut reader) {
            Ok(_) => {
                announce_partial_frame(&mut reader, &self.limits);
                Ok(())
            }
            Err(e) => {
                // The session failed its calls already.
                tracing::warn!(conn = conn.id(), peer = %conn.peer_addr(), "rpc client closes the connection: {e}");
                drop(reader);
                conn.close();
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<ConnSession>>,
    last_failure: Option<(Instant, Status)>,
}

/// A client event loop with its session registry and deadline timer,
/// shared by the [`NetClient`]s of one cluster client (one per instance)
/// or owned by a single one. Dropping the last handle stops the loop.
pub(crate) struct ClientLoop {
    lp: EventLoop,
    registry: Arc<Registry>,
    timer: Arc<DeadlineTimer>,
}

impl ClientLoop {
    /// Starts one client loop thread whose connections use `options`'
    /// limits and TCP options.
    pub(crate) fn start(options: &ClientOptions) -> Result<Arc<ClientLoop>, Status> {
        let registry = Arc::new(Registry::default());
        let lp = EventLoop::builder()
            .name("ferropoll-rpc-client")
            .num_loops(1)
            .tcp_user_timeout(options.tcp_user_timeout)
            .build(ClientHandler {
                registry: Arc::clone(&registry),
                limits: options.limits,
            })
            .map_err(|e| Status::unavailable(format!("cannot start the client loop: {e}")))?;
        let target = Arc::downgrade(&registry) as Weak<dyn Expire>;
        let timer = Arc::new(DeadlineTimer::new(lp.clone(), target));
        Ok(Arc::new(ClientLoop {
            lp,
            registry,
            timer,
        }))
    }

    /// The event loop (for timers).
    pub(crate) fn event_loop(&self) -> &EventLoop {
        &self.lp
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        // Closes the sockets and joins the loop thread (unless this is it).
        let _ = self.lp.shutdown(Duration::from_secs(1));
    }
}

/// The network half of a [`Client`](crate::Client).
pub(crate) struct NetClient {
    target: Target,
    options: ClientOptions,
    shared: Arc<ClientLoop>,
    slots: Box<[RwLock<Slot>]>,
    next: AtomicUsize,
    /// A connection the keepalive found dead, not yet taken.
    keepalive_failure: Arc<Mutex<Option<Status>>>,
}

impl NetClient {
    /// Starts a client loop of its own and dials every connection.
    pub(crate) fn connect(target: Target, options: ClientOptions) -> Result<NetClient, Status> {
        let shared = ClientLoop::start(&options)?;
        let client = NetClient::lazy(target, options, shared);
        for slot in client.slots.iter() {
            let cs = client.dial()?;
            slot.write().current = Some(cs);
        }
        Ok(client)
    }

    /// A client on `shared`'s loop that dials nothing yet: the first call
    /// (or [`probe`](NetClient::probe)) does.
    pub(crate) fn lazy(
        target: Target,
        options: ClientOptions,
        shared: Arc<ClientLoop>,
    ) -> NetClient {
        let slots = (0..options.connections.max(1))
            .map(|_| RwLock::new(Slot::default()))
            .collect();
        NetClient {
            target,
            options,
            shared,
            slots,
            next: AtomicUsize::new(0),
            keepalive_failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Makes sure the first connection is up, dialing it now if it is not
    /// (whatever the reconnect backoff says), and with keepalive on, that
    /// the server answers a ping within the keepalive timeout — a frozen
    /// server's kernel still accepts connections: a health check.
    ///
    /// # Errors
    ///
    /// UNAVAILABLE when the dial fails; the ping's failure (the connection
    /// is then closed).
    pub(crate) fn probe(&self) -> Result<(), Status> {
        let cs = self.with_slot(0, false, Arc::clone)?;
        let Some(ka) = self.options.keepalive else {
            return Ok(());
        };
        let call = cs
            .session
            .start_ping(&mut cs.staged.lock(), Some(ka.timeout));
        if call.seq() != 0 {
            cs.kick();
        }
        call.wait().inspect_err(|_| cs.conn.close())
    }

    /// The status of a connection the keepalive found dead since the last
    /// call (each death is reported once).
    pub(crate) fn take_keepalive_failure(&self) -> Option<Status> {
        self.keepalive_failure.lock().take()
    }

    /// Whether some connection was dialed and is not usable any more (the
    /// server closed it or went away).
    pub(crate) fn has_lost_connection(&self) -> bool {
        self.slots.iter().any(|slot| {
            slot.read()
                .current
                .as_ref()
                .is_some_and(|cs| !cs.is_usable())
        })
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Dials one connection and registers its session.
    fn dial(&self) -> Result<Arc<ConnSession>, Status> {
        let timeout = self.options.connect_timeout;
        let lp = &self.shared.lp;
        let conn = match &self.target {
            Target::Tcp(addr) => lp.dial_tcp(addr.as_str(), timeout),
            Target::Unix(path) => lp.dial_unix(path, timeout),
        }
        .map_err(|e| Status::unavailable(format!("cannot connect to {}: {e}", self.target)))?;
        let cs = Arc::new(ConnSession {
            conn: conn.clone(),
            session: ClientSession::new(&self.options),
            timer: Arc::clone(&self.shared.timer),
            staged: Mutex::new(LinkBuffer::new()),
            pending: AtomicBool::new(false),
            flushing: AtomicBool::new(false),
            keepalive: self.options.keepalive,
            last_input: AtomicU64::new(now_ns(Instant::now())),
            ping_sent: AtomicU64::new(0),
            dead: OnceLock::new(),
            report: Arc::clone(&self.keepalive_failure),
        });
        // A future dropped before its answer: tell the server (which stops
        // an async handler waiting for nothing). Weak: the table lives in
        // the session.
        let weak = Arc::downgrade(&cs);
        cs.session.table().on_cancel(move |seq| {
            if let Some(cs) = weak.upgrade()
                && cs.conn.is_active()
            {
                codec::encode_cancel(&mut cs.staged.lock(), seq);
                cs.kick();
            }
        });
        self.shared
            .registry
            .sessions
            .lock()
            .insert(conn.id(), Arc::clone(&cs));
        let registry = Arc::downgrade(&self.shared.registry);
        // Runs at once if the connection closed already.
        conn.add_close_callback(move |conn| {
            let cs = registry
                .upgrade()
                .and_then(|r| r.sessions.lock().remove(&conn.id()));
            if let Some(cs) = cs {
                cs.session
                    .close(Status::unavailable("connection to the server lost"));
            }
        });
        if let Some(ka) = self.options.keepalive {
            self.shared
                .timer
                .arm(Instant::now() + ka.interval.min(ka.interval_with_calls));
        }
        Ok(cs)
    }

    /// Runs `f` with a usable connection of slot `i`, dialing one if needed
    /// (unless a dial failed within the reconnect backoff and `backoff`).
    fn with_slot<T>(
        &self,
        i: usize,
        backoff: bool,
        f: impl FnOnce(&Arc<ConnSession>) -> T,
    ) -> Result<T, Status> {
        {
            let slot = self.slots[i].read();
            if let Some(cs) = &slot.current
                && cs.is_usable()
            {
                return Ok(f(cs));
            }
        }
        let mut slot = self.slots[i].write();
        if let Some(cs) = &slot.current
            && cs.is_usable()
        {
            return Ok(f(cs));
        }
        // A server the keepalive found dead is treated as a failed dial:
        // calls within the reconnect backoff fail fast instead of dialing
        // a server that may accept and then say nothing again.
        if let Some(old) = &slot.current
            && let Some(status) = old.dead.get()
            && slot.last_failure.is_none()
        {
            slot.last_failure = Some((Instant::now(), status.clone()));
        }
        if let Some((at, status)) = &slot.last_failure
            && backoff
            && at.elapsed() < self.options.reconnect_backoff
        {
            return Err(status.clone());
        }
        if let Some(old) = slot.current.take() {
            old.conn.close();
        }
        match self.dial() {
            Ok(cs) => {
                slot.last_failure = None;
                let out = f(&cs);
                slot.current = Some(cs);
                Ok(out)
            }
            Err(status) => {
                slot.last_failure = Some((Instant::now(), status.clone()));
                Err(status)
            }
        }
    }

    /// Runs `f` on the connections in turn, starting round-robin, until it
    /// returns something that is not "try another connection".
    fn pick<T>(
        &self,
        mut f: impl FnMut(&Arc<ConnSession>) -> T,
        retry: impl Fn(&T) -> bool,
    ) -> Result<T, Status> {
        let n = self.slots.len();
        let first = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        let mut last = None;
        for k in 0..n {
            match self.with_slot((first + k) % n, true, &mut f) {
                Ok(out) if k + 1 < n && retry(&out) => last = Some(Ok(out)),
                Ok(out) => return Ok(out),
                Err(status) => last = Some(Err(status)),
            }
        }
        last.unwrap_or_else(|| Err(Status::unavailable("no connection")))
    }

    /// Starts a call; `defer`: see [`ConnSession::start_call`].
    pub(crate) fn start<Req: EncodeBody + ?Sized, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
        defer: bool,
    ) -> CallFuture<Resp> {
        let picked = self.pick(
            |cs| cs.start_call::<Req, Resp>(service, method, req, options, defer),
            // A full connection: another may have room.
            |call| {
                call.failure()
                    .is_some_and(|s| s.code() == Code::ResourceExhausted)
            },
        );
        picked.unwrap_or_else(CallFuture::failed)
    }

    /// Opens a stream on a connection picked as for a call; see
    /// [`Client::open_stream`](crate::Client::open_stream).
    pub(crate) fn stream<Req: EncodeBody + ?Sized>(
        &self,
        service: &str,
        method: &str,
        first: Option<&Req>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        let opened = self.pick(
            |cs| cs.start_stream(service, method, first, options),
            |r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted),
        )?;
        if let Ok(shared) = &opened {
            // An unpolled async stream still ends at its deadline.
            self.watch_deadline(shared.deadline());
        }
        opened
    }

    /// Makes sure an unpolled future still fails at its deadline.
    pub(crate) fn watch_deadline(&self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            self.shared.timer.arm(deadline);
        }
    }

    pub(crate) fn oneway<Req: EncodeBody + ?Sized>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<(), Status> {
        self.pick(
            |cs| {
                let sent = {
                    let mut staged = cs.staged.lock();
                    cs.session
                        .send_oneway(&mut staged, service, method, req, options)
                };
                if sent.is_ok() {
                    cs.kick();
                }
                sent
            },
            |_| false,
        )?
    }

    pub(crate) fn ping(&self, timeout: Duration) -> Result<(), Status> {
        let call = self.pick(
            |cs| {
                let call = cs.session.start_ping(&mut cs.staged.lock(), Some(timeout));
                if call.seq() != 0 {
                    cs.kick();
                }
                call
            },
            |_| false,
        )?;
        call.wait()
    }

    /// Connections of this client open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| {
                slot.read()
                    .current
                    .as_ref()
                    .is_some_and(|cs| cs.conn.is_active())
            })
            .count()
    }
}

impl Drop for NetClient {
    fn drop(&mut self) {
        // Only this client's connections: the loop may be shared. Each
        // close callback removes its session from the registry; the loop
        // stops with the last handle on it.
        for slot in self.slots.iter() {
            if let Some(cs) = slot.write().current.take() {
                cs.session
                    .close(Status::cancelled("the client was dropped"));
                cs.conn.close();
            }
        }
    }
}

impl Backend for NetClient {
    fn describe(&self) -> String {
        self.target().to_string()
    }

    fn start(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
        for_async: bool,
    ) -> CallFuture<()> {
        let call =
            NetClient::start::<dyn EncodeBody, ()>(self, service, method, req, options, for_async);
        if for_async {
            self.watch_deadline(call.deadline());
        }
        call
    }

    fn stream(
        &self,
        service: &str,
        method: &str,
        first: Option<&dyn EncodeBody>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        NetClient::stream(self, service, method, first, options)
    }

    fn oneway(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<(), Status> {
        NetClient::oneway(self, service, method, req, options)
    }

    fn ping(&self, timeout: Duration) -> Result<(), Status> {
        NetClient::ping(self, timeout)
    }

    fn open_connections(&self) -> usize {
        NetClient::open_connections(self)
    }
}
