//! The sans-IO server engine with generated services, without sockets:
//! requests are encoded into a LinkBuffer, processed, and the responses decoded.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::echo::{EchoRequest, EchoResponse, EchoServer};
use common::kv::{self, KvServer};
use common::{EchoImpl, MemKv};
use ferropoll_rpc::codec::{self, MessageType};
use ferropoll_rpc::sansio::{ClientSession, ServerConn};
use ferropoll_rpc::{
    CallOptions, ClientOptions, Code, Dispatch, LinkBuffer, PeerAddr, ProtocolError, RegisterError,
    ServerEngine, Status,
};
use prost::Message;

fn engine_with(echo: Arc<EchoImpl>, dispatch: Dispatch) -> ServerEngine {
    struct Shared(Arc<EchoImpl>);
    impl common::echo::Echo for Shared {
        fn echo(
            &self,
            ctx: &ferropoll_rpc::Context,
            req: EchoRequest,
        ) -> Result<EchoResponse, Status> {
            common::echo::Echo::echo(&*self.0, ctx, req)
        }
        fn echo_stream(
            &self,
            _: &ferropoll_rpc::Context,
            _: ferropoll_rpc::RecvStream<EchoRequest>,
            _: ferropoll_rpc::SendSink<EchoResponse>,
        ) -> Result<(), Status> {
            Err(Status::unimplemented("not used by this test"))
        }
    }
    let mut engine = ServerEngine::new();
    engine
        .register(EchoServer::new(Shared(echo)))
        .unwrap()
        .dispatch(dispatch);
    engine.register(KvServer::new(MemKv::default())).unwrap();
    engine
}

fn echo_req(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: Bytes::copy_from_slice(payload),
    }
}

/// Writes `n` pipelined `echo.Echo/Echo` requests (sequence ids 1..=n,
/// payload `payload(seq)`) into `input`, unflushed.
fn encode_echo_requests(input: &mut LinkBuffer, n: u64, payload: impl Fn(u64) -> Vec<u8>) {
    for seq in 1..=n {
        input.write_binary(&common::echo_request_bytes(seq, &payload(seq)));
    }
}

/// One client session and one server connection joined by two buffers.
struct Pair {
    engine: ServerEngine,
    conn: ServerConn,
    session: ClientSession,
    to_server: LinkBuffer,
    to_client: LinkBuffer,
}

impl Pair {
    fn new(engine: ServerEngine) -> Pair {
        Pair {
            engine,
            conn: ServerConn::new(PeerAddr::from(
                "127.0.0.1:4242".parse::<std::net::SocketAddr>().unwrap(),
            )),
            session: ClientSession::new(&ClientOptions::default()),
            to_server: LinkBuffer::new(),
            to_client: LinkBuffer::new(),
        }
    }

    /// Runs the engine over what the client wrote; returns what came back.
    fn exchange(&mut self, received_at: Instant) -> ferropoll_rpc::sansio::Progress {
        self.to_server.flush();
        let mut deferred = Vec::new();
        let progress = self
            .engine
            .process(
                &self.conn,
                &mut self.to_server,
                &mut self.to_client,
                &mut deferred,
                received_at,
            )
            .unwrap();
        assert!(deferred.is_empty());
        self.to_server.release();
        self.to_client.flush();
        let frames = self.session.handle_input(&mut self.to_client).unwrap();
        assert_eq!(frames, progress.responses);
        progress
    }
}

