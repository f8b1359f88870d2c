//! gRPC over HTTP/2 on a real socket, driven frame by frame: what a
//! server owes a gRPC client (metadata both ways, statuses in trailers,
//! HTTP errors for what is not gRPC) and what it does to a peer that breaks
//! HTTP/2 (GOAWAY with the right code and a close, the other connections
//! untouched). Interop with real gRPC implementations is in
//! `examples/tests/grpc.rs` (Python grpcio) and
//! `examples/baselines/tests/tonic_client.rs` (tonic).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoResponse, EchoServer};
use ferropoll_rpc::{Client, ClientOptions, Listener, Server};
use ferropoll_transport::testing::LeakCheck;
use prost::Message;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend(payload);
    v
}

/// A hand-driven HTTP/2 client.
struct Peer {
    s: TcpStream,
    enc: loona_hpack::Encoder<'static>,
    dec: httlib_hpack::Decoder<'static>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Peer {
    fn connect(addr: &str) -> Peer {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut p = Peer {
            s,
            enc: loona_hpack::Encoder::new(),
            dec: httlib_hpack::Decoder::with_dynamic_size(4096),
        };
        // Windows large enough that no test waits for credit.
        let mut settings = 4u16.to_be_bytes().to_vec();
        settings.extend((16u32 << 20).to_be_bytes());
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &settings));
        hello.extend(frame(8, 0, 0, &(16u32 << 20).to_be_bytes()));
        p.s.write_all(&hello).unwrap();
        p
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` at EOF.
    fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        if self.s.read_exact(&mut head).is_err() {
            return None;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.s.read_exact(&mut payload).unwrap();
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
            payload,
        })
    }

    fn headers(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut buf = block.to_vec();
        let mut out = Vec::new();
        self.dec.decode(&mut buf, &mut out).unwrap();
        out.into_iter()
            .map(|(n, v, _)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn request(&mut self, stream: u32, path: &str, content_type: &str, extra: &[(&str, &str)]) {
        let bytes = self.request_frame(stream, path, content_type, extra);
        self.send(&bytes);
    }

    fn request_frame(
        &mut self,
        stream: u32,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"test"),
            (b"content-type", content_type.as_bytes()),
            (b"te", b"trailers"),
        ];
        fields.extend(extra.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        let block = self.enc.encode(fields);
        frame(HEADERS, END_HEADERS, stream, &block)
    }

    fn message(&mut self, stream: u32, msg: &impl Message, end: bool) {
        let body = msg.encode_to_vec();
        let mut data = vec![0];
        data.extend((body.len() as u32).to_be_bytes());
        data.extend(body);
        self.send(&frame(
            DATA,
            if end { END_STREAM } else { 0 },
            stream,
            &data,
        ));
    }

    /// Reads to EOF; the error code of the last GOAWAY seen.
    fn goaway_code_at_eof(&mut self) -> Option<u32> {
        let mut code = None;
        while let Some(f) = self.read() {
            if f.kind == GOAWAY {
                code = Some(u32::from_be_bytes([
                    f.payload[4],
                    f.payload[5],
                    f.payload[6],
                    f.payload[7],
                ]));
            }
        }
        code
    }

    /// A unary `echo.Echo/Echo` of `payload` on `stream`, answered OK with it.
    fn echo(&mut self, stream: u32, payload: &[u8]) {
        self.request(stream, "/echo.Echo/Echo", "application/grpc", &[]);
        let req = EchoRequest {
            payload: payload.to_vec().into(),
        };
        self.message(stream, &req, true);
        let (blocks, data) = self.response(stream);
        assert_eq!(
            get(blocks.last().unwrap(), "grpc-status"),
            Some("0"),
            "{blocks:?}"
        );
        assert_eq!(
            &EchoResponse::decode(&data[5..]).unwrap().payload[..],
            payload
        );
    }

    /// Reads until `stream` ends: its header blocks (decoded) and DATA.
    fn response(&mut self, stream: u32) -> (Vec<Vec<(String, String)>>, Vec<u8>) {
        let (mut blocks, mut data) = (Vec::new(), Vec::new());
        loop {
            let f = self
                .read()
                .expect("the server closed before the stream ended");
            if f.stream != stream {
                continue;
            }
            match f.kind {
                HEADERS => {
                    let block = self.headers(&f.payload);
                    blocks.push(block);
                }
                DATA => data.extend(&f.payload),
                RST_STREAM => panic!("stream {stream} reset: {:?}", f.payload),
                _ => {}
            }
            if f.flags & END_STREAM != 0 {
                return (blocks, data);
            }
        }
    }
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A native-protocol echo of `text` on a connection of its own.
fn native_echo(addr: &str, text: &str) {
    let native = Client::connect(addr, ClientOptions::default()).unwrap();
    let r = EchoClient::new(native)
        .echo(&EchoRequest {
            payload: text.as_bytes().to_vec().into(),
        })
        .unwrap();
    assert_eq!(&r.payload[..], text.as_bytes());
}

fn start() -> (Server, String) {
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    (server, addr)
}

#[test]
fn metadata_goes_both_ways_and_statuses_come_in_trailers() {
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    let mut p = Peer::connect(&addr);
    // The handler answers `meta` with the request's `k` entry, in the body
    // and in the response metadata `echoed`.
    p.request(1, "/echo.Echo/Echo", "application/grpc", &[("k", "v 1")]);
    p.message(
        1,
        &EchoRequest {
            payload: b"meta"[..].into(),
        },
        true,
    );
    let (blocks, data) = p.response(1);
    assert_eq!(blocks.len(), 2, "headers and trailers: {blocks:?}");
    assert_eq!(get(&blocks[0], ":status"), Some("200"));
    assert_eq!(get(&blocks[0], "content-type"), Some("application/grpc"));
    assert_eq!(get(&blocks[0], "echoed"), Some("v 1"));
    assert_eq!(get(&blocks[1], "grpc-status"), Some("0"));
    assert_eq!(&data[..5], &[0, 0, 0, 0, (data.len() - 5) as u8]);
    let resp = EchoResponse::decode(&data[5..]).unwrap();
    assert_eq!(&resp.payload[..], b"v 1");

    // A panicking handler: INTERNAL, as a Trailers-Only response.
    p.request(3, "/echo.Echo/Echo", "application/grpc+proto", &[]);
    p.message(
        3,
        &EchoRequest {
            payload: b"panic"[..].into(),
        },
        true,
    );
    let (blocks, data) = p.response(3);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(get(&blocks[0], "grpc-status"), Some("13"));
    assert!(data.is_empty());

    // An unknown method: UNIMPLEMENTED with its name in grpc-message.
    p.request(5, "/echo.Echo/Nope", "application/grpc", &[]);
    p.message(5, &EchoRequest::default(), true);
    let (blocks, _) = p.response(5);
    assert_eq!(get(&blocks[0], "grpc-status"), Some("12"));
    assert!(get(&blocks[0], "grpc-message").unwrap().contains("Nope"));

    // Not gRPC: 415 for another content type, 405 for GET.
    p.request(7, "/echo.Echo/Echo", "application/json", &[]);
    let (blocks, _) = p.response(7);
    assert_eq!(get(&blocks[0], ":status"), Some("415"));
    let block = p.enc.encode([
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b"content-type", b"application/grpc"),
    ]);
    p.send(&frame(HEADERS, END_HEADERS | END_STREAM, 9, &block));
    let (blocks, _) = p.response(9);
    assert_eq!(get(&blocks[0], ":status"), Some("405"));

    // A unary call with two messages breaks the protocol: INTERNAL.
    p.request(11, "/echo.Echo/Echo", "application/grpc", &[]);
    p.message(11, &EchoRequest::default(), false);
    p.message(11, &EchoRequest::default(), true);
    let (blocks, _) = p.response(11);
    assert_eq!(get(blocks.last().unwrap(), "grpc-status"), Some("13"));
    drop(p);
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_peer_that_breaks_http2_is_closed_and_the_others_are_served() {
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    let native = Client::connect(&addr, ClientOptions::default()).unwrap();
    let echo = EchoClient::new(native.clone());
    let mut good = Peer::connect(&addr);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("DATA on stream 0", frame(DATA, 0, 0, b"x"), 0x1),
        (
            "a frame over 16 KiB",
            frame(DATA, 0, 1, &vec![0; 20_000]),
            0x6,
        ),
        ("a bad SETTINGS length", frame(SETTINGS, 0, 0, &[0; 7]), 0x6),
        (
            "an even stream id",
            {
                let mut enc = loona_hpack::Encoder::new();
                let block = enc.encode([(&b":method"[..], &b"POST"[..])]);
                frame(HEADERS, END_HEADERS, 2, &block)
            },
            0x1,
        ),
        (
            "garbage HPACK",
            frame(HEADERS, END_HEADERS, 1, &[0xff; 8]),
            0x9,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut bad = Peer::connect(&addr);
        bad.send(&bytes);
        let goaway = bad.goaway_code_at_eof();
        assert_eq!(goaway, Some(code), "{what}: GOAWAY code, then EOF");
        // Others go on: a native call and a gRPC call.
        let r = echo
            .echo(&EchoRequest {
                payload: what.as_bytes().to_vec().into(),
            })
            .unwrap();
        assert_eq!(&r.payload[..], what.as_bytes());
    }
    // A bad preface: a GOAWAY and the close (read to EOF, no hang).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    good.echo(1, b"still");
    drop((good, s, echo, native));
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_rapid_reset_flood_is_sent_goaway_and_others_are_served() {
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    // Rapid reset (CVE-2023-44487): HEADERS and RST_STREAM, again and
    // again. A client that lets calls finish may cancel many: first 500
    // completed calls, then resets — within 1000 + 2 x 500 the connection
    // serves; past it, GOAWAY ENHANCE_YOUR_CALM and the close.
    let mut p = Peer::connect(&addr);
    let mut id = 1;
    for _ in 0..500 {
        p.echo(id, b"ok");
        id += 2;
    }
    let burst = |p: &mut Peer, n: usize, id: &mut u32| {
        let mut bytes = Vec::new();
        for _ in 0..n {
            let block = p.enc.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/echo.Echo/EchoStream"),
                (b"content-type", b"application/grpc"),
            ]);
            bytes.extend(frame(HEADERS, END_HEADERS, *id, &block));
            bytes.extend(frame(RST_STREAM, 0, *id, &8u32.to_be_bytes()));
            *id += 2;
        }
        p.s.write_all(&bytes).is_ok()
    };
    assert!(burst(&mut p, 1_900, &mut id));
    // Within the allowance: served.
    p.echo(id, b"within");
    id += 2;
    burst(&mut p, 5_000, &mut id);
    let goaway = p.goaway_code_at_eof();
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM past the allowance"
    );
    // Another gRPC connection is served.
    let mut good = Peer::connect(&addr);
    good.echo(1, b"after");
    drop((p, good));
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn health_watchers_hear_not_serving_when_the_server_shuts_down() {
    use ferropoll_rpc::health::{HealthCheckRequest, HealthCheckResponse, ServingStatus};
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let health = b.health();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let mut p = Peer::connect(&addr);
    p.request(1, "/grpc.health.v1.Health/Watch", "application/grpc", &[]);
    let req = HealthCheckRequest {
        service: "echo.Echo".into(),
    };
    p.message(1, &req, true);
    // The GOAWAY payloads seen on the way.
    let mut goaways = Vec::new();
    let mut next_status = |p: &mut Peer| loop {
        let f = p.read().expect("closed before a status");
        if f.kind == GOAWAY {
            goaways.push(f.payload[..8].to_vec());
        }
        if f.stream == 1 && f.kind == DATA && f.payload.len() > 5 {
            return HealthCheckResponse::decode(&f.payload[5..]).unwrap().status;
        }
    };
    assert_eq!(next_status(&mut p), ServingStatus::Serving as i32);
    // A change by the application reaches the watcher...
    health.set("echo.Echo", ServingStatus::NotServing);
    assert_eq!(next_status(&mut p), ServingStatus::NotServing as i32);
    health.set("echo.Echo", ServingStatus::Serving);
    assert_eq!(next_status(&mut p), ServingStatus::Serving as i32);
    // ...and a graceful shutdown says NOT_SERVING before it closes.
    let stopper = {
        let server = server.clone();
        std::thread::spawn(move || server.shutdown(Duration::from_secs(2)))
    };
    assert_eq!(next_status(&mut p), ServingStatus::NotServing as i32);
    // And a GOAWAY NO_ERROR naming the last stream taken, before the close.
    while let Some(f) = p.read() {
        if f.kind == GOAWAY {
            goaways.push(f.payload[..8].to_vec());
        }
    }
    assert_eq!(
        goaways,
        vec![vec![0, 0, 0, 1, 0, 0, 0, 0]],
        "one GOAWAY(last 1, NO_ERROR)"
    );
    drop(p);
    stopper.join().unwrap().unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn gzip_requests_inflate_within_the_message_limit() {
    use std::io::Write as _;
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    let mut p = Peer::connect(&addr);
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let framed = |flag: u8, body: &[u8]| {
        let mut v = vec![flag];
        v.extend((body.len() as u32).to_be_bytes());
        v.extend(body);
        v
    };
    // A compressed request is answered.
    let req = EchoRequest {
        payload: vec![b'z'; 100_000].into(),
    }
    .encode_to_vec();
    p.request(
        1,
        "/echo.Echo/Echo",
        "application/grpc",
        &[("grpc-encoding", "gzip")],
    );
    p.send(&frame(DATA, END_STREAM, 1, &framed(1, &gz(&req))));
    let (blocks, data) = p.response(1);
    assert_eq!(
        get(&blocks[0], "grpc-accept-encoding"),
        Some("identity,gzip")
    );
    assert_eq!(get(blocks.last().unwrap(), "grpc-status"), Some("0"));
    assert_eq!(
        EchoResponse::decode(&data[5..]).unwrap().payload.len(),
        100_000
    );
    // A gzip bomb: 64 MiB of zeros in ~64 KiB, past the 16 MiB limit.
    let bomb = gz(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    p.request(
        3,
        "/echo.Echo/Echo",
        "application/grpc",
        &[("grpc-encoding", "gzip")],
    );
    let body = framed(1, &bomb);
    for (i, chunk) in body.chunks(16_000).enumerate() {
        let last = (i + 1) * 16_000 >= body.len();
        p.send(&frame(DATA, if last { END_STREAM } else { 0 }, 3, chunk));
    }
    let (blocks, _) = p.response(3);
    assert_eq!(
        get(blocks.last().unwrap(), "grpc-status"),
        Some("8"),
        "{blocks:?}"
    );
    // The compressed flag without an encoding: INTERNAL.
    p.request(5, "/echo.Echo/Echo", "application/grpc", &[]);
    p.send(&frame(DATA, END_STREAM, 5, &framed(1, &gz(&req))));
    let (blocks, _) = p.response(5);
    assert_eq!(get(blocks.last().unwrap(), "grpc-status"), Some("13"));
    drop(p);
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_client_that_never_opens_its_window_is_closed_at_the_queue_limit() {
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    let mut p = Peer::connect(&addr);
    // Stream windows of 0: no response DATA can go.
    let mut zero = 4u16.to_be_bytes().to_vec();
    zero.extend(0u32.to_be_bytes());
    p.send(&frame(SETTINGS, 0, 0, &zero));
    let req = EchoRequest {
        payload: vec![b'q'; 900 << 10].into(),
    };
    let mut id = 1;
    // 900 KiB answers pile up for the client; past 32 MiB it is let go.
    for _ in 0..60 {
        let headers = p.request_frame(id, "/echo.Echo/Echo", "application/grpc", &[]);
        if p.s.write_all(&headers).is_err() {
            break; // closed already
        }
        if p.s
            .write_all(&{
                let body = req.encode_to_vec();
                let mut data = vec![0];
                data.extend((body.len() as u32).to_be_bytes());
                data.extend(body);
                data.chunks(16_000)
                    .enumerate()
                    .flat_map(|(i, c)| {
                        let last = (i + 1) * 16_000 >= data.len();
                        frame(DATA, if last { END_STREAM } else { 0 }, id, c)
                    })
                    .collect::<Vec<u8>>()
            })
            .is_err()
        {
            break; // closed already
        }
        id += 2;
    }
    let goaway = p.goaway_code_at_eof();
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM, then the close"
    );
    // Others are served.
    native_echo(&addr, "fine");
    drop(p);
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn requests_that_never_complete_cannot_grow_the_server_without_bound() {
    let leaks = LeakCheck::new();
    let (server, addr) = start();
    let mut p = Peer::connect(&addr);
    // Each stream: the start of a 2 MiB message, 1,000,000 bytes of it,
    // and never the rest. 80 of them would hold 80 MB.
    let mut head = vec![0];
    head.extend((2u32 << 20).to_be_bytes());
    let chunk = vec![7u8; 16_000];
    'streams: for i in 0..80u32 {
        let id = 1 + 2 * i;
        let headers = p.request_frame(id, "/echo.Echo/Echo", "application/grpc", &[]);
        let mut bytes = headers;
        bytes.extend(frame(DATA, 0, id, &head));
        for _ in 0..62 {
            bytes.extend(frame(DATA, 0, id, &chunk));
        }
        if p.s.write_all(&bytes).is_err() {
            break 'streams;
        }
    }
    let goaway = p.goaway_code_at_eof();
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY ENHANCE_YOUR_CALM past 64 MiB held"
    );
    native_echo(&addr, "fine");
    drop(p);
    server.shutdown(Duration::from_secs(2)).unwrap();
    drop(server);
    leaks.assert_clean();
}
