//! What carries a [`Client`](crate::Client)'s calls: one trait, one
//! implementation per way of reaching a server — connections of our native
//! protocol ([`NetClient`](crate::net_client::NetClient)), a cluster of
//! them ([`ClusterBackend`](crate::cluster::client::ClusterBackend)), an
//! engine in this process ([`InProcess`]). Another wire protocol is one
//! more implementation; the client's typed API, its interceptors and the
//! generated stubs stay as they are.
//!
//! The trait is object-safe: requests arrive as `&dyn EncodeBody` (encoded
//! by their own type's code, straight into the output), responses leave
//! untyped (`CallFuture<()>`, a raw stream) and the client gives them
//! their types back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferropoll_linkbuffer::LinkBuffer;

use crate::call::{CallFuture, Payload};
use crate::client::CallOptions;
use crate::cluster::InstanceStats;
use crate::codec::EncodeBody;
use crate::sansio::ClientSession;
use crate::server::{ServerConn, ServerEngine};
use crate::status::Status;
use crate::stream::StreamShared;

/// A way of carrying calls to a server (see the module docs).
pub(crate) trait Backend: Send + Sync + 'static {
    /// Where the calls go, for `Debug`.
    fn describe(&self) -> String;

    /// Starts a unary call. `for_async`: the caller will await the future
    /// rather than block on it, so the request may wait briefly to share a
    /// write (see [`Client::unary_async`](crate::Client::unary_async)) and
    /// the deadline must fire even if the future is not polled.
    fn start(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
        for_async: bool,
    ) -> CallFuture<()>;

    /// A blocking unary call: the response's payload or the final status.
    fn unary(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<Payload, Status> {
        self.start(service, method, req, options, false)
            .wait_outcome()
    }

    /// Opens a streaming call; `first` is a server-streaming call's one
    /// request (sent with the opening, followed by the half-close).
    fn stream(
        &self,
        service: &str,
        method: &str,
        first: Option<&dyn EncodeBody>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status>;

    /// Sends a ONEWAY call.
    fn oneway(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<(), Status>;

    /// Pings the server and waits for its answer.
    fn ping(&self, timeout: Duration) -> Result<(), Status>;

    /// Connections open now.
    fn open_connections(&self) -> usize;

    /// Per-instance state of a cluster (`None` for anything else).
    fn cluster_stats(&self) -> Option<Vec<InstanceStats>> {
        None
    }
}

/// The calls of a client of an engine in this process: each request's
/// bytes go through [`ServerEngine::process`] on the calling thread.
pub(crate) struct InProcess {
    pub(crate) engine: Arc<ServerEngine>,
    pub(crate) conn: ServerConn,
    pub(crate) session: ClientSession,
}

impl InProcess {
    /// One round trip through the engine of what is in `wire`.
    fn exchange(&self, mut wire: LinkBuffer) {
        wire.flush();
        if wire.is_empty() {
            return;
        }
        let mut back = LinkBuffer::new();
        let mut deferred = Vec::new();
        let result = self.engine.process(
            &self.conn,
            &mut wire,
            &mut back,
            &mut deferred,
            Instant::now(),
        );
        for call in deferred {
            call.run(&mut back);
        }
        back.flush();
        // Complete what was answered before a protocol error, then fail the rest.
        if let Err(e) = self.session.handle_input(&mut back) {
            tracing::warn!("in-process client: {e}");
        }
        if let Err(e) = result {
            self.session.close(Status::unavailable(format!(
                "in-process server rejected a frame: {e}"
            )));
        }
    }
}

impl Backend for InProcess {
    fn describe(&self) -> String {
        "in-process".to_owned()
    }

    fn start(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
        _for_async: bool,
    ) -> CallFuture<()> {
        let mut wire = LinkBuffer::new();
        let call = self
            .session
            .start_call(&mut wire, service, method, req, options);
        self.exchange(wire);
        call
    }

    fn stream(
        &self,
        _service: &str,
        _method: &str,
        _first: Option<&dyn EncodeBody>,
        _options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        Err(Status::unimplemented(
            "streaming calls need a connection (Client::connect)",
        ))
    }

    fn oneway(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let mut wire = LinkBuffer::new();
        self.session
            .send_oneway(&mut wire, service, method, req, options)?;
        self.exchange(wire);
        Ok(())
    }

    fn ping(&self, timeout: Duration) -> Result<(), Status> {
        let mut wire = LinkBuffer::new();
        let call = self.session.start_ping(&mut wire, Some(timeout));
        self.exchange(wire);
        call.wait()
    }

    fn open_connections(&self) -> usize {
        0
    }
}
