//! The cluster backend of [`Client`]: one lazily dialed network client per
//! instance, all on one shared client loop, a balancer, health checks,
//! circuit breakers and retries.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ferropoll_transport::TimerHandle;
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::backend::Backend;
use crate::call::{CallFuture, Payload};
use crate::client::{CallOptions, Client, ClientOptions};
use crate::cluster::balancer::{Balancer, Endpoints, RoundRobin};
use crate::cluster::breaker::{BreakerConfig, BreakerState, CircuitBreaker, is_instance_failure};
use crate::cluster::discover::{Discover, Instance};
use crate::cluster::health::HealthConfig;
use crate::cluster::retry::RetryPolicy;
use crate::codec::EncodeBody;
use crate::net_client::{ClientLoop, NetClient, Target};
use crate::status::{Code, Status};
use crate::stream::StreamShared;

/// Configures a cluster [`Client`]: where the instances come from, how a
/// call picks one, retries, circuit breaking and health checks. Get one
/// from [`Client::cluster`].
///
/// Defaults: [`RoundRobin`], [`RetryPolicy::new`] (no method retried after
/// its request went out; transparent retries only), the default
/// [`BreakerConfig`] and [`HealthConfig`], the default [`ClientOptions`]
/// (one connection per instance).
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::{CallOptions, Client, Context, LinkBuffer, Listener, Reply, Server, Service};
/// use ferropoll_rpc::cluster::{PowerOfTwoChoices, RetryPolicy, StaticDiscover};
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
/// let mut addrs = Vec::new();
/// let mut servers = Vec::new();
/// for _ in 0..2 {
///     let mut b = Server::builder();
///     b.num_loops(1);
///     b.register(Upper)?;
///     let server = b.build()?;
///     addrs.push(server.listen(Listener::bind_tcp("127.0.0.1:0")?)?.to_string());
///     servers.push(server);
/// }
///
/// let client = Client::cluster(StaticDiscover::from_addrs(addrs))
///     .balancer(PowerOfTwoChoices::new())
///     .retry(RetryPolicy::new().idempotent_service("demo.Upper"))
///     .build()?;
/// let out: String = client.unary("demo.Upper", "Call", &"hi".to_owned(), &CallOptions::DEFAULT)?;
/// assert_eq!(out, "HI");
/// for s in servers {
///     s.shutdown(Duration::from_secs(1))?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClusterBuilder {
    discover: Arc<dyn Discover>,
    balancer: Arc<dyn Balancer>,
    retry: RetryPolicy,
    breaker: BreakerConfig,
    health: HealthConfig,
    options: ClientOptions,
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("discover", &self.discover)
            .field("balancer", &self.balancer)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("health", &self.health)
            .field("options", &self.options)
            .finish()
    }
}

impl ClusterBuilder {
    /// A builder over `discover`, with the defaults listed above.
    pub fn new(discover: impl Discover) -> ClusterBuilder {
        ClusterBuilder {
            discover: Arc::new(discover),
            balancer: Arc::new(RoundRobin::new()),
            retry: RetryPolicy::new(),
            breaker: BreakerConfig::default(),
            health: HealthConfig::default(),
            options: ClientOptions::default(),
        }
    }

    /// How a call picks an instance.
    pub fn balancer(&mut self, balancer: impl Balancer) -> &mut ClusterBuilder {
        self.balancer = Arc::new(balancer);
        self
    }

    /// Which methods are retried, how often, within which budget.
    pub fn retry(&mut self, policy: RetryPolicy) -> &mut ClusterBuilder {
        self.retry = policy;
        self
    }

    /// The per-instance circuit breaker.
    pub fn breaker(&mut self, cfg: BreakerConfig) -> &mut ClusterBuilder {
        self.breaker = cfg;
        self
    }

    /// Ejection backoff and the health timer.
    pub fn health(&mut self, cfg: HealthConfig) -> &mut ClusterBuilder {
        self.health = cfg;
        self
    }

    /// The options of each instance's connections (timeouts, connections
    /// per instance, limits).
    pub fn options(&mut self, options: ClientOptions) -> &mut ClusterBuilder {
        self.options = options;
        self
    }

