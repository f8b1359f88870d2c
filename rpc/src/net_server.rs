//! [`Server`]: a [`ServerEngine`] served over sockets by a transport
//! [`EventLoop`].
//!
//! The glue is one transport handler. Each accepted connection gets a
//! [`ServerConn`]; when input arrives, `on_request` runs on the loop thread
//! and hands the connection's reader and writer to
//! [`ServerEngine::process`], which decodes every whole frame, runs inline
//! handlers and encodes their responses straight into the writer; the
//! handler then flushes **once** (pipelined requests → one `sendmsg`).
//! Pool-dispatched calls come back as [`DeferredCall`]s and go to a gopool
//! worker, which runs the call, appends its answer under the writer lock
//! and flushes; a pool that refuses the task gets the call answered
//! UNAVAILABLE instead. A framing violation flushes the ERROR frame the
//! engine wrote, logs the reason and closes that connection only.
//!
//! Streaming calls: a synchronous streaming handler runs on the pool and
//! writes its messages through the connection (`ConnOutbox`) from there;
//! an async handler (streaming or not) is polled on the loop thread, inside
//! the round that decoded its request and in later rounds when woken, and
//! what it sends joins the round's output: one flush per round.
//!
//! Graceful shutdown: the engine starts draining (new calls are answered
//! UNAVAILABLE, "server shutting down"), the pool-dispatched calls in
//! flight are awaited, then the event loop stops accepting, lets running
//! handlers finish, sends pending output and closes the connections.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferropoll_gopool::Pool;
use ferropoll_linkbuffer::LinkBuffer;
use ferropoll_transport::{Addr, Connection, EventLoop, Handler, Listener, Stats};
use parking_lot::{Condvar, Mutex};

use crate::codec::{self, Limits};
use crate::context::PeerAddr;
use crate::grpc::{self, GrpcConn};
use crate::health::{HealthReporter, HealthService, ServingStatus};
use crate::intercept::Interceptor;
use crate::keepalive::{self, PingPolicy};
use crate::server::{DeferredCall, RegisterError, ServerConn, ServerEngine, ServiceConfig};
use crate::service::Service;
use crate::status::Status;
use crate::stream::{self, Outbox};
use crate::task;

/// Configures a [`Server`]: its services, limits and event loops.
///
/// Defaults: one loop per core, the default [`Limits`], a 30 s read timeout
/// (a connection whose partial frame makes no progress for that long is
/// closed), a 30 s write timeout (a connection whose answers stay unsent
/// that long is closed), no idle timeout, at most 100,000 connections, gopool's default
/// pool for pool-dispatched methods. Other transport settings are reachable
/// through [`event_loop`](ServerBuilder::event_loop).
///
/// Setters take `&mut self` and chain; [`build`](ServerBuilder::build)
/// checks the settings and refuses bad ones (a zero loop count, zero
/// timeouts, unusable [`Limits`]) rather than adjusting them.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::{Context, Dispatch, LinkBuffer, Reply, Server, Service};
///
/// struct Upper;
/// impl Service for Upper {
///     fn name(&self) -> &'static str { "demo.Upper" }
///     fn methods(&self) -> &'static [&'static str] { &["Call", "Slow"] }
///     fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
///         reply.unary(ctx, request, |_ctx, s: String| Ok(s.to_uppercase()))
///     }
/// }
///
/// let mut builder = Server::builder();
/// builder.num_loops(1).idle_timeout(Some(Duration::from_secs(60)));
/// builder.register(Upper)?.method_dispatch("Slow", Dispatch::Pool)?;
/// let server = builder.build()?;
/// let addr = server.listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0")?)?;
/// # let _ = addr;
/// server.shutdown(Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ServerBuilder {
    engine: ServerEngine,
    loops: ferropoll_transport::Builder,
    pool: Option<Pool>,
    idle_timeout: Option<Duration>,
    health: Option<HealthReporter>,
    /// The first bad setting, reported by `build`.
    invalid: Option<String>,
    built: bool,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("engine", &self.engine)
            .field("loops", &self.loops)
            .field("pool", &self.pool)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        let mut loops = EventLoop::builder();
        loops
            .name("ferropoll-rpc")
            .read_timeout(Some(Duration::from_secs(30)))
            .write_timeout(Some(Duration::from_secs(30)));
        ServerBuilder {
            engine: ServerEngine::new(),
            loops,
            pool: None,
            idle_timeout: None,
            health: None,
            invalid: None,
            built: false,
        }
    }
}

