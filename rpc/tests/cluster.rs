//! Cluster clients over real loopback servers: spreading, failover when a
//! server dies under load, recovery when it comes back, each balancer's
//! wiring, circuit breaking, retry budget and deadlines, static and DNS
//! discovery (a real DNS server on 127.0.0.1, hickory's).
//!
//! Every test holds a `LeakCheck` (serialising them, and checking that
//! descriptors and buffers return to their baseline); waits are bounded
//! conditions, never sleeps that hope.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::cluster::{
    BreakerConfig, BreakerState, ConsistentHash, DnsDiscover, HealthConfig, Instance,
    PowerOfTwoChoices, RetryBudget, RetryPolicy, StaticDiscover, WeightedRandom,
};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Dispatch, LinkBuffer, Listener, Reply,
    Server, Service, Status,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};

const SVC: &str = "test.Node";

/// Per-server state that survives a restart.
#[derive(Default)]
struct NodeState {
    /// Calls handled (every method), counted as each starts.
    calls: AtomicUsize,
    /// Calls whose handler has returned.
    finished: AtomicUsize,
    /// When non-zero, `Echo` fails with this code.
    fail_code: AtomicU32,
    /// `Echo` sleeps this long first (on the loop thread).
    delay_ms: AtomicU32,
}

/// `test.Node`: `Echo(String) -> String` answers the server's name;
/// `Fail(u32)` fails with that code; `Sleep(u64 ms)` sleeps on a pool
/// worker; `SleepUnavailable(u64 ms)` sleeps then answers UNAVAILABLE.
struct NodeService {
    name: String,
    state: Arc<NodeState>,
}

impl Service for NodeService {
    fn name(&self) -> &'static str {
        SVC
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Echo", "Fail", "Sleep", "SleepUnavailable"]
    }
    fn dispatch(&self, method: usize) -> Dispatch {
        if method >= 2 {
            Dispatch::Pool
        } else {
            Dispatch::Inline
        }
    }
    fn call(&self, method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        self.handle(method, ctx, request, reply);
        self.state.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl NodeService {
    fn handle(&self, method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        match method {
            0 => reply.unary(ctx, request, |_ctx, _s: String| {
                let delay = self.state.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(u64::from(delay)));
                }
                match self.state.fail_code.load(Ordering::SeqCst) {
                    0 => Ok(self.name.clone()),
                    code => Err(Status::new(Code::from_u32(code), "asked to fail")),
                }
            }),
            1 => reply.unary(ctx, request, |_ctx, code: u32| -> Result<(), Status> {
                Err(Status::new(Code::from_u32(code), "asked to fail"))
            }),
            2 => reply.unary(ctx, request, |_ctx, ms: u64| {
                thread::sleep(Duration::from_millis(ms));
                Ok(ms)
            }),
            _ => reply.unary(ctx, request, |_ctx, ms: u64| -> Result<u64, Status> {
                thread::sleep(Duration::from_millis(ms));
                Err(Status::unavailable("overloaded"))
            }),
        }
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

/// One server of a test cluster.
struct Node {
    name: String,
    server: Option<Server>,
    addr: SocketAddr,
    state: Arc<NodeState>,
    echo: Arc<EchoImpl>,
}

impl Node {
    fn start(name: &str, bind: SocketAddr) -> Node {
        let state = Arc::new(NodeState::default());
        let echo = Arc::new(EchoImpl::default());
        let (server, addr) = serve(name, bind, &state, &echo);
        Node {
            name: name.to_owned(),
            server: Some(server),
            addr,
            state,
            echo,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Whether every call this node has started has also returned.
    fn idle(&self) -> bool {
        self.state.finished.load(Ordering::SeqCst) == self.calls()
    }

    /// Drops the server at once (no graceful drain).
    fn kill(&mut self) {
        drop(self.server.take());
    }

    /// Serves again on the same address.
    fn restart(&mut self) {
        assert!(self.server.is_none());
        let (server, addr) = serve(&self.name, self.addr, &self.state, &self.echo);
        assert_eq!(addr, self.addr);
        self.server = Some(server);
    }

    fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).unwrap();
        }
    }
}

