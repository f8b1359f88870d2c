//! Unit tests of the codec: exact bytes, round trips, splits, limits, garbage.

use std::time::Duration;

use super::*;

/// The header schema as prost-build generates it from `rpc.proto`.
mod generated {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ferropoll.rpc.rs"));
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
}

fn limits() -> Limits {
    Limits::default()
}

fn buffer_of(bytes: &[u8]) -> LinkBuffer {
    let mut buf = LinkBuffer::new();
    buf.write_binary(bytes);
    buf.flush();
    buf
}

fn drain(buf: &mut LinkBuffer) -> Vec<u8> {
    buf.flush();
    buf.read_binary(buf.len()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = buffer_of(bytes);
    let frame = decode(&mut buf, &limits()).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "exactly one frame");
    frame
}

#[test]
fn protocol_md_examples_are_exact() {
    let mut out = LinkBuffer::new();
    encode_ping(&mut out, 1);
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 04 00 00 00 04 08 01 10 04")
    );

    let metadata = Metadata::new();
    let head = RequestHead {
        seq: 7,
        service: "echo.Echo",
        method: "Echo",
        timeout: Some(Duration::from_millis(250)),
        metadata: &metadata,
        oneway: false,
    };
    let req = EchoRequest {
        payload: b"hi".to_vec(),
    };
    encode_request(&mut out, &limits(), &head, &req).unwrap();
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 1D 00 00 00 19 08 07 10 01 \
             1A 09 65 63 68 6F 2E 45 63 68 6F 22 04 45 63 68 6F 38 90 A1 0F 0A 02 68 69")
    );

    encode_response(&mut out, &limits(), 7, &req).unwrap();
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 08 00 00 00 04 08 07 10 02 0A 02 68 69")
    );

    encode_status(&mut out, &limits(), 9, &Status::not_found("no such key"));
    assert_eq!(
        drain(&mut out),
        hex(
            "FE 50 01 00 00 00 00 13 00 00 00 13 08 09 10 02 28 05 32 0B \
             6E 6F 20 73 75 63 68 20 6B 65 79"
        )
    );
}

