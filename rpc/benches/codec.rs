//! Encode + decode of a request/response pair through the sans-IO stack,
//! against a baseline doing the same protobuf work with prost into `Vec`s.
//!
//! * `ferropoll`: client session encodes the request into a LinkBuffer, the
//!   server engine decodes it, dispatches to a generated Echo wrapper (inline),
//!   encodes the response; the client session decodes it and completes the call.
//! * `prost_vec`: the same header (the generated `ferropoll.rpc.Header`, with
//!   `String` fields) and payload encoded with prost into a `Vec` behind a
//!   length prefix, decoded from the slice, answered, encoded, decoded —
//!   no dispatch, no call table: the floor of the protobuf work.
//! * `ferropoll_server_pipelined16`: the engine alone on 16 pipelined requests per batch.
//!
//! After criterion, a short A/B/A/B timing prints the ratio ferropoll / baseline.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use ferropoll_rpc::sansio::{ClientSession, ServerConn};
use ferropoll_rpc::{
    CallOptions, ClientOptions, Context, LinkBuffer, PeerAddr, ServerEngine, Status,
};
use prost::Message;

#[allow(missing_docs, dead_code, clippy::all)]
mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

#[allow(missing_docs, dead_code, clippy::all)]
mod header {
    include!(concat!(env!("OUT_DIR"), "/ferropoll.rpc.rs"));
}

struct EchoImpl;

impl echo::Echo for EchoImpl {
    fn echo(&self, _: &Context, req: echo::EchoRequest) -> Result<echo::EchoResponse, Status> {
        Ok(echo::EchoResponse {
            payload: req.payload,
        })
    }

    fn echo_stream(
        &self,
        _: &Context,
        _: ferropoll_rpc::RecvStream<echo::EchoRequest>,
        _: ferropoll_rpc::SendSink<echo::EchoResponse>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("the codec benchmark has no streams"))
    }
}

struct Stack {
    engine: Arc<ServerEngine>,
    conn: ServerConn,
    session: ClientSession,
    to_server: LinkBuffer,
    to_client: LinkBuffer,
    deferred: Vec<ferropoll_rpc::sansio::DeferredCall>,
}

impl Stack {
    fn new() -> Stack {
        let mut engine = ServerEngine::new();
        engine.register(echo::EchoServer::new(EchoImpl)).unwrap();
        Stack {
            engine: Arc::new(engine),
            conn: ServerConn::new(PeerAddr::unknown()),
            session: ClientSession::new(&ClientOptions {
                default_timeout: None,
                ..Default::default()
            }),
            to_server: LinkBuffer::new(),
            to_client: LinkBuffer::new(),
            deferred: Vec::new(),
        }
    }

    fn round_trip(&mut self, req: &echo::EchoRequest) -> usize {
        let call = self.session.start_call::<_, echo::EchoResponse>(
            &mut self.to_server,
            "echo.Echo",
            "Echo",
            req,
            &CallOptions::DEFAULT,
        );
        self.to_server.flush();
        self.engine
            .process(
                &self.conn,
                &mut self.to_server,
                &mut self.to_client,
                &mut self.deferred,
                Instant::now(),
            )
            .unwrap();
        self.to_server.release();
        self.to_client.flush();
        self.session.handle_input(&mut self.to_client).unwrap();
        self.to_client.release();
        call.wait().unwrap().payload.len()
    }

    fn server_batch(&mut self, batch: &[u8]) -> usize {
        self.to_server.write_binary(batch);
        self.to_server.flush();
        let p = self
            .engine
            .process(
                &self.conn,
                &mut self.to_server,
                &mut self.to_client,
                &mut self.deferred,
                Instant::now(),
            )
            .unwrap();
        self.to_server.release();
        self.to_client.flush();
        let n = self.to_client.len();
        self.to_client.skip(n).unwrap();
        self.to_client.release();
        p.responses
    }
}

/// The baseline: the same protobuf work with prost and Vec buffers.
struct Baseline {
    wire: Vec<u8>,
    back: Vec<u8>,
    seq: u64,
}

