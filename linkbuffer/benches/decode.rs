//! Frame decode and encode through `LinkBuffer`, each against its baselines
//! in the same run; prints the median time per iteration and the ratios.
//!
//! Decode: a stream of length-prefixed frames (4-byte big-endian length +
//! payload; 64 B, 1 KiB, 64 KiB payloads) arrives in socket-sized chunks.
//! Per chunk, each contender takes the bytes in and then decodes every whole
//! frame, taking each payload as an owned value:
//! - `linkbuffer_next_bytes` / `linkbuffer_slice`: copy the chunk into
//!   `book()` + `book_ack()` (what `read()` does), payloads by `next_bytes`
//!   or `slice` (zero-copy), `release()` after each chunk;
//! - `bytesmut`: `reserve` + `extend_from_slice`, `split_to(len).freeze()`;
//! - `vec_copy`: `extend_from_slice` into a `Vec<u8>`, each payload copied
//!   into a new `Vec`, consumed bytes drained after each chunk.
//!
//! Encode: 64 prost messages, length-delimited, into a `LinkBuffer` through
//! `BufMut` (or into `malloc`'d space), then `flush` + `readable_vectored` +
//! `skip` + `release` (what a `sendmsg` flush does) — against the same into
//! a `Vec<u8>` that is cleared after each batch.
//!
//! Round trips (`roundtrip/...`): the per-message buffer work of a server,
//! 64 messages per iteration, as the transport and the RPC layer drive it
//! (the test `tests/hot_paths.rs` checks these loops allocate nothing):
//! - `echo_<size>`: `book` + copy + `book_ack` (the read), `slice` +
//!   `release` + `append` + `flush` (the handler), `readable_vectored` +
//!   copy out + `skip` + `release` (the `sendmsg`) — against `BytesMut`:
//!   `reserve` + `extend_from_slice`, `split().freeze()`, copy out;
//! - `rpc_<size>`: one request frame per read, decoded as
//!   `rpc/src/codec.rs` does (`peek` the prefix, `next_bytes` the prost
//!   header with `bytes` fields, `slice` the payload, prost-decode it), the
//!   echo response encoded (`write_binary` of the head, `malloc` +
//!   `encode_raw` of the message) and sent — against the same over
//!   `BytesMut` (`split_to().freeze()`, encode into a reused `BytesMut`).
//!
//! Run: `cargo bench -p ferropoll-linkbuffer --bench decode`.
//!
//! After criterion's own (wall-clock) measurement of each contender, every
//! group runs an interleaved pass — 15 rounds of ~40 ms per contender, the
//! contenders taking turns (A B C D, B C D A, ...) — timed in *thread CPU
//! time* (`CLOCK_THREAD_CPUTIME_ID`), and prints the medians and the ratios
//! from it. On a shared, loaded machine wall-clock time mostly measures
//! how often the thread was preempted; CPU time does not count that, and
//! turns taken in the same seconds see the same cache pressure.
//!
//! Instruction counts (load-independent, for profiling on a busy machine):
//! with `FERROPOLL_BENCH_ONLY=<group>/<contender>` and
//! `FERROPOLL_BENCH_ITERS=<n>` the binary skips criterion and runs that
//! contender `n` times, e.g. under `valgrind --tool=callgrind`; the
//! difference between `n` and `0` iterations divided by `n` is the count per
//! iteration.

use std::hint::black_box;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group};
use ferropoll_linkbuffer::LinkBuffer;
use prost::Message;

/// A named contender: one call is one iteration.
type Contender<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

/// Whether the command line's filter (criterion's first free argument,
/// `|`-separated alternatives) selects `id`; no filter selects everything.
fn selected(id: &str) -> bool {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a != "--bench");
    match filter {
        None => true,
        Some(f) => f.split('|').any(|alt| id.contains(alt)),
    }
}

