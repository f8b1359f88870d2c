//! `Server` and `Client::connect` over real loopback sockets (TCP and Unix).
//!
//! Every test holds a `LeakCheck`, which serialises them (descriptor and
//! buffer counts are process-wide) and checks that both return to their
//! baseline; waits are bounded conditions, never sleeps that hope.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use common::kv::{self, KvClient, KvServer};
use common::{EchoImpl, MemKv};
use ferropoll_rpc::codec::{self, MessageType};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Dispatch, Limits, LinkBuffer, Listener,
    Reply, Server, Service,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};

/// `test.Slow/Sleep(ms: u64) -> u64`: sleeps `ms` on a pool worker and
/// answers `ms`. Counts calls started and finished.
#[derive(Default)]
struct Slow {
    started: AtomicUsize,
    finished: AtomicUsize,
}

struct SlowService(Arc<Slow>);

impl Service for SlowService {
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
        let slow = &self.0;
        reply.unary(ctx, request, |_ctx, ms: u64| {
            slow.started.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(ms));
            slow.finished.fetch_add(1, Ordering::SeqCst);
            Ok(ms)
        })
    }
}

struct TestServer {
    server: Server,
    addr: String,
    slow: Arc<Slow>,
    echo_calls: Arc<EchoImpl>,
}

fn build_server(
    limits: Limits,
    pool: Option<ferropoll_gopool::Pool>,
) -> (Server, Arc<Slow>, Arc<EchoImpl>) {
    let mut b = Server::builder();
    b.num_loops(2)
        .limits(limits)
        .read_timeout(Some(Duration::from_millis(300)));
    if let Some(pool) = pool {
        b.pool(pool);
    }
    let echo = Arc::new(EchoImpl::default());
    b.register(EchoServer::new(SharedEcho(Arc::clone(&echo))))
        .unwrap();
    b.register(KvServer::new(MemKv::default()))
        .unwrap()
        .method_dispatch("List", Dispatch::Pool)
        .unwrap();
    let slow = Arc::new(Slow::default());
    b.register(SlowService(Arc::clone(&slow))).unwrap();
    (b.build().unwrap(), slow, echo)
}

/// Echo through a shared implementation, so that tests can read its counter.
struct SharedEcho(Arc<EchoImpl>);

impl common::echo::Echo for SharedEcho {
    fn echo(
        &self,
        ctx: &Context,
        req: EchoRequest,
    ) -> Result<common::echo::EchoResponse, ferropoll_rpc::Status> {
        common::echo::Echo::echo(&*self.0, ctx, req)
    }
    fn echo_stream(
        &self,
        ctx: &Context,
        requests: ferropoll_rpc::RecvStream<EchoRequest>,
        responses: ferropoll_rpc::SendSink<common::echo::EchoResponse>,
    ) -> Result<(), ferropoll_rpc::Status> {
        common::echo::Echo::echo_stream(&*self.0, ctx, requests, responses)
    }
}

fn start_with(limits: Limits, pool: Option<ferropoll_gopool::Pool>) -> TestServer {
    let (server, slow, echo_calls) = build_server(limits, pool);
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    TestServer {
        server,
        addr,
        slow,
        echo_calls,
    }
}

fn start() -> TestServer {
    start_with(Limits::default(), None)
}

fn connect(addr: &str) -> Client {
    Client::connect(addr, ClientOptions::default()).unwrap()
}

fn req(p: impl Into<Bytes>) -> EchoRequest {
    EchoRequest { payload: p.into() }
}

fn secs(n: u64) -> CallOptions {
    CallOptions::new().with_timeout(Duration::from_secs(n))
}

