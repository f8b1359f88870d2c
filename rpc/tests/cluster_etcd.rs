//! etcd discovery against a real etcd (feature `etcd`): servers register
//! themselves under a prefix with a kept-alive lease, a cluster client
//! watches it; registrations appear and disappear with the servers' lives;
//! calls spread over three servers, survive one being killed and reach it
//! again once it is back.
//!
//! The etcd endpoint comes from `FERROPOLL_ETCD` (e.g.
//! `http://127.0.0.1:2379`); `bash .ci/test` starts an etcd on loopback and
//! sets it. Without it every test fails, saying so. Each test works under a
//! prefix of its own, so a shared etcd is fine.
//!
//! Every test holds a `LeakCheck` (serialising them, and checking that
//! descriptors and buffers return to their baseline); waits are bounded
//! conditions.

#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::cluster::{
    Discover, EtcdDiscover, EtcdRegistrar, HealthConfig, Instance, Registration, RetryPolicy,
};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Dispatch, LinkBuffer, Listener, Reply,
    Server, Service, Status,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};

const SVC: &str = "test.Node";

/// The etcd endpoint under test, or a panic that says how to get one.
fn endpoint() -> String {
    match std::env::var("FERROPOLL_ETCD") {
        Ok(e) if !e.trim().is_empty() => e.trim().to_owned(),
        _ => panic!(
            "FERROPOLL_ETCD is not set: the etcd tests need a running etcd. Start one \
             (Debian package etcd-server), e.g. `etcd --data-dir $(mktemp -d) \
             --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls \
             http://127.0.0.1:2379`, then run with FERROPOLL_ETCD=http://127.0.0.1:2379 \
             (`bash .ci/test` does all this)"
        ),
    }
}

/// A key prefix no other test (nor an earlier run) uses.
fn fresh_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("/ferropoll-test/{}-{nanos}/{test}", std::process::id())
}

/// A plain etcd client of the test's own, to look at the keys and leases
/// directly rather than through the code under test.
struct Raw {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Raw {
    fn get() -> &'static Raw {
        static RAW: OnceLock<Raw> = OnceLock::new();
        RAW.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let ep = endpoint();
            let client = rt
                .block_on(etcd_client::Client::connect([ep.as_str()], None))
                .unwrap_or_else(|e| panic!("cannot connect to etcd at {ep}: {e}"));
            Raw { rt, client }
        })
    }

    /// The keys under `prefix` with the TTL left on each one's lease
    /// (0: no lease).
    fn keys(&self, prefix: &str) -> BTreeMap<String, i64> {
        let mut c = self.client.clone();
        let prefix = format!("{prefix}/");
        self.rt.block_on(async move {
            let resp = c
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            let mut out = BTreeMap::new();
            for kv in resp.kvs() {
                let ttl = if kv.lease() == 0 {
                    0
                } else {
                    c.lease_time_to_live(kv.lease(), None).await.unwrap().ttl()
                };
                out.insert(kv.key_str().unwrap().to_owned(), ttl);
            }
            out
        })
    }

    fn put(&self, key: &str, value: &str) {
        let mut c = self.client.clone();
        let (k, v) = (key.to_owned(), value.to_owned());
        self.rt
            .block_on(async move { c.put(k, v, None).await.unwrap() });
    }
}

/// The long-lived pieces (the test's own etcd client, the discovery
/// runtime's thread) are made before the leak baseline: they live for the
/// whole process.
fn setup() -> LeakCheck {
    let serial = ferropoll_transport::testing::serial();
    let raw = Raw::get();
    let prefix = fresh_prefix("warm-up");
    drop(EtcdDiscover::connect([endpoint()], &prefix).unwrap());
    assert!(raw.keys(&prefix).is_empty());
    drop(serial);
    LeakCheck::new()
}

// ---------------------------------------------------------------- nodes ---

/// `test.Node`: `Echo(String)` and `Bump(String)` both answer the server's
/// name (the client's retry policy makes only `Echo` idempotent).
struct NodeService {
    name: String,
    calls: Arc<AtomicUsize>,
}

impl Service for NodeService {
    fn name(&self) -> &'static str {
        SVC
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Echo", "Bump"]
    }
    fn dispatch(&self, _method: usize) -> Dispatch {
        Dispatch::Inline
    }
    fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        reply.unary(ctx, request, |_ctx, _s: String| Ok(self.name.clone()));
    }
}

struct SharedEcho(Arc<EchoImpl>);

