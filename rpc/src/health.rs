//! The standard health service, `grpc.health.v1.Health` (grpc/grpc
//! `doc/health-checking.md`): `Check` answers a service's serving status
//! now, `Watch` streams it as it changes. Served over gRPC (for load
//! balancers, Kubernetes probes, `grpcurl`, `grpc_health_probe`) and over
//! our own protocol alike.
//!
//! Turn it on with [`ServerBuilder::health`](crate::ServerBuilder::health):
//! every service registered by then, and the server as a whole (the empty
//! name), is SERVING; a graceful [`Server::shutdown`](crate::Server::shutdown)
//! makes them NOT_SERVING first, so that watchers move away while calls in
//! flight finish. The returned [`HealthReporter`] changes statuses.
//!
//! ```
//! use ferropoll_rpc::health::ServingStatus;
//! use ferropoll_rpc::Server;
//!
//! let mut builder = Server::builder();
//! builder.num_loops(1);
//! let health = builder.health();
//! let server = builder.build()?;
//! assert_eq!(health.status(""), Some(ServingStatus::Serving));
//! health.set("", ServingStatus::NotServing); // e.g. a dependency is down
//! # server.shutdown(std::time::Duration::from_secs(1))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::Mutex;

use crate::context::Context;
use crate::service::{Reply, Service};
use crate::status::Status;
use crate::stream::{MethodKind, StreamCall};
use crate::task::{AsyncReply, BoxFuture};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; empty for the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`] as its wire number.
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    /// Not known.
    Unknown = 0,
    /// Serving.
    Serving = 1,
    /// Not serving (shutting down, or told so).
    NotServing = 2,
    /// `Watch` of a service the server does not know.
    ServiceUnknown = 3,
}

/// The statuses a health service reports; a cheap `Clone` handle.
#[derive(Clone, Default)]
pub struct HealthReporter {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    statuses: Mutex<HashMap<String, ServingStatus>>,
    /// Bumped on every change; watchers compare it.
    version: AtomicU64,
    /// The wakers of waiting `Watch` calls, by watcher id. A watcher's entry
    /// leaves with its future, so a call dropped with its connection holds
    /// nothing here (a waker holds its task, and the task its connection).
    watchers: Mutex<HashMap<u64, Waker>>,
    next_watcher: AtomicU64,
}

impl std::fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthReporter")
            .field("statuses", &*self.inner.statuses.lock())
            .finish()
    }
}

impl HealthReporter {
    /// A reporter with no statuses.
    pub fn new() -> HealthReporter {
        HealthReporter::default()
    }

    /// Sets `service`'s status (`""`: the server as a whole); watchers hear
    /// of a change.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let old = self
            .inner
            .statuses
            .lock()
            .insert(service.to_owned(), status);
        if old != Some(status) {
            self.changed();
        }
    }

    /// Sets every known service's status.
    pub fn set_all(&self, status: ServingStatus) {
        for s in self.inner.statuses.lock().values_mut() {
            *s = status;
        }
        self.changed();
    }

    /// `service`'s status, if it is known.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.inner.statuses.lock().get(service).copied()
    }

    fn changed(&self) {
        self.inner.version.fetch_add(1, Ordering::SeqCst);
        let woken: Vec<Waker> = self.inner.watchers.lock().drain().map(|(_, w)| w).collect();
        for w in woken {
            w.wake();
        }
    }

    /// Resolves once a status changed after `since` (a version).
    fn changed_since(&self, since: u64) -> Changed<'_> {
        Changed {
            reporter: self,
            since,
            id: self.inner.next_watcher.fetch_add(1, Ordering::Relaxed),
        }
    }
}

struct Changed<'a> {
    reporter: &'a HealthReporter,
    since: u64,
    id: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let inner = &self.reporter.inner;
        if inner.version.load(Ordering::SeqCst) != self.since {
            return Poll::Ready(());
        }
        inner.watchers.lock().insert(self.id, cx.waker().clone());
        // A change between the check and the registration is seen here.
        if inner.version.load(Ordering::SeqCst) != self.since {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.reporter.inner.watchers.lock().remove(&self.id);
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// `grpc.health.v1.Health` over a [`HealthReporter`]; registered by
/// [`ServerBuilder::health`](crate::ServerBuilder::health), or by hand.
#[derive(Clone, Debug)]
pub struct HealthService {
    reporter: HealthReporter,
}

impl HealthService {
    /// The service answering from `reporter`.
    pub fn new(reporter: HealthReporter) -> HealthService {
        HealthService { reporter }
    }
}

impl Service for HealthService {
    fn name(&self) -> &'static str {
        "grpc.health.v1.Health"
    }

    fn methods(&self) -> &'static [&'static str] {
        &["Check", "Watch"]
    }

    fn kind(&self, method: usize) -> MethodKind {
        if method == 1 {
            MethodKind::ServerStreaming
        } else {
            MethodKind::Unary
        }
    }

    fn is_async(&self, method: usize) -> bool {
        method == 1
    }

    fn call(&self, method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        if method != 0 {
            return reply.unknown_method();
        }
        reply.unary(ctx, request, |_, req: HealthCheckRequest| {
            match self.reporter.status(&req.service) {
                Some(s) => Ok(response(s)),
                None => Err(Status::not_found(format!(
                    "unknown service {:?}",
                    req.service
                ))),
            }
        })
    }

    fn call_async(&self, _: usize, _: Context, _: LinkBuffer) -> BoxFuture<AsyncReply> {
        Box::pin(std::future::ready(AsyncReply::error(
            Status::unimplemented("Check is not async"),
        )))
    }

    /// `Watch`: the status now, then each change, until the client goes.
    /// A watch of an unknown service reports SERVICE_UNKNOWN and goes on
    /// (the service may be registered later).
    fn call_stream_async(
        &self,
        _: usize,
        _: Context,
        stream: StreamCall,
    ) -> BoxFuture<Result<(), Status>> {
        let reporter = self.reporter.clone();
        Box::pin(async move {
            let (mut requests, mut sink) =
                stream.into_parts::<HealthCheckRequest, HealthCheckResponse>();
            let req = match requests.message().await {
                Some(r) => r?,
                None => return Err(Status::invalid_argument("Watch needs a request")),
            };
            let mut last = None;
            loop {
                let version = reporter.inner.version.load(Ordering::SeqCst);
                let now = reporter
                    .status(&req.service)
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    sink.send_async(&response(now)).await?;
                    last = Some(now);
                }
                reporter.changed_since(version).await;
            }
        })
    }
}