/// This thread's CPU time in nanoseconds.
fn cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Criterion's measurement of each contender, then the interleaved pass and
/// its report: the first `ours` contenders are compared with the others.
fn run_group(
    c: &mut Criterion,
    group: &str,
    bytes: usize,
    ours: usize,
    mut contenders: Vec<Contender<'_>>,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes as u64));
    for (name, f) in contenders.iter_mut() {
        g.bench_function(*name, |b| b.iter(|| black_box(f())));
    }
    g.finish();
    if !contenders
        .iter()
        .any(|(name, _)| selected(&format!("{group}/{name}")))
    {
        return;
    }

    const ROUNDS: usize = 15;
    let target = Duration::from_millis(40);
    let iters: Vec<u32> = contenders
        .iter_mut()
        .map(|(_, f)| {
            let t = Instant::now();
            black_box(f());
            let one = t.elapsed().max(Duration::from_nanos(1));
            (target.as_nanos() / one.as_nanos()).clamp(1, 1 << 20) as u32
        })
        .collect();
    let n = contenders.len();
    let mut samples = vec![Vec::with_capacity(ROUNDS); n];
    for round in 0..ROUNDS {
        for k in 0..n {
            let i = (k + round) % n;
            let f = &mut contenders[i].1;
            let t = cpu_ns();
            for _ in 0..iters[i] {
                black_box(f());
            }
            samples[i].push((cpu_ns() - t) / f64::from(iters[i]));
        }
    }
    let med: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    println!(
        "\n== {group}: interleaved CPU-time medians ({bytes} bytes per iteration, {ROUNDS} rounds)"
    );
    for (i, (name, _)) in contenders.iter().enumerate() {
        println!(
            "   {name:<24} {:>10.1} µs  {:>8.0} MiB/s",
            med[i] / 1e3,
            bytes as f64 / (med[i] / 1e9) / f64::from(1 << 20)
        );
    }
    for o in 0..ours {
        for b in ours..n {
            println!(
                "   ratio {} vs {}: {:.2}x throughput",
                contenders[o].0,
                contenders[b].0,
                med[b] / med[o]
            );
        }
    }
}

/// A stream of `count` frames with `payload`-byte payloads.
fn stream(payload: usize, count: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(count * (payload + 4));
    for i in 0..count {
        s.extend_from_slice(&(payload as u32).to_be_bytes());
        s.extend((0..payload).map(|j| (i + j) as u8));
    }
    s
}

fn frame_len(head: &[u8]) -> usize {
    u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize
}

/// Copies `chunk` in the way a socket read would: `book`, copy, `book_ack`.
fn intake(buf: &mut LinkBuffer, mut chunk: &[u8]) {
    while !chunk.is_empty() {
        let space = buf.book(1);
        let n = space.len().min(chunk.len());
        space[..n].copy_from_slice(&chunk[..n]);
        buf.book_ack(n);
        chunk = &chunk[n..];
    }
}

fn decode_next_bytes(buf: &mut LinkBuffer, chunks: &[&[u8]]) -> usize {
    let mut frames = 0;
    for chunk in chunks {
        intake(buf, chunk);
        while buf.len() >= 4 {
            let len = frame_len(buf.peek(4).unwrap());
            if buf.len() < 4 + len {
                break;
            }
            buf.skip(4).unwrap();
            black_box(buf.next_bytes(len).unwrap());
            frames += 1;
        }
        buf.release();
    }
    frames
}

fn decode_slice(buf: &mut LinkBuffer, chunks: &[&[u8]]) -> usize {
    let mut frames = 0;
    for chunk in chunks {
        intake(buf, chunk);
        while buf.len() >= 4 {
            let len = frame_len(buf.peek(4).unwrap());
            if buf.len() < 4 + len {
                break;
            }
            buf.skip(4).unwrap();
            black_box(buf.slice(len).unwrap());
            frames += 1;
        }
        buf.release();
    }
    frames
}

fn decode_bytesmut(buf: &mut BytesMut, chunks: &[&[u8]]) -> usize {
    let mut frames = 0;
    for chunk in chunks {
        buf.reserve(chunk.len());
        buf.extend_from_slice(chunk);
        while buf.len() >= 4 {
            let len = frame_len(&buf[..4]);
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            black_box(buf.split_to(len).freeze());
            frames += 1;
        }
    }
    frames
}

fn decode_vec_copy(buf: &mut Vec<u8>, chunks: &[&[u8]]) -> usize {
    let mut frames = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        while buf.len() - pos >= 4 {
            let len = frame_len(&buf[pos..pos + 4]);
            if buf.len() - pos < 4 + len {
                break;
            }
            black_box(buf[pos + 4..pos + 4 + len].to_vec());
            pos += 4 + len;
            frames += 1;
        }
        buf.drain(..pos);
    }
    frames
}

