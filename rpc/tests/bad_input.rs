//! Bad input against a running RPC server, table-driven: every case gets an
//! error reply or a closed connection (as the case says), the server never
//! panics, and a well-behaved client on the same server keeps working.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::EchoImpl;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use ferropoll_rpc::codec::{self, Header, MessageType};
use ferropoll_rpc::{
    Client, ClientOptions, Code, Limits, LinkBuffer, Listener, MetadataEntry, Server,
};
use ferropoll_transport::testing::LeakCheck;
use prost::Message;

/// What the server must do with a case's bytes.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An ERROR frame (with this code, if given), then the connection closes.
    ErrorThenClose(Option<Code>),
    /// The connection closes with no reply (truncated input, then EOF).
    CloseSilently,
    /// A response with this status; the connection stays usable.
    Status(Code),
    /// Nothing comes back for it; the connection stays usable.
    Ignored,
}

fn prefix(body_len: u32, header_len: u32) -> Vec<u8> {
    let mut p = vec![0xFE, 0x50, 1, 0];
    p.extend_from_slice(&body_len.to_be_bytes());
    p.extend_from_slice(&header_len.to_be_bytes());
    p
}

/// A frame with a raw header and payload.
fn raw_frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = prefix((header.len() + payload.len()) as u32, header.len() as u32);
    f.extend_from_slice(header);
    f.extend_from_slice(payload);
    f
}

fn header(seq: u64, kind: i32, service: &str, method: &str) -> Header {
    Header {
        seq,
        kind,
        service: Bytes::copy_from_slice(service.as_bytes()),
        method: Bytes::copy_from_slice(method.as_bytes()),
        ..Header::default()
    }
}

fn frame_of(h: &Header, payload: &[u8]) -> Vec<u8> {
    raw_frame(&h.encode_to_vec(), payload)
}

/// Reads until one whole frame decodes (bounded by a read timeout); returns
/// its type, seq, status code and status message.
fn read_frame(s: &mut TcpStream) -> Option<(Option<MessageType>, u64, u32, String)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = LinkBuffer::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(f)) = codec::decode(&mut buf, &Limits::default()) {
            let h = &f.header;
            return Some((
                h.message_type(),
                h.seq,
                h.status_code,
                h.status_message.clone(),
            ));
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.write_binary(&chunk[..n]);
                buf.flush();
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no frame and no close within the bound: {e}"),
        }
    }
}

/// Reads until `n` whole frames decode (bounded by a read timeout); returns
/// each one's type, seq, status code and status message.
fn read_frames(s: &mut TcpStream, n: usize) -> Vec<(Option<MessageType>, u64, u32, String)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = LinkBuffer::new();
    let mut chunk = [0u8; 4096];
    let mut frames = Vec::new();
    while frames.len() < n {
        if let Some(f) = codec::decode(&mut buf, &Limits::default()).unwrap() {
            let h = &f.header;
            frames.push((
                h.message_type(),
                h.seq,
                h.status_code,
                h.status_message.clone(),
            ));
            continue;
        }
        let got = s.read(&mut chunk).expect("no frame within the bound");
        assert!(got > 0, "closed after {} of {n} frames", frames.len());
        buf.write_binary(&chunk[..got]);
        buf.flush();
    }
    assert!(buf.is_empty(), "more frames than expected");
    frames
}

/// Reads to the end of the stream: the server must close (bounded).
fn assert_closes(s: &mut TcpStream, case: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{case}: the server did not close the connection: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes that never start with the magic.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    if v.first() == Some(&0xFE) {
        v[0] = 0x00;
    }
    v
}

/// A header whose field 15 (unknown to this version) holds `depth` nested
/// groups: deep nesting for the decoder's recursion limit.
fn deeply_nested(depth: usize) -> Vec<u8> {
    let mut h = header(7, MessageType::Request as i32, "echo.Echo", "Echo").encode_to_vec();
    h.extend(std::iter::repeat_n(0x7B_u8, depth)); // field 15, start group
    h.extend(std::iter::repeat_n(0x7C_u8, depth)); // field 15, end group
    h
}

