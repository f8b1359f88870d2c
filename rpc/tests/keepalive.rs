//! Keepalive over real loopback sockets: a client finds a server that went
//! silent (accepts, then never answers — what a partitioned or frozen
//! server looks like from the client), the server bounds how often clients
//! ping, and the server's idle timeout counts calls, not pings.
//!
//! The silent peer is a plain `std` listener whose connections are held
//! open and never read: no FIN, no RST, so only the keepalive can tell.
//! The same behaviour across a real (namespaced) network, with partitions
//! and SIGSTOP, is tested in `examples/tests/netns.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::cluster::{HealthConfig, RetryPolicy, StaticDiscover};
use ferropoll_rpc::codec::{self, MessageType};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Keepalive, Limits, LinkBuffer, PingPolicy, Server,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};

/// Accepts connections and holds them without reading or writing a byte,
/// until dropped.
struct SilentServer {
    addr: String,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, held) = (Arc::clone(&stop), Arc::clone(&held));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => held.lock().unwrap().push(s),
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        SilentServer {
            addr,
            stop,
            held,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn echo_server(b: &mut ferropoll_rpc::ServerBuilder) -> (Server, String) {
    b.num_loops(1);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    (server, addr.to_string())
}

fn fast_keepalive() -> Keepalive {
    Keepalive {
        interval: Duration::from_millis(100),
        interval_with_calls: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
        without_calls: true,
    }
}

fn options(keepalive: Option<Keepalive>) -> ClientOptions {
    ClientOptions {
        keepalive,
        default_timeout: Some(Duration::from_secs(30)),
        ..ClientOptions::default()
    }
}

fn echo_req() -> EchoRequest {
    EchoRequest {
        payload: bytes::Bytes::from_static(b"hi"),
    }
}

#[test]
fn a_call_to_a_silent_server_fails_unavailable_at_the_keepalive_not_its_deadline() {
    let leaks = LeakCheck::new();
    let silent = SilentServer::start();
    let client = Client::connect(&silent.addr, options(Some(fast_keepalive()))).unwrap();
    let echo = EchoClient::new(client.clone());
    let start = Instant::now();
    let err = echo
        .echo_with(
            &echo_req(),
            &CallOptions::new().with_timeout(Duration::from_secs(20)),
        )
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("keepalive"), "{err}");
    // Detected within interval + timeout of the last byte (300 ms), with
    // generous room for a loaded machine — far from the 20 s deadline.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    // A call started async fails the same way.
    let start = Instant::now();
    let err = echo.echo_async(&echo_req()).wait().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    drop((echo, client, silent));
    leaks.assert_clean();
}

#[test]
fn an_idle_connection_to_a_silent_server_is_closed_and_without_keepalive_it_is_not() {
    let leaks = LeakCheck::new();
    let silent = SilentServer::start();
    let with = Client::connect(&silent.addr, options(Some(fast_keepalive()))).unwrap();
    let without = Client::connect(&silent.addr, options(None)).unwrap();
    assert!(wait_until(Duration::from_secs(5), || silent.accepted() == 2));
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || with.open_connections() == 0),
        "keepalive did not close the connection"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Without keepalive nothing can tell the silent server from an idle one.
    assert_eq!(without.open_connections(), 1);
    // The first call after the death fails fast, as after a failed dial
    // (the backoff starts when that call finds the dead connection); then,
    // after the backoff, a call dials again (and the silent server accepts
    // it).
    let echo = EchoClient::new(with.clone());
    let short = CallOptions::new().with_timeout(Duration::from_millis(50));
    let err = echo.echo_with(&echo_req(), &short).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("keepalive"), "{err}");
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = echo.echo_with(&echo_req(), &short);
        silent.accepted() == 3
    }));
    drop((echo, with, without, silent));
    leaks.assert_clean();
}

#[test]
fn keepalive_pings_keep_a_live_idle_connection_and_cost_no_reconnects() {
    let leaks = LeakCheck::new();
    let (server, addr) = echo_server(Server::builder().ping_policy(PingPolicy {
        min_interval: Duration::from_millis(20),
        max_strikes: 2,
    }));
    let client = Client::connect(&addr, options(Some(fast_keepalive()))).unwrap();
    let echo = EchoClient::new(client.clone());
    echo.echo(&echo_req()).unwrap();
    let bytes_in = server.stats().bytes_in;
    // Pings flow while the connection is idle: at least five of them (one
    // per 100 ms; each PING frame is 8 bytes).
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().bytes_in
            >= bytes_in + 5 * 8),
        "no keepalive pings reached the server"
    );
    assert_eq!(client.open_connections(), 1);
    echo.echo(&echo_req()).unwrap();
    let stats = server.stats();
    assert_eq!(stats.accepted, 1, "the client reconnected: {stats:?}");
    assert_eq!(stats.open, 1);
    drop((echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

/// Writes PING frames `gap` apart; returns the frame types read back until
/// the server closes the connection or `pings` were all answered.
fn ping_raw(addr: &str, pings: usize, gap: Duration) -> Vec<(MessageType, u32)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut input = LinkBuffer::new();
    for seq in 1..=pings as u64 {
        let mut out = LinkBuffer::new();
        codec::encode_ping(&mut out, seq);
        out.flush();
        let bytes = out.next(out.len()).unwrap().to_vec();
        if s.write_all(&bytes).is_err() {
            break;
        }
        thread::sleep(gap);
    }
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(frame) = codec::decode(&mut input, &Limits::default()).unwrap() {
            got.push((frame.message_type().unwrap(), frame.header.status_code));
        }
        let answered = got.iter().filter(|(k, _)| *k == MessageType::Pong).count();
        if answered == pings {
            return got;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                input.write_bytes(bytes::Bytes::copy_from_slice(&chunk[..n]));
                input.flush();
            }
        }
    }
}

