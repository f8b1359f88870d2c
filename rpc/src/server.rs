//! The sans-IO server engine: a registry of services and the function that
//! turns a batch of input bytes into a batch of responses.
//!
//! The socket glue calls [`ServerEngine::process`] when a connection's input
//! has new bytes: every whole frame is decoded and answered, responses of
//! inline calls are encoded into the output buffer, so the glue flushes
//! **once per read batch** (pipelined requests → one `sendmsg`). Calls of
//! pool-dispatched methods come back as [`DeferredCall`]s for the glue to run
//! on a worker ([`DeferredCall::run`]) and flush separately.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::Mutex;

use crate::codec::{self, Frame, Limits, MessageType, ProtocolError};
use crate::context::{Context, PeerAddr};
use crate::hash::{NameMap, SeqMap};
use crate::intercept::{CallGuard, Interceptor, Interceptors, Scope};
use crate::keepalive::{self, PingPolicy, PingStrikes};
use crate::metadata::Metadata;
use crate::service::{Dispatch, Reply, Service};
use crate::status::{Code, Status};
use crate::stream::{MethodKind, Outbox, Side, StreamCall, StreamMap, StreamShared};
use crate::task::{self, AsyncReply, Scheduler, Task};

/// Why a registration failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// A service of that name is already registered.
    DuplicateService(&'static str),
    /// The service has no method of that name.
    UnknownMethod {
        /// The service.
        service: &'static str,
        /// The method asked for.
        method: String,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::DuplicateService(s) => write!(f, "service {s} is already registered"),
            RegisterError::UnknownMethod { service, method } => {
                write!(f, "service {service} has no method {method}")
            }
        }
    }
}

impl std::error::Error for RegisterError {}

/// The next [`MethodEntry::id`].
static NEXT_METHOD_ID: AtomicUsize = AtomicUsize::new(0);

struct MethodEntry {
    /// Process-wide, for interceptors' per-method tables
    /// ([`CallStart::method_id`](crate::intercept::CallStart::method_id)).
    id: usize,
    name: &'static str,
    dispatch: Dispatch,
    kind: MethodKind,
    is_async: bool,
}

struct ServiceEntry {
    service: Arc<dyn Service>,
    name: &'static str,
    methods: Vec<MethodEntry>,
}

impl ServiceEntry {
    /// Method lookup by wire name: a scan (services have few methods, and a
    /// length-first byte comparison beats hashing the name).
    fn method(&self, name: &[u8]) -> Option<(usize, &MethodEntry)> {
        self.methods
            .iter()
            .enumerate()
            .find(|(_, m)| m.name.as_bytes() == name)
    }
}

/// The configuration of one registered service, returned by
/// [`ServerEngine::register`] to choose where its handlers run.
///
/// ```
/// # use ferropoll_rpc::{Context, Dispatch, LinkBuffer, Reply, ServerEngine, Service};
/// # struct Kv;
/// # impl Service for Kv {
/// #     fn name(&self) -> &'static str { "kv.Kv" }
/// #     fn methods(&self) -> &'static [&'static str] { &["Get", "List"] }
/// #     fn call(&self, _: usize, _: &Context, _: LinkBuffer, reply: Reply<'_>) { reply.unknown_method() }
/// # }
/// let mut engine = ServerEngine::new();
/// engine
///     .register(Kv)?
///     .dispatch(Dispatch::Inline)
///     .method_dispatch("List", Dispatch::Pool)?;
/// assert_eq!(engine.dispatch_of("kv.Kv", "List"), Some(Dispatch::Pool));
/// # Ok::<(), ferropoll_rpc::RegisterError>(())
/// ```
pub struct ServiceConfig<'a> {
    entry: &'a mut ServiceEntry,
}

impl ServiceConfig<'_> {
    /// Runs every method of the service with `dispatch`.
    pub fn dispatch(&mut self, dispatch: Dispatch) -> &mut Self {
        for m in &mut self.entry.methods {
            m.dispatch = dispatch;
        }
        self
    }

    /// Runs method `method` with `dispatch`.
    ///
    /// # Errors
    ///
    /// [`RegisterError::UnknownMethod`] if the service has no such method.
    pub fn method_dispatch(
        &mut self,
        method: &str,
        dispatch: Dispatch,
    ) -> Result<&mut Self, RegisterError> {
        let service = self.entry.name;
        let m = self
            .entry
            .methods
            .iter_mut()
            .find(|m| m.name == method)
            .ok_or_else(|| RegisterError::UnknownMethod {
                service,
                method: method.to_owned(),
            })?;
        m.dispatch = dispatch;
        Ok(self)
    }
}