#[test]
fn round_trips_of_every_kind_over_tcp() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = connect(&t.addr);
    let echo = EchoClient::new(client.clone());
    let kv = KvClient::new(client.clone());

    // Success, with a payload that spans several buffer nodes.
    assert_eq!(&echo.echo(&req("hi")).unwrap().payload[..], b"hi");
    let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(echo.echo(&req(big.clone())).unwrap().payload, big);
    // Errors chosen by handlers.
    let put = |k: &str, if_absent| {
        kv.put(&kv::PutRequest {
            key: k.into(),
            value: Bytes::from_static(b"v"),
            if_absent,
        })
    };
    assert!(!put("a", false).unwrap().replaced);
    assert_eq!(put("a", true).unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(put("", false).unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        kv.get(&kv::GetRequest { key: "zz".into() })
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        &kv.get(&kv::GetRequest { key: "a".into() }).unwrap().value[..],
        b"v"
    );
    // A pool-dispatched method.
    let page = kv
        .list(&kv::ListRequest {
            prefix: String::new(),
            start_after: String::new(),
            limit: 10,
        })
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    drop(page);
    assert_eq!(
        &kv.delete(&kv::DeleteRequest { key: "a".into() })
            .unwrap()
            .value[..],
        b"v"
    );
    // Unknown service and method.
    for (service, method) in [("echo.Echo", "Nope"), ("nope.Nope", "Echo")] {
        let e = client
            .unary::<_, ()>(service, method, &(), &secs(5))
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e}");
    }
    // Metadata, deadline and peer address reach the handler.
    let opts = secs(5).with_metadata("k", "v1");
    assert_eq!(
        &echo.echo_with(&req("meta"), &opts).unwrap().payload[..],
        b"v1"
    );
    let ctx = echo.echo_with(&req("ctx"), &opts).unwrap().payload;
    assert!(ctx.ends_with(b"/true"), "{ctx:?}");
    let peer = echo.echo(&req("peer")).unwrap().payload;
    assert!(peer.starts_with(b"127.0.0.1:"), "{peer:?}");
    // Responses are zero-copy views of the client's input buffers: they
    // must go before the leak check.
    drop((big, ctx, peer));
    // Ping, oneway (seen by the handler: wait for its counter).
    client.ping(Duration::from_secs(5)).unwrap();
    let before = t.echo_calls.calls.load(Ordering::SeqCst);
    client
        .oneway("echo.Echo", "Echo", &req("one"), &CallOptions::DEFAULT)
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        t.echo_calls.calls.load(Ordering::SeqCst) == before + 1
    }));
    // A panicking handler fails its call only.
    let e = echo.echo(&req("panic")).unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(&echo.echo(&req("after")).unwrap().payload[..], b"after");
    assert_eq!(client.open_connections(), 1);

    drop((echo, kv, client));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

#[test]
fn round_trip_over_a_unix_socket() {
    let leaks = LeakCheck::new();
    let dir = std::env::temp_dir().join(format!("ferropoll-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rpc.sock");
    let _ = std::fs::remove_file(&path);
    let (server, _, _) = build_server(Limits::default(), None);
    server.listen(Listener::bind_unix(&path).unwrap()).unwrap();
    let client = Client::connect(
        &format!("unix:{}", path.display()),
        ClientOptions::default(),
    )
    .unwrap();
    let echo = EchoClient::new(client);
    assert_eq!(&echo.echo(&req("unix")).unwrap().payload[..], b"unix");
    let peer = echo.echo(&req("peer")).unwrap().payload;
    assert!(peer.starts_with(b"unix:"), "{peer:?}");
    drop((echo, peer));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    leaks.assert_clean();
}

#[test]
fn ten_thousand_concurrent_calls_from_64_threads() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = Client::connect(
        &t.addr,
        ClientOptions {
            connections: 2,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let echo = EchoClient::new(client.clone());
    let barrier = Barrier::new(64);
    thread::scope(|s| {
        for th in 0..64u32 {
            let echo = echo.clone();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                // 157 × 64 = 10,048 calls, each with its own payload.
                for i in 0..157u32 {
                    let mine =
                        Bytes::from(format!("{th}-{i}-{}", "x".repeat((i % 7) as usize * 40)));
                    let out = echo.echo_with(&req(mine.clone()), &secs(30)).unwrap();
                    assert_eq!(out.payload, mine);
                }
            });
        }
    });
    assert_eq!(client.open_connections(), 2);
    drop((echo, client));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

#[test]
fn async_calls_under_tokio_and_block_on() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = connect(&t.addr);
    let echo = EchoClient::new(client.clone());

    let out = futures::executor::block_on(echo.echo_async(&req("block_on"))).unwrap();
    assert_eq!(&out.payload[..], b"block_on");
    drop(out); // a view of the client's input buffer
    // Many calls in flight at once from one thread.
    let calls: Vec<_> = (0..500u32)
        .map(|i| echo.echo_async(&req(format!("f{i}"))))
        .collect();
    let outs = futures::executor::block_on(futures::future::join_all(calls));
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.unwrap().payload, format!("f{i}").as_bytes());
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // No I/O driver: its first use opens tokio's process-wide signal
        // pipe, which the leak check would count.
        .build()
        .unwrap();
    let kv = KvClient::new(client.clone());
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..32u32 {
            let echo = echo.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    let mine = format!("{task}/{i}");
                    let out = echo.echo_async(&req(mine.clone())).await.unwrap();
                    assert_eq!(out.payload, mine.as_bytes());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let e = kv
            .get_async(&kv::GetRequest { key: "none".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = echo.echo_async(&req("panic")).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal);
    });
    drop((rt, echo, kv, client));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn timeouts_fire_blocking_and_async_even_unpolled() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = connect(&t.addr);
    let timeout = CallOptions::new().with_timeout(Duration::from_millis(100));

    // Blocking: the handler sleeps 1 s, the caller gives up after 100 ms.
    let began = Instant::now();
    let e = client
        .unary::<u64, u64>("test.Slow", "Sleep", &1000, &timeout)
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(
        began.elapsed() < Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );

    // Async: polled once, then left alone; the client's timer must wake it.
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = TaskContext::from_waker(&waker);
    let mut call = pin!(client.unary_async::<u64, u64>("test.Slow", "Sleep", &1000, &timeout));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    assert!(
        wait_until(Duration::from_millis(800), || flag.0.load(Ordering::SeqCst)),
        "the deadline did not wake the future"
    );
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(e.code(), Code::DeadlineExceeded),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }

    // The connection is still fine.
    assert_eq!(
        client.unary::<u64, u64>("test.Slow", "Sleep", &0, &secs(5)),
        Ok(0)
    );
    drop(client);
    // Shutdown waits for the sleeping handlers.
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        t.slow.started.load(Ordering::SeqCst),
        t.slow.finished.load(Ordering::SeqCst)
    );
    drop(t);
    leaks.assert_clean();
}