fn serve(
    name: &str,
    bind: SocketAddr,
    state: &Arc<NodeState>,
    echo: &Arc<EchoImpl>,
) -> (Server, SocketAddr) {
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(NodeService {
        name: name.to_owned(),
        state: Arc::clone(state),
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
    let addr = addr.as_tcp().unwrap();
    (server, addr)
}

fn three_nodes() -> Vec<Node> {
    (0..3)
        .map(|i| Node::start(&format!("n{i}"), "127.0.0.1:0".parse().unwrap()))
        .collect()
}

/// Health settings that react within tens of milliseconds.
fn fast_health() -> HealthConfig {
    HealthConfig {
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        tick: Duration::from_millis(10),
        ..HealthConfig::default()
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        default_timeout: Some(Duration::from_secs(10)),
        ..ClientOptions::default()
    }
}

fn echo_call(client: &Client) -> Result<String, Status> {
    client.unary::<String, String>(SVC, "Echo", &"x".to_owned(), &CallOptions::DEFAULT)
}

/// Calls `Echo` once per server name, counting answers by name.
fn spread(client: &Client, calls: usize) -> BTreeMap<String, usize> {
    let mut by_name = BTreeMap::new();
    for _ in 0..calls {
        *by_name.entry(echo_call(client).unwrap()).or_insert(0) += 1;
    }
    by_name
}

#[test]
fn round_robin_spreads_evenly_over_three_servers() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .build()
        .unwrap();
    let by_name = spread(&client, 300);
    assert_eq!(by_name.len(), 3, "{by_name:?}");
    for n in &nodes {
        assert_eq!(n.calls(), 100, "round robin is exact");
    }
    let stats = client.cluster_stats().unwrap();
    assert_eq!(stats.len(), 3);
    for s in &stats {
        assert_eq!(s.succeeded, 100);
        assert_eq!(s.failed, 0);
        assert_eq!(s.in_flight, 0);
        assert!(!s.ejected);
        assert_eq!(s.breaker, BreakerState::Closed);
        assert_eq!(s.open_connections, 1);
    }
    assert_eq!(client.open_connections(), 3);
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn generated_stubs_and_async_calls_use_a_cluster_client() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .retry(RetryPolicy::new().idempotent_service("echo.Echo"))
        .build()
        .unwrap();
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
    // Async, idempotent and not, under a plain block_on.
    let futs: Vec<_> = (0..30)
        .map(|k| {
            echo.echo_async(&EchoRequest {
                payload: bytes::Bytes::from(format!("a{k}")),
            })
        })
        .collect();
    for (k, f) in futs.into_iter().enumerate() {
        let resp = futures::executor::block_on(f).unwrap();
        assert_eq!(resp.payload, format!("a{k}").as_bytes());
    }
    let f =
        client.unary_async::<String, String>(SVC, "Echo", &"y".to_owned(), &CallOptions::DEFAULT);
    assert!(futures::executor::block_on(f).unwrap().starts_with('n'));
    // The blocking wait of a cluster future.
    let f =
        client.unary_async::<String, String>(SVC, "Echo", &"y".to_owned(), &CallOptions::DEFAULT);
    assert!(f.wait().unwrap().starts_with('n'));
    for n in &nodes {
        assert_eq!(
            n.echo.calls.load(Ordering::SeqCst),
            20,
            "60 echo calls spread evenly"
        );
    }
    // The OK response's metadata through the cluster client, both forms.
    let meta = EchoRequest {
        payload: bytes::Bytes::from_static(b"meta"),
    };
    let opts = CallOptions::new().with_metadata("k", "v1");
    let (resp, md) = echo.echo_with_metadata(&meta, &opts).unwrap();
    assert_eq!(
        (&resp.payload[..], md.get("echoed")),
        (&b"v1"[..], Some("v1"))
    );
    let (_, md) =
        futures::executor::block_on(echo.echo_async_with(&meta, &opts).with_metadata()).unwrap();
    assert_eq!(md.get("echoed"), Some("v1"));
    // Ping and oneway reach an instance.
    client.ping(Duration::from_secs(5)).unwrap();
    client
        .oneway(SVC, "Echo", &"z".to_owned(), &CallOptions::DEFAULT)
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || nodes
        .iter()
        .map(Node::calls)
        .sum::<usize>()
        == 3));
    drop((echo, client));
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