/// Per-connection state of the server side; one per accepted connection.
pub struct ServerConn {
    peer: PeerAddr,
    in_flight: Arc<AtomicUsize>,
    /// When the last call arrived ([`keepalive::now_ns`]; 0: none yet).
    last_call: Arc<AtomicU64>,
    pings: PingStrikes,
    /// Streaming calls open on this connection.
    streams: Arc<StreamMap>,
    /// Where streaming handlers write (none: streams are refused).
    outbox: Option<Arc<dyn Outbox>>,
    /// Runs the async handlers that wait (none: they are run to their end
    /// on the thread that decoded the call).
    scheduler: Option<Arc<Scheduler>>,
    /// The async unary handlers waiting, by call: a CANCEL drops one.
    waiting: Arc<Mutex<SeqMap<Weak<Task>>>>,
}

impl ServerConn {
    /// State for a connection from `peer`. Streaming calls are refused
    /// (UNIMPLEMENTED) on a connection made this way: their handlers write
    /// from pool threads, which needs the socket glue.
    pub fn new(peer: PeerAddr) -> ServerConn {
        ServerConn {
            peer,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_call: Arc::new(AtomicU64::new(0)),
            pings: PingStrikes::default(),
            streams: Arc::default(),
            outbox: None,
            scheduler: None,
            waiting: Arc::default(),
        }
    }

    /// State for a connection whose streaming handlers send their messages
    /// and final status through `outbox` (from pool threads).
    pub fn with_outbox(peer: PeerAddr, outbox: Arc<dyn Outbox>) -> ServerConn {
        ServerConn {
            scheduler: Some(Scheduler::new(Arc::clone(&outbox))),
            outbox: Some(outbox),
            ..ServerConn::new(peer)
        }
    }

    /// The connection's async task scheduler, if it has one.
    pub(crate) fn scheduler(&self) -> Option<&Arc<Scheduler>> {
        self.scheduler.as_ref()
    }

    /// The open streams, to abort them when the connection closes.
    pub(crate) fn streams(&self) -> Arc<StreamMap> {
        Arc::clone(&self.streams)
    }

    /// Streaming calls open on this connection.
    pub fn open_streams(&self) -> usize {
        self.streams.lock().len()
    }

    /// What an idle check needs from another thread: when the last call
    /// arrived and the pool calls still running.
    pub(crate) fn activity(&self) -> (Arc<AtomicU64>, Arc<AtomicUsize>) {
        (Arc::clone(&self.last_call), Arc::clone(&self.in_flight))
    }

    /// The peer's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Pool-dispatched calls of this connection queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConn")
            .field("peer", &self.peer)
            .field("in_flight", &self.in_flight())
            .field("open_streams", &self.open_streams())
            .finish_non_exhaustive()
    }
}

/// What one [`ServerEngine::process`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Whole frames decoded (and consumed from the input).
    pub frames: usize,
    /// Frames written to the output (responses, errors, pongs).
    pub responses: usize,
    /// Calls handed back as [`DeferredCall`]s.
    pub deferred: usize,
    /// [`process_bounded`](ServerEngine::process_bounded) stopped before
    /// the end of the input because the output passed its limit; the
    /// frames left are answered by a later call.
    pub output_full: bool,
}

/// A decoded call of a pool-dispatched method, for the glue to run on a
/// worker. It counts as in flight on its connection until dropped.
pub struct DeferredCall {
    service: Arc<dyn Service>,
    method: usize,
    ctx: Context,
    work: Work,
    limits: Limits,
    /// The call's interceptors, ended when it ends.
    guard: Option<CallGuard>,
    _in_flight: InFlight,
}

enum Work {
    Unary {
        payload: LinkBuffer,
        oneway: bool,
    },
    /// A streaming call: its frames go through the stream's outbox.
    Stream(Arc<StreamShared>),
}

impl DeferredCall {
    /// The call's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Answers the call with `status` without running it (for example
    /// UNAVAILABLE when no worker can take it); nothing for a ONEWAY call.
    /// Returns whether a frame was written to `out`.
    pub fn reject(self, status: &Status, out: &mut LinkBuffer) -> bool {
        if let Some(guard) = self.guard {
            guard.finish(status);
        }
        match self.work {
            Work::Unary { oneway: true, .. } => {
                tracing::debug!(seq = self.ctx.seq(), "oneway call dropped: {status}");
                false
            }
            Work::Unary { .. } => {
                codec::encode_status(out, &self.limits, self.ctx.seq(), status);
                true
            }
            Work::Stream(shared) => {
                shared.end_local(Some(status));
                false
            }
        }
    }