#[test]
fn a_client_that_pings_too_often_is_told_and_closed_and_a_polite_one_is_not() {
    let leaks = LeakCheck::new();
    let (server, addr) = echo_server(Server::builder().ping_policy(PingPolicy {
        min_interval: Duration::from_millis(100),
        max_strikes: 2,
    }));
    // Ten pings back to back: the first is free, strikes 1 and 2 are
    // tolerated, the fourth ends the connection.
    let got = ping_raw(&addr, 10, Duration::ZERO);
    let pongs = got.iter().filter(|(k, _)| *k == MessageType::Pong).count();
    assert_eq!(pongs, 3, "{got:?}");
    assert_eq!(
        got.last(),
        Some(&(MessageType::Error, Code::ResourceExhausted.as_u32())),
        "{got:?}"
    );
    // Pings spaced over the minimum are all answered.
    let got = ping_raw(&addr, 4, Duration::from_millis(150));
    assert!(got.iter().all(|(k, _)| *k == MessageType::Pong), "{got:?}");
    assert_eq!(got.len(), 4);
    // The default client keepalive passes the default policy.
    let (server2, addr2) = echo_server(&mut Server::builder());
    let client = Client::connect(
        &addr2,
        options(Some(Keepalive {
            interval: PingPolicy::DEFAULT.min_interval,
            interval_with_calls: PingPolicy::DEFAULT.min_interval,
            ..Keepalive::default()
        })),
    )
    .unwrap();
    let before = server2.stats().bytes_in;
    assert!(wait_until(Duration::from_secs(10), || server2
        .stats()
        .bytes_in
        >= before + 4 * 8));
    assert_eq!(client.open_connections(), 1);
    assert_eq!(server2.stats().accepted, 1);
    drop(client);
    server.shutdown(Duration::from_secs(5)).unwrap();
    server2.shutdown(Duration::from_secs(5)).unwrap();
    drop((server, server2));
    leaks.assert_clean();
}

#[test]
fn the_server_idle_timeout_ignores_pings_and_spares_connections_with_calls() {
    let leaks = LeakCheck::new();
    let (server, addr) = echo_server(
        Server::builder()
            .idle_timeout(Some(Duration::from_millis(300)))
            .ping_policy(PingPolicy::UNLIMITED),
    );
    let client = Client::connect(&addr, options(Some(fast_keepalive()))).unwrap();
    let echo = EchoClient::new(client.clone());
    echo.echo(&echo_req()).unwrap();
    let start = Instant::now();
    // Pings every 100 ms do not keep it open.
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().open == 0),
        "the idle connection was not closed"
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    // A client calling every 100 ms keeps its connection for 1 s.
    echo.echo(&echo_req()).unwrap();
    let accepted = server.stats().accepted;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        echo.echo(&echo_req()).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.stats().accepted, accepted, "closed while in use");
    drop((echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_cluster_client_ejects_a_silent_instance_at_once_and_loses_no_idempotent_call() {
    let leaks = LeakCheck::new();
    let silent = SilentServer::start();
    let (server, addr) = echo_server(&mut Server::builder());
    let client = Client::cluster(StaticDiscover::from_addrs([
        silent.addr.clone(),
        addr.clone(),
    ]))
    .options(options(Some(fast_keepalive())))
    .health(HealthConfig {
        tick: Duration::from_millis(10),
        ..HealthConfig::default()
    })
    .retry(RetryPolicy::new().idempotent_service("echo.Echo"))
    .build()
    .unwrap();
    let echo = EchoClient::new(client.clone());
    // Round robin sends every other call to the silent instance: each of
    // those waits for the keepalive, then is retried on the live one.
    let start = Instant::now();
    for _ in 0..20 {
        echo.echo(&echo_req()).unwrap();
    }
    let stats = client.cluster_stats().unwrap();
    let silent_stats = stats
        .iter()
        .find(|s| s.instance.addr() == silent.addr)
        .unwrap();
    assert!(silent_stats.ejected, "{stats:?}");
    // One keepalive detection (≤ 2 × interval + timeout = 400 ms), not one
    // per call: after it the instance is skipped.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    drop((echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop((server, silent));
    leaks.assert_clean();
}