#[test]
fn echo_and_kv_round_trip_through_the_engine() {
    let mut p = Pair::new(engine_with(Arc::default(), Dispatch::Inline));
    let echo = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"hello"),
        &CallOptions::DEFAULT,
    );
    let put = p.session.start_call::<_, kv::PutResponse>(
        &mut p.to_server,
        "kv.Kv",
        "Put",
        &kv::PutRequest {
            key: "a".into(),
            value: Bytes::from_static(b"1"),
            if_absent: false,
        },
        &CallOptions::DEFAULT,
    );
    let get = p.session.start_call::<_, kv::GetResponse>(
        &mut p.to_server,
        "kv.Kv",
        "Get",
        &kv::GetRequest { key: "a".into() },
        &CallOptions::DEFAULT,
    );
    let missing = p.session.start_call::<_, kv::GetResponse>(
        &mut p.to_server,
        "kv.Kv",
        "Get",
        &kv::GetRequest { key: "zz".into() },
        &CallOptions::DEFAULT,
    );
    let progress = p.exchange(Instant::now());
    assert_eq!((progress.frames, progress.responses), (4, 4));
    assert_eq!(&echo.wait().unwrap().payload[..], b"hello");
    assert!(!put.wait().unwrap().replaced);
    assert_eq!(&get.wait().unwrap().value[..], b"1");
    let e = missing.wait().unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no key \"zz\"");
    assert_eq!(p.session.in_flight(), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order_in_one_batch() {
    let engine = engine_with(Arc::default(), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    encode_echo_requests(&mut input, 200, |seq| seq.to_le_bytes().to_vec());
    input.flush();
    let progress = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap();
    assert_eq!(
        (progress.frames, progress.responses, progress.deferred),
        (200, 200, 0)
    );
    assert!(input.is_empty());
    assert_eq!(output.len(), 0, "nothing flushed by the engine");
    output.flush();
    for seq in 1..=200u64 {
        let f = codec::decode(&mut output, engine.limits())
            .unwrap()
            .unwrap();
        assert_eq!(f.message_type(), Some(MessageType::Response));
        assert_eq!(f.header.seq, seq);
        assert_eq!(
            &EchoResponse::decode(f.payload).unwrap().payload[..],
            &seq.to_le_bytes()
        );
    }
    assert!(output.is_empty());
}

#[test]
fn process_bounded_stops_at_the_output_limit_and_resumes() {
    // 50 pipelined requests of 1 KiB; an output limit of 4 KiB: each call
    // answers frames until the output passes the limit (at least one),
    // leaves the rest in the input, and the next call goes on in order.
    let engine = engine_with(Arc::default(), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    encode_echo_requests(&mut input, 50, |seq| vec![seq as u8; 1024]);
    input.flush();
    const LIMIT: usize = 4 << 10;
    let (mut next, mut rounds) = (1u64, 0);
    while !input.is_empty() {
        rounds += 1;
        assert!(rounds <= 50, "no progress");
        let progress = engine
            .process_bounded(
                &conn,
                &mut input,
                &mut output,
                &mut Vec::new(),
                Instant::now(),
                LIMIT,
            )
            .unwrap();
        assert!(progress.frames >= 1);
        // Stopped by the limit (holding more than it, by less than one
        // response), or at the end of the input.
        let held = output.unflushed_len();
        if progress.output_full {
            assert!(held > LIMIT && held < LIMIT + 1100, "held {held}");
            assert!(!input.is_empty());
        } else {
            assert!(input.is_empty());
        }
        // The peer reads everything: the output drains.
        output.flush();
        while let Some(f) = codec::decode(&mut output, engine.limits()).unwrap() {
            assert_eq!(f.header.seq, next);
            let resp = EchoResponse::decode(f.payload).unwrap();
            assert_eq!(&resp.payload[..], &[next as u8; 1024][..]);
            next += 1;
        }
        output.release();
    }
    assert_eq!(next, 51, "every request answered once, in order");
    assert!(
        rounds >= 10,
        "only {rounds} rounds: the limit was not applied"
    );
}

#[test]
fn unknown_service_and_method_are_unimplemented() {
    let mut p = Pair::new(engine_with(Arc::default(), Dispatch::Inline));
    let opts = CallOptions::DEFAULT;
    let a = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "nope.Nope",
        "Echo",
        &echo_req(b""),
        &opts,
    );
    let b = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Shout",
        &echo_req(b""),
        &opts,
    );
    let c =
        p.session
            .start_call::<_, EchoResponse>(&mut p.to_server, "", "", &echo_req(b""), &opts);
    p.exchange(Instant::now());
    let a = a.wait().unwrap_err();
    assert_eq!(
        (a.code(), a.message()),
        (Code::Unimplemented, "unknown service nope.Nope")
    );
    let b = b.wait().unwrap_err();
    assert_eq!(
        (b.code(), b.message()),
        (Code::Unimplemented, "unknown method echo.Echo/Shout")
    );
    assert_eq!(c.wait().unwrap_err().code(), Code::Unimplemented);
}

#[test]
fn expired_deadline_skips_the_handler() {
    let echo = Arc::new(EchoImpl::default());
    let mut p = Pair::new(engine_with(Arc::clone(&echo), Dispatch::Inline));
    let late = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"late"),
        &CallOptions::new().with_timeout(Duration::from_millis(5)),
    );
    let fine = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"ctx"),
        &CallOptions::new().with_timeout(Duration::from_secs(60)),
    );
    // The bytes "arrived" 50 ms ago: the 5 ms budget is spent, the 60 s one is not.
    p.exchange(Instant::now() - Duration::from_millis(50));
    assert_eq!(late.wait().unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(&fine.wait().unwrap().payload[..], b"echo.Echo/Echo/2/true");
    assert_eq!(
        echo.calls.load(Ordering::SeqCst),
        1,
        "the late call never ran"
    );
}

