//! Property tests: random frames survive any split; random and mutated
//! bytes never panic the decoder or the engine.

use std::time::{Duration, Instant};

use ferropoll_rpc::codec::{self, MessageType, RequestHead};
use ferropoll_rpc::sansio::ServerConn;
use ferropoll_rpc::{Limits, LinkBuffer, Metadata, PeerAddr, ServerEngine, Status};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Spec {
    Request {
        seq: u64,
        service: String,
        method: String,
        timeout_us: Option<u64>,
        metadata: Vec<(String, String)>,
        payload: Vec<u8>,
        oneway: bool,
    },
    Response {
        seq: u64,
        payload: Vec<u8>,
    },
    Status {
        seq: u64,
        code: u32,
        message: String,
    },
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
        payload: Vec<u8>,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..600);
    prop_oneof![
        (
            any::<u64>(),
            "[a-z.]{0,12}",
            "[A-Za-z]{0,8}",
            proptest::option::of(1u64..10_000_000),
            proptest::collection::vec(("[a-z]{1,6}", ".{0,10}"), 0..4),
            bytes.clone(),
            any::<bool>()
        )
            .prop_map(
                |(seq, service, method, timeout_us, metadata, payload, oneway)| {
                    Spec::Request {
                        seq,
                        service,
                        method,
                        timeout_us,
                        metadata,
                        payload,
                        oneway,
                    }
                }
            ),
        (any::<u64>(), bytes.clone()).prop_map(|(seq, payload)| Spec::Response { seq, payload }),
        (any::<u64>(), 1u32..17, ".{0,40}").prop_map(|(seq, code, message)| Spec::Status {
            seq,
            code,
            message
        }),
        any::<u64>().prop_map(|seq| Spec::Ping { seq }),
        (any::<u64>(), bytes).prop_map(|(seq, payload)| Spec::Pong { seq, payload }),
    ]
}

fn encode(spec: &Spec, out: &mut LinkBuffer) {
    let l = Limits::default();
    match spec {
        Spec::Request {
            seq,
            service,
            method,
            timeout_us,
            metadata,
            payload,
            oneway,
        } => {
            let md: Metadata = metadata.iter().cloned().collect();
            let head = RequestHead {
                seq: *seq,
                service,
                method,
                timeout: timeout_us.map(Duration::from_micros),
                metadata: &md,
                oneway: *oneway,
            };
            codec::encode_request(out, &l, &head, payload).unwrap();
        }
        Spec::Response { seq, payload } => {
            codec::encode_response(out, &l, *seq, payload).unwrap();
        }
        Spec::Status { seq, code, message } => {
            let s = Status::new(ferropoll_rpc::Code::from_u32(*code), message.clone());
            codec::encode_status(out, &l, *seq, &s);
        }
        Spec::Ping { seq } => {
            codec::encode_ping(out, *seq);
        }
        Spec::Pong { seq, payload } => {
            let mut p = LinkBuffer::new();
            p.write_binary(payload);
            p.flush();
            codec::encode_pong(out, &l, *seq, p).unwrap();
        }
    }
}

fn check(spec: &Spec, frame: codec::Frame) {
    use prost::Message;
    let h = &frame.header;
    match spec {
        Spec::Request {
            seq,
            service,
            method,
            timeout_us,
            metadata,
            payload,
            oneway,
        } => {
            let kind = if *oneway {
                MessageType::Oneway
            } else {
                MessageType::Request
            };
            assert_eq!(frame.message_type(), Some(kind));
            assert_eq!(h.seq, *seq);
            assert_eq!(&h.service[..], service.as_bytes());
            assert_eq!(&h.method[..], method.as_bytes());
            assert_eq!(h.timeout_us, timeout_us.unwrap_or(0));
            let md: Metadata = metadata.iter().cloned().collect();
            assert_eq!(Metadata::from_entries(h.metadata.clone()), md);
            assert_eq!(&Vec::<u8>::decode(frame.payload).unwrap(), payload);
        }
        Spec::Response { seq, payload } => {
            assert_eq!(
                (frame.message_type(), h.seq),
                (Some(MessageType::Response), *seq)
            );
            assert_eq!(&Vec::<u8>::decode(frame.payload).unwrap(), payload);
        }
        Spec::Status { seq, code, message } => {
            assert_eq!(
                (frame.message_type(), h.seq),
                (Some(MessageType::Response), *seq)
            );
            assert_eq!(
                (h.status_code, h.status_message.as_str()),
                (*code, message.as_str())
            );
        }
        Spec::Ping { seq } => {
            assert_eq!(
                (frame.message_type(), h.seq),
                (Some(MessageType::Ping), *seq)
            );
        }
        Spec::Pong { seq, payload } => {
            assert_eq!(
                (frame.message_type(), h.seq),
                (Some(MessageType::Pong), *seq)
            );
            let mut p = frame.payload;
            let n = p.len();
            assert_eq!(&p.read_binary(n).unwrap(), payload);
        }
    }
}

proptest! {
    #[test]
    fn random_frames_survive_random_splits(
        specs in proptest::collection::vec(spec(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut out = LinkBuffer::new();
        for s in &specs {
            encode(s, &mut out);
        }
        out.flush();
        let bytes = out.read_binary(out.len()).unwrap();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut input = LinkBuffer::new();
        let mut at = 0;
        let mut decoded = Vec::new();
        for cut in cuts {
            input.write_binary(&bytes[at..cut]);
            input.flush();
            at = cut;
            while let Some(f) = codec::decode(&mut input, &Limits::default()).unwrap() {
                decoded.push(f);
            }
            input.release();
        }
        prop_assert!(input.is_empty());
        prop_assert_eq!(decoded.len(), specs.len());
        for (s, f) in specs.iter().zip(decoded) {
            check(s, f);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2000), valid_prefix in any::<bool>()) {
        let mut input = LinkBuffer::new();
        if valid_prefix {
            // Get past the magic so the header and lengths get exercised.
            input.write_binary(&[0xFE, 0x50, 1, 0, 0, 0, (bytes.len() >> 8) as u8, bytes.len() as u8]);
        }
        input.write_binary(&bytes);
        input.flush();
        let mut frames = 0;
        while let Ok(Some(_)) = codec::decode(&mut input, &Limits::default()) {
            frames += 1;
            prop_assert!(frames <= bytes.len() + 1);
        }
    }

    #[test]
    fn mutated_streams_never_panic_the_engine(
        specs in proptest::collection::vec(spec(), 1..6),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut out = LinkBuffer::new();
        for s in &specs {
            encode(s, &mut out);
        }
        out.flush();
        let mut bytes = out.read_binary(out.len()).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let engine = ServerEngine::new();
        let conn = ServerConn::new(PeerAddr::unknown());
        let mut input = LinkBuffer::new();
        input.write_binary(&bytes);
        input.flush();
        let mut output = LinkBuffer::new();
        let mut deferred = Vec::new();
        let _ = engine.process(&conn, &mut input, &mut output, &mut deferred, Instant::now());
        prop_assert!(deferred.is_empty());
        // Whatever the engine wrote is well-formed.
        output.flush();
        while let Some(f) = codec::decode(&mut output, &Limits::default()).unwrap() {
            prop_assert!(matches!(f.message_type(), Some(MessageType::Response | MessageType::Pong | MessageType::Error)));
        }
    }
}