    /// Checks the settings, starts the shared client loop and its health
    /// timer. Nothing is dialed yet: each instance's first call dials it.
    /// The builder can build again (another client, its own loop).
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT for a bad setting (named in the message: a zero
    /// health tick, breaker buckets under 1 ms, unusable limits, ...);
    /// UNAVAILABLE if the client loop or its timer cannot start.
    pub fn build(&mut self) -> Result<Client, Status> {
        let invalid =
            |what: &str, why: String| Status::invalid_argument(format!("cluster {what}: {why}"));
        self.health
            .validate()
            .map_err(|why| invalid("health", why))?;
        self.breaker
            .validate()
            .map_err(|why| invalid("breaker", why))?;
        self.options
            .limits
            .validate()
            .map_err(|why| invalid("limits", why))?;
        let shared = ClientLoop::start(&self.options)?;
        let core = Arc::new(ClusterCore {
            discover: Arc::clone(&self.discover),
            balancer: Arc::clone(&self.balancer),
            retry: self.retry.clone(),
            breaker: self.breaker,
            health: self.health,
            options: self.options.clone(),
            shared,
            set: RwLock::new(Arc::new(EndpointSet::default())),
            applied: AtomicU64::new(u64::MAX),
            applying: Mutex::new(()),
            tick: Mutex::new(None),
        });
        core.refresh();
        let weak = Arc::downgrade(&core);
        let timer = core
            .shared
            .event_loop()
            .every(0, core.health.tick, move || {
                if let Some(core) = weak.upgrade() {
                    core.tick();
                }
            })
            .map_err(|e| Status::unavailable(format!("cannot start the health timer: {e}")))?;
        *core.tick.lock() = Some(timer);
        Ok(Client::from_backend(
            Arc::new(ClusterBackend(core)),
            self.options.clone(),
        ))
    }
}

/// What is known about one instance of a cluster client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStats {
    /// The instance.
    pub instance: Instance,
    /// Whether the health checks took it out.
    pub ejected: bool,
    /// Its circuit breaker.
    pub breaker: BreakerState,
    /// Calls in flight to it now.
    pub in_flight: usize,
    /// Calls it answered OK.
    pub succeeded: u64,
    /// Calls to it that failed (any status but OK, including those then
    /// retried elsewhere).
    pub failed: u64,
    /// Its connections open now.
    pub open_connections: usize,
}

struct HealthState {
    /// Consecutive failed dials.
    failures: u32,
    retry_at: Instant,
    probing: bool,
}

/// One instance: its network client and counters.
pub(crate) struct Endpoint {
    /// Unique in the process: how a call remembers the instances it tried.
    id: u64,
    addr: String,
    net: NetClient,
    in_flight: AtomicUsize,
    succeeded: AtomicU64,
    failed: AtomicU64,
    ejected: AtomicBool,
    health: Mutex<HealthState>,
    breaker: CircuitBreaker,
}

impl Endpoint {
    fn is_available(&self, now: Instant) -> bool {
        !self.ejected.load(Ordering::Acquire) && self.breaker.allows(now)
    }

    /// Counts a call in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn record(&self, code: Code) {
        if code == Code::Ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.breaker
            .record(!is_instance_failure(code), Instant::now());
    }

    /// The instance could not be dialed: take it out (once; the probe
    /// extends the ejection).
    fn eject(&self, health: &HealthConfig, why: &Status) {
        let mut h = self.health.lock();
        if self.ejected.load(Ordering::Acquire) {
            return;
        }
        h.failures = h.failures.saturating_add(1);
        let backoff = health.backoff(h.failures);
        h.retry_at = Instant::now() + backoff;
        self.ejected.store(true, Ordering::Release);
        tracing::info!(instance = %self.addr, ?backoff, "instance ejected: {why}");
    }

    /// A connection the keepalive found dead takes the instance out at
    /// once (not after a probe's dial times out); called by the health
    /// timer and by calls that failed UNAVAILABLE, so that the next call
    /// already skips the instance.
    fn note_keepalive(&self, health: &HealthConfig) {
        if let Some(status) = self.net.take_keepalive_failure() {
            self.eject(health, &status);
        }
    }

    /// A probe finished.
    fn probed(&self, health: &HealthConfig, result: Result<(), Status>) {
        let mut h = self.health.lock();
        h.probing = false;
        match result {
            Ok(()) => {
                if self.ejected.swap(false, Ordering::AcqRel) {
                    tracing::info!(instance = %self.addr, "instance back");
                }
                h.failures = 0;
            }
            Err(status) => {
                h.failures = h.failures.saturating_add(1);
                let backoff = health.backoff(h.failures);
                h.retry_at = Instant::now() + backoff;
                if !self.ejected.swap(true, Ordering::AcqRel) {
                    tracing::info!(instance = %self.addr, ?backoff, "instance ejected: {status}");
                }
            }
        }
    }

    fn stats(&self, instance: &Instance) -> InstanceStats {
        InstanceStats {
            instance: instance.clone(),
            ejected: self.ejected.load(Ordering::Acquire),
            breaker: self.breaker.state(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            open_connections: self.net.open_connections(),
        }
    }
}

struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A version of the instance set with an endpoint per instance.
#[derive(Default)]
struct EndpointSet {
    version: u64,
    instances: Vec<Instance>,
    endpoints: Vec<Arc<Endpoint>>,
}

/// The balancer's view of a set for one pick.
struct View<'a> {
    set: &'a EndpointSet,
    now: Instant,
    /// Endpoints (ids) this call tried already.
    skip: &'a [u64],
}

impl Endpoints for View<'_> {
    fn len(&self) -> usize {
        self.set.endpoints.len()
    }
    fn instance(&self, i: usize) -> &Instance {
        &self.set.instances[i]
    }
    fn in_flight(&self, i: usize) -> usize {
        self.set.endpoints[i].in_flight.load(Ordering::Relaxed)
    }
    fn is_available(&self, i: usize) -> bool {
        let ep = &self.set.endpoints[i];
        ep.is_available(self.now) && !self.skip.contains(&ep.id)
    }
}

/// A request already encoded, sent again as is by a retry.
#[derive(Clone, Debug, Default, PartialEq)]
struct Encoded(Bytes);

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// How one attempt ended before its answer.
enum Started {
    /// The request is on its way (or staged): wait for `call`.
    Sent {
        endpoint: Arc<Endpoint>,
        guard: InFlight,
        call: CallFuture<()>,
    },
    /// Nothing was sent; the call is over with this status.
    Failed(Status),
}

/// The state of one call across its attempts.
struct Attempts {
    deadline: Option<Instant>,
    idempotent: bool,
    /// Attempts whose request went out.
    sent: u32,
    /// Endpoints tried (ids).
    tried: Vec<u64>,
    last: Option<Status>,
}

static NEXT_ENDPOINT_ID: AtomicU64 = AtomicU64::new(1);

/// The shared core of a cluster client.
pub(crate) struct ClusterCore {
    discover: Arc<dyn Discover>,
    balancer: Arc<dyn Balancer>,
    retry: RetryPolicy,
    breaker: BreakerConfig,
    health: HealthConfig,
    options: ClientOptions,
    shared: Arc<ClientLoop>,
    set: RwLock<Arc<EndpointSet>>,
    /// The discovery version `set` reflects (`u64::MAX`: none yet).
    applied: AtomicU64,
    applying: Mutex<()>,
    tick: Mutex<Option<TimerHandle>>,
}

impl fmt::Debug for ClusterCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.set.read();
        f.debug_struct("Cluster")
            .field("discover", &self.discover)
            .field("balancer", &self.balancer)
            .field("version", &set.version)
            .field("instances", &set.instances)
            .finish()
    }
}

impl Drop for ClusterCore {
    fn drop(&mut self) {
        if let Some(t) = self.tick.lock().take() {
            t.cancel();
        }
    }
}

fn target_of(addr: &str) -> Target {
    match addr.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Target::Unix(path.into()),
        _ => Target::Tcp(addr.to_owned()),
    }
}