/// Load from `threads` threads until `stop`; returns (ok, errors).
struct Load {
    ok: AtomicUsize,
    errors: Mutex<Vec<Status>>,
    stop: AtomicBool,
}

impl Load {
    fn new() -> Load {
        Load {
            ok: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    fn run(&self, client: &Client, method: &str) {
        let start = Instant::now();
        while !self.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
            match client.unary::<String, String>(
                SVC,
                method,
                &"x".to_owned(),
                &CallOptions::DEFAULT,
            ) {
                Ok(_) => {
                    self.ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => self.errors.lock().unwrap().push(e),
            }
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }
}

/// Kills node 1 under load from 4 threads, then restarts it; returns the
/// errors seen and checks that traffic spread, continued and came back.
fn kill_and_restart_under_load(client: &Client, mut nodes: Vec<Node>) -> Vec<Status> {
    let load = Load::new();
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| load.run(client, "Echo"));
        }
        assert!(
            wait_until(Duration::from_secs(10), || nodes
                .iter()
                .all(|n| n.calls() >= 50)),
            "calls reach all three servers"
        );
        nodes[1].kill();
        let after_kill = load.ok();
        assert!(
            wait_until(Duration::from_secs(10), || load.ok() >= after_kill + 500),
            "calls go on with one server down"
        );
        let stats = client.cluster_stats().unwrap();
        let dead = stats
            .iter()
            .find(|s| s.instance.addr() == nodes[1].addr())
            .unwrap();
        assert!(dead.ejected, "the dead server is ejected: {dead:?}");
        nodes[1].restart();
        let base = nodes[1].calls();
        assert!(
            wait_until(Duration::from_secs(10), || nodes[1].calls() >= base + 50),
            "the restarted server receives traffic again"
        );
        load.stop.store(true, Ordering::SeqCst);
    });
    nodes.into_iter().for_each(Node::shutdown);
    load.errors.into_inner().unwrap()
}

#[test]
fn killed_server_idempotent_calls_never_fail_and_restart_brings_traffic_back() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .health(fast_health())
        .retry(RetryPolicy::new().idempotent_method(SVC, "Echo"))
        .build()
        .unwrap();
    let errors = kill_and_restart_under_load(&client, nodes);
    assert!(errors.is_empty(), "idempotent calls failed: {errors:?}");
    drop(client);
    leaks.assert_clean();
}

#[test]
fn killed_server_non_idempotent_calls_fail_at_most_in_flight() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .health(fast_health())
        .build()
        .unwrap();
    let errors = kill_and_restart_under_load(&client, nodes);
    // Only the calls in flight on the killed server when it died (one per
    // thread at most) may fail; later ones fail over transparently.
    assert!(errors.len() <= 4, "{} failures: {errors:?}", errors.len());
    for e in &errors {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
    }
    drop(client);
    leaks.assert_clean();
}