    /// Runs the call — unless its deadline passed while it waited, then it
    /// answers DEADLINE_EXCEEDED — and encodes the answer into `out` (nothing
    /// for a ONEWAY call). Panics are caught and answered INTERNAL. Returns
    /// whether a frame was written; the caller then flushes `out` to the
    /// connection (the transport keeps frames of concurrent writers whole).
    ///
    /// A streaming call runs until its handler returns, sending its
    /// messages and final status itself; it writes nothing to `out`.
    pub fn run(self, out: &mut LinkBuffer) -> bool {
        let _entered = self
            .guard
            .as_ref()
            .and_then(CallGuard::scope)
            .map(Scope::enter);
        let (written, code) = match self.work {
            Work::Unary { payload, oneway } => {
                let out = if oneway { None } else { Some(out) };
                run_call(
                    &*self.service,
                    self.method,
                    &self.ctx,
                    payload,
                    out,
                    &self.limits,
                )
            }
            Work::Stream(shared) => {
                let status = run_stream(&*self.service, self.method, &self.ctx, shared);
                (false, status.code())
            }
        };
        drop(_entered);
        if let Some(guard) = self.guard {
            guard.finish_code(code);
        }
        written
    }
}

impl fmt::Debug for DeferredCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DeferredCall");
        d.field("ctx", &self.ctx);
        match &self.work {
            Work::Unary { payload, oneway } => d
                .field("payload_len", &payload.len())
                .field("oneway", oneway),
            Work::Stream(_) => d.field("stream", &true),
        };
        d.finish()
    }
}

/// Runs its canceller when dropped.
struct CancelOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel();
        }
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs one call with its deadline check and panic guard; returns whether a
/// frame was written to `out`, and the status code of the answer.
fn run_call(
    service: &dyn Service,
    method: usize,
    ctx: &Context,
    payload: LinkBuffer,
    mut out: Option<&mut LinkBuffer>,
    limits: &Limits,
) -> (bool, Code) {
    let seq = ctx.seq();
    if ctx.is_expired() {
        if let Some(out) = out {
            codec::encode_status(
                out,
                limits,
                seq,
                &Status::deadline_exceeded("deadline passed before the handler started"),
            );
            return (true, Code::DeadlineExceeded);
        }
        return (false, Code::DeadlineExceeded);
    }
    let responds = out.is_some();
    let mut answered = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        service.call(
            method,
            ctx,
            payload,
            Reply::new(out.as_deref_mut(), seq, limits, &mut answered, ctx),
        );
    }));
    if let Some(code) = answered {
        return (responds, code);
    }
    let status = match outcome {
        Err(panic) => {
            let what = panic_text(&*panic);
            tracing::error!(
                service = ctx.service(),
                method = ctx.method(),
                "handler panicked: {what}"
            );
            Status::internal("handler panicked")
        }
        Ok(()) => Status::internal("the service did not answer"),
    };
    match out {
        Some(out) => {
            codec::encode_status(out, limits, seq, &status);
            (true, Code::Internal)
        }
        None => (false, Code::Internal),
    }
}

/// The panic payload as text.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload")
}

fn handler_panicked(ctx: &Context, what: &str) {
    tracing::error!(
        service = ctx.service(),
        method = ctx.method(),
        "async handler panicked: {what}"
    );
}

/// Runs a streaming call's handler to its end and sends its final status
/// (INTERNAL if it panicked; nothing if the client cancelled); returns
/// that status.
fn run_stream(
    service: &dyn Service,
    method: usize,
    ctx: &Context,
    shared: Arc<StreamShared>,
) -> Status {
    let status = if ctx.is_expired() {
        Status::deadline_exceeded("deadline passed before the handler started")
    } else {
        let call = StreamCall::new(Arc::clone(&shared));
        match catch_unwind(AssertUnwindSafe(|| service.call_stream(method, ctx, call))) {
            Ok(Ok(())) => Status::new(Code::Ok, ""),
            Ok(Err(status)) => status,
            Err(panic) => {
                tracing::error!(
                    service = ctx.service(),
                    method = ctx.method(),
                    "streaming handler panicked: {}",
                    panic_text(&*panic)
                );
                Status::internal("handler panicked")
            }
        }
    };
    shared.end_local(Some(&status));
    status
}