impl ClusterCore {
    /// Applies the discovery's changes, if any: instances still present
    /// keep their endpoint (and connections); new ones get a lazy one;
    /// removed ones are dropped from the set — their connections close
    /// when the calls still holding them finish.
    fn refresh(&self) {
        let version = self.discover.instances().version();
        if self.applied.load(Ordering::Acquire) == version {
            return;
        }
        let Some(_applying) = self.applying.try_lock() else {
            return; // another thread is applying it
        };
        let snapshot = self.discover.instances().snapshot();
        let current = Arc::clone(&self.set.read());
        let old: HashMap<&str, &Arc<Endpoint>> = current
            .endpoints
            .iter()
            .map(|ep| (ep.addr.as_str(), ep))
            .collect();
        let instances: Vec<Instance> = snapshot.instances().to_vec();
        let endpoints: Vec<Arc<Endpoint>> = instances
            .iter()
            .map(|i| match old.get(i.addr()) {
                Some(ep) => Arc::clone(ep),
                None => Arc::new(Endpoint {
                    id: NEXT_ENDPOINT_ID.fetch_add(1, Ordering::Relaxed),
                    addr: i.addr().to_owned(),
                    net: NetClient::lazy(
                        target_of(i.addr()),
                        self.options.clone(),
                        Arc::clone(&self.shared),
                    ),
                    in_flight: AtomicUsize::new(0),
                    succeeded: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    ejected: AtomicBool::new(false),
                    health: Mutex::new(HealthState {
                        failures: 0,
                        retry_at: Instant::now(),
                        probing: false,
                    }),
                    breaker: CircuitBreaker::new(self.breaker),
                }),
            })
            .collect();
        let added = instances
            .iter()
            .filter(|i| !old.contains_key(i.addr()))
            .count();
        let removed = current.endpoints.len() + added - endpoints.len();
        tracing::debug!(
            version = snapshot.version(),
            instances = instances.len(),
            added,
            removed,
            "cluster instances changed"
        );
        self.balancer.rebuild(&instances);
        *self.set.write() = Arc::new(EndpointSet {
            version: snapshot.version(),
            instances,
            endpoints,
        });
        self.applied.store(snapshot.version(), Ordering::Release);
    }

    /// The health timer, on the client loop: applies discovery changes,
    /// starts the probes that are due. Never blocks.
    fn tick(self: &Arc<Self>) {
        self.refresh();
        let set = Arc::clone(&self.set.read());
        let now = Instant::now();
        for ep in &set.endpoints {
            ep.note_keepalive(&self.health);
            let due = {
                let mut h = ep.health.lock();
                let due = !h.probing
                    && if ep.ejected.load(Ordering::Acquire) {
                        now >= h.retry_at
                    } else {
                        ep.net.has_lost_connection()
                    };
                if due {
                    h.probing = true;
                }
                due
            };
            if due {
                let ep = Arc::clone(ep);
                let health = self.health;
                ferropoll_gopool::go(move || {
                    let result = ep.net.probe();
                    ep.probed(&health, result);
                });
            }
        }
    }

    fn current(&self) -> Arc<EndpointSet> {
        self.refresh();
        Arc::clone(&self.set.read())
    }

    /// Picks an available endpoint not in `tried` whose breaker lets a
    /// call through (claimed).
    fn pick(&self, hash_key: Option<u64>, tried: &[u64]) -> Option<Arc<Endpoint>> {
        let set = self.current();
        let now = Instant::now();
        let mut skip: Vec<u64> = tried.to_vec();
        for _ in 0..=set.endpoints.len() {
            let view = View {
                set: &set,
                now,
                skip: &skip,
            };
            let i = self.balancer.pick(&view, hash_key)?;
            let ep = set.endpoints.get(i)?;
            if ep.breaker.try_acquire(now) {
                return Some(Arc::clone(ep));
            }
            // A half-open breaker whose probe is out: another instance.
            skip.push(ep.id);
        }
        None
    }

    fn no_instance(&self) -> Status {
        let set = self.set.read();
        if set.endpoints.is_empty() {
            let why = self
                .discover
                .instances()
                .last_error()
                .map_or_else(String::new, |e| format!(" (discovery: {e})"));
            Status::unavailable(format!("no instance of the service{why}"))
        } else {
            Status::unavailable(format!(
                "no available instance ({} known, all ejected, open or tried)",
                set.endpoints.len()
            ))
        }
    }

    fn new_attempts(&self, service: &str, method: &str, options: &CallOptions) -> Attempts {
        let timeout = options.timeout().or(self.options.default_timeout);
        self.retry.retry_budget().deposit();
        Attempts {
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            idempotent: self.retry.is_idempotent(service, method),
            sent: 0,
            tried: Vec::new(),
            last: None,
        }
    }