#[test]
fn a_panicking_handler_fails_only_its_call() {
    let echo = Arc::new(EchoImpl::default());
    let mut p = Pair::new(engine_with(Arc::clone(&echo), Dispatch::Inline));
    let opts = CallOptions::DEFAULT;
    let before = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"1"),
        &opts,
    );
    let boom = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"panic"),
        &opts,
    );
    let after = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"2"),
        &opts,
    );
    p.exchange(Instant::now());
    assert_eq!(&before.wait().unwrap().payload[..], b"1");
    let e = boom.wait().unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Internal, "handler panicked")
    );
    assert_eq!(&after.wait().unwrap().payload[..], b"2");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn undecodable_request_is_invalid_argument() {
    let mut p = Pair::new(engine_with(Arc::default(), Dispatch::Inline));
    // A bytes field whose length runs past the payload.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Raw {
        #[prost(uint64, tag = "1")]
        wrong_type: u64,
    }
    let call = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &Raw { wrong_type: 5 },
        &CallOptions::DEFAULT,
    );
    p.exchange(Instant::now());
    let e = call.wait().unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("cannot decode the request of echo.Echo/Echo"),
        "{e}"
    );
}

#[test]
fn metadata_and_peer_reach_the_handler() {
    let mut p = Pair::new(engine_with(Arc::default(), Dispatch::Inline));
    let meta = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"meta"),
        &CallOptions::new().with_metadata("k", "value-of-k"),
    );
    let peer = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"peer"),
        &CallOptions::DEFAULT,
    );
    p.exchange(Instant::now());
    assert_eq!(&meta.wait().unwrap().payload[..], b"value-of-k");
    assert_eq!(&peer.wait().unwrap().payload[..], b"127.0.0.1:4242");
}

