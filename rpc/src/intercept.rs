//! Interceptors: an ordered chain of hooks around every call, on the server
//! and on the client.
//!
//! An [`Interceptor`] sees each call start — service, method, kind,
//! metadata, deadline and (on the server) the peer — and may reject it with
//! a status or change its metadata; it sees each call end with its status
//! code and duration. Starts run in chain order, ends in reverse order, and
//! an interceptor's `end` runs exactly once for every `start` that returned
//! `Ok`: when the call answers, when it is rejected by a later interceptor
//! or by a limit, or — as CANCELLED — when it is dropped without a status
//! (the caller cancelled, the connection closed).
//!
//! Three come with the crate: [`TracingInterceptor`] (a `tracing` span per
//! call and W3C `traceparent` propagation), [`ConcurrencyLimit`] (load
//! shedding per method) and, with feature `metrics`,
//! [`MetricsInterceptor`](crate::MetricsInterceptor) (Prometheus counters,
//! gauges and histograms).
//!
//! ```
//! use ferropoll_rpc::intercept::{CallEnd, CallStart, Interceptor};
//! use ferropoll_rpc::Status;
//!
//! /// Rejects calls without an `authorization` entry.
//! struct RequireToken;
//!
//! impl Interceptor for RequireToken {
//!     fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
//!         match call.metadata().get("authorization") {
//!             Some(_) => Ok(()),
//!             None => Err(Status::unauthenticated("no token")),
//!         }
//!     }
//! }
//!
//! let mut builder = ferropoll_rpc::Server::builder();
//! builder.intercept(RequireToken);
//! ```
//!
//! Interceptors cost nothing when none is installed. With some, a call
//! costs one `start` and one `end` per interceptor, and — if one of them
//! set a span or a trace — entering that scope around each stretch of the
//! handler's code (the whole call of a synchronous handler, each poll of an
//! async one).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::context::PeerAddr;
use crate::hash::{IdTable, StrMap};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::MethodKind;

/// A hook around each call. Both methods have empty defaults.
///
/// Install one on a server with
/// [`ServerBuilder::intercept`](crate::ServerBuilder::intercept) (or
/// [`ServerEngine::intercept`](crate::ServerEngine::intercept)), on a client
/// with [`ClientOptions::interceptors`](crate::ClientOptions::interceptors).
/// The same value may serve both sides: [`CallStart::side`] tells which.
///
/// Both run on the thread that handles the call — a server's loop thread
/// for inline and async handlers — so they must be quick and must not
/// block.
pub trait Interceptor: Send + Sync + 'static {
    /// Before the call: `Err` rejects it with that status (the handler does
    /// not run; on the client nothing is sent), and the interceptors after
    /// this one do not start.
    ///
    /// # Errors
    ///
    /// The status that answers the rejected call.
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }

    /// After the call, with its outcome.
    fn end(&self, call: &CallEnd<'_>) {
        let _ = call;
    }
}

/// Which end of a call an interceptor runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Around a handler, in a server.
    Server,
    /// Around a call made by a [`Client`](crate::Client).
    Client,
}

impl Side {
    /// `"server"` or `"client"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// An ordered list of interceptors; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Interceptors(Option<Arc<[Arc<dyn Interceptor>]>>);

impl Interceptors {
    /// No interceptors.
    pub const fn new() -> Interceptors {
        Interceptors(None)
    }

    /// Appends `interceptor`: it starts after those already in the list and
    /// ends before them.
    pub fn push(&mut self, interceptor: impl Interceptor) -> &mut Self {
        self.push_arc(Arc::new(interceptor))
    }

    /// As [`push`](Self::push), for an interceptor shared with other
    /// servers or clients (a metrics registry, say).
    pub fn push_arc(&mut self, interceptor: Arc<dyn Interceptor>) -> &mut Self {
        let mut list: Vec<Arc<dyn Interceptor>> =
            self.0.iter().flat_map(|l| l.iter().cloned()).collect();
        list.push(interceptor);
        self.0 = Some(list.into());
        self
    }

    /// The number of interceptors.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interceptors({})", self.len())
    }
}

