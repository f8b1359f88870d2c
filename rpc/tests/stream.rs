//! Streaming calls over real loopback sockets: each kind, blocking and
//! async; flow control against a slow reader on each side; cancellation in
//! both directions; deadlines mid-stream; a handler that panics; streams
//! and unary calls interleaved on one connection; the per-connection
//! stream limit; and version-1 peers in both directions.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::codec::{self, MessageType, RequestHead};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, INITIAL_WINDOW, Limits, LinkBuffer,
    MESSAGE_OVERHEAD, Metadata, RecvStream, Reply, SendSink, Server, Service, Status,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};
use parking_lot::Mutex;

#[allow(dead_code)] // generated: not every form is used here
mod streams {
    include!(concat!(env!("OUT_DIR"), "/streams.rs"));
}
use streams::{Num, StreamsClient, StreamsServer};

/// What the handlers saw, for the tests to assert on.
#[derive(Default)]
struct Seen {
    /// The status a handler's send or receive failed with.
    failures: Mutex<Vec<Status>>,
    /// The most the Chat handler's request stream ever buffered.
    chat_peak: AtomicUsize,
    handlers_done: AtomicUsize,
}

/// `Streams` with knobs: `Chat` sleeps `pad.len() == 1 && pad[0]` ms per
/// message when asked (a slow reader); `Count` streams until the client
/// goes away when `value` is negative.
struct StreamsImpl(Arc<Seen>);

impl StreamsImpl {
    fn failed(&self, status: Status) -> Status {
        self.0.failures.lock().push(status.clone());
        status
    }
}

impl streams::Streams for StreamsImpl {
    fn next(&self, ctx: &Context, req: Num) -> Result<Num, Status> {
        ctx.set_response_metadata("was", req.value.to_string());
        if req.value == 99 {
            return Err(Status::out_of_range("99").with_metadata("why", "too big"));
        }
        Ok(Num {
            value: req.value + 1,
            pad: req.pad,
        })
    }

    fn count(&self, _: &Context, req: Num, mut responses: SendSink<Num>) -> Result<(), Status> {
        let end = if req.value < 0 { i64::MAX } else { req.value };
        responses.set_trailer("counted", end.to_string());
        let result = (0..end).try_for_each(|value| {
            responses.send(&Num {
                value,
                pad: req.pad.clone(),
            })
        });
        self.0.handlers_done.fetch_add(1, Ordering::SeqCst);
        result.map_err(|s| self.failed(s))
    }

    fn sum(&self, _: &Context, requests: RecvStream<Num>) -> Result<Num, Status> {
        let mut sum = 0;
        for req in requests {
            let req = req.map_err(|s| self.failed(s))?;
            if req.value < 0 {
                return Err(Status::invalid_argument(format!("negative: {}", req.value)));
            }
            sum += req.value;
        }
        Ok(Num {
            value: sum,
            pad: Bytes::new(),
        })
    }

    fn chat(
        &self,
        _: &Context,
        mut requests: RecvStream<Num>,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        let result = (|| {
            while let Some(req) = requests.recv() {
                let req = req?;
                if req.value == -1 {
                    panic!("chat was asked to panic");
                }
                if req.value == -2 {
                    // Slow reader: a pause per message.
                    thread::sleep(Duration::from_micros(50));
                }
                self.0
                    .chat_peak
                    .fetch_max(requests.peak_buffered(), Ordering::SeqCst);
                responses.send(&req)?;
            }
            Ok(())
        })();
        self.0.handlers_done.fetch_add(1, Ordering::SeqCst);
        result.map_err(|s| self.failed(s))
    }
}

struct Fixture {
    server: Option<Server>,
    addr: String,
    seen: Arc<Seen>,
}