/// (payload, frames, socket chunk) of the decode groups.
const DECODE_CASES: [(usize, usize, usize); 4] = [
    (64, 16_384, 16 << 10),
    (1 << 10, 1_024, 16 << 10),
    (64 << 10, 32, 16 << 10),
    (64 << 10, 32, 64 << 10),
];

/// Payload sizes of the encode groups.
const ENCODE_PAYLOADS: [usize; 2] = [64, 1 << 10];

fn size_name(n: usize) -> String {
    if n >= 1024 {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

fn decode_group(payload: usize, chunk: usize) -> String {
    format!("decode/{}/chunk_{}", size_name(payload), size_name(chunk))
}

fn encode_group(payload: usize) -> String {
    format!("encode/{}", size_name(payload))
}

fn decode_contenders(data: &[u8], chunk: usize, count: usize) -> Vec<Contender<'_>> {
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let (c1, c2, c3, c4) = (chunks.clone(), chunks.clone(), chunks.clone(), chunks);
    let (mut lb1, mut lb2) = (LinkBuffer::new(), LinkBuffer::new());
    let mut bm = BytesMut::new();
    let mut v = Vec::new();
    let check = move |frames: usize| {
        assert_eq!(frames, count);
        frames
    };
    vec![
        (
            "linkbuffer_next_bytes",
            Box::new(move || check(decode_next_bytes(&mut lb1, &c1))),
        ),
        (
            "linkbuffer_slice",
            Box::new(move || check(decode_slice(&mut lb2, &c2))),
        ),
        (
            "bytesmut",
            Box::new(move || check(decode_bytesmut(&mut bm, &c3))),
        ),
        (
            "vec_copy",
            Box::new(move || check(decode_vec_copy(&mut v, &c4))),
        ),
    ]
}

fn bench_decode(c: &mut Criterion) {
    for (payload, count, chunk) in DECODE_CASES {
        let data = stream(payload, count);
        let group = decode_group(payload, chunk);
        run_group(
            c,
            &group,
            data.len(),
            2,
            decode_contenders(&data, chunk, count),
        );
    }
}

/// An RPC-request-like message.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(uint64, tag = "3")]
    deadline_ms: u64,
    #[prost(bytes = "bytes", tag = "4")]
    payload: Bytes,
    #[prost(int32, repeated, tag = "5")]
    codes: Vec<i32>,
}

const BATCH: usize = 64;

fn send(buf: &mut LinkBuffer) -> usize {
    buf.flush();
    let mut iov = [IoSlice::new(&[]); 64];
    let n = buf.readable_vectored(&mut iov);
    let sent: usize = black_box(&iov[..n]).iter().map(|s| s.len()).sum();
    buf.skip(sent).unwrap();
    buf.release();
    sent
}

fn encode_bufmut(buf: &mut LinkBuffer, msgs: &[Request]) -> usize {
    for m in msgs {
        m.encode_length_delimited(buf).unwrap();
    }
    send(buf)
}

fn encode_malloc(buf: &mut LinkBuffer, msgs: &[Request]) -> usize {
    for m in msgs {
        let len = m.encoded_len();
        let mut dst = buf.malloc(len + prost::length_delimiter_len(len));
        m.encode_length_delimited(&mut dst).unwrap();
    }
    send(buf)
}

fn encode_vec(buf: &mut Vec<u8>, msgs: &[Request]) -> usize {
    for m in msgs {
        m.encode_length_delimited(buf).unwrap();
    }
    let sent = black_box(&buf[..]).len();
    buf.clear();
    sent
}

fn messages(payload: usize) -> Vec<Request> {
    (0..BATCH)
        .map(|i| Request {
            seq: i as u64 * 7919,
            method: "/bench.Echo/Say".into(),
            deadline_ms: 1_700_000_000_000 + i as u64,
            payload: Bytes::from(vec![i as u8; payload]),
            codes: vec![1, -2, 300, 40_000],
        })
        .collect()
}