/// Equal when they hold the same interceptors (the same allocations) in the
/// same order.
impl PartialEq for Interceptors {
    fn eq(&self, other: &Self) -> bool {
        let a = self.0.as_deref().unwrap_or(&[]);
        let b = other.0.as_deref().unwrap_or(&[]);
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(y)))
    }
}

impl Eq for Interceptors {}

/// What a call is, for its interceptors.
#[derive(Debug)]
pub(crate) struct CallInfo {
    pub(crate) side: Side,
    pub(crate) service: Cow<'static, str>,
    pub(crate) method: Cow<'static, str>,
    pub(crate) kind: MethodKind,
    /// The registered method's process-wide id (server side only).
    pub(crate) method_id: Option<usize>,
    pub(crate) peer: Option<PeerAddr>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) since: Instant,
}

/// A call about to start, as its interceptors see it.
pub struct CallStart<'a> {
    info: &'a CallInfo,
    metadata: &'a mut Metadata,
    response: Option<&'a Mutex<Metadata>>,
    scope: &'a mut Scope,
}

impl fmt::Debug for CallStart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStart")
            .field("info", self.info)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl CallStart<'_> {
    /// Server or client.
    pub fn side(&self) -> Side {
        self.info.side
    }

    /// The service's full name (`package.Service`).
    pub fn service(&self) -> &str {
        &self.info.service
    }

    /// The method's name.
    pub fn method(&self) -> &str {
        &self.info.method
    }

    /// Unary or one of the streaming kinds.
    pub fn kind(&self) -> MethodKind {
        self.info.kind
    }

    /// On a server, a small number that identifies the registered method
    /// in this process (ids are dense from 0, never reused, the same for
    /// every call of the method): an index for per-method tables that
    /// spares a lookup by name on every call. `None` on a client.
    pub fn method_id(&self) -> Option<usize> {
        self.info.method_id
    }

    /// The call's deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.info.deadline
    }

    /// The peer's address: the client's, on the server; `None` on a client
    /// (which may not have picked a connection yet).
    pub fn peer(&self) -> Option<&PeerAddr> {
        self.info.peer.as_ref()
    }

    /// The request's metadata: as received, on the server; as it will be
    /// sent, on the client.
    pub fn metadata(&self) -> &Metadata {
        self.metadata
    }

    /// The request's metadata, to change: on the server, what the handler
    /// will see; on the client, what is sent (a `traceparent`, a token).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.metadata
    }

    /// Adds an entry to the metadata of the call's OK response (a stream's
    /// final status), beside what the handler sets with
    /// [`Context::set_response_metadata`](crate::Context::set_response_metadata)
    /// (the handler's wins on the same key). Returns `false`, and does
    /// nothing, on a client.
    pub fn add_response_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> bool {
        match self.response {
            Some(response) => {
                response.lock().insert(key, value);
                true
            }
            None => false,
        }
    }

    /// Makes `span` the call's span: entered around the handler's code on
    /// the server, handed back at the end ([`CallEnd::span`]).
    pub fn set_span(&mut self, span: tracing::Span) {
        self.scope.span = Some(span);
    }

    /// The call's span, if an interceptor before this one set it.
    pub fn span(&self) -> Option<&tracing::Span> {
        self.scope.span.as_ref()
    }

    /// Makes `trace` the call's trace context: on the server, what
    /// [`TraceParent::current`] returns while the handler runs, so that
    /// calls it makes are children of this one.
    pub fn set_trace(&mut self, trace: TraceParent) {
        self.scope.trace = Some(trace);
    }

    /// The call's trace context, if an interceptor before this one set it.
    pub fn trace(&self) -> Option<TraceParent> {
        self.scope.trace
    }
}

/// A call that ended, as its interceptors see it.
pub struct CallEnd<'a> {
    info: &'a CallInfo,
    code: Code,
    message: &'a str,
    elapsed: Duration,
    scope: &'a Scope,
}

impl fmt::Debug for CallEnd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallEnd")
            .field("info", self.info)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