/// The registry of services and the request-processing engine of a server.
/// Build it, register services, share it (`Arc`) among the event loops.
///
/// ```
/// use ferropoll_rpc::codec::{self, MessageType};
/// use ferropoll_rpc::{LinkBuffer, PeerAddr, ServerEngine};
/// use ferropoll_rpc::sansio::ServerConn;
/// use std::time::Instant;
///
/// let engine = ServerEngine::new(); // no services: still answers pings
/// let conn = ServerConn::new(PeerAddr::unknown());
/// let (mut input, mut output, mut deferred) = (LinkBuffer::new(), LinkBuffer::new(), Vec::new());
/// codec::encode_ping(&mut input, 1);
/// codec::encode_ping(&mut input, 2);
/// input.flush();
/// let progress = engine.process(&conn, &mut input, &mut output, &mut deferred, Instant::now()).unwrap();
/// assert_eq!((progress.frames, progress.responses), (2, 2));
/// output.flush();
/// let pong = codec::decode(&mut output, engine.limits()).unwrap().unwrap();
/// assert_eq!((pong.message_type(), pong.header.seq), (Some(MessageType::Pong), 1));
/// ```
pub struct ServerEngine {
    services: NameMap<ServiceEntry>,
    limits: Limits,
    ping_policy: PingPolicy,
    draining: AtomicBool,
    interceptors: Interceptors,
}