fn encode_contenders(msgs: &[Request]) -> Vec<Contender<'_>> {
    let (mut lb1, mut lb2) = (LinkBuffer::new(), LinkBuffer::new());
    let mut v = Vec::new();
    vec![
        (
            "linkbuffer_bufmut",
            Box::new(move || encode_bufmut(&mut lb1, msgs)),
        ),
        (
            "linkbuffer_malloc",
            Box::new(move || encode_malloc(&mut lb2, msgs)),
        ),
        ("vec", Box::new(move || encode_vec(&mut v, msgs))),
    ]
}

fn bench_encode(c: &mut Criterion) {
    for payload in ENCODE_PAYLOADS {
        let msgs = messages(payload);
        let mut contenders = encode_contenders(&msgs);
        let sizes: Vec<usize> = contenders.iter_mut().map(|(_, f)| f()).collect();
        assert!(sizes.iter().all(|&s| s == sizes[0]), "{sizes:?}");
        run_group(c, &encode_group(payload), sizes[0], 2, contenders);
    }
}

// ---------------------------------------------------------------------------
// round trips

/// Messages per round-trip iteration.
const MESSAGES: usize = 64;

/// The transport's `book` minimum (`transport/src/reactor.rs`).
const MIN_READ: usize = 4096;

/// One read of `msg` into `buf`, as the reactor does.
fn read_into(buf: &mut LinkBuffer, msg: &[u8]) {
    let space = buf.book(MIN_READ);
    let n = space.len().min(msg.len());
    space[..n].copy_from_slice(&msg[..n]);
    buf.book_ack(n);
    assert_eq!(n, msg.len(), "one read per message");
}

/// `send_locked`: `sendmsg` of up to 8 chunks (a copy to `sink` here),
/// `skip`, until empty, then `release`.
fn send_out(out: &mut LinkBuffer, sink: &mut Vec<u8>) -> usize {
    let mut total = 0;
    loop {
        let mut iov = [IoSlice::new(&[]); 8];
        let n = out.readable_vectored(&mut iov);
        if n == 0 {
            break;
        }
        let mut sent = 0;
        for s in &iov[..n] {
            sink.extend_from_slice(s);
            sent += s.len();
        }
        out.skip(sent).unwrap();
        total += sent;
    }
    out.release();
    sink.clear();
    total
}

struct EchoLb {
    reader: LinkBuffer,
    out: LinkBuffer,
    sink: Vec<u8>,
}

fn echo_linkbuffer(st: &mut EchoLb, msgs: &[Vec<u8>]) -> usize {
    let mut total = 0;
    for msg in msgs {
        read_into(&mut st.reader, msg);
        let n = st.reader.len();
        let data = st.reader.slice(n).unwrap();
        st.reader.release();
        st.out.append(data);
        st.out.flush();
        total += send_out(&mut st.out, &mut st.sink);
    }
    total
}

struct EchoBm {
    input: BytesMut,
    sink: Vec<u8>,
}

fn echo_bytesmut(st: &mut EchoBm, msgs: &[Vec<u8>]) -> usize {
    let mut total = 0;
    for msg in msgs {
        st.input.reserve(MIN_READ.max(msg.len()));
        st.input.extend_from_slice(msg);
        let data = st.input.split().freeze();
        st.sink.extend_from_slice(black_box(&data));
        total += st.sink.len();
        st.sink.clear();
    }
    total
}

/// `ferropoll.rpc.Header` as the RPC layer decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcHeader {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(int32, tag = "2")]
    kind: i32,
    #[prost(bytes = "bytes", tag = "3")]
    service: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    method: Bytes,
    #[prost(uint32, tag = "5")]
    status_code: u32,
    #[prost(string, tag = "6")]
    status_message: String,
    #[prost(uint64, tag = "7")]
    timeout_us: u64,
}

/// `echo.EchoRequest` / `echo.EchoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoMsg {
    #[prost(bytes = "bytes", tag = "1")]
    payload: Bytes,
}

const RPC_PREFIX: usize = 12;

