//! The client: per-call options, the client options, and
//! the [`Client`] handle the generated stubs call through.

use std::borrow::Cow;
use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use crate::backend::{Backend, InProcess};
use crate::call::{CallFuture, Payload, observe};
use crate::cluster::{ClusterBuilder, Discover, InstanceStats};
use crate::codec::{EncodeBody, Limits};
use crate::context::PeerAddr;
use crate::intercept::{CallGuard, CallInfo, Interceptors};
use crate::keepalive::Keepalive;
use crate::metadata::Metadata;
use crate::net_client::{NetClient, Target};
use crate::sansio::{ClientSession, ServerConn};
use crate::server::ServerEngine;
use crate::status::Status;
use crate::stream::caller_halves;
use crate::stream::{MethodKind, RecvStream, SendSink};

/// Options of one call.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::CallOptions;
/// let opts = CallOptions::new()
///     .with_timeout(Duration::from_millis(250))
///     .with_metadata("tenant", "a");
/// assert_eq!(opts.timeout(), Some(Duration::from_millis(250)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) metadata: Metadata,
    hash_key: Option<u64>,
}

impl CallOptions {
    /// No timeout of its own (the client's default applies), no metadata.
    pub const DEFAULT: CallOptions = CallOptions {
        timeout: None,
        metadata: Metadata::new(),
        hash_key: None,
    };

    /// The same as [`CallOptions::DEFAULT`].
    pub fn new() -> CallOptions {
        CallOptions::DEFAULT
    }

    /// The call fails with DEADLINE_EXCEEDED unless it completes within
    /// `timeout`; the server receives it as the call's time budget.
    #[must_use = "with_timeout returns the changed options"]
    pub fn with_timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a metadata entry sent with the request.
    #[must_use = "with_metadata returns the changed options"]
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> CallOptions {
        self.metadata.insert(key, value);
        self
    }

    /// The key a cluster client's
    /// [`ConsistentHash`](crate::cluster::ConsistentHash) balancer routes
    /// this call by (calls with one key go to one instance while it is
    /// available); hashed with a stable hash, so every client agrees.
    /// Other balancers and single-server clients ignore it.
    ///
    /// ```
    /// use ferropoll_rpc::CallOptions;
    /// let a = CallOptions::new().with_hash_key("user-42");
    /// let b = CallOptions::new().with_hash_key(b"user-42");
    /// assert_eq!(a.hash_key(), b.hash_key());
    /// ```
    #[must_use = "with_hash_key returns the changed options"]
    pub fn with_hash_key(mut self, key: impl AsRef<[u8]>) -> CallOptions {
        self.hash_key = Some(crate::cluster::hash_bytes(key.as_ref()));
        self
    }

    /// As [`with_hash_key`](CallOptions::with_hash_key), with a key that is
    /// already a well-spread 64-bit hash.
    #[must_use = "with_hash returns the changed options"]
    pub fn with_hash(mut self, hash: u64) -> CallOptions {
        self.hash_key = Some(hash);
        self
    }

    /// The hash of the routing key, if set.
    pub fn hash_key(&self) -> Option<u64> {
        self.hash_key
    }