#[test]
fn protocol_md_stream_examples_are_exact() {
    let metadata = Metadata::new();
    let head = RequestHead {
        seq: 3,
        service: "echo.Echo",
        method: "EchoStream",
        timeout: None,
        metadata: &metadata,
        oneway: false,
    };
    let mut out = LinkBuffer::new();
    encode_stream_open(&mut out, &limits(), &head).unwrap();
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 1D 00 00 00 1D 08 03 10 01 \
             1A 09 65 63 68 6F 2E 45 63 68 6F 22 0A 45 63 68 6F 53 74 72 65 61 6D 48 01")
    );
    let req = EchoRequest {
        payload: b"hi".to_vec(),
    };
    encode_message(&mut out, &limits(), 3, &req).unwrap();
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 08 00 00 00 04 08 03 10 07 0A 02 68 69")
    );
    encode_window(&mut out, 3, 65_536);
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 08 00 00 00 08 08 03 10 0A 50 80 80 04")
    );
    encode_half_close(&mut out, 3);
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 04 00 00 00 04 08 03 10 08")
    );
    encode_cancel(&mut out, 3);
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 04 00 00 00 04 08 03 10 09")
    );
    encode_status(&mut out, &limits(), 3, &Status::new(Code::Ok, ""));
    assert_eq!(
        drain(&mut out),
        hex("FE 50 01 00 00 00 00 04 00 00 00 04 08 03 10 02")
    );
    // and they decode as what they are
    let mut all = LinkBuffer::new();
    encode_stream_open(&mut all, &limits(), &head).unwrap();
    encode_message(&mut all, &limits(), 3, &req).unwrap();
    encode_window(&mut all, 3, 100);
    encode_half_close(&mut all, 3);
    encode_cancel(&mut all, 3);
    all.flush();
    let kinds: Vec<_> = std::iter::from_fn(|| decode(&mut all, &limits()).unwrap())
        .map(|f| {
            (
                f.message_type(),
                f.header.stream,
                f.header.window,
                f.payload.len(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (Some(MessageType::Request), true, 0, 0),
            (Some(MessageType::Message), false, 0, 4),
            (Some(MessageType::Window), false, 100, 0),
            (Some(MessageType::HalfClose), false, 0, 0),
            (Some(MessageType::Cancel), false, 0, 0),
        ]
    );
}

#[test]
fn every_message_type_round_trips() {
    let metadata: Metadata = [("tenant", "a"), ("trace", "xyz")].into_iter().collect();
    let req = EchoRequest {
        payload: vec![7; 300],
    };
    let mut out = LinkBuffer::new();
    for oneway in [false, true] {
        let head = RequestHead {
            seq: 42,
            service: "kv.Kv",
            method: "Get",
            timeout: Some(Duration::from_micros(1500)),
            metadata: &metadata,
            oneway,
        };
        encode_request(&mut out, &limits(), &head, &req).unwrap();
        let f = decode_one(&drain(&mut out));
        let kind = if oneway {
            MessageType::Oneway
        } else {
            MessageType::Request
        };
        assert_eq!(f.message_type(), Some(kind));
        assert_eq!(f.header.seq, 42);
        assert_eq!(&f.header.service[..], b"kv.Kv");
        assert_eq!(&f.header.method[..], b"Get");
        assert_eq!(f.header.timeout_us, 1500);
        assert_eq!(Metadata::from_entries(f.header.metadata.clone()), metadata);
        assert_eq!(EchoRequest::decode(f.payload).unwrap(), req);
    }

    encode_response(&mut out, &limits(), 3, &req).unwrap();
    let f = decode_one(&drain(&mut out));
    assert_eq!(f.message_type(), Some(MessageType::Response));
    assert_eq!(f.header.status_code, 0);
    assert_eq!(EchoRequest::decode(f.payload).unwrap(), req);

    let status = Status::already_exists("key k").with_metadata("k", "v");
    encode_status(&mut out, &limits(), 4, &status);
    let f = decode_one(&drain(&mut out));
    assert_eq!(f.message_type(), Some(MessageType::Response));
    assert_eq!(f.header.status(), status);
    assert!(f.payload.is_empty());

    encode_error(&mut out, &limits(), 0, &Status::invalid_argument("bad"));
    let f = decode_one(&drain(&mut out));
    assert_eq!(f.message_type(), Some(MessageType::Error));
    assert_eq!(f.header.status().code(), Code::InvalidArgument);

    encode_ping(&mut out, 5);
    let ping = decode_one(&drain(&mut out));
    assert_eq!(ping.message_type(), Some(MessageType::Ping));
    encode_pong(&mut out, &limits(), 5, buffer_of(b"echo me")).unwrap();
    let mut pong = decode_one(&drain(&mut out));
    assert_eq!(pong.message_type(), Some(MessageType::Pong));
    assert_eq!(pong.header.seq, 5);
    assert_eq!(pong.payload.read_binary(7).unwrap(), b"echo me");
}

#[test]
fn hand_written_header_matches_the_generated_schema() {
    // generated -> hand-written
    let g = generated::Header {
        seq: 99,
        r#type: generated::MessageType::Request as i32,
        service: "kv.Kv".into(),
        method: "List".into(),
        status_code: 5,
        status_message: "m".into(),
        timeout_us: 123_456,
        metadata: [("a".to_owned(), "1".to_owned())].into_iter().collect(),
        stream: true,
        window: 65_536,
    };
    let h = Header::decode(&g.encode_to_vec()[..]).unwrap();
    assert!(h.stream);
    assert_eq!(h.window, 65_536);
    assert_eq!(h.seq, 99);
    assert_eq!(h.message_type(), Some(MessageType::Request));
    assert_eq!(
        (&h.service[..], &h.method[..]),
        (&b"kv.Kv"[..], &b"List"[..])
    );
    assert_eq!((h.status_code, h.status_message.as_str()), (5, "m"));
    assert_eq!(h.timeout_us, 123_456);
    assert_eq!(h.metadata.len(), 1);
    assert_eq!(
        (h.metadata[0].key.as_str(), h.metadata[0].value.as_str()),
        ("a", "1")
    );

    // our encoder -> generated
    let metadata: Metadata = [("k", "v")].into_iter().collect();
    let mut out = LinkBuffer::new();
    let head = RequestHead {
        seq: 8,
        service: "s.S",
        method: "M",
        timeout: Some(Duration::from_secs(2)),
        metadata: &metadata,
        oneway: true,
    };
    encode_request(&mut out, &limits(), &head, &()).unwrap();
    let bytes = drain(&mut out);
    let g = generated::Header::decode(&bytes[PREFIX_LEN..]).unwrap();
    assert_eq!(g.seq, 8);
    assert_eq!(g.r#type, generated::MessageType::Oneway as i32);
    assert_eq!((g.service.as_str(), g.method.as_str()), ("s.S", "M"));
    assert_eq!(g.timeout_us, 2_000_000);
    assert_eq!(g.metadata.get("k").map(String::as_str), Some("v"));
    // and the message type numbers agree
    for (ours, theirs) in [
        (MessageType::Request, generated::MessageType::Request),
        (MessageType::Response, generated::MessageType::Response),
        (MessageType::Oneway, generated::MessageType::Oneway),
        (MessageType::Ping, generated::MessageType::Ping),
        (MessageType::Pong, generated::MessageType::Pong),
        (MessageType::Error, generated::MessageType::Error),
        (MessageType::Message, generated::MessageType::Message),
        (MessageType::HalfClose, generated::MessageType::HalfClose),
        (MessageType::Cancel, generated::MessageType::Cancel),
        (MessageType::Window, generated::MessageType::Window),
    ] {
        assert_eq!(ours as i32, theirs as i32);
    }
}

/// What a frame decoded to: seq, type, payload bytes.
type Decoded = (u64, MessageType, Vec<u8>);

/// A mixed stream of frames and what each should decode to.
fn sample_stream() -> (Vec<u8>, Vec<Decoded>) {
    let mut out = LinkBuffer::new();
    let mut expected = Vec::new();
    let md = Metadata::new();
    for seq in 1..=4u64 {
        let req = EchoRequest {
            payload: vec![seq as u8; seq as usize * 37],
        };
        let head = RequestHead {
            seq,
            service: "echo.Echo",
            method: "Echo",
            timeout: None,
            metadata: &md,
            oneway: false,
        };
        encode_request(&mut out, &limits(), &head, &req).unwrap();
        expected.push((seq, MessageType::Request, req.encode_to_vec()));
    }
    encode_ping(&mut out, 10);
    expected.push((10, MessageType::Ping, vec![]));
    encode_pong(&mut out, &limits(), 11, buffer_of(b"xyz")).unwrap();
    expected.push((11, MessageType::Pong, b"xyz".to_vec()));
    encode_status(&mut out, &limits(), 12, &Status::internal("x"));
    expected.push((12, MessageType::Response, vec![]));
    (drain(&mut out), expected)
}

fn decode_all(buf: &mut LinkBuffer, into: &mut Vec<Decoded>) {
    while let Some(mut f) = decode(buf, &limits()).unwrap() {
        let n = f.payload.len();
        into.push((
            f.header.seq,
            f.message_type().unwrap(),
            f.payload.read_binary(n).unwrap(),
        ));
    }
}

#[test]
fn frames_split_at_every_byte_boundary() {
    let (bytes, expected) = sample_stream();
    for cut in 0..=bytes.len() {
        let mut buf = LinkBuffer::new();
        let mut got = Vec::new();
        buf.write_binary(&bytes[..cut]);
        buf.flush();
        decode_all(&mut buf, &mut got);
        let left = buf.len();
        buf.write_binary(&bytes[cut..]);
        buf.flush();
        decode_all(&mut buf, &mut got);
        assert!(buf.is_empty(), "cut {cut}: {left} bytes left");
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn frames_fed_one_byte_at_a_time() {
    let (bytes, expected) = sample_stream();
    let mut buf = LinkBuffer::new();
    let mut got = Vec::new();
    for b in &bytes {
        let before = buf.len();
        buf.write_binary(&[*b]);
        buf.flush();
        let decoded = got.len();
        decode_all(&mut buf, &mut got);
        if got.len() == decoded {
            assert_eq!(
                buf.len(),
                before + 1,
                "an incomplete frame consumes nothing"
            );
        }
        buf.release();
    }
    assert_eq!(got, expected);
}

#[test]
fn many_frames_coalesced_in_one_buffer() {
    let mut out = LinkBuffer::new();
    for seq in 1..=2000u64 {
        encode_response(
            &mut out,
            &limits(),
            seq,
            &EchoRequest {
                payload: seq.to_be_bytes().to_vec(),
            },
        )
        .unwrap();
    }
    out.flush();
    let mut n = 0u64;
    while let Some(f) = decode(&mut out, &limits()).unwrap() {
        n += 1;
        assert_eq!(f.header.seq, n);
        assert_eq!(
            EchoRequest::decode(f.payload).unwrap().payload,
            n.to_be_bytes()
        );
    }
    assert_eq!(n, 2000);
    assert!(out.is_empty());
}

fn decode_err(bytes: &[u8], limits: &Limits) -> ProtocolError {
    let mut buf = buffer_of(bytes);
    decode(&mut buf, limits).expect_err("a protocol error")
}

fn prefix(body: u32, header: u32) -> Vec<u8> {
    let mut p = vec![0xFE, 0x50, 1, 0];
    p.extend_from_slice(&body.to_be_bytes());
    p.extend_from_slice(&header.to_be_bytes());
    p
}

#[test]
fn bad_prefixes_are_rejected_as_early_as_possible() {
    let l = limits();
    assert_eq!(
        decode_err(b"G", &l),
        ProtocolError::BadMagic { found: [b'G', 0] }
    );
    assert_eq!(
        decode_err(b"GET / HTTP/1.1\r\n", &l),
        ProtocolError::BadMagic {
            found: [b'G', b'E']
        }
    );
    assert_eq!(
        decode_err(&[0xFE, 0x50, 2], &l),
        ProtocolError::UnsupportedVersion { version: 2 }
    );
    assert_eq!(
        decode_err(&[0xFE, 0x50, 1, 0x80], &l),
        ProtocolError::UnknownFlags { flags: 0x80 }
    );
    // Oversized: known from the 12-byte prefix alone, nothing else buffered.
    let e = decode_err(&prefix(32 << 20, 4), &l);
    assert_eq!(
        e,
        ProtocolError::FrameTooLarge {
            len: 32 << 20,
            max: 16 << 20
        }
    );
    assert_eq!(e.status().code(), Code::ResourceExhausted);
    assert_eq!(
        decode_err(&prefix(u32::MAX, u32::MAX), &l),
        ProtocolError::FrameTooLarge {
            len: u32::MAX.into(),
            max: 16 << 20
        }
    );
    assert_eq!(
        decode_err(&prefix(10, 11), &l),
        ProtocolError::HeaderExceedsBody {
            header_len: 11,
            body_len: 10
        }
    );
    assert_eq!(
        decode_err(&prefix(100 << 10, 65 << 10), &l),
        ProtocolError::HeaderTooLarge {
            len: 65 << 10,
            max: 64 << 10
        }
    );
    // A valid partial prefix is just incomplete, and consumes nothing.
    let mut buf = buffer_of(&[0xFE, 0x50, 1, 0, 0, 0]);
    assert!(decode(&mut buf, &l).unwrap().is_none());
    assert_eq!(buf.len(), 6);
    let mut buf = buffer_of(&prefix(100, 4));
    buf.write_binary(&[0; 50]);
    buf.flush();
    assert!(decode(&mut buf, &l).unwrap().is_none());
    assert_eq!(buf.len(), 62);
}

#[test]
fn bad_headers_are_rejected() {
    let l = limits();
    // Not protobuf: a field with wire type 7.
    let mut bytes = prefix(3, 3);
    bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    assert!(matches!(
        decode_err(&bytes, &l),
        ProtocolError::BadHeader(_)
    ));
    // A length-delimited field running past the header.
    let mut bytes = prefix(4, 4);
    bytes.extend_from_slice(&[0x1A, 0x7F, 0x61, 0x62]);
    assert!(matches!(
        decode_err(&bytes, &l),
        ProtocolError::BadHeader(_)
    ));
    // Empty header: no message type.
    assert_eq!(
        decode_err(&prefix(0, 0), &l),
        ProtocolError::MissingMessageType
    );
    // Too many metadata entries.
    let mut header = vec![0x08, 0x01, 0x10, 0x01];
    for _ in 0..65 {
        header.extend_from_slice(&[0x42, 0x00]);
    }
    let mut bytes = prefix(header.len() as u32, header.len() as u32);
    bytes.extend_from_slice(&header);
    assert_eq!(
        decode_err(&bytes, &l),
        ProtocolError::TooMuchMetadata { count: 65, max: 64 }
    );
    // An unknown message type is not an error: it is skipped by the engine.
    let header = [0x08, 0x01, 0x10, 0x63];
    let mut bytes = prefix(4, 4);
    bytes.extend_from_slice(&header);
    let f = decode_one(&bytes);
    assert_eq!(f.message_type(), None);
    assert_eq!(f.header.kind, 0x63);
}

#[test]
fn oversized_messages_are_not_encoded() {
    let small = Limits {
        max_body_len: 1024,
        ..Limits::default()
    };
    let mut out = LinkBuffer::new();
    let big = EchoRequest {
        payload: vec![0; 2000],
    };
    let e = encode_response(&mut out, &small, 1, &big).unwrap_err();
    assert!(
        matches!(e, ProtocolError::FrameTooLarge { max: 1024, .. }),
        "{e}"
    );
    assert_eq!(out.unflushed_len(), 0, "nothing written");

    // A huge status message is cut to fit the header limit.
    let tiny_header = Limits {
        max_header_len: 2048,
        ..Limits::default()
    };
    let status = Status::internal("é".repeat(10_000)).with_metadata("k", "v".repeat(5000));
    encode_status(&mut out, &tiny_header, 2, &status);
    let bytes = drain(&mut out);
    let mut buf = buffer_of(&bytes);
    let f = decode(&mut buf, &tiny_header).unwrap().unwrap();
    assert_eq!(f.header.status_code, Code::Internal.as_u32());
    assert!(f.header.status_message.len() <= 1024);
    assert!(f.header.status_message.starts_with("éé"));
}

#[test]
fn large_header_takes_the_slow_path() {
    let metadata: Metadata = (0..20)
        .map(|i| (format!("key-{i}"), "v".repeat(50)))
        .collect();
    let head = RequestHead {
        seq: 1,
        service: "kv.Kv",
        method: "Put",
        timeout: None,
        metadata: &metadata,
        oneway: false,
    };
    let mut out = LinkBuffer::new();
    encode_request(&mut out, &limits(), &head, &()).unwrap();
    let f = decode_one(&drain(&mut out));
    assert_eq!(Metadata::from_entries(f.header.metadata), metadata);
}

#[test]
fn timeouts_convert_to_a_nonzero_budget() {
    assert_eq!(timeout_to_micros(Duration::ZERO), 1);
    assert_eq!(timeout_to_micros(Duration::from_nanos(10)), 1);
    assert_eq!(timeout_to_micros(Duration::from_millis(3)), 3000);
    assert_eq!(timeout_to_micros(Duration::MAX), u64::MAX);
}
