//! The HTTP/2 server state machine driven in memory: a test peer writes
//! frames by hand (HPACK through loona-hpack), the server's output is
//! parsed back into frames.

use ferropoll_linkbuffer::LinkBuffer;
use loona_hpack::{Decoder, Encoder};

use super::conn::{Config, ConnError, Event, ServerH2};
use super::frame::{HEAD_LEN, Head, PREFACE, Reason, flag, kind, setting};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEAD_LEN + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn buf(bytes: &[u8]) -> LinkBuffer {
    let mut b = LinkBuffer::new();
    b.write_binary(bytes);
    b.flush();
    b
}

/// The frames written to `out`, consumed.
type Frames = Vec<(Head, Vec<u8>)>;

fn frames(out: &mut LinkBuffer) -> Frames {
    out.flush();
    let mut v = Vec::new();
    while out.len() >= HEAD_LEN {
        let head = Head::parse(out.next(HEAD_LEN).unwrap());
        let payload = out.next(head.len as usize).unwrap().to_vec();
        v.push((head, payload));
    }
    assert!(out.is_empty(), "a partial frame in the output");
    v
}

fn of_kind(frames: &[(Head, Vec<u8>)], k: u8) -> Vec<&(Head, Vec<u8>)> {
    frames.iter().filter(|(h, _)| h.kind == k).collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

struct Peer {
    server: ServerH2,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    events: Vec<Event>,
}

impl Peer {
    /// A server past the preface and both SETTINGS; its start frames are
    /// returned.
    fn open(cfg: Config) -> (Peer, Frames) {
        let mut out = LinkBuffer::new();
        let server = ServerH2::new(cfg, &mut out);
        let mut peer = Peer {
            server,
            enc: Encoder::new(),
            dec: Decoder::new(),
            events: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(kind::SETTINGS, 0, 0, &[]));
        peer.send(&hello, &mut out).unwrap();
        (peer, frames(&mut out))
    }

    fn send(&mut self, bytes: &[u8], out: &mut LinkBuffer) -> Result<(), ConnError> {
        let mut input = buf(bytes);
        self.server.recv(&mut input, out, &mut self.events)
    }

    /// Feeds `bytes`; returns the frames the server wrote.
    fn exchange(&mut self, bytes: &[u8]) -> (Result<(), ConnError>, Frames) {
        let mut out = LinkBuffer::new();
        let r = self.send(bytes, &mut out);
        (r, frames(&mut out))
    }

    fn block(&mut self, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        self.enc.encode(fields.iter().copied())
    }

    fn request_block(&mut self, path: &str) -> Vec<u8> {
        self.block(&[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b"content-type", b"application/grpc"),
        ])
    }

    /// Opens `stream` with a whole request (HEADERS, END_STREAM), taken.
    fn complete_request(&mut self, stream: u32) {
        let block = self.request_block("/a.B/C");
        let (r, _) = self.exchange(&frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            stream,
            &block,
        ));
        r.unwrap();
    }

    fn decode(&mut self, block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.dec.decode(block).unwrap()
    }
}

#[test]
fn the_handshake_exchanges_settings_and_raises_the_connection_window() {
    let cfg = Config::default();
    let (_peer, start) = Peer::open(cfg);
    // Our SETTINGS, the connection window update, the ACK of theirs.
    assert_eq!(start[0].0.kind, kind::SETTINGS);
    assert_eq!(start[0].0.flags, 0);
    let params: Vec<(u16, u32)> = start[0]
        .1
        .chunks_exact(6)
        .map(|p| (u16::from_be_bytes([p[0], p[1]]), u32_at(p, 2)))
        .collect();
    assert!(params.contains(&(setting::MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams)));
    assert!(params.contains(&(setting::INITIAL_WINDOW_SIZE, cfg.stream_window)));
    assert_eq!(start[1].0.kind, kind::WINDOW_UPDATE);
    assert_eq!(u32_at(&start[1].1, 0), cfg.conn_window - 65_535);
    assert_eq!(start[2].0.kind, kind::SETTINGS);
    assert!(start[2].0.has(flag::ACK));
}