impl CallEnd<'_> {
    /// Server or client.
    pub fn side(&self) -> Side {
        self.info.side
    }

    /// The service's full name.
    pub fn service(&self) -> &str {
        &self.info.service
    }

    /// The method's name.
    pub fn method(&self) -> &str {
        &self.info.method
    }

    /// Unary or one of the streaming kinds.
    pub fn kind(&self) -> MethodKind {
        self.info.kind
    }

    /// On a server, a small number that identifies the registered method
    /// in this process (ids are dense from 0, never reused, the same for
    /// every call of the method): an index for per-method tables that
    /// spares a lookup by name on every call. `None` on a client.
    pub fn method_id(&self) -> Option<usize> {
        self.info.method_id
    }

    /// The peer's address (server side).
    pub fn peer(&self) -> Option<&PeerAddr> {
        self.info.peer.as_ref()
    }

    /// The call's status code: OK, the handler's error, the rejection, or
    /// CANCELLED for a call that ended without a status.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The status message ("" for OK, and where the code alone is known).
    pub fn message(&self) -> &str {
        self.message
    }

    /// The call's duration: on a server from the read that brought its
    /// request, on a client from the first interceptor's start, to the end.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The span set by [`CallStart::set_span`].
    pub fn span(&self) -> Option<&tracing::Span> {
        self.scope.span.as_ref()
    }

    /// The trace set by [`CallStart::set_trace`].
    pub fn trace(&self) -> Option<TraceParent> {
        self.scope.trace
    }
}

/// The span and trace a call's code runs in.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    span: Option<tracing::Span>,
    trace: Option<TraceParent>,
}

thread_local! {
    static CURRENT_TRACE: Cell<Option<TraceParent>> = const { Cell::new(None) };
}

impl Scope {
    fn is_empty(&self) -> bool {
        self.span.is_none() && self.trace.is_none()
    }

    /// Enters the span and makes the trace current until the guard drops.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let prev = self
            .trace
            .map(|t| CURRENT_TRACE.with(|c| c.replace(Some(t))));
        Entered {
            _span: self.span.as_ref().map(tracing::Span::enter),
            prev,
        }
    }
}

/// Leaves a [`Scope`] when dropped.
pub(crate) struct Entered<'a> {
    _span: Option<tracing::span::Entered<'a>>,
    /// The trace current before, if this scope replaced it.
    prev: Option<Option<TraceParent>>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            CURRENT_TRACE.with(|c| c.set(prev));
        }
    }
}

/// A future polled inside a scope.
pub(crate) struct Scoped<F> {
    fut: F,
    scope: Scope,
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.scope.enter();
        Pin::new(&mut this.fut).poll(cx)
    }
}

/// The running interceptors of one call: ends them when finished, or with
/// CANCELLED when dropped unfinished.
pub(crate) struct CallGuard {
    chain: Arc<[Arc<dyn Interceptor>]>,
    started: usize,
    info: CallInfo,
    scope: Scope,
}

impl fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard")
            .field("info", &self.info)
            .field("started", &self.started)
            .finish()
    }
}

impl CallGuard {
    /// Starts `chain` for a call. `Ok(None)` when the chain is empty;
    /// `Err` when an interceptor rejected the call (those started before it
    /// have ended with its status).
    pub(crate) fn start(
        chain: &Interceptors,
        info: CallInfo,
        metadata: &mut Metadata,
        response: Option<&Mutex<Metadata>>,
    ) -> Result<Option<CallGuard>, Status> {
        let Some(list) = &chain.0 else {
            return Ok(None);
        };
        let mut guard = CallGuard {
            chain: Arc::clone(list),
            started: 0,
            info,
            scope: Scope::default(),
        };
        for interceptor in list.iter() {
            let mut call = CallStart {
                info: &guard.info,
                metadata: &mut *metadata,
                response,
                scope: &mut guard.scope,
            };
            if let Err(status) = interceptor.start(&mut call) {
                guard.end(status.code(), status.message());
                return Err(status);
            }
            guard.started += 1;
        }
        Ok(Some(guard))
    }

    /// The scope to run the handler in, if an interceptor set one.
    pub(crate) fn scope(&self) -> Option<&Scope> {
        (!self.scope.is_empty()).then_some(&self.scope)
    }