impl common::echo::Echo for SharedEcho {
    fn echo(&self, ctx: &Context, req: EchoRequest) -> Result<common::echo::EchoResponse, Status> {
        common::echo::Echo::echo(&*self.0, ctx, req)
    }
    fn echo_stream(
        &self,
        ctx: &Context,
        requests: ferropoll_rpc::RecvStream<EchoRequest>,
        responses: ferropoll_rpc::SendSink<common::echo::EchoResponse>,
    ) -> Result<(), Status> {
        common::echo::Echo::echo_stream(&*self.0, ctx, requests, responses)
    }
}

/// One server, its counters surviving restarts.
struct Node {
    name: String,
    server: Option<Server>,
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    echo: Arc<EchoImpl>,
}

impl Node {
    fn start(name: &str) -> Node {
        let calls = Arc::new(AtomicUsize::new(0));
        let echo = Arc::new(EchoImpl::default());
        let (server, addr) = serve(name, "127.0.0.1:0".parse().unwrap(), &calls, &echo);
        Node {
            name: name.to_owned(),
            server: Some(server),
            addr,
            calls,
            echo,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Drops the server at once, as a crash would (its own registration,
    /// if any, is the caller's business).
    fn kill(&mut self) {
        drop(self.server.take());
    }

    /// Serves again on the same address.
    fn restart(&mut self) {
        assert!(self.server.is_none());
        let (server, addr) = serve(&self.name, self.addr, &self.calls, &self.echo);
        assert_eq!(addr, self.addr);
        self.server = Some(server);
    }

    /// Graceful shutdown (its shutdown hooks run first).
    fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).unwrap();
        }
    }
}

fn serve(
    name: &str,
    bind: SocketAddr,
    calls: &Arc<AtomicUsize>,
    echo: &Arc<EchoImpl>,
) -> (Server, SocketAddr) {
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(NodeService {
        name: name.to_owned(),
        calls: Arc::clone(calls),
    })
    .unwrap();
    b.register(EchoServer::new(SharedEcho(Arc::clone(echo))))
        .unwrap();
    let server = b.build().unwrap();
    // A restarted server may find the port briefly busy: retry the bind.
    let mut listener = None;
    assert!(wait_until(Duration::from_secs(5), || {
        listener = Listener::bind_tcp(bind).ok();
        listener.is_some()
    }));
    let addr = server.listen(listener.unwrap()).unwrap();
    (server, addr.as_tcp().unwrap())
}

fn three_nodes() -> Vec<Node> {
    (0..3).map(|i| Node::start(&format!("n{i}"))).collect()
}

fn registrar(prefix: &str) -> EtcdRegistrar {
    EtcdRegistrar::connect([endpoint()], prefix)
        .unwrap()
        .ttl(Duration::from_secs(5))
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        default_timeout: Some(Duration::from_secs(10)),
        ..ClientOptions::default()
    }
}

fn fast_health() -> HealthConfig {
    HealthConfig {
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        tick: Duration::from_millis(10),
        ..HealthConfig::default()
    }
}

fn call(client: &Client, method: &str) -> Result<String, Status> {
    client.unary::<String, String>(SVC, method, &"x".to_owned(), &CallOptions::DEFAULT)
}

/// Waits (bounded) until `discover` lists exactly `addrs`.
fn wait_for_instances(discover: &impl Discover, addrs: &[String]) -> bool {
    let mut want: Vec<&str> = addrs.iter().map(String::as_str).collect();
    want.sort_unstable();
    wait_until(Duration::from_secs(10), || {
        let s = discover.instances().snapshot();
        s.instances().iter().map(Instance::addr).collect::<Vec<_>>() == want
    })
}

// ---------------------------------------------------------------- tests ---