    /// Starts one attempt on the next instance, failing over at once
    /// (transparently) while the request cannot leave: the instance cannot
    /// be dialed (it is ejected) or its connections are full.
    fn start_attempt(
        &self,
        a: &mut Attempts,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
        defer: bool,
    ) -> Started {
        loop {
            let now = Instant::now();
            if a.deadline.is_some_and(|d| now >= d) {
                return Started::Failed(a.last.take().unwrap_or_else(|| {
                    Status::deadline_exceeded("deadline passed before an instance took the call")
                }));
            }
            let Some(ep) = self.pick(options.hash_key(), &a.tried) else {
                return Started::Failed(a.last.take().unwrap_or_else(|| self.no_instance()));
            };
            // Retries carry what is left of the call's time.
            let retry_opts;
            let opts = match a.deadline {
                Some(d) if a.sent > 0 || !a.tried.is_empty() => {
                    retry_opts = options
                        .clone()
                        .with_timeout(d.saturating_duration_since(now));
                    &retry_opts
                }
                _ => options,
            };
            let guard = ep.begin();
            let call = ep
                .net
                .start::<dyn EncodeBody, ()>(service, method, req, opts, defer);
            if let Some(status) = call.failure() {
                ep.breaker.release();
                let status = status.clone();
                match status.code() {
                    Code::Unavailable => ep.eject(&self.health, &status),
                    Code::ResourceExhausted => {}
                    _ => return Started::Failed(status),
                }
                a.tried.push(ep.id);
                a.last = Some(status);
                continue;
            }
            a.sent += 1;
            if defer {
                ep.net.watch_deadline(call.deadline());
            }
            return Started::Sent {
                endpoint: ep,
                guard,
                call,
            };
        }
    }

    /// Whether a sent attempt that failed with `status` is retried.
    fn should_retry(&self, a: &Attempts, status: &Status) -> bool {
        status.code() == Code::Unavailable
            && a.idempotent
            && a.sent < self.retry.attempts()
            && a.deadline.is_none_or(|d| Instant::now() < d)
            && self.retry.retry_budget().try_withdraw()
    }