impl ServerBuilder {
    /// Event-loop threads (default: one per core).
    pub fn num_loops(&mut self, n: usize) -> &mut Self {
        self.check(n > 0, "num_loops must not be 0");
        self.loops.num_loops(n);
        self
    }

    /// Frame, header, metadata and in-flight limits of every connection.
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.engine.set_limits(limits);
        self
    }

    /// How long a partial frame may make no progress before its connection
    /// is closed (default 30 s; `None`: forever).
    pub fn read_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.check(
            d != Some(Duration::ZERO),
            "read_timeout must not be zero (None: no timeout)",
        );
        self.loops.read_timeout(d);
        self
    }

    /// How long a connection's answers may stay unsent (the client does not
    /// read them) before the connection is closed; also bounds how long a
    /// pool handler's reply waits for room under the output high-water mark
    /// (default 30 s; `None`: forever).
    pub fn write_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.check(
            d != Some(Duration::ZERO),
            "write_timeout must not be zero (None: no timeout)",
        );
        self.loops.write_timeout(d);
        self
    }

    /// Closes connections on which no call arrived for this long and none
    /// is running (default: never). Pings do not count: a client whose
    /// keepalive pings an idle connection is still closed. Clients
    /// reconnect on their next call. A call sent just as the server closes
    /// fails UNAVAILABLE (a cluster client retries it elsewhere if the
    /// method is idempotent), so keep this long — minutes — where clients
    /// call rarely. (The transport's own idle timeout, settable through
    /// [`event_loop`](Self::event_loop), counts pings as traffic.)
    pub fn idle_timeout(&mut self, d: Option<Duration>) -> &mut Self {
        self.check(
            d != Some(Duration::ZERO),
            "idle_timeout must not be zero (None: no timeout)",
        );
        self.idle_timeout = d;
        self
    }

    /// How often clients may ping (default [`PingPolicy::DEFAULT`]: not
    /// more than every 250 ms without a call between, two strikes
    /// tolerated); a client that pings more often is sent an ERROR frame
    /// (RESOURCE_EXHAUSTED, "too many pings") and closed.
    pub fn ping_policy(&mut self, policy: PingPolicy) -> &mut Self {
        self.engine.set_ping_policy(policy);
        self
    }

    /// Most open connections; more are accepted and closed at once.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.check(n > 0, "max_connections must not be 0");
        self.loops.max_connections(n);
        self
    }

    /// The pool that runs [`Dispatch::Pool`](crate::Dispatch::Pool) methods
    /// (default: gopool's process-wide pool).
    pub fn pool(&mut self, pool: Pool) -> &mut Self {
        self.pool = Some(pool);
        self
    }

    /// The transport builder, for the settings not mirrored here (balance,
    /// TCP keepalive, input and output high-water marks, backlog, thread
    /// name). Its dispatch is ignored: RPC handlers choose theirs per
    /// method.
    pub fn event_loop(&mut self) -> &mut ferropoll_transport::Builder {
        &mut self.loops
    }

    /// Registers a service; see [`ServerEngine::register`].
    ///
    /// # Errors
    ///
    /// [`RegisterError::DuplicateService`] if the name is taken.
    pub fn register<S: Service>(&mut self, service: S) -> Result<ServiceConfig<'_>, RegisterError> {
        self.engine.register(service)
    }

    /// Serves the standard health service, `grpc.health.v1.Health`
    /// ([`health`](crate::health)): at [`build`](Self::build) every service
    /// registered by then and the server as a whole (`""`) are SERVING;
    /// [`Server::shutdown`] makes them NOT_SERVING before it drains. Returns
    /// the reporter that changes them (the same one if called again).
    pub fn health(&mut self) -> HealthReporter {
        self.health.get_or_insert_with(HealthReporter::new).clone()
    }

    /// Registers a shared service; see [`ServerEngine::register_arc`].
    ///
    /// # Errors
    ///
    /// [`RegisterError::DuplicateService`] if the name is taken.
    pub fn register_arc(
        &mut self,
        service: Arc<dyn Service>,
    ) -> Result<ServiceConfig<'_>, RegisterError> {
        self.engine.register_arc(service)
    }

    /// Appends `interceptor` to the chain around every call; see
    /// [`intercept`](crate::intercept) and [`ServerEngine::intercept`].
    pub fn intercept(&mut self, interceptor: impl Interceptor) -> &mut Self {
        self.engine.intercept(interceptor);
        self
    }

    /// As [`intercept`](Self::intercept), for a shared interceptor (one
    /// whose metrics the application reads, say).
    pub fn intercept_arc(&mut self, interceptor: Arc<dyn Interceptor>) -> &mut Self {
        self.engine.intercept_arc(interceptor);
        self
    }

    /// Remembers the first setting that fails `ok`, for `build`.
    fn check(&mut self, ok: bool, why: &str) {
        if !ok && self.invalid.is_none() {
            self.invalid = Some(why.to_owned());
        }
    }

    /// Checks the settings and starts the event loops (nothing is accepted
    /// until [`Server::listen`]). The registered services move to the
    /// server: a builder builds once.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad setting (named in the message) or a second
    /// `build`; otherwise the loops could not be created (epoll, eventfd or
    /// thread creation failed).
    pub fn build(&mut self) -> io::Result<Server> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if self.built {
            return Err(invalid(
                "this ServerBuilder has built its server already".to_owned(),
            ));
        }
        if let Some(why) = &self.invalid {
            return Err(invalid(format!("server settings: {why}")));
        }
        self.engine
            .limits()
            .validate()
            .map_err(|why| invalid(format!("server limits: {why}")))?;
        let health = self.health.take();
        if let Some(reporter) = &health {
            reporter.set("", ServingStatus::Serving);
            for name in self.engine.service_names() {
                reporter.set(name, ServingStatus::Serving);
            }
            self.engine
                .register(HealthService::new(reporter.clone()))
                .map_err(|e| invalid(format!("health service: {e}")))?;
        }
        self.built = true;
        self.loops.dispatch(ferropoll_transport::Dispatch::Inline);
        let shared = Arc::new(Shared {
            engine: std::mem::take(&mut self.engine),
            pool: self.pool.take(),
            busy: AtomicUsize::new(0),
            drained: Mutex::new(()),
            drained_cv: Condvar::new(),
            on_shutdown: Mutex::new(Vec::new()),
            grpc_conns: Mutex::new(Vec::new()),
        });
        if let Some(reporter) = health {
            shared.on_shutdown.lock().push(Box::new(move || {
                reporter.set_all(ServingStatus::NotServing)
            }));
        }
        let lp = self.loops.build(RpcHandler {
            shared: Arc::clone(&shared),
            idle_timeout: self.idle_timeout,
        })?;
        Ok(Server { shared, lp })
    }
}