#[test]
fn registration_appears_and_disappears_with_the_server() {
    let leaks = setup();
    let raw = Raw::get();
    let prefix = fresh_prefix("life");
    let discover = EtcdDiscover::connect([endpoint()], &prefix).unwrap();
    assert!(discover.instances().snapshot().instances().is_empty());

    // A server registers on start: the key, under a live lease, and the
    // watching client sees it with its weight and tags.
    let node = Node::start("a");
    let reg = registrar(&prefix);
    reg.register_server(
        node.server(),
        Instance::new(node.addr())
            .with_weight(30)
            .with_tag("zone", "z1"),
    )
    .unwrap();
    let key = format!("{prefix}/{}", node.addr());
    let keys = raw.keys(&prefix);
    assert_eq!(keys.keys().collect::<Vec<_>>(), [&key], "{keys:?}");
    assert!((1..=5).contains(&keys[&key]), "a live 5 s lease: {keys:?}");
    assert!(wait_for_instances(&discover, &[node.addr()]));
    let seen = discover.instances().snapshot().instances()[0].clone();
    assert_eq!(seen.weight(), 30);
    assert_eq!(seen.tag("zone"), Some("z1"));

    // The lease is kept alive past its TTL.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) {
        thread::sleep(Duration::from_millis(500));
        assert!(
            raw.keys(&prefix).contains_key(&key),
            "the key outlived its 5 s lease after {:?}",
            t0.elapsed()
        );
    }

    // Graceful shutdown revokes the lease: the key goes at once (well
    // before the TTL), and the client's set empties.
    let t0 = Instant::now();
    node.shutdown();
    assert!(raw.keys(&prefix).is_empty(), "revoked during shutdown");
    assert!(wait_for_instances(&discover, &[]));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    drop((discover, reg));
    leaks.assert_clean();
}

#[test]
fn a_crashed_server_disappears_when_its_lease_expires() {
    let leaks = setup();
    let raw = Raw::get();
    let prefix = fresh_prefix("crash");
    let discover = EtcdDiscover::connect([endpoint()], &prefix).unwrap();
    let mut node = Node::start("a");
    let reg = EtcdRegistrar::connect([endpoint()], &prefix)
        .unwrap()
        .ttl(Duration::from_secs(2));
    let registration: Registration = reg.register(Instance::new(node.addr())).unwrap();
    assert_eq!(registration.key(), format!("{prefix}/{}", node.addr()));
    assert!(wait_for_instances(&discover, &[node.addr()]));
    // The process "dies": no keep-alive, no revoke.
    node.kill();
    registration.abandon();
    assert!(
        raw.keys(&prefix)
            .contains_key(&format!("{prefix}/{}", node.addr())),
        "still registered right after the crash"
    );
    // etcd expires the lease (2 s, rounded up to etcd's minimum TTL).
    assert!(wait_for_instances(&discover, &[]));
    assert!(raw.keys(&prefix).is_empty());
    // An explicit deregistration reports its outcome.
    let node = Node::start("b");
    let registration = reg.register(Instance::new(node.addr())).unwrap();
    assert!(wait_for_instances(&discover, &[node.addr()]));
    registration.deregister().unwrap();
    assert!(raw.keys(&prefix).is_empty());
    assert!(wait_for_instances(&discover, &[]));
    node.shutdown();
    drop((discover, reg));
    leaks.assert_clean();
}

/// Load from several threads until `stop`.
struct Load {
    ok: AtomicUsize,
    errors: Mutex<Vec<Status>>,
    stop: AtomicBool,
}

impl Load {
    fn run(&self, client: &Client, method: &str) {
        let start = Instant::now();
        while !self.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
            match call(client, method) {
                Ok(_) => {
                    self.ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => self.errors.lock().unwrap().push(e),
            }
        }
    }
}