#[test]
fn an_expired_deadline_does_not_run_the_handler() {
    // One worker: the second call waits in the queue past its deadline.
    let leaks = LeakCheck::new();
    let pool = ferropoll_gopool::Pool::new("one-worker", 1);
    let t = start_with(Limits::default(), Some(pool));
    let client = connect(&t.addr);
    let first = client.unary_async::<u64, u64>("test.Slow", "Sleep", &300, &secs(5));
    assert!(wait_until(Duration::from_secs(5), || t
        .slow
        .started
        .load(Ordering::SeqCst)
        == 1));
    let second = client.unary_async::<u64, u64>(
        "test.Slow",
        "Sleep",
        &0,
        &CallOptions::new().with_timeout(Duration::from_millis(50)),
    );
    assert_eq!(second.wait().unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(first.wait(), Ok(300));
    // The queued call was answered (DEADLINE_EXCEEDED, dropped by the client)
    // without running.
    assert!(wait_until(Duration::from_secs(5), || t
        .server
        .stats()
        .bytes_out
        > 0));
    drop(client);
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(t.slow.started.load(Ordering::SeqCst), 1);
    drop(t);
    leaks.assert_clean();
}

/// Reads until EOF (bounded by a read timeout); returns what came.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
}

/// Decodes the frames of `bytes`.
fn frames(bytes: &[u8]) -> Vec<codec::Frame> {
    let mut buf = LinkBuffer::new();
    buf.write_binary(bytes);
    buf.flush();
    let mut out = Vec::new();
    while let Some(f) = codec::decode(&mut buf, &Limits::default()).unwrap() {
        out.push(f);
    }
    out
}