struct Shared {
    engine: ServerEngine,
    pool: Option<Pool>,
    /// Handler rounds running plus pool-dispatched calls not yet answered:
    /// a graceful shutdown waits for 0 after the engine started draining (a
    /// round that began before may still hand calls to the pool; one that
    /// begins after sees the engine draining — both sides use `SeqCst`).
    busy: AtomicUsize,
    drained: Mutex<()>,
    drained_cv: Condvar,
    /// Run when a graceful shutdown begins (see `Server::on_shutdown`).
    on_shutdown: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// The gRPC connections, told GOAWAY when a graceful shutdown begins.
    grpc_conns: Mutex<Vec<std::sync::Weak<ConnOutbox>>>,
}

impl Shared {
    fn pool(&self) -> &Pool {
        self.pool
            .as_ref()
            .unwrap_or_else(|| ferropoll_gopool::default_pool())
    }

    fn enter(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    /// [`enter`](Shared::enter) until the guard drops (even by a panic).
    fn round(&self) -> Busy<'_> {
        self.enter();
        Busy(self)
    }

    fn leave(&self) {
        if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _guard = self.drained.lock();
            self.drained_cv.notify_all();
        }
    }

    /// Waits until nothing is busy, or `until`; returns whether drained.
    fn wait_idle(&self, until: Instant) -> bool {
        let mut guard = self.drained.lock();
        while self.busy.load(Ordering::SeqCst) > 0 {
            if self.drained_cv.wait_until(&mut guard, until).timed_out() {
                return self.busy.load(Ordering::SeqCst) == 0;
            }
        }
        true
    }
}

