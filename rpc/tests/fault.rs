//! RPC under faults: a client that never reads its responses (server memory
//! stays bounded by the transport's high-water marks), and a server killed
//! and restarted under client load (in-flight calls fail `Unavailable`, no
//! caller waits past its deadline, later calls succeed).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::codec::{self, MessageType};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Dispatch, Limits, LinkBuffer, Listener,
    Reply, Server, Service,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};

/// Reads `calls` successful responses from `s`, checking that they come in
/// sequence order (1, 2, ...) and passing each to `check`.
fn read_ok_responses(s: &mut TcpStream, calls: usize, mut check: impl FnMut(&codec::Frame)) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = LinkBuffer::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < calls {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {got} responses");
        buf.write_binary(&chunk[..n]);
        buf.flush();
        while let Some(f) = codec::decode(&mut buf, &Limits::default()).unwrap() {
            assert_eq!(f.message_type(), Some(MessageType::Response));
            assert_eq!(f.header.status_code, 0);
            got += 1;
            assert_eq!(f.header.seq, got as u64);
            check(&f);
        }
        buf.release();
    }
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_server() {
    const MARK: usize = 256 << 10;
    const PAYLOAD: usize = 64 << 10;
    const CALLS: usize = 400; // 25 MiB each way
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(1);
    b.event_loop()
        .input_high_water(MARK)
        .output_high_water(MARK);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    let frames: Vec<Vec<u8>> = (1..=CALLS as u64)
        .map(|seq| common::echo_request_bytes(seq, &vec![seq as u8; PAYLOAD]))
        .collect();
    let total_in: usize = frames.iter().map(Vec::len).sum();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for f in &frames {
            w.write_all(f).unwrap();
        }
    });
    // The server stops reading once its output backs up: what it holds
    // (read but not yet sent) stays near the two marks.
    let mut last = u64::MAX;
    let mut same = 0;
    assert!(wait_until(Duration::from_secs(20), || {
        let now = server.stats().bytes_in;
        same = if now == last { same + 1 } else { 0 };
        last = now;
        thread::sleep(Duration::from_millis(20));
        same >= 10
    }));
    let st = server.stats();
    assert!(
        (st.bytes_in as usize) < total_in,
        "the server read everything"
    );
    let held = st.bytes_in.saturating_sub(st.bytes_out) as usize;
    // Input mark + output mark + one read and one response of slack.
    assert!(
        held <= 2 * MARK + 2 * (1 << 20),
        "server holds {held} bytes (marks {MARK})"
    );
    // Now read: every response arrives.
    read_ok_responses(&mut s, CALLS, |_| {});
    writer.join().unwrap();
    drop(s);
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

/// `test.Big/Get(n)`: answers `n` bytes, inline; counts the calls it ran.
struct Big(Arc<AtomicUsize>);

impl Service for Big {
    fn name(&self) -> &'static str {
        "test.Big"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Get"]
    }
    fn dispatch(&self, _method: usize) -> Dispatch {
        Dispatch::Inline
    }
    fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        reply.unary(ctx, request, |_ctx, n: u64| {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Bytes::from(vec![7u8; n as usize]))
        })
    }
}

#[test]
fn small_requests_for_large_responses_stop_at_the_output_mark() {
    // 1,000 pipelined requests of ~20 bytes, each asking for 64 KiB (64 MiB
    // of answers), from a client that does not read yet. The requests fit
    // one read; the server answers until its output passes the mark and
    // leaves the rest unanswered until the client reads, instead of
    // encoding all 64 MiB in one round.
    const MARK: usize = 256 << 10;
    const RESPONSE: u64 = 64 << 10;
    const CALLS: usize = 1000;
    let leaks = LeakCheck::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut b = Server::builder();
    b.num_loops(1);
    b.event_loop().output_high_water(MARK);
    b.register(Big(ran.clone())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    let requests: Vec<u8> = (1..=CALLS as u64)
        .flat_map(|seq| common::request_bytes(seq, "test.Big", "Get", &RESPONSE))
        .collect();
    s.write_all(&requests).unwrap();
    // Wait until the server has read every request and stopped answering.
    let mut last = usize::MAX;
    let mut same = 0;
    assert!(wait_until(Duration::from_secs(20), || {
        let now = ran.load(Ordering::Relaxed);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        thread::sleep(Duration::from_millis(20));
        same >= 10 && server.stats().bytes_in as usize == requests.len()
    }));
    // What the kernel's socket buffers took (a few MiB on loopback) plus
    // the mark and one response: far below all 1,000 answers.
    let answered = ran.load(Ordering::Relaxed);
    assert!(answered >= 1);
    assert!(
        answered < CALLS / 4,
        "{answered} of {CALLS} calls answered before the client read"
    );
    // Now read: every response arrives, in order.
    read_ok_responses(&mut s, CALLS, |f| {
        assert_eq!(f.payload.len() as u64, RESPONSE + 4)
    });
    assert_eq!(ran.load(Ordering::Relaxed), CALLS);
    drop(s);
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

/// `test.Slow/Sleep(ms)`: sleeps on a pool worker, answers `ms`.
struct Slow;

impl Service for Slow {
    fn name(&self) -> &'static str {
        "test.Slow"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Sleep"]
    }
    fn dispatch(&self, _method: usize) -> Dispatch {
        Dispatch::Pool
    }
    fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        reply.unary(ctx, request, |_ctx, ms: u64| {
            thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        })
    }
}