/// The frame of `kind` for stream `seq`: an opening of `method` with
/// `stream` set, a WINDOW of `window`, or a bare frame.
fn stream_frame(seq: u64, kind: MessageType, method: &str, window: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = header(seq, kind as i32, "", "");
    if kind == MessageType::Request {
        h = header(seq, kind as i32, "echo.Echo", method);
        h.stream = true;
    }
    h.window = window;
    frame_of(&h, payload)
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    let mut c: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        (
            "frame length 0",
            prefix(0, 0),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "frame length 1, header 0",
            raw_frame(&[], &[0]),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "frame length 1, header 1 (cut varint)",
            raw_frame(&[0x08], &[]),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "frame length 2^32-1",
            prefix(u32::MAX, 4),
            ErrorThenClose(Some(Code::ResourceExhausted)),
        ),
        (
            "header length 2^32-1",
            prefix(16, u32::MAX),
            ErrorThenClose(None),
        ),
        (
            "header longer than body",
            prefix(4, 8),
            ErrorThenClose(None),
        ),
        (
            "bad magic",
            b"\xFE\x51\x01\x00".to_vec(),
            ErrorThenClose(None),
        ),
        (
            "HTTP instead of RPC",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "version 2",
            {
                let mut p = prefix(4, 4);
                p[2] = 2;
                p
            },
            ErrorThenClose(None),
        ),
        (
            "a flag bit set",
            {
                let mut p = prefix(4, 4);
                p[3] = 0x80;
                p
            },
            ErrorThenClose(None),
        ),
        (
            "header not protobuf",
            raw_frame(&[0xFF, 0xFF, 0xFF, 0xFF], &[]),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "header with no message type",
            frame_of(&header(1, 0, "echo.Echo", "Echo"), &[]),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "deeply nested header (10,000 groups)",
            raw_frame(&deeply_nested(10_000), &[]),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "too many metadata entries",
            {
                let mut h = header(1, MessageType::Request as i32, "echo.Echo", "Echo");
                h.metadata = (0..100)
                    .map(|i| MetadataEntry {
                        key: format!("k{i}"),
                        value: "v".into(),
                    })
                    .collect();
                frame_of(&h, &[])
            },
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            "metadata over the header limit (100 KB value)",
            {
                let mut h = header(1, MessageType::Request as i32, "echo.Echo", "Echo");
                h.metadata = vec![MetadataEntry {
                    key: "k".into(),
                    value: "v".repeat(100_000),
                }];
                frame_of(&h, &[])
            },
            ErrorThenClose(Some(Code::ResourceExhausted)),
        ),
        (
            "an ERROR frame from the client",
            frame_of(&header(0, MessageType::Error as i32, "", ""), &[]),
            CloseSilently,
        ),
        (
            "truncated prefix",
            prefix(100, 10)[..5].to_vec(),
            CloseSilently,
        ),
        (
            "truncated body",
            {
                let f = common::echo_request_bytes(9, b"cut short");
                f[..f.len() - 3].to_vec()
            },
            CloseSilently,
        ),
        (
            "payload not protobuf",
            frame_of(
                &header(5, MessageType::Request as i32, "echo.Echo", "Echo"),
                &[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            ),
            Status(Code::InvalidArgument),
        ),
        (
            "unknown service",
            frame_of(
                &header(5, MessageType::Request as i32, "no.Such", "Echo"),
                &[],
            ),
            Status(Code::Unimplemented),
        ),
        (
            "unknown method",
            frame_of(
                &header(5, MessageType::Request as i32, "echo.Echo", "Nope"),
                &[],
            ),
            Status(Code::Unimplemented),
        ),
        (
            "service name not UTF-8",
            frame_of(
                &Header {
                    seq: 5,
                    kind: MessageType::Request as i32,
                    service: Bytes::from_static(b"\xFF\xFE"),
                    method: Bytes::from_static(b"Echo"),
                    ..Header::default()
                },
                &[],
            ),
            Status(Code::Unimplemented),
        ),
        (
            "unknown message type 99",
            frame_of(&header(5, 99, "", ""), b"whatever"),
            Ignored,
        ),
        (
            "a RESPONSE from the client",
            frame_of(&header(5, MessageType::Response as i32, "", ""), &[]),
            Ignored,
        ),
        (
            "a PONG from the client",
            frame_of(&header(5, MessageType::Pong as i32, "", ""), &[]),
            Ignored,
        ),
        (
            "a MESSAGE for a stream not open",
            stream_frame(5, MessageType::Message, "", 0, b"\x0A\x01x"),
            Ignored,
        ),
        (
            "a WINDOW for a stream not open",
            stream_frame(5, MessageType::Window, "", 1000, &[]),
            Ignored,
        ),
        (
            "a CANCEL for nothing",
            stream_frame(5, MessageType::Cancel, "", 0, &[]),
            Ignored,
        ),
        (
            "a HALF_CLOSE for nothing",
            stream_frame(5, MessageType::HalfClose, "", 0, &[]),
            Ignored,
        ),
        (
            "a stream opened on a unary method",
            stream_frame(5, MessageType::Request, "Echo", 0, &[]),
            Status(Code::Unimplemented),
        ),
        (
            "a streaming method called as unary",
            frame_of(
                &header(5, MessageType::Request as i32, "echo.Echo", "EchoStream"),
                &[],
            ),
            Status(Code::Unimplemented),
        ),
        (
            "a window update that overflows the credit",
            [
                stream_frame(1, MessageType::Request, "EchoStream", 0, &[]),
                stream_frame(1, MessageType::Window, "", u32::MAX, &[]),
            ]
            .concat(),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
        (
            // Processed in one round, before the handler runs: nothing is
            // consumed, so nothing is granted back.
            "stream messages beyond the window",
            [
                stream_frame(1, MessageType::Request, "EchoStream", 0, &[]),
                stream_frame(1, MessageType::Message, "", 0, &[0; 30_000]),
                stream_frame(1, MessageType::Message, "", 0, &[0; 30_000]),
                stream_frame(1, MessageType::Message, "", 0, &[0; 30_000]),
                stream_frame(1, MessageType::Message, "", 0, &[0; 30_000]),
            ]
            .concat(),
            ErrorThenClose(Some(Code::ResourceExhausted)),
        ),
        (
            "a message after the half-close",
            [
                stream_frame(1, MessageType::Request, "EchoStream", 0, &[]),
                stream_frame(1, MessageType::HalfClose, "", 0, &[]),
                stream_frame(1, MessageType::Message, "", 0, b"\x0A\x01x"),
            ]
            .concat(),
            ErrorThenClose(Some(Code::InvalidArgument)),
        ),
    ];
    for seed in 0..8u64 {
        let len = [1, 3, 11, 12, 13, 100, 4096, 70_000][seed as usize];
        c.push((
            "random bytes",
            random_bytes(seed, len),
            ErrorThenClose(None),
        ));
    }
    c
}

#[test]
fn every_bad_input_gets_an_error_or_a_close_and_harms_no_one_else() {
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(2).read_timeout(Some(Duration::from_secs(2)));
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let client = Client::connect(&addr, ClientOptions::default()).unwrap();
    let echo = EchoClient::new(client.clone());
    let ping = |what: &str| {
        let got = echo
            .echo(&EchoRequest {
                payload: Bytes::copy_from_slice(what.as_bytes()),
            })
            .unwrap_or_else(|e| panic!("the good client failed after {what:?}: {e}"));
        assert_eq!(&got.payload[..], what.as_bytes());
    };
    ping("before");
    for (name, bytes, expect) in cases() {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&bytes).unwrap();
        match expect {
            Expect::ErrorThenClose(code) => {
                let reply = read_frame(&mut s);
                if let Some((kind, _, status, msg)) = reply {
                    assert_eq!(kind, Some(MessageType::Error), "{name}: {msg}");
                    if let Some(code) = code {
                        assert_eq!(status, code.as_u32(), "{name}: {msg}");
                    }
                } else {
                    assert!(code.is_none(), "{name}: closed without the ERROR frame");
                }
                assert_closes(&mut s, name);
            }
            Expect::CloseSilently => {
                s.shutdown(Shutdown::Write).unwrap();
                assert!(read_frame(&mut s).is_none(), "{name}: a reply came");
            }
            Expect::Status(code) => {
                let (kind, seq, status, msg) =
                    read_frame(&mut s).unwrap_or_else(|| panic!("{name}: closed"));
                assert_eq!(kind, Some(MessageType::Response), "{name}");
                assert_eq!(seq, 5, "{name}");
                assert_eq!(status, code.as_u32(), "{name}: {msg}");
                s.write_all(&common::echo_request_bytes(6, b"still here"))
                    .unwrap();
                let (kind, seq, status, _) = read_frame(&mut s).unwrap();
                assert_eq!((kind, seq, status), (Some(MessageType::Response), 6, 0));
            }
            Expect::Ignored => {
                s.write_all(&common::echo_request_bytes(6, b"still here"))
                    .unwrap();
                let (kind, seq, status, msg) =
                    read_frame(&mut s).unwrap_or_else(|| panic!("{name}: closed"));
                assert_eq!(
                    (kind, seq, status),
                    (Some(MessageType::Response), 6, 0),
                    "{name}: {msg}"
                );
            }
        }
        drop(s);
        ping(name);
    }
    assert_eq!(server.stats().handler_panics, 0);
    ping("after");
    drop((echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_flood_of_stream_openings_is_bounded_per_connection() {
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let limit = Limits::default().max_streams as u64;
    let total = limit + 72;
    let mut s = TcpStream::connect(&addr).unwrap();
    let opens: Vec<u8> = (1..=total)
        .flat_map(|seq| stream_frame(seq, MessageType::Request, "EchoStream", 0, &[]))
        .collect();
    s.write_all(&opens).unwrap();
    // The openings past the limit are refused at once, each on its own.
    let refused: Vec<u64> = read_frames(&mut s, (total - limit) as usize)
        .into_iter()
        .map(|(kind, seq, status, msg)| {
            assert_eq!(kind, Some(MessageType::Response), "{msg}");
            assert_eq!(status, Code::ResourceExhausted.as_u32(), "{msg}");
            seq
        })
        .collect();
    assert_eq!(refused, (limit + 1..=total).collect::<Vec<_>>());
    // The others are open; other connections are served meanwhile.
    let client = Client::connect(&addr, ClientOptions::default()).unwrap();
    let echo = EchoClient::new(client.clone());
    let got = echo
        .echo(&EchoRequest {
            payload: Bytes::from_static(b"beside"),
        })
        .unwrap();
    assert_eq!(&got.payload[..], b"beside");
    // Half-closing them ends each with OK.
    let closes: Vec<u8> = (1..=limit)
        .flat_map(|seq| stream_frame(seq, MessageType::HalfClose, "", 0, &[]))
        .collect();
    s.write_all(&closes).unwrap();
    let mut ended: Vec<u64> = read_frames(&mut s, limit as usize)
        .into_iter()
        .map(|(kind, seq, status, msg)| {
            assert_eq!((kind, status), (Some(MessageType::Response), 0), "{msg}");
            seq
        })
        .collect();
    ended.sort_unstable();
    assert_eq!(ended, (1..=limit).collect::<Vec<_>>());
    drop((s, echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_stream_of_random_garbage_on_many_connections_at_once() {
    let leaks = LeakCheck::new();
    let mut b = Server::builder();
    b.num_loops(2);
    b.register(EchoServer::new(EchoImpl::default())).unwrap();
    let server = b.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    let client = Client::connect(&addr, ClientOptions::default()).unwrap();
    let echo = EchoClient::new(client.clone());
    // Valid prefixes followed by random headers and payloads, and plain
    // garbage, on 64 connections written at the same time.
    let mut socks = Vec::new();
    for seed in 0..64u64 {
        let mut rng = fastrand::Rng::with_seed(1000 + seed);
        let bytes = if seed % 2 == 0 {
            let hl = rng.u32(0..64);
            let body = hl + rng.u32(0..64);
            let mut f = prefix(body, hl);
            f.extend((0..body).map(|_| rng.u8(..)));
            f
        } else {
            random_bytes(seed, rng.usize(1..2000))
        };
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&bytes).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        socks.push(s);
    }
    for (i, s) in socks.iter_mut().enumerate() {
        assert_closes(s, &format!("garbage connection {i}"));
    }
    let got = echo
        .echo(&EchoRequest {
            payload: Bytes::from_static(b"fine"),
        })
        .unwrap();
    assert_eq!(&got.payload[..], b"fine");
    assert_eq!(server.stats().handler_panics, 0);
    drop((socks, got, echo, client));
    server.shutdown(Duration::from_secs(5)).unwrap();
    drop(server);
    leaks.assert_clean();
}