struct Busy<'a>(&'a Shared);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// An RPC server: registered services served by event-loop threads.
///
/// Build one with [`Server::builder`]; see [`ServerBuilder`] for an example.
/// A cheap `Clone` handle (one thread may [`serve`](Server::serve) while
/// another calls [`shutdown`](Server::shutdown)); when the last handle
/// drops, the loops stop at once.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    lp: EventLoop,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("engine", &self.shared.engine)
            .field("event_loop", &self.lp)
            .field("busy", &self.shared.busy.load(Ordering::Relaxed))
            .finish()
    }
}

impl Server {
    /// A builder with the defaults listed on [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts accepting on `listener` (TCP or Unix); returns its address.
    ///
    /// # Errors
    ///
    /// The listener cannot be registered, or the server is shut down.
    pub fn listen(&self, listener: impl Into<Listener>) -> io::Result<Addr> {
        self.lp.listen(listener)
    }

    /// Listens on `listener` and blocks until the server is shut down.
    ///
    /// # Errors
    ///
    /// As [`listen`](Server::listen).
    pub fn serve(&self, listener: impl Into<Listener>) -> io::Result<()> {
        self.lp.serve(listener)
    }

    /// Graceful shutdown within `deadline`: new calls are answered
    /// UNAVAILABLE, pool-dispatched calls in flight finish and are answered,
    /// then the loops stop accepting, running handlers finish, pending
    /// output is sent and the connections are closed.
    ///
    /// # Errors
    ///
    /// `ErrorKind::TimedOut` if something was still running at the deadline
    /// (it was closed then).
    pub fn shutdown(&self, deadline: Duration) -> io::Result<()> {
        let end = Instant::now() + deadline;
        let hooks = std::mem::take(&mut *self.shared.on_shutdown.lock());
        for hook in hooks {
            hook();
        }
        self.shared.engine.start_draining();
        // gRPC clients learn of it at once (GOAWAY NO_ERROR naming the last
        // stream taken), idle connections too: they stop opening streams
        // here and reconnect elsewhere; the calls taken finish.
        let conns = std::mem::take(&mut *self.shared.grpc_conns.lock());
        for outbox in conns.iter().filter_map(std::sync::Weak::upgrade) {
            outbox.goaway();
        }
        let drained = self.shared.wait_idle(end);
        let rest = end.saturating_duration_since(Instant::now());
        self.lp.shutdown(rest)?;
        if drained {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "shutdown deadline passed with pool calls still running",
            ))
        }
    }

    /// Runs `f` first thing in a graceful [`shutdown`](Server::shutdown),
    /// before the server stops taking calls: the place to deregister it
    /// from service discovery (e.g. drop a
    /// `cluster::Registration`), so that clients move away while it still
    /// answers. Hooks run once, in the order added; those still pending
    /// when the last handle drops are dropped without running.
    pub fn on_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.on_shutdown.lock().push(Box::new(f));
    }

    /// The engine (services, limits).
    pub fn engine(&self) -> &ServerEngine {
        &self.shared.engine
    }

    /// The transport's counters (connections, bytes, timeouts).
    pub fn stats(&self) -> Stats {
        self.lp.stats()
    }

    /// The event loops.
    pub fn event_loop(&self) -> &EventLoop {
        &self.lp
    }
}

/// The transport handler of a server.
struct RpcHandler {
    shared: Arc<Shared>,
    idle_timeout: Option<Duration>,
}

/// Per-connection state.
struct ConnState {
    conn: ServerConn,
    deferred: Vec<DeferredCall>,
    outbox: Arc<ConnOutbox>,
    /// Known from the first bytes: our magic, or the HTTP/2 preface.
    protocol: Protocol,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Unknown,
    Native,
    Grpc,
}