#[test]
fn pool_dispatch_defers_calls_and_bounds_them() {
    let echo = Arc::new(EchoImpl::default());
    let limits = ferropoll_rpc::Limits {
        max_in_flight: 3,
        ..Default::default()
    };
    let mut engine = ServerEngine::with_limits(limits);
    engine
        .register(EchoServer::new(EchoImpl::default()))
        .unwrap();
    engine
        .register(KvServer::new(MemKv::default()))
        .unwrap()
        .method_dispatch("List", Dispatch::Pool)
        .unwrap();
    assert_eq!(engine.dispatch_of("kv.Kv", "List"), Some(Dispatch::Pool));
    assert_eq!(engine.dispatch_of("kv.Kv", "Get"), Some(Dispatch::Inline));
    assert_eq!(engine.dispatch_of("kv.Kv", "Nope"), None);
    drop(echo);

    let conn = ServerConn::new(PeerAddr::unknown());
    let session = ClientSession::new(&ClientOptions::default());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    let calls: Vec<_> = (0..5)
        .map(|_| {
            session.start_call::<_, kv::ListResponse>(
                &mut input,
                "kv.Kv",
                "List",
                &kv::ListRequest::default(),
                &CallOptions::DEFAULT,
            )
        })
        .collect();
    let get = session.start_call::<_, kv::GetResponse>(
        &mut input,
        "kv.Kv",
        "Get",
        &kv::GetRequest { key: "x".into() },
        &CallOptions::DEFAULT,
    );
    input.flush();
    let mut deferred = Vec::new();
    let progress = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut deferred,
            Instant::now(),
        )
        .unwrap();
    // 3 deferred (the limit), 2 rejected, 1 inline Get answered now.
    assert_eq!(
        (progress.frames, progress.deferred, progress.responses),
        (6, 3, 3)
    );
    assert_eq!(conn.in_flight(), 3);
    output.flush();
    session.handle_input(&mut output).unwrap();
    assert_eq!(get.wait().unwrap_err().code(), Code::NotFound);

    // Run the deferred calls on other threads, as gopool would.
    let outputs: Vec<LinkBuffer> = std::thread::scope(|s| {
        let handles: Vec<_> = deferred
            .drain(..)
            .map(|call| {
                assert_eq!(call.context().method(), "List");
                s.spawn(move || {
                    let mut out = LinkBuffer::new();
                    assert!(call.run(&mut out));
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(conn.in_flight(), 0);
    for mut out in outputs {
        out.flush();
        assert_eq!(session.handle_input(&mut out).unwrap(), 1);
    }
    let codes: Vec<_> = calls
        .into_iter()
        .map(|c| c.wait().map(|r| r.entries.len()).map_err(|e| e.code()))
        .collect();
    assert_eq!(
        codes,
        vec![
            Ok(0),
            Ok(0),
            Ok(0),
            Err(Code::ResourceExhausted),
            Err(Code::ResourceExhausted)
        ]
    );
}

#[test]
fn deferred_call_checks_its_deadline_again() {
    let mut engine = ServerEngine::new();
    engine
        .register(EchoServer::new(EchoImpl::default()))
        .unwrap()
        .dispatch(Dispatch::Pool);
    let conn = ServerConn::new(PeerAddr::unknown());
    let session = ClientSession::new(&ClientOptions::default());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    let call = session.start_call::<_, EchoResponse>(
        &mut input,
        "echo.Echo",
        "Echo",
        &echo_req(b"x"),
        &CallOptions::new().with_timeout(Duration::from_millis(20)),
    );
    input.flush();
    let mut deferred = Vec::new();
    // Arrived 15 ms ago with a 20 ms budget: not expired at decode time.
    engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut deferred,
            Instant::now() - Duration::from_millis(15),
        )
        .unwrap();
    assert_eq!(deferred.len(), 1);
    // ... but it waits in the "pool queue" until its deadline is behind it.
    let deadline = deferred[0].context().deadline().unwrap();
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(deferred.pop().unwrap().run(&mut output));
    output.flush();
    session.handle_input(&mut output).unwrap();
    assert_eq!(call.wait().unwrap_err().code(), Code::DeadlineExceeded);
}

#[test]
fn oneway_runs_the_handler_and_answers_nothing() {
    let echo = Arc::new(EchoImpl::default());
    let engine = engine_with(Arc::clone(&echo), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let session = ClientSession::new(&ClientOptions::default());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    session
        .send_oneway(
            &mut input,
            "echo.Echo",
            "Echo",
            &echo_req(b"x"),
            &CallOptions::DEFAULT,
        )
        .unwrap();
    session
        .send_oneway(
            &mut input,
            "echo.Echo",
            "Echo",
            &echo_req(b"panic"),
            &CallOptions::DEFAULT,
        )
        .unwrap();
    session
        .send_oneway(
            &mut input,
            "nope.Nope",
            "X",
            &echo_req(b"x"),
            &CallOptions::DEFAULT,
        )
        .unwrap();
    input.flush();
    let progress = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap();
    assert_eq!((progress.frames, progress.responses), (3, 0));
    assert_eq!(output.unflushed_len(), 0);
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn ping_is_answered_with_pong_in_order() {
    let mut p = Pair::new(engine_with(Arc::default(), Dispatch::Inline));
    let e = p.session.start_call::<_, EchoResponse>(
        &mut p.to_server,
        "echo.Echo",
        "Echo",
        &echo_req(b"a"),
        &CallOptions::DEFAULT,
    );
    let ping = p
        .session
        .start_ping(&mut p.to_server, Some(Duration::from_secs(5)));
    let progress = p.exchange(Instant::now());
    assert_eq!(progress.responses, 2);
    assert_eq!(ping.wait(), Ok(()));
    assert_eq!(&e.wait().unwrap().payload[..], b"a");
}

#[test]
fn a_protocol_error_answers_earlier_frames_then_closes() {
    let engine = engine_with(Arc::default(), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let session = ClientSession::new(&ClientOptions::default());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    let ok = session.start_call::<_, EchoResponse>(
        &mut input,
        "echo.Echo",
        "Echo",
        &echo_req(b"a"),
        &CallOptions::DEFAULT,
    );
    let pending = session.start_call::<_, EchoResponse>(
        &mut input,
        "echo.Echo",
        "Echo",
        &echo_req(b"b"),
        &CallOptions::DEFAULT,
    );
    // Corrupt the second frame's magic.
    input.flush();
    let mut bytes = input.read_binary(input.len()).unwrap();
    let second = bytes.len() / 2;
    assert_eq!(bytes[second], 0xFE);
    bytes[second] = b'X';
    input.write_binary(&bytes);
    input.flush();
    let err = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::BadMagic {
            found: [b'X', 0x50]
        }
    );
    output.flush();
    // The client gets the first answer, then the ERROR frame.
    let client_err = session.handle_input(&mut output).unwrap_err();
    assert!(
        matches!(client_err, ProtocolError::PeerError(ref s) if s.code() == Code::InvalidArgument),
        "{client_err}"
    );
    assert_eq!(&ok.wait().unwrap().payload[..], b"a");
    let e = pending.wait().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("bad magic"), "{e}");
    assert!(session.is_closed());
}

#[test]
fn an_error_frame_from_the_peer_closes_without_reply() {
    let engine = engine_with(Arc::default(), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    codec::encode_error(
        &mut input,
        engine.limits(),
        0,
        &Status::unavailable("going away"),
    );
    input.flush();
    let err = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::PeerError(Status::unavailable("going away"))
    );
    assert_eq!(output.unflushed_len(), 0);
}

#[test]
fn unknown_frame_types_and_stray_responses_are_skipped() {
    let engine = engine_with(Arc::default(), Dispatch::Inline);
    let conn = ServerConn::new(PeerAddr::unknown());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    // type 99 (a future CANCEL?), then a stray RESPONSE, then a ping
    let header = [0x08, 0x01, 0x10, 0x63];
    input.write_binary(&[0xFE, 0x50, 1, 0, 0, 0, 0, 6, 0, 0, 0, 4]);
    input.write_binary(&header);
    input.write_binary(&[1, 2]);
    codec::encode_response(&mut input, engine.limits(), 5, &()).unwrap();
    codec::encode_ping(&mut input, 6);
    input.flush();
    let progress = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap();
    assert_eq!((progress.frames, progress.responses), (3, 1));
    output.flush();
    let pong = codec::decode(&mut output, engine.limits())
        .unwrap()
        .unwrap();
    assert_eq!(
        (pong.message_type(), pong.header.seq),
        (Some(MessageType::Pong), 6)
    );
}

#[test]
fn registration_errors() {
    let mut engine = ServerEngine::new();
    engine
        .register(EchoServer::new(EchoImpl::default()))
        .unwrap();
    assert_eq!(
        engine.register(EchoServer::new(EchoImpl::default())).err(),
        Some(RegisterError::DuplicateService("echo.Echo"))
    );
    let err = engine
        .register(KvServer::new(MemKv::default()))
        .unwrap()
        .method_dispatch("Scan", Dispatch::Pool)
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "service kv.Kv has no method Scan");
}

#[test]
fn request_payload_bytes_are_not_copied() {
    // The Bytes field decoded by the generated server wrapper points into
    // the input buffer's node.
    struct Check(std::sync::Mutex<Option<(usize, usize)>>);
    impl common::echo::Echo for Check {
        fn echo(
            &self,
            _: &ferropoll_rpc::Context,
            req: EchoRequest,
        ) -> Result<EchoResponse, Status> {
            let p = req.payload.as_ptr() as usize;
            *self.0.lock().unwrap() = Some((p, req.payload.len()));
            Ok(EchoResponse {
                payload: req.payload,
            })
        }
        fn echo_stream(
            &self,
            _: &ferropoll_rpc::Context,
            _: ferropoll_rpc::RecvStream<EchoRequest>,
            _: ferropoll_rpc::SendSink<EchoResponse>,
        ) -> Result<(), Status> {
            Err(Status::unimplemented("not used by this test"))
        }
    }
    let check = Arc::new(Check(std::sync::Mutex::new(None)));
    struct Shared(Arc<Check>);
    impl common::echo::Echo for Shared {
        fn echo(&self, c: &ferropoll_rpc::Context, r: EchoRequest) -> Result<EchoResponse, Status> {
            self.0.echo(c, r)
        }
        fn echo_stream(
            &self,
            _: &ferropoll_rpc::Context,
            _: ferropoll_rpc::RecvStream<EchoRequest>,
            _: ferropoll_rpc::SendSink<EchoResponse>,
        ) -> Result<(), Status> {
            Err(Status::unimplemented("not used by this test"))
        }
    }
    let mut engine = ServerEngine::new();
    engine
        .register(EchoServer::new(Shared(Arc::clone(&check))))
        .unwrap();
    let session = ClientSession::new(&ClientOptions::default());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    let payload = vec![0xAB; 2000];
    let call = session.start_call::<_, EchoResponse>(
        &mut input,
        "echo.Echo",
        "Echo",
        &echo_req(&payload),
        &CallOptions::DEFAULT,
    );
    input.flush();
    let whole = input.len();
    let node = input.peek(whole).unwrap().as_ptr() as usize; // one node: no copy
    engine
        .process(
            &ServerConn::new(PeerAddr::unknown()),
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap();
    let (p, len) = check.0.lock().unwrap().unwrap();
    assert_eq!(len, 2000);
    assert!(p >= node && p + len <= node + whole, "payload was copied");
    output.flush();
    session.handle_input(&mut output).unwrap();
    assert_eq!(call.wait().unwrap().payload.len(), 2000);
}

#[test]
fn an_oversized_frame_gets_the_documented_error_frame() {
    // Only the 12-byte prefix of a 32 MiB frame has arrived.
    let engine = ServerEngine::new();
    let conn = ServerConn::new(PeerAddr::unknown());
    let (mut input, mut output) = (LinkBuffer::new(), LinkBuffer::new());
    input.write_binary(&[0xFE, 0x50, 1, 0, 0x02, 0, 0, 0, 0, 0, 0, 4]);
    input.flush();
    let err = engine
        .process(
            &conn,
            &mut input,
            &mut output,
            &mut Vec::new(),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ProtocolError::FrameTooLarge {
            len: 32 << 20,
            max: 16 << 20
        }
    );
    output.flush();
    let bytes = output.read_binary(output.len()).unwrap();
    // The bytes of PROTOCOL.md's ERROR example.
    let mut expected = vec![0xFE, 0x50, 1, 0, 0, 0, 0, 0x3B, 0, 0, 0, 0x3B];
    expected.extend_from_slice(&[0x10, 0x06, 0x28, 0x08, 0x32, 0x35]);
    expected.extend_from_slice(b"frame of 33554432 bytes exceeds the limit of 16777216");
    assert_eq!(bytes, expected);
}