    /// The timeout, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// Options of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Longest wait for a connection to be established. Default 5 s.
    pub connect_timeout: Duration,
    /// Timeout of calls whose [`CallOptions`] set none; `None` = wait until
    /// the response or the connection's loss. Default 30 s: a call must not
    /// hang forever on a silent server.
    pub default_timeout: Option<Duration>,
    /// Multiplexed connections kept to the server (at least 1). Default 1:
    /// one connection carries any number of concurrent calls, and shares
    /// syscalls among them best (see `BENCHMARKS.md`); more help when one
    /// server loop per connection is the bottleneck.
    pub connections: usize,
    /// Frame and in-flight limits of each connection.
    pub limits: Limits,
    /// After a failed connection attempt, calls needing that connection
    /// fail at once with the same UNAVAILABLE for this long instead of each
    /// dialing again. Default 100 ms.
    pub reconnect_backoff: Duration,
    /// Pings that find a server gone silent (partitioned, frozen) and fail
    /// its calls UNAVAILABLE instead of letting them wait for their
    /// deadlines; see [`Keepalive`]. Default on: pings after 1 s of silence
    /// (500 ms with calls waiting), 1 s timeout.
    /// `None`: off.
    pub keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT` of the client's TCP connections: the kernel
    /// closes a connection whose sent data stays unacknowledged this long.
    /// Default 10 s; `None`: the kernel's default (about 15 minutes).
    pub tcp_user_timeout: Option<Duration>,
    /// Hooks around each call this client makes (see
    /// [`intercept`](crate::intercept)): a [`TracingInterceptor`](crate::intercept::TracingInterceptor)
    /// sends `traceparent`, a metrics one counts the calls. A cluster
    /// client runs them once per call, around its retries. Default none.
    pub interceptors: Interceptors,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            default_timeout: Some(Duration::from_secs(30)),
            connections: 1,
            limits: Limits::default(),
            reconnect_backoff: Duration::from_millis(100),
            keepalive: Some(Keepalive::default()),
            tcp_user_timeout: Some(Duration::from_secs(10)),
            interceptors: Interceptors::new(),
        }
    }
}

/// A handle to a server, cheap to clone and usable from any thread; the
/// generated client stubs (`KvClient`) call through it.
///
/// Two ways to get one:
///
/// * [`Client::connect`] — a client of a server over TCP (`"host:port"`)
///   or a Unix socket (`"unix:/path"`). It keeps
///   [`ClientOptions::connections`] multiplexed connections, served by one
///   client event-loop thread of its own: any number of threads and tasks
///   call at once, responses are matched to calls by sequence id. A call
///   picks a connection round-robin; one that is no longer `is_active()`
///   (the server went away) is re-dialed by the next call that picks it.
///   Requests staged by concurrent callers share one `sendmsg` (see the
///   `net_client` module docs).
/// * [`Client::in_process`] — a client of a [`ServerEngine`] in the same
///   process, without sockets: every call is encoded, processed by the
///   engine and decoded exactly as over a connection. For tests, and for
///   calling a service from inside its own server.
///
/// Each call has a blocking form ([`unary`](Client::unary)) and a
/// runtime-agnostic future ([`unary_async`](Client::unary_async)),
/// completed through its waker by the client's loop thread. Timeouts: a
/// blocking call waits with its deadline; a future's deadline is enforced
/// by a timer on the client's event loop (no thread of its own), so a
/// future resolves to DEADLINE_EXCEEDED on time even if nobody polls it.
///
/// Dropping the last handle closes the connections; calls still pending
/// fail with CANCELLED.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::{CallOptions, Client, ClientOptions, Code, Context, LinkBuffer, Listener, Reply, Server, Service};
///
/// struct Upper;
/// impl Service for Upper {
///     fn name(&self) -> &'static str { "demo.Upper" }
///     fn methods(&self) -> &'static [&'static str] { &["Call"] }
///     fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
///         reply.unary(ctx, request, |_ctx, s: String| Ok(s.to_uppercase()))
///     }
/// }
///
/// let mut builder = Server::builder();
/// builder.num_loops(1);
/// builder.register(Upper)?;
/// let server = builder.build()?;
/// let addr = server.listen(Listener::bind_tcp("127.0.0.1:0")?)?;
///
/// let client = Client::connect(&addr.to_string(), ClientOptions::default())?;
/// let opts = CallOptions::new().with_timeout(Duration::from_secs(1));
/// let out: String = client.unary("demo.Upper", "Call", &"hi".to_owned(), &opts)?;
/// assert_eq!(out, "HI");
/// let err = client.unary::<String, String>("demo.Upper", "Nope", &"hi".to_owned(), &opts).unwrap_err();
/// assert_eq!(err.code(), Code::Unimplemented);
/// server.shutdown(Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    options: ClientOptions,
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.inner.backend.describe())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Client {
    /// A client of the server at `addr` (`"host:port"` or `"unix:/path"`),
    /// with [`ClientOptions::connections`] connections dialed now.
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT for an address that does not resolve or limits
    /// that fail [`Limits::validate`]; UNAVAILABLE
    /// when a connection cannot be established within
    /// [`ClientOptions::connect_timeout`] (or the client loop cannot start).
    pub fn connect(addr: &str, options: ClientOptions) -> Result<Client, Status> {
        options
            .limits
            .validate()
            .map_err(|why| Status::invalid_argument(format!("client limits: {why}")))?;
        let target = match addr.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Target::Unix(path.into()),
            _ => {
                let mut resolved = addr
                    .to_socket_addrs()
                    .map_err(|e| Status::invalid_argument(format!("bad address {addr:?}: {e}")))?;
                if resolved.next().is_none() {
                    return Err(Status::invalid_argument(format!(
                        "address {addr:?} resolves to nothing"
                    )));
                }
                Target::Tcp(addr.to_owned())
            }
        };
        let net = NetClient::connect(target, options.clone())?;
        Ok(Client::from_backend(Arc::new(net), options))
    }

    /// A client of `engine` in this process: requests are encoded, run
    /// through [`ServerEngine::process`] on the calling thread and the
    /// responses decoded, exactly the bytes a connection would carry.
    /// Pool-dispatched methods also run on the calling thread. The client's
    /// limits are the engine's (so nothing the engine would reject is sent).
    pub fn in_process(engine: Arc<ServerEngine>, mut options: ClientOptions) -> Client {
        options.limits = *engine.limits();
        let backend = InProcess {
            engine,
            conn: ServerConn::new(PeerAddr::other("in-process")),
            session: ClientSession::new(&options),
        };
        Client::from_backend(Arc::new(backend), options)
    }

    /// A client of a cluster of instances found by `discover`; see
    /// [`ClusterBuilder`] (balancing, retries, health, circuit breaking).
    /// The generated stubs take the resulting [`Client`] unchanged.
    pub fn cluster(discover: impl Discover) -> ClusterBuilder {
        ClusterBuilder::new(discover)
    }

    /// A client whose calls `backend` carries.
    pub(crate) fn from_backend(backend: Arc<dyn Backend>, options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(ClientInner { options, backend }),
        }
    }

    /// Per-instance state and counters of a cluster client (`None` for
    /// other clients), in address order.
    pub fn cluster_stats(&self) -> Option<Vec<InstanceStats>> {
        self.inner.backend.cluster_stats()
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Connections open now (0 for an in-process client).
    pub fn open_connections(&self) -> usize {
        self.inner.backend.open_connections()
    }

    /// Calls `service`/`method` with `req` and blocks until the response,
    /// the deadline or the connection's loss.
    ///
    /// # Errors
    ///
    /// The server's status, or DEADLINE_EXCEEDED, UNAVAILABLE,
    /// RESOURCE_EXHAUSTED (too many calls in flight, request too large),
    /// INTERNAL (response does not decode).
    pub fn unary<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<Resp, Status> {
        let (options, observer) = self.intercept(service, method, MethodKind::Unary, options)?;
        let result = self
            .inner
            .backend
            .unary(service, method, req, &options)
            .and_then(|payload| payload.decode().map(|(msg, _)| msg));
        observe(observer, &result);
        result
    }

    /// Starts the client's interceptors for a call: the options to send
    /// (as they changed them) and what ends them.
    fn intercept<'o>(
        &self,
        service: &str,
        method: &str,
        kind: MethodKind,
        options: &'o CallOptions,
    ) -> Result<(Cow<'o, CallOptions>, Option<CallGuard>), Status> {
        let chain = &self.inner.options.interceptors;
        if chain.is_empty() {
            return Ok((Cow::Borrowed(options), None));
        }
        let mut options = options.clone();
        let now = Instant::now();
        let info = CallInfo {
            side: crate::intercept::Side::Client,
            service: Cow::Owned(service.to_owned()),
            method: Cow::Owned(method.to_owned()),
            kind,
            method_id: None,
            peer: None,
            deadline: options
                .timeout
                .or(self.inner.options.default_timeout)
                .and_then(|t| now.checked_add(t)),
            since: now,
        };
        let observer = CallGuard::start(chain, info, &mut options.metadata, None)?;
        Ok((Cow::Owned(options), observer))
    }

    /// As [`unary`](Client::unary), with the metadata of the OK response
    /// (what the handler set with
    /// [`Context::set_response_metadata`](crate::Context::set_response_metadata)).
    /// The async form: [`CallFuture::with_metadata`].
    ///
    /// # Errors
    ///
    /// As [`unary`](Client::unary); an error's metadata is its status's.
    pub fn unary_with_metadata<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<(Resp, Metadata), Status> {
        let (options, observer) = self.intercept(service, method, MethodKind::Unary, options)?;
        let result = self
            .inner
            .backend
            .unary(service, method, req, &options)
            .and_then(Payload::decode);
        observe(observer, &result);
        result
    }

    /// Starts a call and returns its future. Any executor can await it; it
    /// resolves to DEADLINE_EXCEEDED at its deadline even if it is not
    /// polled then. Dropping it cancels the call (a late response is
    /// dropped).
    ///
    /// The request is sent before this returns — except while other futures
    /// of the same connection have been completed and woken but not yet
    /// polled: their tasks are about to run and most start calls too, so
    /// the request waits for the last of them, and all go out in one
    /// `sendmsg` (within a millisecond at worst, if those futures are never
    /// polled). This is what makes many tasks on one executor share writes.
    pub fn unary_async<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> CallFuture<Resp> {
        let (options, observer) = match self.intercept(service, method, MethodKind::Unary, options)
        {
            Ok(started) => started,
            Err(status) => return CallFuture::failed(status),
        };
        self.inner
            .backend
            .start(service, method, req, &options, true)
            .cast()
            .observed(observer)
    }

    /// Opens a bidirectional (or client-streaming) call of
    /// `service`/`method`: write requests into the sink (dropping or
    /// closing it ends them), read responses from the stream (dropping it
    /// before the end cancels the call). Nothing blocks here: the opening
    /// is on its way when this returns. The call's deadline
    /// ([`CallOptions::with_timeout`], else the client's default) ends both
    /// halves with DEADLINE_EXCEEDED and cancels the handler.
    ///
    /// For a client-streaming call, [`RecvStream::single`] waits for the
    /// one response ([`client_stream`](Client::client_stream) says which
    /// kind it is to the interceptors; this reports Bidi).
    ///
    /// # Errors
    ///
    /// UNAVAILABLE (no connection), RESOURCE_EXHAUSTED (too many streams
    /// open on the connection), UNIMPLEMENTED for an in-process client.
    pub fn open_stream<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
    ) -> Result<(SendSink<Req>, RecvStream<Resp>), Status> {
        self.stream(service, method, MethodKind::Bidi, None, options)
    }

    /// As [`open_stream`](Client::open_stream), for a client-streaming
    /// call (one response: [`RecvStream::single`]); the interceptors see
    /// its kind as [`MethodKind::ClientStreaming`]. The generated stubs of
    /// client-streaming methods call this.
    ///
    /// # Errors
    ///
    /// As [`open_stream`](Client::open_stream).
    pub fn client_stream<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
    ) -> Result<(SendSink<Req>, RecvStream<Resp>), Status> {
        self.stream(service, method, MethodKind::ClientStreaming, None, options)
    }

    /// Opens a server-streaming call of `service`/`method` with its one
    /// request `req`; read the responses from the returned stream
    /// (dropping it before the end cancels the call).
    ///
    /// # Errors
    ///
    /// As [`open_stream`](Client::open_stream).
    pub fn server_stream<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<RecvStream<Resp>, Status> {
        self.stream(
            service,
            method,
            MethodKind::ServerStreaming,
            Some(req),
            options,
        )
        .map(|(_sink, responses)| responses)
    }

    fn stream<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        kind: MethodKind,
        first: Option<&Req>,
        options: &CallOptions,
    ) -> Result<(SendSink<Req>, RecvStream<Resp>), Status> {
        let (options, observer) = self.intercept(service, method, kind, options)?;
        let first = first.map(|req| req as &dyn EncodeBody);
        match self.inner.backend.stream(service, method, first, &options) {
            Ok(shared) => {
                let (sink, responses) = caller_halves(shared);
                Ok((sink, responses.observed(observer)))
            }
            Err(status) => {
                observe::<()>(observer, &Err(status.clone()));
                Err(status)
            }
        }
    }

    /// Sends a ONEWAY call: no response, no error from the server.
    ///
    /// # Errors
    ///
    /// Only local ones: the request could not be sent.
    pub fn oneway<Req: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let (options, observer) = self.intercept(service, method, MethodKind::Unary, options)?;
        let result = self.inner.backend.oneway(service, method, req, &options);
        observe(observer, &result);
        result
    }

    /// Pings the server (one connection) and waits for its pong.
    ///
    /// # Errors
    ///
    /// DEADLINE_EXCEEDED after `timeout`; UNAVAILABLE if the connection is lost.
    pub fn ping(&self, timeout: Duration) -> Result<(), Status> {
        self.inner.backend.ping(timeout)
    }
}