#[test]
fn three_servers_behind_etcd_spread_fail_over_and_come_back() {
    let leaks = setup();
    let raw = Raw::get();
    let prefix = fresh_prefix("three");
    let reg = registrar(&prefix);
    let mut nodes = three_nodes();
    // Nodes 0 and 2 deregister in their graceful shutdown; node 1's
    // registration is held apart so that it outlives a crash of its server.
    reg.register_server(nodes[0].server(), Instance::new(nodes[0].addr()))
        .unwrap();
    let n1_registration = reg.register(Instance::new(nodes[1].addr())).unwrap();
    reg.register_server(nodes[2].server(), Instance::new(nodes[2].addr()))
        .unwrap();
    assert_eq!(raw.keys(&prefix).len(), 3);

    let discover = Arc::new(EtcdDiscover::connect([endpoint()], &prefix).unwrap());
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    assert!(wait_for_instances(&*discover, &addrs));
    let client = Client::cluster(Arc::clone(&discover))
        .options(options())
        .health(fast_health())
        .retry(RetryPolicy::new().idempotent_method(SVC, "Echo"))
        .build()
        .unwrap();

    // Round robin spreads exactly; a generated stub works over it.
    let mut by_name = BTreeMap::new();
    for _ in 0..300 {
        *by_name.entry(call(&client, "Echo").unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        by_name.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "{by_name:?}"
    );
    let echo = EchoClient::new(client.clone());
    for k in 0..30 {
        let payload = bytes::Bytes::from(format!("p{k}"));
        let resp = echo
            .echo(&EchoRequest {
                payload: payload.clone(),
            })
            .unwrap();
        assert_eq!(resp.payload, payload);
    }
    for n in &nodes {
        assert_eq!(n.echo.calls.load(Ordering::SeqCst), 10);
    }

    // Kill node 1 under load (2 threads idempotent, 2 not) while etcd
    // still lists it, then restart it.
    let load_idem = Load {
        ok: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    };
    let load_other = Load {
        ok: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    };
    let ok = || load_idem.ok.load(Ordering::SeqCst) + load_other.ok.load(Ordering::SeqCst);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| load_idem.run(&client, "Echo"));
            s.spawn(|| load_other.run(&client, "Bump"));
        }
        let base: Vec<usize> = nodes.iter().map(Node::calls).collect();
        assert!(
            wait_until(Duration::from_secs(10), || nodes
                .iter()
                .zip(&base)
                .all(|(n, b)| n.calls() >= b + 50)),
            "calls reach all three servers"
        );
        nodes[1].kill();
        let c = ok();
        assert!(
            wait_until(Duration::from_secs(10), || ok() >= c + 500),
            "calls go on with one server down"
        );
        assert!(
            raw.keys(&prefix)
                .contains_key(&format!("{prefix}/{}", nodes[1].addr())),
            "the dead server is still registered: the client copes on its own"
        );
        nodes[1].restart();
        let base = nodes[1].calls();
        assert!(
            wait_until(Duration::from_secs(10), || nodes[1].calls() >= base + 50),
            "the restarted server receives traffic again"
        );

        // Node 2 shuts down gracefully: deregistered first, the client
        // stops sending to it, no call fails.
        let node2 = nodes.pop().unwrap();
        let addr2 = node2.addr();
        node2.shutdown();
        assert!(!raw.keys(&prefix).contains_key(&format!("{prefix}/{addr2}")));
        assert!(wait_until(Duration::from_secs(10), || client
            .cluster_stats()
            .unwrap()
            .len()
            == 2));
        let c = ok();
        assert!(wait_until(Duration::from_secs(10), || ok() >= c + 200));
        load_idem.stop.store(true, Ordering::SeqCst);
        load_other.stop.store(true, Ordering::SeqCst);
    });
    let idem_errors = load_idem.errors.into_inner().unwrap();
    assert!(
        idem_errors.is_empty(),
        "idempotent calls failed: {idem_errors:?}"
    );
    // Only non-idempotent calls that were on the killed server as it died
    // may fail: the one each thread had in flight, and at most one more
    // each that reconnected into the dying listener before it closed.
    let other_errors = load_other.errors.into_inner().unwrap();
    assert!(other_errors.len() <= 4, "{other_errors:?}");
    for e in &other_errors {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
    }

    drop((echo, client));
    n1_registration.deregister().unwrap();
    assert!(wait_for_instances(&*discover, &[nodes[0].addr()]));
    nodes.into_iter().for_each(Node::shutdown);
    assert!(raw.keys(&prefix).is_empty());
    drop((discover, reg));
    leaks.assert_clean();
}

#[test]
fn bad_values_are_skipped_and_bad_endpoints_are_clear_errors() {
    let leaks = setup();
    let raw = Raw::get();
    let prefix = fresh_prefix("bad");
    raw.put(&format!("{prefix}/garbage"), "not json");
    raw.put(
        &format!("{prefix}/ok"),
        r#"{"addr":"127.0.0.1:1","weight":0}"#,
    );
    let discover = EtcdDiscover::connect([endpoint()], &prefix).unwrap();
    let s = discover.instances().snapshot();
    assert_eq!(s.instances().len(), 1, "{s:?}");
    assert_eq!(s.instances()[0].addr(), "127.0.0.1:1");
    assert_eq!(s.instances()[0].weight(), 1, "weight 0 becomes 1");
    // A watched garbage put is skipped too; a good one is applied.
    raw.put(&format!("{prefix}/garbage2"), "{");
    raw.put(&format!("{prefix}/ok2"), r#"{"addr":"127.0.0.1:2"}"#);
    assert!(wait_for_instances(
        &discover,
        &["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()]
    ));
    drop(discover);

    // Nothing listens there: UNAVAILABLE, promptly, saying where.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let t0 = Instant::now();
    let e = EtcdDiscover::connect([dead_addr.as_str()], &prefix).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("etcd"), "{e}");
    let e = EtcdRegistrar::connect([dead_addr.as_str()], &prefix).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    leaks.assert_clean_within(Duration::from_secs(10));
}