#[test]
fn a_preface_that_arrives_in_pieces_is_waited_for_and_a_bad_one_refused() {
    let mut out = LinkBuffer::new();
    let mut server = ServerH2::new(Config::default(), &mut out);
    let mut events = Vec::new();
    let mut input = buf(&PREFACE[..10]);
    server.recv(&mut input, &mut out, &mut events).unwrap();
    assert_eq!(input.len(), 10, "a partial preface stays in the input");

    let mut out = LinkBuffer::new();
    let mut server = ServerH2::new(Config::default(), &mut out);
    let _ = frames(&mut out);
    let mut input = buf(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let err = server.recv(&mut input, &mut out, &mut events).unwrap_err();
    assert_eq!(err.reason, Reason::ProtocolError);
    let f = frames(&mut out);
    assert_eq!(f.last().unwrap().0.kind, kind::GOAWAY);
    assert_eq!(
        u32_at(&f.last().unwrap().1, 4),
        Reason::ProtocolError.code()
    );

    // The first frame after the preface must be SETTINGS.
    let mut out = LinkBuffer::new();
    let mut server = ServerH2::new(Config::default(), &mut out);
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(kind::PING, 0, 0, &[0; 8]));
    let err = server
        .recv(&mut buf(&hello), &mut out, &mut events)
        .unwrap_err();
    assert_eq!(err.reason, Reason::ProtocolError);
}

#[test]
fn a_request_split_over_continuations_is_one_event() {
    let (mut peer, _) = Peer::open(Config::default());
    let block = peer.request_block("/echo.Echo/Echo");
    let (a, b) = block.split_at(block.len() / 2);
    let mut bytes = frame(kind::HEADERS, 0, 1, a);
    bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, b));
    bytes.extend(frame(kind::DATA, flag::END_STREAM, 1, b"hello"));
    let (r, out) = peer.exchange(&bytes);
    r.unwrap();
    assert!(out.is_empty(), "nothing to answer yet: {out:?}");
    match &peer.events[..] {
        [
            Event::Request {
                stream: 1,
                fields,
                end_stream: false,
            },
            Event::Data {
                stream: 1,
                data,
                end_stream: true,
            },
        ] => {
            assert!(
                fields
                    .iter()
                    .any(|(n, v)| &n[..] == b":path" && &v[..] == b"/echo.Echo/Echo")
            );
            assert_eq!(data.len(), 5);
        }
        other => panic!("events {other:?}"),
    }
}

#[test]
fn a_header_block_interrupted_or_endless_ends_the_connection() {
    let (mut peer, _) = Peer::open(Config::default());
    let block = peer.request_block("/a.B/C");
    let mut bytes = frame(kind::HEADERS, 0, 1, &block);
    bytes.extend(frame(kind::PING, 0, 0, &[0; 8]));
    let (r, out) = peer.exchange(&bytes);
    assert_eq!(r.unwrap_err().reason, Reason::ProtocolError);
    assert_eq!(out.last().unwrap().0.kind, kind::GOAWAY);

    // A CONTINUATION flood: bounded by max_header_block.
    let cfg = Config {
        max_header_block: 4096,
        ..Config::default()
    };
    let (mut peer, _) = Peer::open(cfg);
    let mut bytes = frame(kind::HEADERS, 0, 1, &[0x40; 1000]);
    for _ in 0..10 {
        bytes.extend(frame(kind::CONTINUATION, 0, 1, &[0x40; 1000]));
    }
    let (r, out) = peer.exchange(&bytes);
    assert_eq!(r.unwrap_err().reason, Reason::EnhanceYourCalm);
    assert_eq!(
        u32_at(&out.last().unwrap().1, 4),
        Reason::EnhanceYourCalm.code()
    );
}