#[test]
fn gracefully_stopped_server_idempotent_calls_never_fail() {
    let leaks = LeakCheck::new();
    let mut nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .health(fast_health())
        .retry(RetryPolicy::new().idempotent_method(SVC, "Echo"))
        .build()
        .unwrap();
    let load = Load::new();
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| load.run(&client, "Echo"));
        }
        assert!(wait_until(Duration::from_secs(10), || nodes
            .iter()
            .all(|n| n.calls() >= 50)));
        // Graceful: draining answers UNAVAILABLE "shutting down" — retried.
        nodes.remove(1).shutdown();
        let after = load.ok();
        assert!(wait_until(Duration::from_secs(10), || load.ok() >= after + 500));
        load.stop.store(true, Ordering::SeqCst);
    });
    let errors = load.errors.into_inner().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn async_idempotent_calls_fail_over_when_a_server_dies() {
    let leaks = LeakCheck::new();
    let mut nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .health(fast_health())
        .retry(RetryPolicy::new().idempotent_method(SVC, "Sleep"))
        .build()
        .unwrap();
    // 30 slow calls in flight, 10 per server; kill one server meanwhile.
    let futs: Vec<_> = (0..30)
        .map(|_| client.unary_async::<u64, u64>(SVC, "Sleep", &300, &CallOptions::DEFAULT))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || nodes[1].calls() >= 10));
    nodes[1].kill();
    let results = futures::executor::block_on(futures::future::join_all(futs));
    for r in &results {
        assert_eq!(r.as_ref().ok(), Some(&300), "{r:?}");
    }
    let stats = client.cluster_stats().unwrap();
    let dead = stats
        .iter()
        .find(|s| s.instance.addr() == nodes[1].addr())
        .unwrap();
    assert_eq!(
        dead.failed, 10,
        "its 10 calls failed there, then were retried: {stats:?}"
    );
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn unreachable_instance_is_ejected_probed_and_readmitted() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    // A fourth address where nothing listens yet.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spare_addr = spare.local_addr().unwrap();
    drop(spare);
    let mut addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    addrs.push(spare_addr.to_string());
    let client = Client::cluster(StaticDiscover::from_addrs(addrs))
        .options(options())
        .health(fast_health())
        .build()
        .unwrap();
    // Every call succeeds: the refused dial fails over transparently, even
    // without a retry policy (the request never left).
    let by_name = spread(&client, 120);
    assert_eq!(by_name.values().sum::<usize>(), 120);
    let spare_stats = |client: &Client| {
        client
            .cluster_stats()
            .unwrap()
            .into_iter()
            .find(|s| s.instance.addr() == spare_addr.to_string())
            .unwrap()
    };
    assert!(spare_stats(&client).ejected);
    // It comes up: the background probe lets it back in.
    let mut late = Node::start("late", spare_addr);
    assert!(wait_until(Duration::from_secs(5), || !spare_stats(&client).ejected));
    let by_name = spread(&client, 80);
    assert_eq!(by_name.get("late"), Some(&20), "{by_name:?}");
    late.kill();
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn discovery_changes_keep_the_connections_of_instances_that_stay() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let discover = Arc::new(StaticDiscover::from_addrs(
        nodes[..2].iter().map(Node::addr),
    ));
    let client = Client::cluster(Arc::clone(&discover))
        .options(options())
        .build()
        .unwrap();
    let by_name = spread(&client, 100);
    assert_eq!(by_name.keys().collect::<Vec<_>>(), ["n0", "n1"]);
    let accepted = |n: &Node| n.server.as_ref().unwrap().stats().accepted;
    assert_eq!((accepted(&nodes[0]), accepted(&nodes[1])), (1, 1));

    // n2 joins, n1 leaves.
    discover.set([
        Instance::new(nodes[0].addr()),
        Instance::new(nodes[2].addr()),
    ]);
    let by_name = spread(&client, 100);
    assert_eq!(by_name.keys().collect::<Vec<_>>(), ["n0", "n2"]);
    assert_eq!(accepted(&nodes[0]), 1, "n0's connection was kept");
    assert_eq!(accepted(&nodes[2]), 1);
    // n1's connection is closed once no call holds it.
    assert!(wait_until(Duration::from_secs(5), || nodes[1]
        .server
        .as_ref()
        .unwrap()
        .stats()
        .open
        == 0));
    assert_eq!(client.open_connections(), 2);

    // Everything leaves: calls fail UNAVAILABLE, saying why.
    discover.set([]);
    let e = echo_call(&client).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("no instance"), "{e}");
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn weighted_random_follows_weights_over_sockets() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let instances = nodes
        .iter()
        .zip([10, 10, 80])
        .map(|(n, w)| Instance::new(n.addr()).with_weight(w));
    let client = Client::cluster(StaticDiscover::new(instances))
        .balancer(WeightedRandom::new())
        .options(options())
        .build()
        .unwrap();
    let by_name = spread(&client, 1000);
    // Expected 100 / 100 / 800 (σ ≈ 9.5 and 12.6).
    assert!(by_name["n0"].abs_diff(100) < 60, "{by_name:?}");
    assert!(by_name["n1"].abs_diff(100) < 60, "{by_name:?}");
    assert!(by_name["n2"].abs_diff(800) < 80, "{by_name:?}");
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn power_of_two_choices_avoids_a_slow_server() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .balancer(PowerOfTwoChoices::new())
        .options(options())
        .build()
        .unwrap();
    // Sequential calls (nothing in flight): all three are used.
    let by_name = spread(&client, 300);
    assert_eq!(by_name.len(), 3, "{by_name:?}");
    // n0 turns slow (20 ms a call): 4 threads of calls keep calls in
    // flight there, so P2C sends it far fewer than round robin's third.
    nodes[0].state.delay_ms.store(20, Ordering::SeqCst);
    let base: Vec<usize> = nodes.iter().map(Node::calls).collect();
    let load = Load::new();
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| load.run(&client, "Echo"));
        }
        assert!(wait_until(Duration::from_secs(20), || load.ok() >= 2000));
        load.stop.store(true, Ordering::SeqCst);
    });
    assert!(load.errors.lock().unwrap().is_empty());
    let got: Vec<usize> = nodes
        .iter()
        .zip(&base)
        .map(|(n, b)| n.calls() - b)
        .collect();
    let total: usize = got.iter().sum();
    assert!(
        got[0] * 100 < total * 15,
        "the slow server got {got:?} of {total}"
    );
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn consistent_hash_keeps_a_key_on_one_server() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .balancer(ConsistentHash::new())
        .options(options())
        .build()
        .unwrap();
    let mut owner = BTreeMap::new();
    for k in 0..60 {
        let opts = CallOptions::new().with_hash_key(format!("user-{k}"));
        for _ in 0..5 {
            let who: String = client.unary(SVC, "Echo", &"x".to_owned(), &opts).unwrap();
            let first = owner.entry(k).or_insert_with(|| who.clone());
            assert_eq!(*first, who, "key {k} moved");
        }
    }
    let used: std::collections::BTreeSet<&String> = owner.values().collect();
    assert_eq!(used.len(), 3, "60 keys spread over all servers");
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn breaker_opens_on_a_failing_server_and_closes_after_a_probe() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .breaker(BreakerConfig {
            min_calls: 6,
            failure_percent: 50,
            open_for: Duration::from_millis(300),
            ..BreakerConfig::default()
        })
        .build()
        .unwrap();
    nodes[0]
        .state
        .fail_code
        .store(Code::Internal.as_u32(), Ordering::SeqCst);
    // Round robin: n0 gets every third call and fails it (not retried:
    // INTERNAL is the server's answer). After 6 failures it opens.
    let mut failed = 0;
    for _ in 0..60 {
        if echo_call(&client).is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 6, "the breaker opened after min_calls failures");
    let n0 = |c: &Client| {
        c.cluster_stats()
            .unwrap()
            .into_iter()
            .find(|s| s.instance.addr() == nodes[0].addr())
            .unwrap()
    };
    assert_eq!(n0(&client).breaker, BreakerState::Open);
    let calls_at_open = nodes[0].calls();
    // While open, n0 gets nothing.
    let by_name = spread(&client, 30);
    assert_eq!(by_name.get("n0"), None);
    assert_eq!(nodes[0].calls(), calls_at_open);
    // Fixed, and after the open period one probe closes it.
    nodes[0].state.fail_code.store(0, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = echo_call(&client);
        n0(&client).breaker == BreakerState::Closed
    }));
    let by_name = spread(&client, 30);
    assert_eq!(by_name.get("n0"), Some(&10));
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn retry_budget_exhaustion_stops_retries() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    // Every server answers UNAVAILABLE; the method is idempotent; the budget
    // holds exactly 3 retries and earns none.
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .breaker(BreakerConfig::disabled())
        .retry(
            RetryPolicy::new()
                .idempotent_method(SVC, "Echo")
                .max_attempts(3)
                .budget(RetryBudget::new(0.0, 3, 3)),
        )
        .build()
        .unwrap();
    for n in &nodes {
        n.state
            .fail_code
            .store(Code::Unavailable.as_u32(), Ordering::SeqCst);
    }
    // The first call uses two retries (3 attempts), the second the last
    // one; the rest get no retry — within the second the floor refills
    // (3/s) at most a token or so.
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(echo_call(&client).unwrap_err().code(), Code::Unavailable);
    }
    let total: usize = nodes.iter().map(Node::calls).sum();
    let refill = (t.elapsed().as_secs_f64() * 3.0).ceil() as usize;
    assert!(total >= 13, "10 calls + 3 retries, got {total}");
    assert!(total <= 13 + refill, "retries beyond the budget: {total}");
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