fn rpc_server(port: u16) -> (Server, u16) {
    let mut b = Server::builder();
    b.num_loops(2);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    b.register(Slow).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp(("127.0.0.1", port)).unwrap())
        .unwrap();
    let port = addr.as_tcp().unwrap().port();
    (server, port)
}

#[test]
fn a_server_restart_under_load_fails_in_flight_calls_fast_and_recovers() {
    const CALLERS: usize = 8;
    const DEADLINE: Duration = Duration::from_secs(2);
    let leaks = LeakCheck::new();
    let (server, port) = rpc_server(0);
    let addr = format!("127.0.0.1:{port}");
    let client = Client::connect(
        &addr,
        ClientOptions {
            reconnect_backoff: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let (client, stop) = (client.clone(), stop.clone());
        let (ok, unavailable) = (ok.clone(), unavailable.clone());
        callers.push(thread::spawn(move || {
            let echo = EchoClient::new(client.clone());
            let opts = CallOptions::new().with_timeout(DEADLINE);
            let mut worst = Duration::ZERO;
            let mut other = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let t = Instant::now();
                // Half the callers hold slow calls in flight, half echo.
                let res = if i % 2 == 0 {
                    client
                        .unary::<u64, u64>("test.Slow", "Sleep", &50, &opts)
                        .map(drop)
                } else {
                    echo.echo_with(
                        &EchoRequest {
                            payload: Bytes::from_static(b"x"),
                        },
                        &opts,
                    )
                    .map(drop)
                };
                worst = worst.max(t.elapsed());
                match res {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == Code::Unavailable => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => other.push(e.to_string()),
                }
            }
            (worst, other)
        }));
    }
    assert!(wait_until(Duration::from_secs(10), || ok
        .load(Ordering::Relaxed)
        > 100));
    // Kill: no drain, in-flight slow calls are cut off.
    let _ = server.shutdown(Duration::ZERO);
    drop(server);
    assert!(wait_until(Duration::from_secs(10), || unavailable
        .load(Ordering::Relaxed)
        > 0));
    let before_restart = ok.load(Ordering::Relaxed);
    // Same port again; the callers recover by themselves.
    let (server, _) = rpc_server(port);
    assert!(wait_until(Duration::from_secs(10), || ok
        .load(Ordering::Relaxed)
        > before_restart + 100));
    stop.store(true, Ordering::Release);
    for c in callers {
        let (worst, other) = c.join().unwrap();
        assert!(other.is_empty(), "unexpected errors: {other:?}");
        assert!(
            worst <= DEADLINE + Duration::from_millis(500),
            "a caller waited {worst:?} (deadline {DEADLINE:?})"
        );
    }
    drop(client);
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn large_calls_from_many_callers_do_not_wedge_both_output_marks() {
    // Both sides' output backs up at once (the server's answers and the
    // client's requests are each far above the 256 KiB marks): neither
    // side may stop reading for good.
    const MARK: usize = 256 << 10;
    const CALLERS: usize = 32;
    const PAYLOAD: usize = 1 << 20;
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(1);
    b.event_loop()
        .input_high_water(MARK)
        .output_high_water(MARK);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let client = Client::connect(&addr, ClientOptions::default()).unwrap();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let echo = EchoClient::new(client.clone());
            thread::spawn(move || {
                let payload = Bytes::from(vec![i as u8; PAYLOAD]);
                let opts = CallOptions::new().with_timeout(Duration::from_secs(20));
                for _ in 0..4 {
                    let got = echo
                        .echo_with(
                            &EchoRequest {
                                payload: payload.clone(),
                            },
                            &opts,
                        )
                        .map_err(|e| e.to_string())?;
                    assert_eq!(got.payload, payload);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap().unwrap();
    }
    drop(client);
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}