#[test]
fn headers_that_decode_past_the_list_limit_are_reported_not_kept() {
    let cfg = Config {
        max_header_list: 1024,
        ..Config::default()
    };
    let (mut peer, _) = Peer::open(cfg);
    // An HPACK bomb in miniature: one indexed 500-byte field, referenced
    // again and again (a byte per reference).
    let big = vec![b'x'; 500];
    let mut block = peer.request_block("/a.B/C");
    block.extend(peer.block(&[(b"x-big", &big)]));
    let again = peer.block(&[(b"x-big", &big)]);
    assert!(again.len() <= 2, "the second use is an index: {again:?}");
    // Over the limit by a little: the stream is reported, the connection lives.
    let mut modest = block.clone();
    modest.extend(&again);
    let (r, _) = peer.exchange(&frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &modest,
    ));
    r.unwrap();
    assert!(
        matches!(peer.events[..], [Event::HeadersTooLarge { stream: 1 }]),
        "{:?}",
        peer.events
    );
    // Expanding without end: the connection goes.
    let mut bomb = peer.request_block("/a.B/C");
    for _ in 0..100 {
        bomb.extend(&again);
    }
    let (r, out) = peer.exchange(&frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &bomb,
    ));
    assert_eq!(r.unwrap_err().reason, Reason::EnhanceYourCalm);
    assert_eq!(out.last().unwrap().0.kind, kind::GOAWAY);
}

#[test]
fn pings_are_answered_with_their_data() {
    let (mut peer, _) = Peer::open(Config::default());
    let (r, out) = peer.exchange(&frame(kind::PING, 0, 0, b"12345678"));
    r.unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].0.has(flag::ACK));
    assert_eq!(out[0].1, b"12345678");
    // An ACK is not answered; a PING of the wrong size is an error.
    let (r, out) = peer.exchange(&frame(kind::PING, flag::ACK, 0, b"12345678"));
    r.unwrap();
    assert!(out.is_empty());
    let (r, _) = peer.exchange(&frame(kind::PING, 0, 0, b"1234"));
    assert_eq!(r.unwrap_err().reason, Reason::FrameSizeError);
}

#[test]
fn protocol_violations_get_goaway_with_the_right_code() {
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "DATA on stream 0",
            frame(kind::DATA, 0, 0, b"x"),
            Reason::ProtocolError,
        ),
        (
            "a frame over the maximum size",
            frame(kind::DATA, 0, 1, &vec![0; 16_385]),
            Reason::FrameSizeError,
        ),
        (
            "SETTINGS of a bad length",
            frame(kind::SETTINGS, 0, 0, &[0; 5]),
            Reason::FrameSizeError,
        ),
        (
            "a window increment of 0 on the connection",
            frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
            Reason::ProtocolError,
        ),
        (
            "PUSH_PROMISE from a client",
            frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &[0; 4]),
            Reason::ProtocolError,
        ),
        (
            "RST_STREAM of an idle stream",
            frame(kind::RST_STREAM, 0, 7, &[0; 4]),
            Reason::ProtocolError,
        ),
        (
            "a header block that stops inside a field",
            frame(kind::HEADERS, flag::END_HEADERS, 1, &[0x00]),
            Reason::CompressionError,
        ),
        (
            "a literal longer than its block",
            frame(
                kind::HEADERS,
                flag::END_HEADERS,
                1,
                &[0x00, 0x7f, 0x05, b'a'],
            ),
            Reason::CompressionError,
        ),
    ];
    for (what, bytes, reason) in cases {
        let (mut peer, _) = Peer::open(Config::default());
        let (r, out) = peer.exchange(&bytes);
        assert_eq!(r.unwrap_err().reason, reason, "{what}");
        let goaway = out.last().unwrap();
        assert_eq!(goaway.0.kind, kind::GOAWAY, "{what}");
        assert_eq!(u32_at(&goaway.1, 4), reason.code(), "{what}");
    }
    // An even stream id from a client.
    let (mut peer, _) = Peer::open(Config::default());
    let block = peer.request_block("/a.B/C");
    let (r, _) = peer.exchange(&frame(kind::HEADERS, flag::END_HEADERS, 2, &block));
    assert_eq!(r.unwrap_err().reason, Reason::ProtocolError);
}

#[test]
fn streams_beyond_the_concurrency_limit_are_refused() {
    let cfg = Config {
        max_concurrent_streams: 2,
        ..Config::default()
    };
    let (mut peer, _) = Peer::open(cfg);
    let mut bytes = Vec::new();
    for id in [1, 3, 5] {
        let block = peer.request_block("/a.B/C");
        bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, id, &block));
    }
    let (r, out) = peer.exchange(&bytes);
    r.unwrap();
    let rst = of_kind(&out, kind::RST_STREAM);
    assert_eq!(rst.len(), 1);
    assert_eq!(rst[0].0.stream, 5);
    assert_eq!(u32_at(&rst[0].1, 0), Reason::RefusedStream.code());
    assert_eq!(peer.events.len(), 2, "two requests taken");
}