impl Baseline {
    fn round_trip(&mut self, req: &echo::EchoRequest) -> usize {
        self.seq += 1;
        // client encodes
        let h = header::Header {
            seq: self.seq,
            r#type: header::MessageType::Request as i32,
            service: "echo.Echo".to_owned(),
            method: "Echo".to_owned(),
            ..Default::default()
        };
        self.wire.clear();
        let (hl, pl) = (h.encoded_len(), req.encoded_len());
        self.wire
            .extend_from_slice(&((hl + pl) as u32).to_be_bytes());
        self.wire.extend_from_slice(&(hl as u32).to_be_bytes());
        h.encode(&mut self.wire).unwrap();
        req.encode(&mut self.wire).unwrap();
        // server decodes, answers, encodes
        let body = &self.wire[8..];
        let hl = u32::from_be_bytes(self.wire[4..8].try_into().unwrap()) as usize;
        let rh = header::Header::decode(&body[..hl]).unwrap();
        let rreq = echo::EchoRequest::decode(Bytes::copy_from_slice(&body[hl..])).unwrap();
        assert_eq!(rh.method, "Echo");
        let resp = echo::EchoResponse {
            payload: rreq.payload,
        };
        let oh = header::Header {
            seq: rh.seq,
            r#type: header::MessageType::Response as i32,
            ..Default::default()
        };
        self.back.clear();
        let (hl, pl) = (oh.encoded_len(), resp.encoded_len());
        self.back
            .extend_from_slice(&((hl + pl) as u32).to_be_bytes());
        self.back.extend_from_slice(&(hl as u32).to_be_bytes());
        oh.encode(&mut self.back).unwrap();
        resp.encode(&mut self.back).unwrap();
        // client decodes
        let body = &self.back[8..];
        let hl = u32::from_be_bytes(self.back[4..8].try_into().unwrap()) as usize;
        let ch = header::Header::decode(&body[..hl]).unwrap();
        assert_eq!(ch.seq, self.seq);
        let out = echo::EchoResponse::decode(Bytes::copy_from_slice(&body[hl..])).unwrap();
        out.payload.len()
    }
}

fn request(size: usize) -> echo::EchoRequest {
    echo::EchoRequest {
        payload: Bytes::from(vec![0x5A; size]),
    }
}

fn pipelined_batch(size: usize) -> Vec<u8> {
    let session = ClientSession::new(&ClientOptions::default());
    let mut buf = LinkBuffer::new();
    let req = request(size);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            session.start_call::<_, echo::EchoResponse>(
                &mut buf,
                "echo.Echo",
                "Echo",
                &req,
                &CallOptions::DEFAULT,
            )
        })
        .collect();
    buf.flush();
    let bytes = buf.read_binary(buf.len()).unwrap();
    drop(calls);
    bytes
}

fn benches(c: &mut Criterion) {
    for (name, size) in [("128B", 128), ("4KiB", 4096)] {
        let req = request(size);
        let mut g = c.benchmark_group(format!("rpc_round_trip/{name}"));
        g.throughput(Throughput::Elements(1));
        let mut stack = Stack::new();
        g.bench_function("ferropoll", |b| {
            b.iter(|| stack.round_trip(black_box(&req)))
        });
        let mut base = Baseline {
            wire: Vec::new(),
            back: Vec::new(),
            seq: 0,
        };
        g.bench_function("prost_vec", |b| b.iter(|| base.round_trip(black_box(&req))));
        let batch = pipelined_batch(size);
        g.throughput(Throughput::Elements(16));
        g.bench_function("ferropoll_server_pipelined16", |b| {
            b.iter(|| stack.server_batch(black_box(&batch)))
        });
        g.finish();
    }
}

/// Median ns per call of `f` over a few alternated runs.
fn ratio_report() {
    for (name, size) in [("128B", 128), ("4KiB", 4096)] {
        let req = request(size);
        let mut stack = Stack::new();
        let mut base = Baseline {
            wire: Vec::new(),
            back: Vec::new(),
            seq: 0,
        };
        let n = 50_000;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..n {
                black_box(stack.round_trip(black_box(&req)));
            }
            a.push(t.elapsed().as_nanos() as f64 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                black_box(base.round_trip(black_box(&req)));
            }
            b.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!(
            "ratio {name}: ferropoll {:.0} ns / prost_vec {:.0} ns per round trip = {:.2} (median of 5 alternated runs)",
            a[2],
            b[2],
            a[2] / b[2]
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    // Not in criterion's test, list or profiling modes.
    let quick =
        std::env::args().any(|a| matches!(a.as_str(), "--test" | "--list" | "--profile-time"));
    if !quick {
        ratio_report();
    }
}