    /// `fut`, polled inside the call's scope if it has one.
    pub(crate) fn wrap<T: 'static>(
        &self,
        fut: crate::task::BoxFuture<T>,
    ) -> crate::task::BoxFuture<T> {
        match self.scope() {
            Some(scope) => Box::pin(Scoped {
                fut,
                scope: scope.clone(),
            }),
            None => fut,
        }
    }

    /// Ends the call with `status`.
    pub(crate) fn finish(mut self, status: &Status) {
        self.end(status.code(), status.message());
    }

    /// Ends the call with `code`.
    pub(crate) fn finish_code(mut self, code: Code) {
        self.end(code, "");
    }

    fn end(&mut self, code: Code, message: &str) {
        let call = CallEnd {
            info: &self.info,
            code,
            message,
            elapsed: self.info.since.elapsed(),
            scope: &self.scope,
        };
        for interceptor in self.chain[..self.started].iter().rev() {
            interceptor.end(&call);
        }
        self.started = 0;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.started > 0 {
            self.end(Code::Cancelled, "the call ended without a status");
        }
    }
}

/// A W3C Trace Context `traceparent`: the trace a call belongs to and the
/// span that made it (<https://www.w3.org/TR/trace-context/>). Its text form
/// is `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`.
///
/// ```
/// use ferropoll_rpc::intercept::TraceParent;
/// let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert!(tp.is_sampled());
/// let child = tp.child();
/// assert_eq!(child.trace_id(), tp.trace_id());
/// assert_ne!(child.span_id(), tp.span_id());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

/// The metadata key of a [`TraceParent`].
pub const TRACEPARENT: &str = "traceparent";

impl TraceParent {
    /// A new trace (random ids), sampled.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: fastrand::u128(1..),
            span_id: fastrand::u64(1..),
            flags: 1,
        }
    }

    /// A span of the same trace whose parent is this one (a new span id).
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: fastrand::u64(1..),
            ..*self
        }
    }

    /// The trace id (never 0).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The span id (never 0): on the wire, the parent of the receiver's span.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace context of the server call whose handler is running on
    /// this thread, if an interceptor set one ([`CallStart::set_trace`]):
    /// what a client's [`TracingInterceptor`] makes its calls children of.
    pub fn current() -> Option<TraceParent> {
        CURRENT_TRACE.with(Cell::get)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// A `traceparent` that is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTraceParent;

impl fmt::Display for InvalidTraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid W3C traceparent")
    }
}

impl std::error::Error for InvalidTraceParent {}

impl std::str::FromStr for TraceParent {
    type Err = InvalidTraceParent;

    /// Parses version 00, and later versions by their first four fields,
    /// as the specification asks; rejects the all-zero ids, upper-case hex
    /// and version `ff`.
    fn from_str(s: &str) -> Result<TraceParent, InvalidTraceParent> {
        fn hex(s: &str, len: usize) -> Result<u128, InvalidTraceParent> {
            if s.len() != len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(InvalidTraceParent);
            }
            u128::from_str_radix(s, 16).map_err(|_| InvalidTraceParent)
        }
        let mut parts = s.splitn(5, '-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTraceParent);
        };
        let version = hex(version, 2)?;
        let rest = parts.next();
        if version == 0xff || (version == 0 && rest.is_some()) {
            return Err(InvalidTraceParent);
        }
        let flags = if version == 0 {
            hex(flags, 2)?
        } else {
            // A later version may append fields after the flags.
            hex(flags.get(..2).ok_or(InvalidTraceParent)?, 2)?
        };
        let trace_id = hex(trace, 32)?;
        let span_id = hex(span, 16)? as u64;
        if trace_id == 0 || span_id == 0 {
            return Err(InvalidTraceParent);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags: flags as u8,
        })
    }
}

/// A `tracing` span per call, and W3C trace context propagated in the
/// `traceparent` metadata entry.
///
/// On a server, the span (`rpc.server`) is entered while the handler runs;
/// its trace continues the caller's `traceparent` if the request has a
/// valid one, else starts a new trace. On a client, each call gets a span
/// (`rpc.client`, a child of the current `tracing` span) and sends a
/// `traceparent` whose trace is the one of the server call running on this
/// thread ([`TraceParent::current`]) — so a handler's own calls continue its
/// trace — else a new one; a `traceparent` set by the caller in its
/// [`CallOptions`](crate::CallOptions) is kept.
///
/// Spans carry `rpc.service`, `rpc.method`, `trace_id`, `span_id`,
/// `parent_id` and, at the end, `rpc.code`; the end also emits an event
/// with the elapsed time. Spans are at DEBUG level unless
/// [`at_info`](TracingInterceptor::at_info) is set; propagation works
/// whether or not a subscriber records them.
#[derive(Clone, Debug, Default)]
pub struct TracingInterceptor {
    info: bool,
}