impl Handler for RpcHandler {
    type State = ConnState;

    fn on_connect(&self, conn: &Connection) -> ConnState {
        let peer = match conn.peer_addr() {
            ferropoll_transport::Addr::Tcp(a) => PeerAddr::from(*a),
            other => PeerAddr::other(other.to_string()),
        };
        let outbox = Arc::new(ConnOutbox {
            conn: conn.clone(),
            grpc: OnceLock::new(),
        });
        let state = ConnState {
            conn: ServerConn::with_outbox(peer, Arc::clone(&outbox) as Arc<dyn Outbox>),
            deferred: Vec::new(),
            outbox,
            protocol: Protocol::Unknown,
        };
        // A lost connection ends its streams (their handlers wake with
        // CANCELLED) and drops its waiting async handlers. The streams and
        // the scheduler hold the connection (their outbox) until then: the
        // callback breaks that cycle.
        let streams = state.conn.streams();
        let scheduler = state.conn.scheduler().cloned();
        conn.add_close_callback(move |_| {
            stream::abort_all(&streams, &Status::cancelled("the connection closed"));
            if let Some(scheduler) = scheduler {
                scheduler.clear();
            }
        });
        if let Some(idle) = self.idle_timeout {
            let (last_call, in_flight) = state.conn.activity();
            let watch = IdleWatch {
                idle,
                opened: keepalive::now_ns(Instant::now()),
                last_call,
                in_flight,
            };
            watch.arm(conn, idle);
        }
        state
    }

    fn on_request(&self, state: &mut ConnState, conn: &Connection) -> io::Result<()> {
        match state.protocol {
            Protocol::Native => self.native_round(state, conn),
            Protocol::Grpc => self.grpc_round(state, conn),
            Protocol::Unknown => {
                let mut reader = conn.reader();
                let n = reader.len().min(4);
                let first = reader.peek(n)?.to_vec();
                drop(reader);
                match grpc::is_h2_preface(&first) {
                    None => Ok(()),
                    Some(false) => {
                        state.protocol = Protocol::Native;
                        self.native_round(state, conn)
                    }
                    Some(true) => {
                        state.protocol = Protocol::Grpc;
                        let mut preface = LinkBuffer::new();
                        let link = Arc::new(GrpcLink {
                            state: Mutex::new(GrpcConn::new(state.conn.streams(), &mut preface)),
                            limits: *self.shared.engine.limits(),
                        });
                        let _ = state.outbox.grpc.set(link);
                        let mut conns = self.shared.grpc_conns.lock();
                        conns.retain(|w| w.strong_count() > 0);
                        conns.push(Arc::downgrade(&state.outbox));
                        drop(conns);
                        send(conn, preface);
                        self.grpc_round(state, conn)
                    }
                }
            }
        }
    }
}

impl RpcHandler {
    /// A round of a gRPC connection: HTTP/2 frames in, calls to the
    /// engine, their native answers turned into gRPC responses, one flush.
    fn grpc_round(&self, state: &mut ConnState, conn: &Connection) -> io::Result<()> {
        let engine = &self.shared.engine;
        let _busy = self.shared.round();
        let now = Instant::now();
        let Some(link) = state.outbox.grpc.get().cloned() else {
            return Ok(());
        };
        let mut out = LinkBuffer::new();
        let mut native = LinkBuffer::new();
        let mut reader = conn.reader();
        let mut g = link.state.lock();
        let scheduler = state.conn.scheduler().cloned();
        if let Some(s) = &scheduler {
            s.enter_round();
            task::begin_round(conn.id());
        }
        let result = g.recv(
            engine,
            &state.conn,
            &mut reader,
            &mut out,
            &mut native,
            &mut state.deferred,
            now,
        );
        if let Some(s) = &scheduler {
            s.leave_round();
            if let Some(frames) = task::end_round() {
                native.append(frames);
            }
        }
        drop(reader);
        g.answer(&link.limits, &mut native, &mut out);
        if engine.is_draining() {
            g.goaway(&mut out);
        }
        let stalled = g.over_queued_limit(&mut out);
        // Into the writer before the state is released: header blocks go
        // out in the order the HPACK encoder made them.
        let mut writer = conn.writer();
        writer.append(out);
        drop(g);
        let flushed = writer.flush();
        drop(writer);
        for call in state.deferred.drain(..) {
            self.spawn(&state.outbox, call);
        }
        if let Err(e) = result {
            tracing::warn!(peer = %state.conn.peer(), "gRPC connection closed: {e}");
            conn.close();
            return Ok(());
        }
        if stalled {
            conn.close();
        }
        flushed
    }