#[test]
fn data_beyond_the_windows_is_refused() {
    let cfg = Config {
        stream_window: 65_535,
        ..Config::default()
    };
    let (mut peer, _) = Peer::open(cfg);
    let block = peer.request_block("/a.B/C");
    let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
    for _ in 0..4 {
        bytes.extend(frame(kind::DATA, 0, 1, &[0; 16_384]));
    }
    // 65,536 bytes on a 65,535-byte window: a stream error.
    let (r, out) = peer.exchange(&bytes);
    r.unwrap();
    let rst = of_kind(&out, kind::RST_STREAM);
    assert_eq!(rst.len(), 1, "{out:?}");
    assert_eq!(u32_at(&rst[0].1, 0), Reason::FlowControlError.code());
    assert!(peer.events.iter().any(|e| matches!(
        e,
        Event::Reset {
            stream: 1,
            reason: Reason::FlowControlError
        }
    )));
}

#[test]
fn consumed_data_is_credited_back() {
    let cfg = Config {
        stream_window: 32_768,
        ..Config::default()
    };
    let (mut peer, _) = Peer::open(cfg);
    let block = peer.request_block("/a.B/C");
    let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
    bytes.extend(frame(kind::DATA, 0, 1, &[0; 16_384]));
    let (r, _) = peer.exchange(&bytes);
    r.unwrap();
    let mut out = LinkBuffer::new();
    peer.server.release(1, 16_384, &mut out);
    let f = frames(&mut out);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].0.kind, f[0].0.stream), (kind::WINDOW_UPDATE, 1));
    assert_eq!(u32_at(&f[0].1, 0), 16_384);
    // With the credit, another full window fits.
    let mut more = Vec::new();
    for _ in 0..2 {
        more.extend(frame(kind::DATA, 0, 1, &[0; 16_384]));
    }
    let (r, out) = peer.exchange(&more);
    r.unwrap();
    assert!(of_kind(&out, kind::RST_STREAM).is_empty());
}

#[test]
fn output_waits_for_the_peer_window_and_trailers_follow_the_data() {
    let (mut peer, _) = Peer::open(Config::default());
    peer.complete_request(1);
    let mut out = LinkBuffer::new();
    peer.server
        .send_headers(1, &[(b":status", b"200")], false, &mut out);
    peer.server
        .send_data(1, buf(&vec![7u8; 100_000]), false, &mut out);
    peer.server
        .send_trailers(1, vec![(b"grpc-status".to_vec(), b"0".to_vec())], &mut out);
    let f = frames(&mut out);
    let sent: usize = of_kind(&f, kind::DATA).iter().map(|(_, p)| p.len()).sum();
    assert_eq!(sent, 65_535, "the peer's default window");
    assert!(
        of_kind(&f, kind::DATA)
            .iter()
            .all(|(h, p)| p.len() <= 16_384 && !h.has(flag::END_STREAM))
    );
    let headers = of_kind(&f, kind::HEADERS);
    assert_eq!(headers.len(), 1, "trailers wait behind the data");
    assert_eq!(
        peer.decode(&headers[0].1),
        vec![(b":status".to_vec(), b"200".to_vec())]
    );
    // Credit for the stream only: the connection window is still empty.
    let (r, out) = peer.exchange(&frame(kind::WINDOW_UPDATE, 0, 1, &100_000u32.to_be_bytes()));
    r.unwrap();
    assert!(of_kind(&out, kind::DATA).is_empty());
    // Then the connection: the rest, and the trailers ending the stream.
    let (r, out) = peer.exchange(&frame(kind::WINDOW_UPDATE, 0, 0, &100_000u32.to_be_bytes()));
    r.unwrap();
    let sent: usize = of_kind(&out, kind::DATA).iter().map(|(_, p)| p.len()).sum();
    assert_eq!(sent, 100_000 - 65_535);
    let trailers = of_kind(&out, kind::HEADERS);
    assert_eq!(trailers.len(), 1);
    assert!(trailers[0].0.has(flag::END_STREAM));
    assert_eq!(
        peer.decode(&trailers[0].1),
        vec![(b"grpc-status".to_vec(), b"0".to_vec())]
    );
    assert!(!peer.server.can_send(1), "the stream ended");
}