impl Default for ServerEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ServerEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.services.values().map(|e| e.name).collect();
        names.sort_unstable();
        f.debug_struct("ServerEngine")
            .field("services", &names)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServerEngine {
    /// An engine with no service and the default [`Limits`].
    pub fn new() -> ServerEngine {
        Self::with_limits(Limits::default())
    }

    /// An engine with no service and `limits`.
    pub fn with_limits(limits: Limits) -> ServerEngine {
        ServerEngine {
            services: NameMap::default(),
            limits,
            ping_policy: PingPolicy::DEFAULT,
            draining: AtomicBool::new(false),
            interceptors: Interceptors::new(),
        }
    }

    /// Appends `interceptor` to the chain around every call (see
    /// [`intercept`](crate::intercept)): it starts after those added
    /// before it and ends before them.
    pub fn intercept(&mut self, interceptor: impl Interceptor) -> &mut Self {
        self.interceptors.push(interceptor);
        self
    }

    /// As [`intercept`](Self::intercept), for a shared interceptor.
    pub fn intercept_arc(&mut self, interceptor: Arc<dyn Interceptor>) -> &mut Self {
        self.interceptors.push_arc(interceptor);
        self
    }

    /// The interceptors, in order.
    pub fn interceptors(&self) -> &Interceptors {
        &self.interceptors
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits (before the engine serves anything).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// How often a connection may ping (default [`PingPolicy::DEFAULT`]).
    pub fn ping_policy(&self) -> &PingPolicy {
        &self.ping_policy
    }

    /// Replaces the ping policy (before the engine serves anything).
    pub fn set_ping_policy(&mut self, policy: PingPolicy) {
        self.ping_policy = policy;
    }

    /// From now on, answers every new call UNAVAILABLE ("server shutting
    /// down") without running it; calls already decoded are not affected.
    /// Pings are still answered. Used by a graceful shutdown while in-flight
    /// calls drain.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`start_draining`](ServerEngine::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Registers `service`; each method's dispatch starts as the service's
    /// [`Service::dispatch`] answer and can be changed on the returned config.
    ///
    /// # Errors
    ///
    /// [`RegisterError::DuplicateService`] if the name is taken.
    pub fn register<S: Service>(&mut self, service: S) -> Result<ServiceConfig<'_>, RegisterError> {
        self.register_arc(Arc::new(service))
    }

    /// [`register`](ServerEngine::register) for a shared service.
    ///
    /// # Errors
    ///
    /// [`RegisterError::DuplicateService`] if the name is taken.
    pub fn register_arc(
        &mut self,
        service: Arc<dyn Service>,
    ) -> Result<ServiceConfig<'_>, RegisterError> {
        let name = service.name();
        let key: Box<[u8]> = name.as_bytes().into();
        if self.services.contains_key(&key) {
            return Err(RegisterError::DuplicateService(name));
        }
        let methods = service
            .methods()
            .iter()
            .enumerate()
            .map(|(i, &m)| MethodEntry {
                id: NEXT_METHOD_ID.fetch_add(1, Ordering::Relaxed),
                name: m,
                dispatch: service.dispatch(i),
                kind: service.kind(i),
                is_async: service.is_async(i),
            })
            .collect();
        let entry = self.services.entry(key).or_insert(ServiceEntry {
            service,
            name,
            methods,
        });
        Ok(ServiceConfig { entry })
    }

    /// The dispatch of a registered method, or `None` if unknown.
    pub fn dispatch_of(&self, service: &str, method: &str) -> Option<Dispatch> {
        let entry = self.services.get(service.as_bytes())?;
        entry.method(method.as_bytes()).map(|(_, m)| m.dispatch)
    }

    /// Decodes and answers every whole frame in `input`.
    ///
    /// * REQUEST / ONEWAY: unknown service or method → UNIMPLEMENTED; a
    ///   deadline (arrival `received_at` + the request's budget) already
    ///   passed → DEADLINE_EXCEEDED without running the handler; an inline
    ///   method runs now, its answer (or INTERNAL if it panics) encoded into
    ///   `output`; a pool method is pushed onto `deferred` (or answered
    ///   RESOURCE_EXHAUSTED when the connection has
    ///   [`Limits::max_in_flight`] pool calls already).
    /// * PING → PONG with the same payload, zero-copy; a PING that breaks
    ///   the [`PingPolicy`] ends the connection
    ///   ([`ProtocolError::TooManyPings`]).
    /// * RESPONSE, PONG and unknown types are skipped.
    ///
    /// Output frames are in input order for inline calls. Nothing is flushed:
    /// the caller flushes `output` once for the whole batch, and calls
    /// [`LinkBuffer::release`] on `input` when it suits it.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] (bad framing, or an ERROR frame from the peer):
    /// the glue must flush `output` — it ends with an ERROR frame that tells
    /// the peer why, unless the peer sent the error — log the reason and
    /// close the connection. Frames before the bad one have been answered.
    pub fn process(
        &self,
        conn: &ServerConn,
        input: &mut LinkBuffer,
        output: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        received_at: Instant,
    ) -> Result<Progress, ProtocolError> {
        self.process_bounded(conn, input, output, deferred, received_at, usize::MAX)
    }

    /// [`process`](Self::process), stopping early once `output` holds more
    /// than `output_limit` bytes (`len()` plus `unflushed_len()`, what the
    /// transport's `Writer::is_full` measures against its output
    /// high-water mark): then [`Progress::output_full`] is set and the
    /// frames after the last one answered stay in `input`. A peer that
    /// pipelines small requests for large responses and reads slowly so
    /// costs the server at most the limit plus one response, not a whole
    /// read's worth of responses. At least one frame is handled per call.
    ///
    /// # Errors
    ///
    /// As [`process`](Self::process).
    pub fn process_bounded(
        &self,
        conn: &ServerConn,
        input: &mut LinkBuffer,
        output: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        received_at: Instant,
        output_limit: usize,
    ) -> Result<Progress, ProtocolError> {
        let mut progress = Progress::default();
        loop {
            if progress.frames > 0 && output.len() + output.unflushed_len() > output_limit {
                progress.output_full = true;
                return Ok(progress);
            }
            let frame = match codec::decode(input, &self.limits) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(progress),
                Err(e) => {
                    codec::encode_error(output, &self.limits, 0, &e.status());
                    return Err(e);
                }
            };
            progress.frames += 1;
            match frame.message_type() {
                Some(MessageType::Request) => self.handle_call(
                    conn,
                    frame,
                    false,
                    output,
                    deferred,
                    received_at,
                    &mut progress,
                ),
                Some(MessageType::Oneway) => self.handle_call(
                    conn,
                    frame,
                    true,
                    output,
                    deferred,
                    received_at,
                    &mut progress,
                ),
                Some(MessageType::Ping) => {
                    let Frame { header, payload } = frame;
                    if let Some(strikes) = conn.pings.on_ping(received_at, &self.ping_policy) {
                        let e = ProtocolError::TooManyPings { strikes };
                        codec::encode_error(output, &self.limits, header.seq, &e.status());
                        return Err(e);
                    }
                    if let Err(e) = codec::encode_pong(output, &self.limits, header.seq, payload) {
                        codec::encode_error(output, &self.limits, header.seq, &e.status());
                        return Err(e);
                    }
                    progress.responses += 1;
                }
                Some(MessageType::Error) => {
                    return Err(ProtocolError::PeerError(frame.header.status()));
                }
                Some(
                    kind @ (MessageType::Message
                    | MessageType::HalfClose
                    | MessageType::Cancel
                    | MessageType::Window),
                ) => {
                    if let Err(e) = self.handle_stream_frame(conn, kind, frame) {
                        codec::encode_error(output, &self.limits, 0, &e.status());
                        return Err(e);
                    }
                }
                Some(kind @ (MessageType::Response | MessageType::Pong)) => {
                    tracing::debug!(
                        ?kind,
                        seq = frame.header.seq,
                        "server skips a {kind:?} frame"
                    );
                }
                Some(MessageType::Unspecified) | None => {
                    tracing::debug!(kind = frame.header.kind, "skipping a frame of unknown type");
                }
            }
        }
    }

    /// The names of the registered services.
    pub(crate) fn service_names(&self) -> Vec<&'static str> {
        self.services.values().map(|e| e.name).collect()
    }

    /// The kind of `service`/`method`, or the UNIMPLEMENTED status a call
    /// of it gets (for a protocol adapter that must know before it reads
    /// the request, as gRPC does).
    pub(crate) fn method_kind(&self, service: &[u8], method: &[u8]) -> Result<MethodKind, Status> {
        let Some(entry) = self.services.get(service) else {
            return Err(Status::unimplemented(format!(
                "unknown service {}",
                String::from_utf8_lossy(service)
            )));
        };
        match entry.method(method) {
            Some((_, m)) => Ok(m.kind),
            None => Err(Status::unimplemented(format!(
                "unknown method {}/{}",
                entry.name,
                String::from_utf8_lossy(method)
            ))),
        }
    }

    /// Serves one call decoded by a protocol adapter (gRPC) as a native
    /// REQUEST frame: its answer is written to `output` as a native frame
    /// under the frame's `seq` (or comes from a [`DeferredCall`], or the
    /// connection's outbox for async handlers).
    pub(crate) fn call(
        &self,
        conn: &ServerConn,
        frame: Frame,
        output: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        received_at: Instant,
        progress: &mut Progress,
    ) {
        self.handle_call(conn, frame, false, output, deferred, received_at, progress);
    }

    /// A stream frame (CANCEL, MESSAGE, ...) from a protocol adapter.
    pub(crate) fn stream_frame(
        &self,
        conn: &ServerConn,
        kind: MessageType,
        frame: Frame,
    ) -> Result<(), ProtocolError> {
        self.handle_stream_frame(conn, kind, frame)
    }

    /// A frame of an open stream. Frames for a stream that is not open (it
    /// ended, or never was) are skipped: the peer may not have heard of
    /// the end yet.
    fn handle_stream_frame(
        &self,
        conn: &ServerConn,
        kind: MessageType,
        frame: Frame,
    ) -> Result<(), ProtocolError> {
        let seq = frame.header.seq;
        let Some(shared) = conn.streams.lock().get(&seq).cloned() else {
            let waiting = if kind == MessageType::Cancel {
                conn.waiting.lock().remove(&seq)
            } else {
                None
            };
            match waiting.and_then(|task| task.upgrade()) {
                // An async unary handler nobody waits for: dropped (its
                // interceptors end with CANCELLED), nothing is answered.
                Some(task) => task.cancel(),
                None => tracing::debug!(seq, ?kind, "skipping a frame of a stream not open"),
            }
            return Ok(());
        };
        match kind {
            MessageType::Message => shared.deliver(frame.payload),
            MessageType::HalfClose => shared.remote_end(Status::new(Code::Ok, "")),
            MessageType::Cancel => {
                shared.abort(Status::cancelled("the client cancelled the call"));
                Ok(())
            }
            MessageType::Window => shared.grant(frame.header.window),
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_call(
        &self,
        conn: &ServerConn,
        frame: Frame,
        oneway: bool,
        output: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        received_at: Instant,
        progress: &mut Progress,
    ) {
        let Frame { header, payload } = frame;
        let seq = header.seq;
        conn.pings.on_request();
        conn.last_call
            .store(keepalive::now_ns(received_at), Ordering::Relaxed);
        let mut reject = |status: Status| {
            if oneway {
                tracing::debug!(seq, "oneway call dropped: {status}");
            } else {
                codec::encode_status(output, &self.limits, seq, &status);
                progress.responses += 1;
            }
        };
        if self.draining.load(Ordering::SeqCst) {
            reject(Status::unavailable("server shutting down"));
            return;
        }
        let Some(entry) = self.services.get(&header.service[..]) else {
            reject(Status::unimplemented(format!(
                "unknown service {}",
                String::from_utf8_lossy(&header.service)
            )));
            return;
        };
        let Some((index, method)) = entry.method(&header.method) else {
            reject(Status::unimplemented(format!(
                "unknown method {}/{}",
                entry.name,
                String::from_utf8_lossy(&header.method)
            )));
            return;
        };
        if method.kind.is_streaming() != header.stream || (header.stream && oneway) {
            let what = if method.kind.is_streaming() {
                "a streaming method: open it as a stream"
            } else {
                "a unary method: call it without a stream"
            };
            reject(Status::unimplemented(format!(
                "{}/{} is {what}",
                entry.name, method.name
            )));
            return;
        }
        let deadline = match header.timeout_us {
            0 => None,
            us => received_at.checked_add(Duration::from_micros(us)),
        };
        let mut ctx = Context::for_call(
            seq,
            entry.name,
            method.name,
            deadline,
            Metadata::from_entries(header.metadata),
            conn.peer.clone(),
        );
        let guard = match ctx.intercept(&self.interceptors, method.kind, method.id, received_at) {
            Ok(guard) => guard,
            Err(status) => {
                reject(status);
                return;
            }
        };
        // A rejection after the interceptors started ends them too.
        let mut reject = |status: Status, guard: Option<CallGuard>| {
            if let Some(guard) = guard {
                guard.finish(&status);
            }
            reject(status);
        };
        if header.stream {
            let Some(outbox) = &conn.outbox else {
                reject(
                    Status::unimplemented("streaming calls need a connection served by a Server"),
                    guard,
                );
                return;
            };
            let open = conn.streams.lock().len();
            if open >= self.limits.max_streams {
                reject(
                    Status::resource_exhausted(format!(
                        "{open} streams open on this connection (limit {})",
                        self.limits.max_streams
                    )),
                    guard,
                );
                return;
            }
            let before = conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let in_flight = InFlight(Arc::clone(&conn.in_flight));
            if before >= self.limits.max_in_flight {
                drop(in_flight);
                reject(
                    Status::resource_exhausted(format!(
                        "{before} calls in flight on this connection (limit {})",
                        self.limits.max_in_flight
                    )),
                    guard,
                );
                return;
            }
            let shared = StreamShared::new(
                seq,
                Side::Server,
                deadline,
                self.limits,
                Arc::clone(outbox),
                &conn.streams,
                output,
            );
            if method.is_async
                && let Some(scheduler) = &conn.scheduler
            {
                // The timer holds the connection: cancelled when the stream
                // ends, or when its handler is dropped with the connection.
                let timer = CancelOnDrop(deadline.and_then(|at| {
                    let weak = Arc::downgrade(&shared);
                    outbox.run_at(
                        at,
                        Box::new(move || {
                            if let Some(shared) = weak.upgrade() {
                                shared.expire(Instant::now());
                            }
                        }),
                    )
                }));
                let mut fut = entry.service.call_stream_async(
                    index,
                    ctx.clone(),
                    StreamCall::new(Arc::clone(&shared)),
                );
                if let Some(guard) = &guard {
                    fut = guard.wrap(fut);
                }
                let finish = move |result: Result<(), Status>| {
                    let status = result.err().unwrap_or_else(|| Status::new(Code::Ok, ""));
                    shared.end_local(Some(&status));
                    if let Some(guard) = guard {
                        guard.finish(&status);
                    }
                    drop((timer, in_flight));
                };
                match scheduler.poll_first(&mut fut) {
                    Ok(Poll::Ready(result)) => finish(result),
                    Ok(Poll::Pending) => {
                        let fut = task::guarded(fut, move |what| {
                            handler_panicked(&ctx, what);
                            Err(Status::internal("handler panicked"))
                        });
                        scheduler.spawn(fut, finish);
                    }
                    Err(panic) => {
                        handler_panicked(&ctx, panic_text(&*panic));
                        finish(Err(Status::internal("handler panicked")));
                    }
                }
                return;
            }
            deferred.push(DeferredCall {
                service: Arc::clone(&entry.service),
                method: index,
                ctx,
                work: Work::Stream(shared),
                limits: self.limits,
                guard,
                _in_flight: in_flight,
            });
            progress.deferred += 1;
            return;
        }
        if method.is_async {
            if ctx.is_expired() {
                reject(
                    Status::deadline_exceeded("deadline passed before the handler started"),
                    guard,
                );
                return;
            }
            let before = conn.in_flight.fetch_add(1, Ordering::AcqRel);
            let in_flight = InFlight(Arc::clone(&conn.in_flight));
            if before >= self.limits.max_in_flight {
                drop(in_flight);
                reject(
                    Status::resource_exhausted(format!(
                        "{before} calls in flight on this connection (limit {})",
                        self.limits.max_in_flight
                    )),
                    guard,
                );
                return;
            }
            let log_ctx = (ctx.service(), ctx.method());
            let mut fut = entry.service.call_async(index, ctx, payload);
            if let Some(guard) = &guard {
                fut = guard.wrap(fut);
            }
            let limits = self.limits;
            let on_panic = move |what: &str| {
                tracing::error!(
                    service = log_ctx.0,
                    method = log_ctx.1,
                    "async handler panicked: {what}"
                );
                AsyncReply::error(Status::internal("handler panicked"))
            };
            let end = move |reply: &AsyncReply| {
                if let Some(guard) = guard {
                    guard.finish_code(reply.code());
                }
            };
            let (Some(scheduler), Some(outbox)) = (&conn.scheduler, &conn.outbox) else {
                // No loop to come back to: run it to its end here.
                let reply = task::block_on(task::guarded(fut, on_panic));
                end(&reply);
                if !oneway {
                    reply.write(output, &limits, seq);
                    progress.responses += 1;
                }
                return;
            };
            let ready = match scheduler.poll_first(&mut fut) {
                Ok(Poll::Ready(reply)) => reply,
                Err(panic) => on_panic(panic_text(&*panic)),
                Ok(Poll::Pending) => {
                    let outbox = Arc::clone(outbox);
                    let waiting = Arc::clone(&conn.waiting);
                    let spawned = scheduler.spawn(task::guarded(fut, on_panic), move |reply| {
                        waiting.lock().remove(&seq);
                        end(&reply);
                        if !oneway {
                            // Straight into the round's output on the loop
                            // thread; else a frame of its own.
                            let mut reply = Some(reply);
                            task::with_batch(outbox.batch_key(), |buf| {
                                if let Some(r) = reply.take() {
                                    r.write(buf, &limits, seq);
                                }
                            });
                            if let Some(reply) = reply {
                                let mut out = LinkBuffer::new();
                                reply.write(&mut out, &limits, seq);
                                outbox.send(out);
                            }
                        }
                        drop(in_flight);
                    });
                    if !oneway && !spawned.is_done() {
                        // Its CANCEL drops it (the client gave up on it).
                        conn.waiting.lock().insert(seq, Arc::downgrade(&spawned));
                        if spawned.is_done() {
                            conn.waiting.lock().remove(&seq);
                        }
                    }
                    if !oneway {
                        progress.responses += 1;
                    }
                    return;
                }
            };
            // Ready at the first poll: answered like an inline call.
            end(&ready);
            if !oneway {
                ready.write(output, &limits, seq);
                progress.responses += 1;
            }
            drop(in_flight);
            return;
        }
        match method.dispatch {
            Dispatch::Inline => {
                let out = if oneway { None } else { Some(&mut *output) };
                let entered = guard.as_ref().and_then(CallGuard::scope).map(Scope::enter);
                let (written, code) =
                    run_call(&*entry.service, index, &ctx, payload, out, &self.limits);
                drop(entered);
                if let Some(guard) = guard {
                    guard.finish_code(code);
                }
                if written {
                    progress.responses += 1;
                }
            }
            Dispatch::Pool => {
                let before = conn.in_flight.fetch_add(1, Ordering::AcqRel);
                let in_flight = InFlight(Arc::clone(&conn.in_flight));
                if before >= self.limits.max_in_flight {
                    drop(in_flight);
                    reject(
                        Status::resource_exhausted(format!(
                            "{before} calls in flight on this connection (limit {})",
                            self.limits.max_in_flight
                        )),
                        guard,
                    );
                    return;
                }
                deferred.push(DeferredCall {
                    service: Arc::clone(&entry.service),
                    method: index,
                    ctx,
                    work: Work::Unary { payload, oneway },
                    limits: self.limits,
                    guard,
                    _in_flight: in_flight,
                });
                progress.deferred += 1;
            }
        }
    }
}