    /// A blocking call: the raw response payload or the final status.
    fn unary_payload(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<crate::call::Payload, Status> {
        let mut a = self.new_attempts(service, method, options);
        loop {
            let (endpoint, guard, call) =
                match self.start_attempt(&mut a, service, method, req, options, false) {
                    Started::Sent {
                        endpoint,
                        guard,
                        call,
                    } => (endpoint, guard, call),
                    Started::Failed(status) => return Err(status),
                };
            let outcome = call.wait_outcome();
            drop(guard);
            let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
            endpoint.record(code);
            if code == Code::Unavailable {
                endpoint.note_keepalive(&self.health);
            }
            match outcome {
                Ok(payload) => return Ok(payload),
                Err(status) if self.should_retry(&a, &status) => {
                    tracing::debug!(instance = %endpoint.addr, "retrying {service}/{method}: {status}");
                    a.tried.push(endpoint.id);
                    a.last = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// An async call: the first attempt starts now; retries (idempotent
    /// methods) start from the future's poll.
    fn unary_async(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> CallFuture<()> {
        let mut a = self.new_attempts(service, method, options);
        let (endpoint, guard, mut call) =
            match self.start_attempt(&mut a, service, method, req, options, true) {
                Started::Sent {
                    endpoint,
                    guard,
                    call,
                } => (endpoint, guard, call),
                Started::Failed(status) => return CallFuture::failed(status),
            };
        let deadline = a.deadline;
        let health = self.health;
        if !a.idempotent {
            let fut = async move {
                let outcome = poll_fn(|cx| call.poll_outcome(cx)).await;
                drop(guard);
                let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
                endpoint.record(code);
                if code == Code::Unavailable {
                    endpoint.note_keepalive(&health);
                }
                outcome
            };
            return CallFuture::boxed(Box::pin(fut), deadline);
        }
        // Retries need the request again: encode it once.
        let mut encoded = vec![0; req.body_len()];
        req.encode_body(&mut encoded);
        let encoded = Encoded(Bytes::from(encoded));
        let core = Arc::clone(self);
        let (service, method, options) = (service.to_owned(), method.to_owned(), options.clone());
        let fut = async move {
            let (mut endpoint, mut guard) = (endpoint, guard);
            loop {
                let outcome = poll_fn(|cx| call.poll_outcome(cx)).await;
                drop(guard);
                let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
                endpoint.record(code);
                if code == Code::Unavailable {
                    endpoint.note_keepalive(&core.health);
                }
                let status = match outcome {
                    Err(status) if core.should_retry(&a, &status) => status,
                    other => return other,
                };
                tracing::debug!(instance = %endpoint.addr, "retrying {service}/{method}: {status}");
                a.tried.push(endpoint.id);
                a.last = Some(status);
                match core.start_attempt(&mut a, &service, &method, &encoded, &options, false) {
                    Started::Sent {
                        endpoint: e,
                        guard: g,
                        call: c,
                    } => {
                        e.net.watch_deadline(c.deadline());
                        (endpoint, guard, call) = (e, g, c);
                    }
                    Started::Failed(status) => return Err(status),
                }
            }
        };
        CallFuture::boxed(Box::pin(fut), deadline)
    }

    /// Sends a ONEWAY call to one instance (transparent failover only).
    fn oneway(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(ep) = self.pick(options.hash_key(), &tried) {
            ep.breaker.release();
            match ep.net.oneway(service, method, req, options) {
                Ok(()) => return Ok(()),
                Err(status) if status.code() == Code::Unavailable => {
                    ep.eject(&self.health, &status);
                    tried.push(ep.id);
                    last = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| self.no_instance()))
    }

    /// Opens a stream on one instance (failover only while opening: a
    /// stream is not retried once it started).
    fn stream(
        &self,
        service: &str,
        method: &str,
        first: Option<&dyn EncodeBody>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(ep) = self.pick(options.hash_key(), &tried) {
            ep.breaker.release();
            match ep.net.stream(service, method, first, options) {
                Ok(stream) => return Ok(stream),
                Err(status) if status.code() == Code::Unavailable => {
                    ep.eject(&self.health, &status);
                    tried.push(ep.id);
                    last = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| self.no_instance()))
    }

    /// Pings one instance.
    fn ping(&self, timeout: std::time::Duration) -> Result<(), Status> {
        let ep = self.pick(None, &[]).ok_or_else(|| self.no_instance())?;
        ep.breaker.release();
        ep.net.ping(timeout)
    }

    /// Connections open to all instances.
    fn open_connections(&self) -> usize {
        let set = Arc::clone(&self.set.read());
        set.endpoints
            .iter()
            .map(|ep| ep.net.open_connections())
            .sum()
    }

    /// Per-instance state and counters, in address order.
    fn stats(&self) -> Vec<InstanceStats> {
        let set = self.current();
        set.instances
            .iter()
            .zip(&set.endpoints)
            .map(|(i, ep)| ep.stats(i))
            .collect()
    }
}

/// A cluster client's calls: balanced over the instances, retried and
/// failed over by the core.
pub(crate) struct ClusterBackend(pub(crate) Arc<ClusterCore>);

impl Backend for ClusterBackend {
    fn describe(&self) -> String {
        format!("{:?}", self.0)
    }

    fn start(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
        _for_async: bool,
    ) -> CallFuture<()> {
        self.0.unary_async(service, method, req, options)
    }

    fn unary(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<Payload, Status> {
        self.0.unary_payload(service, method, req, options)
    }

    fn stream(
        &self,
        service: &str,
        method: &str,
        first: Option<&dyn EncodeBody>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        self.0.stream(service, method, first, options)
    }

    fn oneway(
        &self,
        service: &str,
        method: &str,
        req: &dyn EncodeBody,
        options: &CallOptions,
    ) -> Result<(), Status> {
        self.0.oneway(service, method, req, options)
    }

    fn ping(&self, timeout: std::time::Duration) -> Result<(), Status> {
        self.0.ping(timeout)
    }

    fn open_connections(&self) -> usize {
        self.0.open_connections()
    }

    fn cluster_stats(&self) -> Option<Vec<InstanceStats>> {
        Some(self.0.stats())
    }
}