impl TracingInterceptor {
    /// Spans at DEBUG level.
    pub fn new() -> TracingInterceptor {
        TracingInterceptor::default()
    }

    /// Spans and end events at INFO level instead of DEBUG.
    #[must_use = "at_info returns the changed interceptor"]
    pub fn at_info(mut self) -> TracingInterceptor {
        self.info = true;
        self
    }
}

macro_rules! rpc_span {
    ($level:expr, $name:literal, $call:expr, $trace:expr, $parent:expr) => {
        tracing::span!(
            $level,
            $name,
            rpc.service = $call.service(),
            rpc.method = $call.method(),
            trace_id = %format_args!("{:032x}", $trace.trace_id()),
            span_id = %format_args!("{:016x}", $trace.span_id()),
            parent_id = $parent.map(|p: TraceParent| tracing::field::display(format!("{:016x}", p.span_id()))),
            rpc.code = tracing::field::Empty,
        )
    };
}

impl Interceptor for TracingInterceptor {
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let (trace, parent) = match call.side() {
            Side::Server => {
                let parent = call
                    .metadata()
                    .get(TRACEPARENT)
                    .and_then(|v| v.parse::<TraceParent>().ok());
                (
                    parent.map_or_else(TraceParent::new_root, |p| p.child()),
                    parent,
                )
            }
            Side::Client => {
                if let Some(own) = call
                    .metadata()
                    .get(TRACEPARENT)
                    .and_then(|v| v.parse().ok())
                {
                    // The caller chose the span id the server sees.
                    (own, None)
                } else {
                    let parent = TraceParent::current();
                    let trace = parent.map_or_else(TraceParent::new_root, |p| p.child());
                    call.metadata_mut().insert(TRACEPARENT, trace.to_string());
                    (trace, parent)
                }
            }
        };
        let span = match (call.side(), self.info) {
            (Side::Server, true) => {
                rpc_span!(tracing::Level::INFO, "rpc.server", call, trace, parent)
            }
            (Side::Server, false) => {
                rpc_span!(tracing::Level::DEBUG, "rpc.server", call, trace, parent)
            }
            (Side::Client, true) => {
                rpc_span!(tracing::Level::INFO, "rpc.client", call, trace, parent)
            }
            (Side::Client, false) => {
                rpc_span!(tracing::Level::DEBUG, "rpc.client", call, trace, parent)
            }
        };
        call.set_trace(trace);
        call.set_span(span);
        Ok(())
    }

    fn end(&self, call: &CallEnd<'_>) {
        let Some(span) = call.span() else { return };
        if span.is_disabled() {
            return;
        }
        span.record("rpc.code", tracing::field::debug(call.code()));
        let elapsed_us = call.elapsed().as_micros() as u64;
        if self.info {
            tracing::info!(parent: span, code = ?call.code(), elapsed_us, message = call.message(), "call ended");
        } else {
            tracing::debug!(parent: span, code = ?call.code(), elapsed_us, message = call.message(), "call ended");
        }
    }
}

/// Load shedding: beyond a number of calls in flight per method, new calls
/// are answered RESOURCE_EXHAUSTED at once, without running the handler.
///
/// A streaming call is in flight until its final status. Installed on a
/// client, it bounds that client's calls the same way (failing them
/// locally).
///
/// ```
/// use ferropoll_rpc::intercept::ConcurrencyLimit;
/// let limit = ConcurrencyLimit::new()
///     .default_limit(1000)
///     .method("kv.Kv", "Scan", 8); // the expensive one
/// assert_eq!(limit.limit_of("kv.Kv", "Scan"), Some(8));
/// assert_eq!(limit.limit_of("kv.Kv", "Get"), Some(1000));
/// ```
#[derive(Default)]
pub struct ConcurrencyLimit {
    default: Option<usize>,
    /// Per service, then method: the limit and the calls in flight. The
    /// methods named by [`method`](Self::method) are here from the start,
    /// the others join at their first call under the default limit.
    slots: RwLock<StrMap<StrMap<Arc<Slot>>>>,
    /// The server side's slots by method id (`None`: the method has no
    /// limit): no name lookup per call.
    by_id: IdTable<Option<Arc<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    limit: usize,
    in_flight: AtomicUsize,
}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("default", &self.default)
            .field("slots", &*self.slots.read())
            .finish()
    }
}

