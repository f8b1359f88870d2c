//! What a handler knows about the call it serves.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metadata::Metadata;

/// The address of the peer of a connection, opaque so that the transport can
/// describe TCP, Unix and in-process peers alike. Cloning is cheap (a copy
/// or a reference count).
///
/// ```
/// use ferropoll_rpc::PeerAddr;
/// let tcp = PeerAddr::from("127.0.0.1:7000".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(tcp.to_string(), "127.0.0.1:7000");
/// assert!(tcp.socket_addr().is_some());
/// let unix = PeerAddr::other("unix:/run/kv.sock");
/// assert_eq!(unix.socket_addr(), None);
/// assert_eq!(unix.to_string(), "unix:/run/kv.sock");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PeerAddr(Repr);

#[derive(Clone, Default, PartialEq, Eq, Hash)]
enum Repr {
    #[default]
    Unknown,
    Socket(SocketAddr),
    Other(Arc<str>),
}

impl PeerAddr {
    /// A peer whose address is not known.
    pub const fn unknown() -> PeerAddr {
        PeerAddr(Repr::Unknown)
    }

    /// A peer described by text (a Unix socket path, `"in-process"`, ...).
    pub fn other(description: impl Into<Arc<str>>) -> PeerAddr {
        PeerAddr(Repr::Other(description.into()))
    }

    /// The IP address and port, for a TCP (or UDP) peer.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.0 {
            Repr::Socket(a) => Some(*a),
            _ => None,
        }
    }

    /// Whether the address is known.
    pub fn is_known(&self) -> bool {
        !matches!(self.0, Repr::Unknown)
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr(Repr::Socket(addr))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Unknown => f.write_str("unknown"),
            Repr::Socket(a) => a.fmt(f),
            Repr::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerAddr({self})")
    }
}

/// The call a handler serves: who asked, what, until when, with which
/// metadata. Built by the server for each call (no allocation unless the
/// request carries metadata); build one yourself to unit-test a handler.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::Context;
/// let ctx = Context::new("kv.Kv", "Get")
///     .with_timeout(Duration::from_secs(1))
///     .with_metadata("tenant", "a");
/// assert_eq!(ctx.method(), "Get");
/// assert!(!ctx.is_expired());
/// assert_eq!(ctx.metadata().get("tenant"), Some("a"));
/// ```
#[derive(Debug)]
pub struct Context {
    seq: u64,
    service: &'static str,
    method: &'static str,
    deadline: Option<Instant>,
    metadata: Metadata,
    peer: PeerAddr,
    /// What the handler adds to its OK response.
    response: parking_lot::Mutex<Metadata>,
}

impl Clone for Context {
    fn clone(&self) -> Self {
        Context {
            seq: self.seq,
            service: self.service,
            method: self.method,
            deadline: self.deadline,
            metadata: self.metadata.clone(),
            peer: self.peer.clone(),
            response: parking_lot::Mutex::new(self.response.lock().clone()),
        }
    }
}

impl Context {
    /// A context for `service`/`method`, without deadline, metadata or peer.
    pub fn new(service: &'static str, method: &'static str) -> Context {
        Context {
            seq: 0,
            service,
            method,
            deadline: None,
            metadata: Metadata::new(),
            peer: PeerAddr::unknown(),
            response: parking_lot::Mutex::new(Metadata::new()),
        }
    }

    pub(crate) fn for_call(
        seq: u64,
        service: &'static str,
        method: &'static str,
        deadline: Option<Instant>,
        metadata: Metadata,
        peer: PeerAddr,
    ) -> Context {
        Context {
            seq,
            service,
            method,
            deadline,
            metadata,
            peer,
            response: parking_lot::Mutex::new(Metadata::new()),
        }
    }

    /// Starts the server's interceptors for this call (`Ok(None)` when
    /// there are none); `since`: when its request was read (the call's
    /// duration counts from there, and no clock is read here).
    pub(crate) fn intercept(
        &mut self,
        chain: &crate::intercept::Interceptors,
        kind: crate::stream::MethodKind,
        method_id: usize,
        since: Instant,
    ) -> Result<Option<crate::intercept::CallGuard>, crate::status::Status> {
        if chain.is_empty() {
            return Ok(None);
        }
        let info = crate::intercept::CallInfo {
            side: crate::intercept::Side::Server,
            service: std::borrow::Cow::Borrowed(self.service),
            method: std::borrow::Cow::Borrowed(self.method),
            kind,
            method_id: Some(method_id),
            peer: Some(self.peer.clone()),
            deadline: self.deadline,
            since,
        };
        crate::intercept::CallGuard::start(chain, info, &mut self.metadata, Some(&self.response))
    }

    /// Sets the deadline.
    #[must_use = "with_deadline returns the changed context"]
    pub fn with_deadline(mut self, deadline: Instant) -> Context {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline to now + `timeout`.
    #[must_use = "with_timeout returns the changed context"]
    pub fn with_timeout(self, timeout: Duration) -> Context {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.with_deadline(d),
            None => self,
        }
    }

    /// Adds a metadata entry.
    #[must_use = "with_metadata returns the changed context"]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Context {
        self.metadata.insert(key, value);
        self
    }

    /// Sets the peer address.
    #[must_use = "with_peer returns the changed context"]
    pub fn with_peer(mut self, peer: PeerAddr) -> Context {
        self.peer = peer;
        self
    }

    /// The call's sequence id on its connection (0 for a hand-made context).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Full service name, e.g. `"kv.Kv"`.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Method name, e.g. `"Get"`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// When the caller stops waiting: arrival of the request plus its time
    /// budget. `None` when the caller set no timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it passed); `None` without deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed; a long handler may check it and give
    /// up with [`Status::deadline_exceeded`](crate::Status::deadline_exceeded).
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The request's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The peer's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Adds an entry to the metadata of the call's OK response (an error
    /// carries the metadata of its [`Status`](crate::Status)). The caller
    /// reads it with [`Client::unary_with_metadata`](crate::Client::unary_with_metadata)
    /// or [`CallFuture::with_metadata`](crate::CallFuture::with_metadata).
    /// For a stream's final status, see
    /// [`SendSink::set_trailer`](crate::SendSink::set_trailer).
    ///
    /// ```
    /// let ctx = ferropoll_rpc::Context::new("kv.Kv", "Get");
    /// ctx.set_response_metadata("cache", "hit");
    /// assert_eq!(ctx.take_response_metadata().get("cache"), Some("hit"));
    /// ```
    pub fn set_response_metadata(&self, key: impl Into<String>, value: impl Into<String>) {
        self.response.lock().insert(key, value);
    }

    /// Takes what [`set_response_metadata`](Self::set_response_metadata)
    /// added (the server does when it answers; generated async code too).
    pub fn take_response_metadata(&self) -> Metadata {
        std::mem::take(&mut *self.response.lock())
    }
}