#[test]
fn a_lowered_header_table_is_acknowledged_in_the_next_block() {
    let (mut peer, _) = Peer::open(Config::default());
    let mut settings = Vec::new();
    settings.extend_from_slice(&setting::HEADER_TABLE_SIZE.to_be_bytes());
    settings.extend_from_slice(&0u32.to_be_bytes());
    let (r, out) = peer.exchange(&frame(kind::SETTINGS, 0, 0, &settings));
    r.unwrap();
    assert!(out[0].0.has(flag::ACK));
    peer.complete_request(1);
    let mut out = LinkBuffer::new();
    peer.server
        .send_headers(1, &[(b":status", b"200"), (b"x-a", b"b")], true, &mut out);
    let f = frames(&mut out);
    // 001xxxxx with size 0, then fields the peer decodes with a zero-size table.
    assert_eq!(f[0].1[0], 0x20);
    peer.dec.set_max_table_size(0);
    assert_eq!(
        peer.decode(&f[0].1),
        vec![
            (b":status".to_vec(), b"200".to_vec()),
            (b"x-a".to_vec(), b"b".to_vec())
        ]
    );
}

#[test]
fn a_reset_from_the_peer_ends_the_stream() {
    let (mut peer, _) = Peer::open(Config::default());
    let block = peer.request_block("/a.B/C");
    let mut bytes = frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
    bytes.extend(frame(
        kind::RST_STREAM,
        0,
        1,
        &Reason::Cancel.code().to_be_bytes(),
    ));
    let (r, out) = peer.exchange(&bytes);
    r.unwrap();
    assert!(out.is_empty());
    assert!(matches!(
        peer.events[..],
        [
            Event::Request { stream: 1, .. },
            Event::Reset {
                stream: 1,
                reason: Reason::Cancel
            }
        ]
    ));
    assert!(!peer.server.can_send(1));
    // Frames after the reset are ignored, not errors.
    let (r, _) = peer.exchange(&frame(kind::DATA, 0, 1, b"late"));
    r.unwrap();
}

#[test]
fn a_message_goes_in_one_frame_when_it_fits_and_queues_when_not() {
    let (mut peer, _) = Peer::open(Config::default());
    peer.complete_request(1);
    let mut out = LinkBuffer::new();
    peer.server.send_message(1, buf(b"hello"), &mut out);
    peer.server.send_trailer(1, b"grpc-status", b"0", &mut out);
    let f = frames(&mut out);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].0.kind, f[0].0.flags), (kind::DATA, 0));
    assert_eq!(f[0].1, b"\0\0\0\0\x05hello");
    assert!(f[1].0.has(flag::END_STREAM));
    assert_eq!(
        peer.decode(&f[1].1),
        vec![(b"grpc-status".to_vec(), b"0".to_vec())]
    );

    // 70,000 bytes do not fit the default window: the window's worth goes,
    // the rest and the trailer wait for credit.
    peer.complete_request(3);
    let mut out = LinkBuffer::new();
    peer.server
        .send_message(3, buf(&vec![1u8; 70_000]), &mut out);
    peer.server.send_trailer(3, b"grpc-status", b"0", &mut out);
    let f = frames(&mut out);
    let sent: usize = of_kind(&f, kind::DATA).iter().map(|(_, p)| p.len()).sum();
    assert_eq!(
        sent,
        65_535 - 10,
        "the window less the first stream's message"
    );
    assert!(of_kind(&f, kind::HEADERS).is_empty());
    let mut more = frame(kind::WINDOW_UPDATE, 0, 3, &100_000u32.to_be_bytes());
    more.extend(frame(kind::WINDOW_UPDATE, 0, 0, &100_000u32.to_be_bytes()));
    let (r, out) = peer.exchange(&more);
    r.unwrap();
    let rest: usize = of_kind(&out, kind::DATA).iter().map(|(_, p)| p.len()).sum();
    assert_eq!(sent + rest, 70_005);
    assert_eq!(of_kind(&out, kind::HEADERS).len(), 1);
}