    /// A round of a native connection.
    fn native_round(&self, state: &mut ConnState, conn: &Connection) -> io::Result<()> {
        let engine = &self.shared.engine;
        let _busy = self.shared.round();
        let now = Instant::now();
        let mut reader = conn.reader();
        let mut writer = conn.writer();
        // Stop at the output high-water mark: what is left of the input is
        // answered in a later round, once the peer has read the output
        // down to the mark (the transport runs the rounds again then).
        let mark = writer.output_high_water();
        // Async handlers polled in this round (first polls, and tasks the
        // input woke) send into the round's batch: one flush for all.
        let scheduler = state.conn.scheduler().cloned();
        if let Some(s) = &scheduler {
            s.enter_round();
            task::begin_round(conn.id());
        }
        let result = engine.process_bounded(
            &state.conn,
            &mut reader,
            &mut writer,
            &mut state.deferred,
            now,
            mark,
        );
        if let Some(s) = &scheduler {
            s.leave_round();
            if let Some(frames) = task::end_round() {
                writer.append(frames);
            }
        }
        if matches!(result, Ok(ref p) if !p.output_full) {
            announce_partial_frame(&mut reader, engine.limits());
        }
        drop(reader);
        let flushed = writer.flush();
        drop(writer);
        for call in state.deferred.drain(..) {
            self.spawn(&state.outbox, call);
        }
        if let Err(e) = result {
            match e {
                codec::ProtocolError::PeerError(_) => {
                    tracing::debug!(peer = %state.conn.peer(), "rpc peer closing: {e}");
                }
                _ => tracing::warn!(peer = %state.conn.peer(), "rpc connection closed: {e}"),
            }
            conn.close();
            return Ok(());
        }
        flushed
    }
}

impl RpcHandler {
    /// Runs a pool-dispatched call on the pool; answers UNAVAILABLE if the
    /// pool refuses it.
    fn spawn(&self, outbox: &Arc<ConnOutbox>, call: DeferredCall) {
        self.shared.enter();
        // The call sits in a slot so that it can be taken back (and
        // answered) if the pool hands the task back.
        let slot = Arc::new(Mutex::new(Some(call)));
        let task = {
            let slot = Arc::clone(&slot);
            let outbox = Arc::clone(outbox);
            let shared = Arc::clone(&self.shared);
            move || {
                if let Some(call) = slot.lock().take() {
                    let mut out = ferropoll_linkbuffer::LinkBuffer::new();
                    if call.run(&mut out) {
                        outbox.answer(out);
                    }
                }
                shared.leave();
            }
        };
        if let Err(e) = self.shared.pool().try_go(task) {
            let why = if e.is_full() {
                "worker pool queue full"
            } else {
                "worker pool shut down"
            };
            drop(e); // drops the task and its reference to the slot
            if let Some(call) = slot.lock().take() {
                let mut out = ferropoll_linkbuffer::LinkBuffer::new();
                if call.reject(&Status::unavailable(why), &mut out) {
                    outbox.answer(out);
                }
            }
            self.shared.leave();
        }
    }
}

/// Closes a connection once no call arrived for `idle` and none runs.
struct IdleWatch {
    idle: Duration,
    opened: u64,
    last_call: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

impl IdleWatch {
    fn arm(self, conn: &Connection, delay: Duration) {
        // The timer holds the connection until it fires; it fires once more
        // after a close and then stops.
        conn.after(delay, move |conn| self.check(conn));
    }