impl Fixture {
    fn start(limits: Limits) -> Fixture {
        let seen = Arc::new(Seen::default());
        let mut builder = Server::builder();
        builder.num_loops(1).limits(limits);
        builder
            .register(StreamsServer::new(StreamsImpl(Arc::clone(&seen))))
            .unwrap();
        builder
            .register(EchoServer::new(EchoImpl::default()))
            .unwrap();
        let server = builder.build().unwrap();
        let addr = server
            .listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0").unwrap())
            .unwrap()
            .to_string();
        Fixture {
            server: Some(server),
            addr,
            seen,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr, ClientOptions::default()).unwrap()
    }

    fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).unwrap();
        }
    }
}

fn num(value: i64) -> Num {
    Num {
        value,
        pad: Bytes::new(),
    }
}

fn padded(value: i64, len: usize) -> Num {
    Num {
        value,
        pad: Bytes::from(vec![0x5A; len]),
    }
}

#[test]
fn each_kind_blocking() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());

    // unary beside the streams, with the OK response's metadata
    assert_eq!(client.next(&num(41)).unwrap().value, 42);
    let (n, md) = client
        .next_with_metadata(&num(7), &CallOptions::new())
        .unwrap();
    assert_eq!((n.value, md.get("was")), (8, Some("7")));
    let (n, md) = futures::executor::block_on(
        client
            .next_async_with(&num(8), &CallOptions::new())
            .with_metadata(),
    )
    .unwrap();
    assert_eq!((n.value, md.get("was")), (9, Some("8")));
    let err = client
        .next_with_metadata(&num(99), &CallOptions::new())
        .unwrap_err();
    assert_eq!(err.metadata().get("why"), Some("too big"));

    // server streaming: 0..5, then the end, with the handler's trailers
    let mut counted = client.count(&num(5)).unwrap();
    assert_eq!(counted.trailers(), None);
    let got: Vec<i64> = counted.by_ref().map(|r| r.unwrap().value).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(
        counted.trailers().unwrap().get("counted"),
        Some("5"),
        "the OK status's metadata"
    );
    drop(counted);

    // client streaming: the sum of 1..=100
    let (mut requests, response) = client.sum().unwrap();
    for v in 1..=100 {
        requests.send(&num(v)).unwrap();
    }
    requests.close();
    assert_eq!(response.single().unwrap().value, 5050);

    // bidi, in lockstep and then pipelined
    let (mut requests, mut responses) = client.chat().unwrap();
    for v in 0..1000 {
        requests.send(&num(v)).unwrap();
        assert_eq!(responses.recv().unwrap().unwrap().value, v);
    }
    for v in 0..100 {
        requests.send(&num(v)).unwrap();
    }
    drop(requests);
    let rest: Vec<i64> = responses.map(|r| r.unwrap().value).collect();
    assert_eq!(rest, (0..100).collect::<Vec<_>>());

    // the generated echo service's bidi method
    let echo = EchoClient::new(f.client());
    let (mut tx, rx) = echo.echo_stream().unwrap();
    for word in ["a", "bb", "ccc"] {
        tx.send(&EchoRequest {
            payload: Bytes::from(word),
        })
        .unwrap();
    }
    tx.close();
    let words: Vec<Bytes> = rx.map(|r| r.unwrap().payload).collect();
    assert_eq!(words, ["a", "bb", "ccc"]);

    drop((client, echo));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn each_kind_async() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());
    futures::executor::block_on(async {
        let mut counted = client.count(&num(3)).unwrap();
        let mut got = Vec::new();
        while let Some(n) = counted.message().await {
            got.push(n.unwrap().value);
        }
        assert_eq!(got, [0, 1, 2]);

        let (mut requests, response) = client.sum().unwrap();
        for v in 1..=10 {
            requests.send_async(&num(v)).await.unwrap();
        }
        drop(requests);
        assert_eq!(response.single_async().await.unwrap().value, 55);

        let (mut requests, mut responses) = client.chat().unwrap();
        for v in 0..200 {
            requests.send_async(&num(v)).await.unwrap();
            let n = responses.message().await.unwrap().unwrap();
            assert_eq!(n.value, v);
        }
        drop(requests);
        assert!(responses.message().await.is_none());
    });
    // and under tokio, with the sink and the stream on two tasks
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut requests, mut responses) = client.chat().unwrap();
        let writer = tokio::spawn(async move {
            for v in 0..2000 {
                requests.send_async(&padded(v, 512)).await.unwrap();
            }
        });
        let mut expect = 0;
        while let Some(n) = responses.message().await {
            assert_eq!(n.unwrap().value, expect);
            expect += 1;
        }
        assert_eq!(expect, 2000);
        writer.await.unwrap();
    });
    drop((rt, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn a_slow_reader_bounds_what_each_side_buffers() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());
    const N: i64 = 10_000;
    const PAD: usize = 1024;
    let (mut requests, mut responses) = client.chat().unwrap();
    // The writer runs ahead as fast as the window lets it; the server's
    // handler reads slowly (value −2), and this reader stops now and then.
    let writer = thread::spawn(move || {
        for _ in 0..N {
            requests.send(&padded(-2, PAD)).unwrap();
        }
    });
    // A message costs its encoded payload plus the overhead; the window
    // may be passed by one message at most.
    let one = padded(-2, PAD);
    let message = prost::Message::encoded_len(&one) + MESSAGE_OVERHEAD as usize;
    let bound = INITIAL_WINDOW as usize + message;
    let mut got = 0;
    while let Some(n) = responses.recv() {
        assert_eq!(n.unwrap().pad.len(), PAD);
        got += 1;
        if got % 1000 == 0 && got < N {
            // Stop reading: the server fills this side's window, then
            // waits. (Up to half a window consumed here may not have been
            // granted back yet, so at least the other half fills.)
            let full = wait_until(Duration::from_secs(5), || {
                responses.buffered() + message > INITIAL_WINDOW as usize / 2
            });
            assert!(full, "the window did not fill: {} B", responses.buffered());
        }
    }
    writer.join().unwrap();
    assert_eq!(got, N);
    let client_peak = responses.peak_buffered();
    let server_peak = f.seen.chat_peak.load(Ordering::SeqCst);
    println!("peak buffered: client {client_peak} B, server {server_peak} B, bound {bound} B");
    assert!(
        client_peak <= bound,
        "client buffered {client_peak} > {bound}"
    );
    assert!(
        server_peak <= bound,
        "server buffered {server_peak} > {bound}"
    );
    // the slow server-side reader let its window fill too
    assert!(
        server_peak + message > INITIAL_WINDOW as usize / 2,
        "{server_peak}"
    );
    drop((responses, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn cancellation_reaches_the_other_side() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());

    // The client drops an endless server stream: the handler's send fails
    // with CANCELLED.
    let mut endless = client.count(&num(-1)).unwrap();
    for expect in 0..3 {
        assert_eq!(endless.recv().unwrap().unwrap().value, expect);
    }
    let dropped = Instant::now();
    drop(endless);
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .handlers_done
            .load(Ordering::SeqCst)
            == 1),
        "the handler did not stop"
    );
    println!("handler stopped {:?} after the drop", dropped.elapsed());
    assert_eq!(f.seen.failures.lock()[0].code(), Code::Cancelled);

    // The server ends a client stream early: the caller's sends fail with
    // the handler's status, and so does its response.
    let (mut requests, response) = client.sum().unwrap();
    requests.send(&num(1)).unwrap();
    requests.send(&num(-5)).unwrap();
    let status = response.single().unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "negative: -5");
    let err = requests.send(&num(2)).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The connection carries on.
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    drop((requests, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn a_deadline_ends_the_stream_on_both_sides() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());
    let opts = CallOptions::new().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let (mut requests, mut responses) = client.chat_with(&opts).unwrap();
    requests.send(&num(7)).unwrap();
    assert_eq!(responses.recv().unwrap().unwrap().value, 7);
    // Nothing more is sent: the deadline ends it.
    let status = responses.recv().unwrap().unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        requests.send(&num(8)).unwrap_err().code(),
        Code::DeadlineExceeded
    );
    // The handler was waiting for a request; its deadline (or the client's
    // CANCEL) woke it.
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .handlers_done
            .load(Ordering::SeqCst)
            == 1),
        "the handler did not end"
    );
    let code = f.seen.failures.lock()[0].code();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
    drop((requests, responses, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn a_panic_mid_stream_ends_that_stream_only() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());
    let (mut other_tx, mut other_rx) = client.chat().unwrap();
    let (mut requests, mut responses) = client.chat().unwrap();
    requests.send(&num(1)).unwrap();
    assert_eq!(responses.recv().unwrap().unwrap().value, 1);
    requests.send(&num(-1)).unwrap(); // panics
    let status = responses.recv().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "handler panicked");
    // The other stream and unary calls on the connection are unharmed.
    other_tx.send(&num(5)).unwrap();
    assert_eq!(other_rx.recv().unwrap().unwrap().value, 5);
    assert_eq!(client.next(&num(9)).unwrap().value, 10);
    drop(other_tx);
    assert!(other_rx.recv().is_none());
    drop((requests, responses, other_rx, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn streams_and_unary_calls_interleave_on_one_connection() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let client = StreamsClient::new(f.client());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for round in 0..20 {
                    if t % 2 == 0 {
                        let (mut tx, mut rx) = client.chat().unwrap();
                        for v in 0..50 {
                            tx.send(&padded(v, (t * 37 + round) % 300)).unwrap();
                            assert_eq!(rx.recv().unwrap().unwrap().value, v);
                        }
                        drop(tx);
                        assert!(rx.recv().is_none());
                    } else {
                        for v in 0..50 {
                            assert_eq!(client.next(&num(v)).unwrap().value, v + 1);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(client.client().open_connections(), 1);
    drop(client);
    f.stop();
    leaks.assert_clean();
}

#[test]
fn streams_beyond_the_limit_are_refused() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits {
        max_streams: 4,
        ..Limits::default()
    });
    let client = StreamsClient::new(f.client());
    let open: Vec<_> = (0..4)
        .map(|v| {
            let (mut tx, mut rx) = client.chat().unwrap();
            tx.send(&num(v)).unwrap();
            assert_eq!(rx.recv().unwrap().unwrap().value, v);
            (tx, rx)
        })
        .collect();
    let (_tx, mut rx) = client.chat().unwrap();
    let status = rx.recv().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Unary calls are not streams: still served.
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    drop(open);
    // Once the four end, a new stream is served.
    let served = wait_until(Duration::from_secs(5), || {
        let (mut tx, mut rx) = client.chat().unwrap();
        tx.send(&num(3)).is_ok() && matches!(rx.recv(), Some(Ok(n)) if n.value == 3)
    });
    assert!(served, "no stream served after the others ended");
    drop((rx, _tx, client));
    f.stop();
    leaks.assert_clean();
}

/// A `Echo` service as a version-1 server has it: the `.proto` of before
/// `EchoStream` (one method), served by the version-1 rules.
struct EchoV1;

impl Service for EchoV1 {
    fn name(&self) -> &'static str {
        "echo.Echo"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Echo"]
    }
    fn call(&self, _: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        reply.unary(ctx, request, |_, req: EchoRequest| {
            Ok(common::echo::EchoResponse {
                payload: req.payload,
            })
        })
    }
}

#[test]
fn a_new_client_against_a_version_1_service() {
    let leaks = LeakCheck::new();
    let mut builder = Server::builder();
    builder.num_loops(1);
    builder.register(EchoV1).unwrap();
    let server = builder.build().unwrap();
    let addr = server
        .listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let client =
        EchoClient::new(Client::connect(&addr.to_string(), ClientOptions::default()).unwrap());
    // The stream's opening is a REQUEST for a method the old server does
    // not have: UNIMPLEMENTED, and its messages are skipped.
    let (mut tx, mut rx) = client.echo_stream().unwrap();
    let _ = tx.send(&EchoRequest {
        payload: Bytes::from("x"),
    });
    let status = rx.recv().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status}");
    drop((tx, rx));
    // Unary calls carry on on the same connection.
    let reply = client
        .echo(&EchoRequest {
            payload: Bytes::from("after"),
        })
        .unwrap();
    assert_eq!(reply.payload, "after");
    drop(client);
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_version_1_client_against_a_new_server() {
    let leaks = LeakCheck::new();
    let f = Fixture::start(Limits::default());
    let mut s = TcpStream::connect(&f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Frames exactly as a version-1 encoder writes them (no field 9 or
    // 10): a unary call, and a streaming method called as unary.
    let metadata = Metadata::new();
    let mut out = LinkBuffer::new();
    for (seq, method) in [(1, "Next"), (2, "Chat")] {
        let head = RequestHead {
            seq,
            service: "streams.Streams",
            method,
            timeout: None,
            metadata: &metadata,
            oneway: false,
        };
        codec::encode_request(&mut out, &Limits::default(), &head, &num(41)).unwrap();
    }
    out.flush();
    let bytes = out.read_binary(out.len()).unwrap();
    assert!(
        !bytes.windows(2).any(|w| w == [0x48, 0x01]),
        "no stream field"
    );
    s.write_all(&bytes).unwrap();
    let mut input = LinkBuffer::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames.len() < 2 {
        while let Some(f) = codec::decode(&mut input, &Limits::default()).unwrap() {
            frames.push(f);
        }
        if frames.len() == 2 {
            break;
        }
        let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
        assert!(n > 0, "server closed");
        input.write_binary(&chunk[..n]);
        input.flush();
    }
    let answers: Vec<_> = frames
        .into_iter()
        .map(|mut f| {
            let value = prost::Message::decode(&mut f.payload)
                .map(|n: Num| n.value)
                .unwrap_or(0);
            (f.message_type(), f.header.seq, f.header.status_code, value)
        })
        .collect();
    assert_eq!(
        answers,
        [
            (Some(MessageType::Response), 1, 0, 42),
            (
                Some(MessageType::Response),
                2,
                Code::Unimplemented.as_u32(),
                0
            ),
        ]
    );
    drop((s, out, input));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn a_server_that_ignores_the_window_loses_its_connection() {
    let leaks = LeakCheck::new();
    // A hand-written server: reads the stream's opening, then sends a
    // frame for a stream that is not open (skipped) and four 30,000-byte
    // messages on the stream that nobody reads (beyond the 64 KiB window).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut input = LinkBuffer::new();
        let mut chunk = [0u8; 4096];
        let seq = loop {
            if let Some(f) = codec::decode(&mut input, &Limits::default()).unwrap()
                && f.header.stream
            {
                break f.header.seq;
            }
            let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
            assert!(n > 0, "the client closed before opening a stream");
            input.write_binary(&chunk[..n]);
            input.flush();
        };
        let mut out = LinkBuffer::new();
        codec::encode_message(&mut out, &Limits::default(), seq + 100, &padded(0, 10)).unwrap();
        for v in 0..4 {
            codec::encode_message(&mut out, &Limits::default(), seq, &padded(v, 30_000)).unwrap();
        }
        out.flush();
        let bytes = out.read_binary(out.len()).unwrap();
        s.write_all(&bytes).unwrap();
        // The client closes the connection.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        drop((input, out));
    });
    let client = StreamsClient::new(Client::connect(&addr, ClientOptions::default()).unwrap());
    let (_tx, mut rx) = client.chat().unwrap();
    let failed = wait_until(Duration::from_secs(5), || {
        client.client().open_connections() == 0
    });
    assert!(failed, "the client kept the connection");
    let status = loop {
        match rx.recv() {
            Some(Ok(_)) => continue, // messages within the window, if read first
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("flow-control window"), "{status}");
    server.join().unwrap();
    drop((_tx, rx, client));
    leaks.assert_clean();
}