fn rpc_request(seq: u64, payload: usize) -> Vec<u8> {
    let header = RpcHeader {
        seq,
        kind: 1,
        service: Bytes::from_static(b"echo.Echo"),
        method: Bytes::from_static(b"Echo"),
        timeout_us: 1_000_000,
        ..RpcHeader::default()
    };
    let msg = EchoMsg {
        payload: (0..payload).map(|i| (i as u64 + seq) as u8).collect(),
    };
    let (hl, ml) = (header.encoded_len(), msg.encoded_len());
    let mut f = vec![0xFE, 0x9C, 1, 0];
    f.extend_from_slice(&((hl + ml) as u32).to_be_bytes());
    f.extend_from_slice(&(hl as u32).to_be_bytes());
    header.encode(&mut f).unwrap();
    msg.encode(&mut f).unwrap();
    f
}

/// Prefix + header on the stack, as `codec::write_head` builds them.
fn rpc_head(seq: u64, msg_len: usize, stack: &mut [u8; 256]) -> usize {
    let header = RpcHeader {
        seq,
        kind: 2,
        ..RpcHeader::default()
    };
    let hl = header.encoded_len();
    stack[..4].copy_from_slice(&[0xFE, 0x9C, 1, 0]);
    stack[4..8].copy_from_slice(&((hl + msg_len) as u32).to_be_bytes());
    stack[8..12].copy_from_slice(&(hl as u32).to_be_bytes());
    let mut rest = &mut stack[RPC_PREFIX..];
    header.encode_raw(&mut rest);
    RPC_PREFIX + hl
}

fn rpc_lengths(prefix: &[u8]) -> (usize, usize) {
    let body = u32::from_be_bytes(prefix[4..8].try_into().unwrap()) as usize;
    let head = u32::from_be_bytes(prefix[8..12].try_into().unwrap()) as usize;
    (body, head)
}

fn rpc_linkbuffer(st: &mut EchoLb, frames: &[Vec<u8>]) -> usize {
    let mut total = 0;
    let mut stack = [0u8; 256];
    for frame in frames {
        read_into(&mut st.reader, frame);
        // codec::decode
        let mut prefix = [0u8; RPC_PREFIX];
        prefix.copy_from_slice(st.reader.peek(RPC_PREFIX).unwrap());
        let (body, head) = rpc_lengths(&prefix);
        st.reader.skip(RPC_PREFIX).unwrap();
        let header = RpcHeader::decode(st.reader.next_bytes(head).unwrap()).unwrap();
        let payload = st.reader.slice(body - head).unwrap();
        // the echo handler
        assert_eq!(&header.method[..], b"Echo");
        let req = EchoMsg::decode(payload).unwrap();
        let resp = EchoMsg {
            payload: req.payload,
        };
        // codec::encode_response
        let ml = resp.encoded_len();
        let n = rpc_head(header.seq, ml, &mut stack);
        st.out.write_binary(&stack[..n]);
        let mut dst = st.out.malloc(ml);
        resp.encode_raw(&mut dst);
        // the glue: flush, release the input
        st.out.flush();
        total += send_out(&mut st.out, &mut st.sink);
        st.reader.release();
    }
    total
}

struct RpcBm {
    input: BytesMut,
    out: BytesMut,
    sink: Vec<u8>,
}

fn rpc_bytesmut(st: &mut RpcBm, frames: &[Vec<u8>]) -> usize {
    let mut total = 0;
    let mut stack = [0u8; 256];
    for frame in frames {
        st.input.reserve(MIN_READ.max(frame.len()));
        st.input.extend_from_slice(frame);
        let (body, head) = rpc_lengths(&st.input[..RPC_PREFIX]);
        st.input.advance(RPC_PREFIX);
        let header = RpcHeader::decode(st.input.split_to(head).freeze()).unwrap();
        let payload = st.input.split_to(body - head).freeze();
        assert_eq!(&header.method[..], b"Echo");
        let req = EchoMsg::decode(payload).unwrap();
        let resp = EchoMsg {
            payload: req.payload,
        };
        let ml = resp.encoded_len();
        let n = rpc_head(header.seq, ml, &mut stack);
        st.out.reserve(n + ml);
        st.out.put_slice(&stack[..n]);
        resp.encode_raw(&mut st.out);
        st.sink.extend_from_slice(black_box(&st.out[..]));
        total += st.sink.len();
        st.sink.clear();
        st.out.clear();
    }
    total
}

/// Payload sizes of the round-trip groups.
const ROUNDTRIP_SIZES: [usize; 2] = [64, 1 << 10];

fn echo_group(size: usize) -> String {
    format!("roundtrip/echo_{}", size_name(size))
}