impl ConcurrencyLimit {
    /// No limits yet: every call passes.
    pub fn new() -> ConcurrencyLimit {
        ConcurrencyLimit::default()
    }

    /// The limit of each method not named by [`method`](Self::method).
    #[must_use = "default_limit returns the changed limit"]
    pub fn default_limit(mut self, max_in_flight: usize) -> ConcurrencyLimit {
        self.default = Some(max_in_flight);
        self
    }

    /// The limit of `service`/`method`.
    #[must_use = "method returns the changed limit"]
    pub fn method(self, service: &str, method: &str, max_in_flight: usize) -> ConcurrencyLimit {
        self.slots
            .write()
            .entry(service.to_owned())
            .or_default()
            .insert(
                method.to_owned(),
                Arc::new(Slot {
                    limit: max_in_flight,
                    in_flight: AtomicUsize::new(0),
                }),
            );
        self
    }

    /// The limit that applies to `service`/`method`, if any.
    pub fn limit_of(&self, service: &str, method: &str) -> Option<usize> {
        self.with_slot(service, method, |s| s.limit)
            .or(self.default)
    }

    /// Calls of `service`/`method` in flight now.
    pub fn in_flight(&self, service: &str, method: &str) -> usize {
        self.with_slot(service, method, |s| s.in_flight.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    fn with_slot<R>(&self, service: &str, method: &str, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        self.slots
            .read()
            .get(service)
            .and_then(|m| m.get(method))
            .map(|slot| f(slot))
    }

    /// Counts a call in unless its method is at its limit: `Err((in
    /// flight, limit))`.
    fn enter(&self, service: &str, method: &str, id: Option<usize>) -> Result<(), (usize, usize)> {
        let admit = |s: &Slot| {
            let before = s.in_flight.fetch_add(1, Ordering::AcqRel);
            if before >= s.limit {
                s.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err((before, s.limit));
            }
            Ok(())
        };
        if let Some(id) = id
            && let Some(r) = self
                .by_id
                .with(id, |slot| slot.as_deref().map_or(Ok(()), admit))
        {
            return r;
        }
        let slot = self.slot_of(service, method);
        if let Some(id) = id {
            self.by_id.insert(id, slot.clone());
        }
        slot.map_or(Ok(()), |s| admit(&s))
    }

    /// The slot of `service`/`method`: its own, one made at the default
    /// limit, or `None` (no limit).
    fn slot_of(&self, service: &str, method: &str) -> Option<Arc<Slot>> {
        if let Some(slot) = self.slots.read().get(service).and_then(|m| m.get(method)) {
            return Some(Arc::clone(slot));
        }
        let limit = self.default?;
        let mut slots = self.slots.write();
        let slot = slots
            .entry(service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    limit,
                    in_flight: AtomicUsize::new(0),
                })
            });
        Some(Arc::clone(slot))
    }
}

impl Interceptor for ConcurrencyLimit {
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        self.enter(call.service(), call.method(), call.method_id())
            .map_err(|(before, limit)| {
                Status::resource_exhausted(format!(
                    "{before} calls of {}/{} in flight (limit {limit})",
                    call.service(),
                    call.method()
                ))
            })
    }

    fn end(&self, call: &CallEnd<'_>) {
        // A call of a method without a slot was not counted.
        let leave = |s: &Slot| {
            s.in_flight.fetch_sub(1, Ordering::AcqRel);
        };
        if let Some(id) = call.method_id()
            && self
                .by_id
                .with(id, |slot| slot.as_deref().map(leave))
                .is_some()
        {
            return;
        }
        self.with_slot(call.service(), call.method(), leave);
    }
}
