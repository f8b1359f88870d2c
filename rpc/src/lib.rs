//! A small protobuf RPC framework for ferropoll: framing, a server engine, a
//! multiplexed client, gRPC-style status codes and deadlines.
//!
//! ```
//! use std::sync::Arc;
//! use ferropoll_rpc::{CallOptions, Client, ClientOptions, Context, LinkBuffer, Listener, Reply, Server, ServerEngine, Service};
//!
//! /// A hand-written service (generated code does this for you).
//! struct Upper;
//! impl Service for Upper {
//!     fn name(&self) -> &'static str { "demo.Upper" }
//!     fn methods(&self) -> &'static [&'static str] { &["Call"] }
//!     fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
//!         reply.unary(ctx, request, |_ctx, s: String| Ok(s.to_uppercase()))
//!     }
//! }
//!
//! // Over a socket...
//! let mut builder = Server::builder();
//! builder.num_loops(1);
//! builder.register(Upper)?;
//! let server = builder.build()?;
//! let addr = server.listen(Listener::bind_tcp("127.0.0.1:0")?)?;
//! let client = Client::connect(&addr.to_string(), ClientOptions::default())?;
//! let out: String = client.unary("demo.Upper", "Call", &"hi".to_owned(), &CallOptions::DEFAULT)?;
//! assert_eq!(out, "HI");
//! server.shutdown(std::time::Duration::from_secs(1))?;
//!
//! // ...or in process.
//! let mut engine = ServerEngine::new();
//! engine.register(Upper)?;
//! let client = Client::in_process(Arc::new(engine), ClientOptions::default());
//! let out: String = client.unary("demo.Upper", "Call", &"hi".to_owned(), &CallOptions::DEFAULT)?;
//! assert_eq!(out, "HI");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The wire protocol is written down in `rpc/PROTOCOL.md`: a 12-byte prefix
//! (magic, version, flags, lengths), a protobuf header (sequence id, message
//! type, service, method, status, time budget, metadata), then the protobuf
//! payload. Services are described in `.proto` files and compiled by
//! `ferropoll-proto` into a server trait, a server wrapper implementing
//! [`Service`] and a client stub over [`Client`].
//!
//! The core is **sans-IO**, in the manner of quinn-proto: the [`codec`]
//! turns frames into bytes of a [`LinkBuffer`] and back; the
//! [`ServerEngine`] turns a batch of request bytes into a batch of response
//! bytes (decode, dispatch, handle, encode — so pipelined requests get one
//! write); the [`sansio::ClientSession`] and its [`sansio::CallTable`] start
//! calls and complete them from response bytes, for blocking callers and for
//! any async executor ([`CallFuture`]). These live in [`sansio`].
//!
//! The glue onto `ferropoll-transport` is thin. [`Server`] runs an engine on
//! an event loop: each connection's input is processed on its loop thread,
//! inline handlers answer into the connection's writer, one flush per read
//! batch; pool-dispatched handlers run on gopool. [`Client::connect`] keeps
//! a few multiplexed connections on a client loop of its own, completes
//! calls from that loop thread, and lets concurrent callers share
//! `sendmsg`s. [`Client::in_process`] runs the same bytes through an engine
//! without sockets.
//!
//! **gRPC**: a [`Server`] also answers gRPC clients (grpcio, grpc-go,
//! grpc-java, tonic, ...) over HTTP/2 cleartext with prior knowledge, on the
//! same port: a connection whose first bytes are the HTTP/2 preface is
//! served by a sans-IO HTTP/2 connection (HPACK from the `httlib-hpack` and
//! `loona-hpack` crates) whose calls run through the same engine — the same
//! services and handlers, interceptors, deadlines (`grpc-timeout`) and
//! limits. Unary and streaming methods; statuses in trailers with a
//! percent-encoded `grpc-message`; request metadata (other than the
//! reserved `grpc-*` headers) in [`Context::metadata`], `-bin` values in
//! their base64 form; gzip-compressed requests. The standard health
//! service is one line ([`ServerBuilder::health`], module [`health`]).
//! Not yet: compressed responses, TLS, a gRPC client, reflection.
//!
//! Performance rules kept on the server path: a request's payload is a
//! zero-copy slice of the connection's input (its `bytes` fields decode as
//! `Bytes` views of it); service and method are looked up from the header's
//! bytes without allocating; the response is encoded once, straight into the
//! output buffer, its lengths computed first.
//!
//! # Streams
//!
//! Methods declared with `stream` in the `.proto` are streaming calls
//! (server-streaming, client-streaming, bidi; see "Streams" in
//! `PROTOCOL.md`). A handler gets a [`RecvStream`] of requests and/or a
//! [`SendSink`] for responses, and returns the call's final status; a
//! caller gets the symmetric pair from [`Client::open_stream`] or
//! [`Client::server_stream`] (the generated stubs wrap both). Each stream
//! has a credit window per direction, so a slow reader slows its writer
//! down instead of filling memory: [`SendSink::send`] waits for window.
//! Both halves have blocking forms (`send`, `recv`, iteration) and async
//! ones (`send_async`, `message`). Dropping a caller's [`RecvStream`]
//! cancels the call (the handler's next receive or send fails with
//! CANCELLED); the deadline ends both sides with DEADLINE_EXCEEDED.
//! Synchronous streaming handlers run on the pool, one worker per open
//! stream; async ones (below) run on the loop and cost no thread.
//!
//! # Async handlers
//!
//! The generator also writes a `<Service>Async` trait, implemented with
//! `async fn`, and a `<Service>AsyncServer` wrapper to register. Its futures
//! are polled **on the connection's event-loop thread**: once, at once,
//! when the request is decoded — a future ready then costs what an inline
//! handler costs — and again whenever they are woken, back onto that loop
//! (the waker is ours: no runtime is involved). What handlers send while
//! the loop runs them is written with one flush per round. A future must
//! therefore not block, and rpc depends on no runtime. **The rule for
//! runtime-bound libraries**: a future that needs tokio's context — a
//! `tokio::time::sleep`, a `tokio::net::TcpStream`, an HTTP client built on
//! them — must be *created and polled* on a tokio runtime running beside
//! the server: spawn it there and await the join handle, which any executor
//! can await.
//!
//! ```ignore
//! async fn lookup(&self, ctx: &Context, req: LookupRequest) -> Result<LookupResponse, Status> {
//!     let url = req.url.clone();
//!     let body = self.tokio.spawn(async move { http_get(&url).await })  // on tokio
//!         .await                                                         // awaited here
//!         .map_err(|e| Status::internal(e.to_string()))??;
//!     Ok(LookupResponse { body })
//! }
//! ```
//!
//! A connection that closes drops the futures of its waiting handlers
//! (they stop at the `await` they were at). `rpc/tests/async_handlers.rs`
//! runs handlers awaiting tokio timers and tokio TCP connections.
//!
//! # Interceptors
//!
//! An ordered chain of [`Interceptor`]s runs around every call, on a server
//! ([`ServerBuilder::intercept`]) and on a client
//! ([`ClientOptions::interceptors`]): each sees the call start (service,
//! method, kind, metadata, deadline, peer) and may reject it or change its
//! metadata, and sees it end with its status code and duration — on every
//! path (inline, pool, async, streaming; CANCELLED for a call dropped
//! without a status). Three ship in [`intercept`]: a `tracing` span per
//! call with W3C `traceparent` propagation ([`intercept::TracingInterceptor`]:
//! a handler's own calls continue its trace), per-method load shedding
//! ([`intercept::ConcurrencyLimit`]) and, with feature `metrics`, Prometheus
//! metrics through `prometheus-client` (`MetricsInterceptor`). None
//! installed costs nothing.
//!
//! Feature `dns` (not a default) adds DNS discovery ([`cluster::DnsDiscover`]);
//! feature `etcd` adds etcd discovery and registration
//! ([`cluster::EtcdDiscover`], [`cluster::EtcdRegistrar`]; its build needs
//! `protoc`); feature `metrics` adds `MetricsInterceptor`.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod call;
mod client;
pub mod cluster;
pub mod codec;
mod context;
mod deadline_timer;
mod grpc;
mod h2;
mod hash;
pub mod health;
pub mod intercept;
mod keepalive;
mod metadata;
#[cfg(feature = "metrics")]
mod metrics;
mod net_client;
mod net_server;
pub mod sansio;
mod server;
mod service;
mod status;
mod stream;
mod task;

/// The in-memory gRPC server the `h2` fuzz target drives; not API.
#[doc(hidden)]
pub fn __fuzz_grpc_server(data: &[u8]) {
    grpc::fuzz::run(data);
}

pub use call::{CallFuture, WithMetadata};
pub use client::{CallOptions, Client, ClientOptions};
pub use codec::{Frame, Limits, ProtocolError};
pub use context::{Context, PeerAddr};
pub use ferropoll_linkbuffer::LinkBuffer;
pub use ferropoll_transport::{Addr, Listener};
pub use intercept::{Interceptor, Interceptors};
pub use keepalive::{Keepalive, PingPolicy};
pub use metadata::{Metadata, MetadataEntry};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::MetricsInterceptor;
pub use net_server::{Server, ServerBuilder};
pub use server::{RegisterError, ServerEngine, ServiceConfig};
pub use service::{Dispatch, Reply, Service};
pub use status::{Code, Status};
pub use stream::{
    INITIAL_WINDOW, MESSAGE_OVERHEAD, MethodKind, NextMessage, RecvStream, SendMessage, SendSink,
    StreamCall,
};
pub use task::{AsyncReply, BoxFuture};