fn rpc_group(size: usize) -> String {
    format!("roundtrip/rpc_{}", size_name(size))
}

fn echo_contenders(msgs: &[Vec<u8>]) -> Vec<Contender<'_>> {
    let mut lb = EchoLb {
        reader: LinkBuffer::new(),
        out: LinkBuffer::new(),
        sink: Vec::with_capacity(64 << 10),
    };
    let mut bm = EchoBm {
        input: BytesMut::new(),
        sink: Vec::with_capacity(64 << 10),
    };
    vec![
        (
            "linkbuffer",
            Box::new(move || echo_linkbuffer(&mut lb, msgs)),
        ),
        ("bytesmut", Box::new(move || echo_bytesmut(&mut bm, msgs))),
    ]
}

fn rpc_contenders(frames: &[Vec<u8>]) -> Vec<Contender<'_>> {
    let mut lb = EchoLb {
        reader: LinkBuffer::new(),
        out: LinkBuffer::new(),
        sink: Vec::with_capacity(64 << 10),
    };
    let mut bm = RpcBm {
        input: BytesMut::new(),
        out: BytesMut::new(),
        sink: Vec::with_capacity(64 << 10),
    };
    vec![
        (
            "linkbuffer",
            Box::new(move || rpc_linkbuffer(&mut lb, frames)),
        ),
        ("bytesmut", Box::new(move || rpc_bytesmut(&mut bm, frames))),
    ]
}

fn echo_messages(size: usize) -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|k| (0..size).map(|i| (i * 7 + k) as u8).collect())
        .collect()
}

fn rpc_frames(size: usize) -> Vec<Vec<u8>> {
    (0..MESSAGES as u64).map(|k| rpc_request(k, size)).collect()
}

fn bench_roundtrip(c: &mut Criterion) {
    for size in ROUNDTRIP_SIZES {
        let msgs = echo_messages(size);
        let mut contenders = echo_contenders(&msgs);
        let sizes: Vec<usize> = contenders.iter_mut().map(|(_, f)| f()).collect();
        assert!(sizes.iter().all(|&s| s == sizes[0]), "{sizes:?}");
        run_group(c, &echo_group(size), sizes[0], 1, contenders);
    }
    for size in ROUNDTRIP_SIZES {
        let frames = rpc_frames(size);
        let mut contenders = rpc_contenders(&frames);
        let sizes: Vec<usize> = contenders.iter_mut().map(|(_, f)| f()).collect();
        assert!(sizes.iter().all(|&s| s == sizes[0]), "{sizes:?}");
        run_group(c, &rpc_group(size), sizes[0], 1, contenders);
    }
}

/// Runs one contender `iters` times without criterion (see the module docs).
fn run_only(only: &str, iters: u64) {
    let (group, name) = only.rsplit_once('/').expect("<group>/<contender>");
    let run = |mut contenders: Vec<Contender<'_>>| {
        let f = &mut contenders
            .iter_mut()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("unknown contender {only}"))
            .1;
        for _ in 0..iters {
            black_box(f());
        }
    };
    if let Some((payload, count, chunk)) = DECODE_CASES
        .into_iter()
        .find(|&(p, _, c)| decode_group(p, c) == group)
    {
        let data = stream(payload, count);
        run(decode_contenders(&data, chunk, count));
    } else if let Some(payload) = ENCODE_PAYLOADS
        .into_iter()
        .find(|&p| encode_group(p) == group)
    {
        let msgs = messages(payload);
        run(encode_contenders(&msgs));
    } else if let Some(size) = ROUNDTRIP_SIZES
        .into_iter()
        .find(|&p| echo_group(p) == group)
    {
        let msgs = echo_messages(size);
        run(echo_contenders(&msgs));
    } else if let Some(size) = ROUNDTRIP_SIZES.into_iter().find(|&p| rpc_group(p) == group) {
        let frames = rpc_frames(size);
        run(rpc_contenders(&frames));
    } else {
        panic!("unknown group {group}");
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_encode, bench_roundtrip
}

fn main() {
    if let Ok(only) = std::env::var("FERROPOLL_BENCH_ONLY") {
        let iters = std::env::var("FERROPOLL_BENCH_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        run_only(&only, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