#[test]
fn bad_frames_close_only_their_connection() {
    let leaks = LeakCheck::new();
    let t = start_with(
        Limits {
            max_body_len: 1 << 20,
            ..Limits::default()
        },
        None,
    );
    let client = connect(&t.addr);
    let echo = EchoClient::new(client.clone());
    assert_eq!(&echo.echo(&req("before")).unwrap().payload[..], b"before");

    // 1. Garbage: not our magic. The server answers an ERROR frame and closes.
    let mut s = TcpStream::connect(&t.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let back = frames(&read_to_close(&mut s));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message_type(), Some(MessageType::Error));
    assert_eq!(back[0].header.status_code, Code::InvalidArgument.as_u32());
    drop((s, back)); // frames are views of test buffers: drop before the leak check

    // 2. Oversized: a prefix announcing 32 MiB, refused before buffering it.
    let mut s = TcpStream::connect(&t.addr).unwrap();
    let mut prefix = vec![0xFE, 0x50, 1, 0];
    prefix.extend_from_slice(&(32u32 << 20).to_be_bytes());
    prefix.extend_from_slice(&4u32.to_be_bytes());
    s.write_all(&prefix).unwrap();
    let back = frames(&read_to_close(&mut s));
    assert_eq!(back[0].header.status_code, Code::ResourceExhausted.as_u32());
    drop((s, back));

    // 3. A header that is not protobuf, after a good request on the same
    //    connection: the good one is answered first.
    let mut s = TcpStream::connect(&t.addr).unwrap();
    let mut bytes = common::echo_request_bytes(1, b"good");
    bytes.extend_from_slice(&[0xFE, 0x50, 1, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF]);
    s.write_all(&bytes).unwrap();
    let back = frames(&read_to_close(&mut s));
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].message_type(), Some(MessageType::Response));
    assert_eq!(back[0].header.seq, 1);
    assert_eq!(back[1].message_type(), Some(MessageType::Error));
    drop((s, back));

    // 4. Truncated: half a frame, then the peer hangs up.
    let mut s = TcpStream::connect(&t.addr).unwrap();
    let bytes = common::echo_request_bytes(2, b"truncated");
    s.write_all(&bytes[..bytes.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_close(&mut s).is_empty());
    drop(s);

    // 5. Truncated and stalled: closed by the read timeout (300 ms here).
    let mut s = TcpStream::connect(&t.addr).unwrap();
    s.write_all(&bytes[..bytes.len() - 1]).unwrap();
    let began = Instant::now();
    assert!(read_to_close(&mut s).is_empty());
    assert!(began.elapsed() < Duration::from_secs(4));
    drop(s);

    // 6. A header stuffed with 30,000 empty metadata entries (60 KB).
    let mut s = TcpStream::connect(&t.addr).unwrap();
    let mut header = vec![0x08, 0x01, 0x10, 0x01];
    for _ in 0..30_000 {
        header.extend_from_slice(&[0x42, 0x00]);
    }
    let len = (header.len() as u32).to_be_bytes();
    let mut bytes = vec![0xFE, 0x50, 1, 0];
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&header);
    s.write_all(&bytes).unwrap();
    let back = frames(&read_to_close(&mut s));
    assert_eq!(back[0].header.status_code, Code::InvalidArgument.as_u32());
    assert!(back[0].header.status_message.contains("metadata"));
    drop((s, back));

    // The well-behaved client never noticed.
    assert_eq!(&echo.echo(&req("after")).unwrap().payload[..], b"after");
    drop((echo, client));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

#[test]
fn the_client_reconnects_after_the_server_restarts() {
    let leaks = LeakCheck::new();
    let (server, _, _) = build_server(Limits::default(), None);
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let client = Client::connect(
        &addr.to_string(),
        ClientOptions {
            reconnect_backoff: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let echo = EchoClient::new(client.clone());
    assert_eq!(&echo.echo(&req("one")).unwrap().payload[..], b"one");

    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    // The connection is seen lost; calls fail UNAVAILABLE.
    assert!(wait_until(Duration::from_secs(5), || client
        .open_connections()
        == 0));
    let e = echo.echo(&req("down")).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    // Same port again.
    let (server, _, _) = build_server(Limits::default(), None);
    server
        .listen(Listener::bind_tcp(addr.as_tcp().unwrap()).unwrap())
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || echo
        .echo(&req("two"))
        .is_ok()));
    assert_eq!(&echo.echo(&req("three")).unwrap().payload[..], b"three");
    assert_eq!(client.open_connections(), 1);
    drop((echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn shutdown_drains_in_flight_calls() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = connect(&t.addr);
    let calls: Vec<_> = (0..8u64)
        .map(|i| client.unary_async::<u64, u64>("test.Slow", "Sleep", &(200 + i), &secs(10)))
        .collect();
    // All eight reached the server and run on pool workers.
    assert!(wait_until(Duration::from_secs(5), || {
        t.slow.started.load(Ordering::SeqCst) == 8
    }));
    let began = Instant::now();
    t.server.shutdown(Duration::from_secs(10)).unwrap();
    assert!(began.elapsed() >= Duration::from_millis(150));
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.wait(), Ok(200 + i as u64), "call {i}");
    }
    assert_eq!(t.slow.finished.load(Ordering::SeqCst), 8);
    // After shutdown: nothing listens any more.
    let e = client
        .unary::<u64, u64>("test.Slow", "Sleep", &0, &secs(1))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    drop(client);
    drop(t);
    leaks.assert_clean();
}