#[test]
fn no_retry_of_deadline_exceeded_nor_past_the_deadline() {
    let leaks = LeakCheck::new();
    let nodes = three_nodes();
    let client = Client::cluster(StaticDiscover::from_addrs(nodes.iter().map(Node::addr)))
        .options(options())
        .breaker(BreakerConfig::disabled())
        .retry(
            RetryPolicy::new()
                .idempotent_service(SVC)
                .max_attempts(5)
                .budget(RetryBudget::new(1.0, 100, 100)),
        )
        .build()
        .unwrap();
    let calls = || nodes.iter().map(Node::calls).sum::<usize>();
    // A slow answer: DEADLINE_EXCEEDED, not retried.
    let opts = CallOptions::new().with_timeout(Duration::from_millis(50));
    let e = client
        .unary::<u64, u64>(SVC, "Sleep", &300, &opts)
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(wait_until(Duration::from_secs(2), || calls() == 1));
    // UNAVAILABLE after 250 ms of a 400 ms budget: a retry gets what is
    // left, runs out of it — DEADLINE_EXCEEDED, and no attempt after that
    // although 5 are allowed and the budget is ample.
    let t = Instant::now();
    let opts = CallOptions::new().with_timeout(Duration::from_millis(400));
    let e = client
        .unary::<u64, u64>(SVC, "SleepUnavailable", &250, &opts)
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    // The caller is not kept past its deadline (by more than a busy
    // machine's scheduling delay); the attempt count below shows the retry
    // got only what was left of the budget.
    assert!(took < Duration::from_millis(400 + 1000), "{took:?}");
    // Once every attempt that reached a server has finished its sleep,
    // count them (an attempt still sleeping is counted already; waiting on
    // the handlers keeps a late one from being missed).
    let idle = || nodes.iter().all(Node::idle);
    assert!(wait_until(Duration::from_secs(5), idle));
    let attempts = calls() - 1;
    assert!((1..=2).contains(&attempts), "{attempts} attempts");
    // Async: the same rules.
    let before = calls();
    let f = client.unary_async::<u64, u64>(SVC, "SleepUnavailable", &250, &opts);
    assert_eq!(
        futures::executor::block_on(f).unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert!(wait_until(Duration::from_secs(5), idle));
    assert!((1..=2).contains(&(calls() - before)));
    drop(client);
    nodes.into_iter().for_each(Node::shutdown);
    leaks.assert_clean();
}

// ---------------------------------------------------------------- DNS ---

mod dns {
    use super::*;
    use hickory_server::Server as DnsServer;
    use hickory_server::net::runtime::TokioRuntimeProvider;
    use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
    use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
    use hickory_server::store::in_memory::InMemoryZoneHandler;
    use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

    type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

    /// A DNS server for the zone `test.` on 127.0.0.1 (UDP), on a runtime
    /// thread of its own.
    pub struct TestDns {
        pub addr: SocketAddr,
        zone: Arc<Zone>,
        rt: Option<tokio::runtime::Runtime>,
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    impl TestDns {
        pub fn start() -> TestDns {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let origin = name("test.");
            let mut zone = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let soa = SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 60, 1);
            assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1));
            assert!(zone.upsert_mut(
                Record::from_rdata(name("node.test."), 1, RData::A(A(Ipv4Addr::LOCALHOST))),
                1
            ));
            // node6: only ::1; dual: both.
            assert!(zone.upsert_mut(
                Record::from_rdata(name("dual.test."), 1, RData::A(A(Ipv4Addr::LOCALHOST))),
                1
            ));
            assert!(zone.upsert_mut(
                Record::from_rdata(
                    name("dual.test."),
                    1,
                    RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
                ),
                1
            ));
            let zone = Arc::new(zone);
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::new(&origin), vec![Arc::clone(&zone) as _]);
            let addr = rt.block_on(async {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addr = socket.local_addr().unwrap();
                let mut server = DnsServer::new(catalog);
                server.register_socket(socket);
                tokio::spawn(async move {
                    let _ = server.block_until_done().await;
                });
                addr
            });
            TestDns {
                addr,
                zone,
                rt: Some(rt),
            }
        }

        /// Sets the SRV records of `svc.test.` to these ports on node.test.
        pub fn set_srv(&self, ports: &[u16]) {
            let owner = name("_rpc._tcp.svc.test.");
            let mut set = RecordSet::new(owner.clone(), RecordType::SRV, 1);
            for &p in ports {
                set.insert(
                    Record::from_rdata(
                        owner.clone(),
                        1,
                        RData::SRV(SRV::new(0, 10, p, name("node.test."))),
                    ),
                    1,
                );
            }
            let zone = Arc::clone(&self.zone);
            self.rt.as_ref().unwrap().block_on(async move {
                let key = RrKey::new(LowerName::new(&owner), RecordType::SRV);
                let mut records = zone.records_mut().await;
                if set.is_empty() {
                    records.remove(&key);
                } else {
                    records.insert(key, Arc::new(set));
                }
            });
        }
    }

    impl Drop for TestDns {
        fn drop(&mut self) {
            if let Some(rt) = self.rt.take() {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }

    fn srv_discover(dns: &TestDns) -> DnsDiscover {
        DnsDiscover::builder("_rpc._tcp.svc.test.")
            .srv()
            .name_server(dns.addr)
            .interval(Duration::from_millis(50))
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// The DNS server, the resolver runtime and one resolver's sockets are
    /// made before the leak baseline: they live for the whole process.
    /// (Under the test lock: other tests count descriptors meanwhile.)
    fn setup() -> (TestDns, LeakCheck) {
        let serial = ferropoll_transport::testing::serial();
        let dns = TestDns::start();
        dns.set_srv(&[1]);
        drop(srv_discover(&dns));
        drop(serial);
        (dns, LeakCheck::new())
    }

    #[test]
    fn srv_records_spread_calls_over_three_servers_and_follow_changes() {
        let (dns, leaks) = setup();
        let mut nodes = three_nodes();
        let ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
        dns.set_srv(&ports);
        // Shared with the client, so the test can see its refresh errors.
        let discover = Arc::new(srv_discover(&dns));
        assert_eq!(
            ferropoll_rpc::cluster::Discover::instances(&discover)
                .snapshot()
                .instances()
                .len(),
            3
        );
        let client = Client::cluster(Arc::clone(&discover))
            .options(options())
            .health(fast_health())
            .retry(RetryPolicy::new().idempotent_method(SVC, "Echo"))
            .build()
            .unwrap();
        let by_name = spread(&client, 300);
        assert_eq!(
            by_name.values().copied().collect::<Vec<_>>(),
            [100, 100, 100],
            "{by_name:?}"
        );

        // Kill one under load, restart it: no failed idempotent call.
        let errors = {
            let load = Load::new();
            thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| load.run(&client, "Echo"));
                }
                let c = load.ok();
                assert!(wait_until(Duration::from_secs(10), || load.ok() >= c + 200));
                nodes[1].kill();
                let c = load.ok();
                assert!(wait_until(Duration::from_secs(10), || load.ok() >= c + 500));
                nodes[1].restart();
                let base = nodes[1].calls();
                assert!(wait_until(Duration::from_secs(10), || nodes[1].calls() >= base + 50));
                load.stop.store(true, Ordering::SeqCst);
            });
            load.errors.into_inner().unwrap()
        };
        assert!(errors.is_empty(), "{errors:?}");

        // The name loses n2: re-resolution applies the difference, n0 and n1
        // keep their connections.
        let accepted = |n: &Node| n.server.as_ref().unwrap().stats().accepted;
        let before = (accepted(&nodes[0]), accepted(&nodes[1]));
        dns.set_srv(&ports[..2]);
        assert!(wait_until(Duration::from_secs(5), || client
            .cluster_stats()
            .unwrap()
            .len()
            == 2));
        let by_name = spread(&client, 100);
        assert_eq!(by_name.keys().collect::<Vec<_>>(), ["n0", "n1"]);
        assert_eq!((accepted(&nodes[0]), accepted(&nodes[1])), before);
        // The name server goes silent (no records): the set is kept.
        dns.set_srv(&[]);
        let set = ferropoll_rpc::cluster::Discover::instances(&discover);
        assert!(
            wait_until(Duration::from_secs(5), || set.last_error().is_some()),
            "no failed re-resolution after the records were removed"
        );
        assert_eq!(client.cluster_stats().unwrap().len(), 2);
        assert_eq!(spread(&client, 10).values().sum::<usize>(), 10);
        drop(client);
        drop(discover);
        nodes.into_iter().for_each(Node::shutdown);
        leaks.assert_clean();
        drop(dns);
    }

    #[test]
    fn a_and_aaaa_records_reach_ipv4_and_ipv6_servers() {
        let (dns, leaks) = setup();
        // One port free on both 127.0.0.1 and ::1.
        let (v4, v6) = loop {
            let v4 = Node::start("v4", "127.0.0.1:0".parse().unwrap());
            let v6_addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), v4.addr.port());
            if std::net::TcpListener::bind(v6_addr).is_ok() {
                break (v4, Node::start("v6", v6_addr));
            }
            v4.shutdown();
        };
        let discover = DnsDiscover::builder("dual.test.")
            .port(v4.addr.port())
            .name_server(dns.addr)
            .build()
            .unwrap();
        let client = Client::cluster(discover)
            .options(options())
            .build()
            .unwrap();
        let by_name = spread(&client, 100);
        assert_eq!(by_name.get("v4"), Some(&50), "{by_name:?}");
        assert_eq!(by_name.get("v6"), Some(&50), "{by_name:?}");
        let mut addrs: Vec<String> = client
            .cluster_stats()
            .unwrap()
            .iter()
            .map(|s| s.instance.addr().to_owned())
            .collect();
        addrs.sort();
        assert_eq!(
            addrs,
            [
                format!("127.0.0.1:{}", v4.addr.port()),
                format!("[::1]:{}", v4.addr.port())
            ]
        );
        drop(client);
        v4.shutdown();
        v6.shutdown();
        leaks.assert_clean();
        drop(dns);
    }

    #[test]
    fn bad_configurations_are_clear_errors() {
        let (dns, leaks) = setup();
        let e = DnsDiscover::builder("node.test.")
            .name_server(dns.addr)
            .build()
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = DnsDiscover::builder("missing.test.")
            .port(1)
            .name_server(dns.addr)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        leaks.assert_clean();
        drop(dns);
    }
}