    fn check(self, conn: &Connection) {
        if !conn.is_active() {
            return;
        }
        let now = Instant::now();
        let last = self.last_call.load(Ordering::Relaxed).max(self.opened);
        let quiet = Duration::from_nanos(keepalive::now_ns(now).saturating_sub(last));
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let idle = self.idle;
            self.arm(conn, idle);
        } else if quiet >= self.idle {
            tracing::debug!(conn = conn.id(), ?quiet, "rpc connection idle: closing");
            conn.close();
        } else {
            let left = self.idle - quiet;
            self.arm(conn, left);
        }
    }
}

/// A connection as the outbox of its streaming handlers. The streams hold
/// it while they run; the connection's close callback ends them, so the
/// reference does not outlive the handlers.
struct ConnOutbox {
    conn: Connection,
    /// Set once the connection turned out to speak gRPC: native answers
    /// are then turned into HTTP/2 frames, on the loop thread only (the
    /// HPACK encoder's state follows the order frames go out in).
    grpc: OnceLock<Arc<GrpcLink>>,
}

/// The gRPC state of a connection, shared by its rounds and the answers
/// that come back from the pool or from async handlers. Lock order: this
/// state, then the connection's writer; HTTP/2 frames are appended to the
/// writer before the state is released (HPACK blocks must reach the peer
/// in the order they were encoded), and flushed after.
struct GrpcLink {
    state: Mutex<GrpcConn>,
    limits: Limits,
}

impl ConnOutbox {
    /// Sends a call's native answer: as it is on a native connection; on a
    /// gRPC one, turned into its gRPC response first.
    fn answer(&self, mut frames: LinkBuffer) {
        let Some(link) = self.grpc.get() else {
            send(&self.conn, frames);
            return;
        };
        let mut g = link.state.lock();
        let mut out = LinkBuffer::new();
        g.answer(&link.limits, &mut frames, &mut out);
        let stalled = g.over_queued_limit(&mut out);
        let mut w = self.conn.writer();
        w.append(out);
        drop(g);
        if let Err(e) = w.flush() {
            tracing::debug!(conn = self.conn.id(), "gRPC response not sent: {e}");
        }
        drop(w);
        if stalled {
            self.conn.close();
        }
    }
}

impl ConnOutbox {
    /// Tells a gRPC peer the server is going away.
    fn goaway(&self) {
        let Some(link) = self.grpc.get() else {
            return;
        };
        let mut g = link.state.lock();
        let mut out = LinkBuffer::new();
        g.goaway(&mut out);
        let mut w = self.conn.writer();
        w.append(out);
        drop(g);
        if let Err(e) = w.flush() {
            tracing::debug!(conn = self.conn.id(), "GOAWAY not sent: {e}");
        }
    }
}

impl Outbox for ConnOutbox {
    fn send(&self, frames: ferropoll_linkbuffer::LinkBuffer) {
        // On the loop thread in this connection's round: with the round's
        // other output, one flush. Otherwise (a pool handler) at once.
        if let Some(frames) = task::batch_send(self.conn.id(), frames) {
            self.answer(frames);
        }
    }

    fn batch_key(&self) -> Option<u64> {
        Some(self.conn.id())
    }

    fn run_on_loop(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        self.conn.execute(move |_| f()).is_ok()
    }

    fn run_at(&self, at: Instant, f: Box<dyn FnOnce() + Send>) -> Option<Box<dyn FnOnce() + Send>> {
        let delay = at.saturating_duration_since(Instant::now());
        let timer = self.conn.after(delay, move |_| f());
        Some(Box::new(move || {
            timer.cancel();
        }))
    }
}

/// Appends `frames` to the connection's output and flushes.
fn send(conn: &Connection, frames: ferropoll_linkbuffer::LinkBuffer) {
    let mut w = conn.writer();
    w.append(frames);
    if let Err(e) = w.flush() {
        tracing::debug!(conn = conn.id(), "rpc response not sent: {e}");
    }
}

/// If a partial frame waits at the front of `reader`, tells the transport
/// how many bytes it needs (a frame larger than the input high-water mark
/// would otherwise stall with reading paused).
pub(crate) fn announce_partial_frame(
    reader: &mut ferropoll_transport::Reader<'_>,
    limits: &Limits,
) {
    if let Some(n) = codec::frame_len(reader, limits) {
        // `WouldBlock` is the expected answer: the frame is not complete.
        let _ = reader.wait(n);
    }
}