#[test]
fn many_clients_and_dropping_them_leaks_nothing() {
    let leaks = LeakCheck::new();
    let t = start();
    for round in 0..5 {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                Client::connect(
                    &t.addr,
                    ClientOptions {
                        connections: 2,
                        ..ClientOptions::default()
                    },
                )
                .unwrap()
            })
            .collect();
        for (i, c) in clients.iter().enumerate() {
            let echo = EchoClient::new(c.clone());
            let mine = format!("{round}-{i}");
            assert_eq!(
                echo.echo(&req(mine.clone())).unwrap().payload,
                mine.as_bytes()
            );
        }
        // A pending call is cancelled when its client goes away.
        let pending = clients[0].unary_async::<u64, u64>("test.Slow", "Sleep", &100, &secs(5));
        drop(clients);
        assert_eq!(pending.wait().unwrap_err().code(), Code::Cancelled);
    }
    assert!(wait_until(Duration::from_secs(5), || t.server.stats().open == 0));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

#[test]
fn a_deferred_request_goes_out_even_if_the_woken_futures_never_run() {
    let leaks = LeakCheck::new();
    let t = start();
    let client = connect(&t.addr);
    let echo = EchoClient::new(client.clone());
    // Future A: polled once (its waker registered), completed, woken — and
    // then never polled again: its task "is about to run" forever.
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = TaskContext::from_waker(&waker);
    // The request goes out when the call starts, so on a busy machine its
    // answer may be in before the first poll: then try again with a new one.
    let mut attempts = 0;
    let a = loop {
        let mut a = Box::pin(echo.echo_async(&req("a")));
        if a.as_mut().poll(&mut cx).is_pending() {
            break a;
        }
        attempts += 1;
        assert!(attempts < 100, "every answer came before the first poll");
    };
    assert!(wait_until(Duration::from_secs(5), || flag
        .0
        .load(Ordering::SeqCst)));
    // B is started while A counts as "woken, not yet run": its request is
    // staged for A's task to send, and the client's timer sends it anyway.
    let began = Instant::now();
    let b = echo.echo_async(&req("b"));
    assert_eq!(&b.wait().unwrap().payload[..], b"b");
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    // Dropping A gives its count back: C goes out at once.
    drop(a);
    let c = futures::executor::block_on(echo.echo_async(&req("c"))).unwrap();
    assert_eq!(&c.payload[..], b"c");
    drop((c, echo, client));
    t.server.shutdown(Duration::from_secs(5)).unwrap();
    drop(t);
    leaks.assert_clean();
}

#[test]
fn builders_refuse_bad_settings_instead_of_adjusting_them() {
    let _leaks = LeakCheck::new();
    let refused = |b: &mut ferropoll_rpc::ServerBuilder, what: &str| {
        let err = b.build().expect_err(what);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
    };
    refused(Server::builder().num_loops(0), "num_loops");
    refused(Server::builder().max_connections(0), "max_connections");
    refused(
        Server::builder().idle_timeout(Some(Duration::ZERO)),
        "idle_timeout",
    );
    refused(
        Server::builder().read_timeout(Some(Duration::ZERO)),
        "read_timeout",
    );
    refused(
        Server::builder().limits(Limits {
            stream_window: 1,
            ..Limits::DEFAULT
        }),
        "stream_window",
    );
    refused(
        Server::builder().limits(Limits {
            max_in_flight: 0,
            ..Limits::DEFAULT
        }),
        "max_in_flight",
    );

    // A good builder builds once; the services went to the first server.
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    refused(&mut b, "built its server already");
    server.shutdown(Duration::from_secs(1)).unwrap();

    // The client side: limits checked at connect, cluster settings at build.
    let bad = ClientOptions {
        limits: Limits {
            max_header_len: 0,
            ..Limits::DEFAULT
        },
        ..ClientOptions::default()
    };
    let err = Client::connect("127.0.0.1:1", bad).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("max_header_len"), "{err}");

    let discover = ferropoll_rpc::cluster::StaticDiscover::from_addrs(["127.0.0.1:1"]);
    let err = Client::cluster(discover)
        .health(ferropoll_rpc::cluster::HealthConfig {
            tick: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("tick"), "{err}");
}
