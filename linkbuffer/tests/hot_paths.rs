//! System-allocator calls per message on the three hot paths, in steady
//! state, with the buffer driven exactly as the transport and the RPC layer
//! drive it (`transport/src/reactor.rs` reads, `transport/src/conn.rs`
//! hand-off and send, `examples/src/echo.rs`, `rpc/src/codec.rs`).
//!
//! A counting `#[global_allocator]` counts this thread's `alloc`,
//! `alloc_zeroed`, `realloc` and `dealloc` calls. mcache buffers come from
//! its thread cache, which calls the system allocator only while it warms
//! up, so after a warm-up every call counted here is linkbuffer's (or the
//! test's own, which allocates nothing in the measured loops).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes};
use ferropoll_linkbuffer::LinkBuffer;
use prost::Message;

struct Counting;

thread_local! {
    static CALLS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn count(alloc: usize, free: usize) {
    let _ = CALLS.try_with(|c| {
        let (a, f) = c.get();
        c.set((a + alloc, f + free));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local `Cell`, which neither
// allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, 0);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, 0);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, 0);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, 1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// System-allocator calls (allocations, frees) made by this thread in `f`.
fn calls(f: impl FnOnce()) -> (usize, usize) {
    let (a0, f0) = CALLS.with(Cell::get);
    f();
    let (a1, f1) = CALLS.with(Cell::get);
    (a1 - a0, f1 - f0)
}

/// Runs `round(k)` for a warm-up, then counts the calls of `rounds` more.
fn steady(warm_up: usize, rounds: usize, mut round: impl FnMut(usize)) -> (usize, usize) {
    for k in 0..warm_up {
        round(k);
    }
    calls(|| {
        for k in warm_up..warm_up + rounds {
            round(k);
        }
    })
}

/// Enough rounds for every cache to fill: mcache's thread cache, the read
/// size's growth, and both chunks of the short-copy arena (16 KiB each,
/// ~100 bytes copied per small RPC call).
const WARM_UP: usize = 512;
/// Echo copies nothing into the arena: its caches fill in a few rounds.
const ECHO_WARM_UP: usize = 32;

/// Measured rounds: fewer under valgrind (`.ci/test` sets the variable),
/// where every round costs ~30 times more.
fn rounds(full: usize) -> usize {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        full / 4
    } else {
        full
    }
}

/// `reactor.rs`: the loop reads with `book(MIN_READ)` + `read` + `book_ack`.
const MIN_READ: usize = 4096;

/// Message `k` of a stream: `len` bytes that differ per message.
fn message(len: usize, k: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + k) as u8).collect()
}

/// A socket's receive queue: `read` copies up to the booked space.
struct Socket<'a> {
    data: &'a [u8],
}

impl Socket<'_> {
    /// What the reactor does per readiness: read until drained (a read
    /// shorter than the booking means the socket is empty).
    fn read_all_into(&mut self, buf: &mut LinkBuffer) {
        loop {
            let space = buf.book(MIN_READ);
            let offered = space.len();
            let n = offered.min(self.data.len());
            space[..n].copy_from_slice(&self.data[..n]);
            buf.book_ack(n);
            self.data = &self.data[n..];
            if n < offered {
                return;
            }
        }
    }
}

/// `conn.rs`'s `send_locked`: `sendmsg` of up to 8 chunks, `skip` what was
/// sent, until nothing is readable, then `release`. The "socket" copies
/// into `sink` (preallocated by the caller).
fn send(out: &mut LinkBuffer, sink: &mut Vec<u8>) {
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
    }
    out.release();
}

/// `conn.rs`'s `Reader::pull_locked`: the inbox's bytes become a slice
/// appended to the reader buffer.
fn pull(inbox: &mut LinkBuffer, reader: &mut LinkBuffer) {
    let n = inbox.len();
    if n > 0 {
        let part = inbox.slice(n).unwrap();
        reader.append(part);
        reader.flush();
        inbox.release();
    }
}

/// `examples/src/echo.rs`: slice all readable bytes, drop the reader guard
/// (which releases), append to the writer and flush.
fn echo_handler(reader: &mut LinkBuffer, out: &mut LinkBuffer, sink: &mut Vec<u8>) {
    let n = reader.len();
    if n == 0 {
        return;
    }
    let data = reader.slice(n).unwrap();
    reader.release();
    out.append(data);
    out.flush();
    send(out, sink);
}

/// Echo with the inline fast path: the loop reads straight into the reader
/// buffer (no consumer holds it and the inbox is empty).
fn echo_inline(len: usize) -> (usize, usize) {
    let msgs: Vec<Vec<u8>> = (0..256).map(|k| message(len, k)).collect();
    let mut reader = LinkBuffer::new();
    let mut out = LinkBuffer::new();
    let mut sink = Vec::with_capacity(len);
    steady(ECHO_WARM_UP, rounds(256), |k| {
        let msg = &msgs[k % msgs.len()];
        Socket { data: msg }.read_all_into(&mut reader);
        sink.clear();
        echo_handler(&mut reader, &mut out, &mut sink);
        assert_eq!(&sink, msg);
    })
}

/// Echo through the inbox: the loop reads into the inbox, the handler's
/// reader guard pulls it into the reader buffer first.
fn echo_inbox(len: usize) -> (usize, usize) {
    let msgs: Vec<Vec<u8>> = (0..256).map(|k| message(len, k)).collect();
    let mut inbox = LinkBuffer::new();
    let mut reader = LinkBuffer::new();
    let mut out = LinkBuffer::new();
    let mut sink = Vec::with_capacity(len);
    steady(ECHO_WARM_UP, rounds(256), |k| {
        let msg = &msgs[k % msgs.len()];
        Socket { data: msg }.read_all_into(&mut inbox);
        pull(&mut inbox, &mut reader);
        sink.clear();
        echo_handler(&mut reader, &mut out, &mut sink);
        assert_eq!(&sink, msg);
    })
}

#[test]
fn echo_inline_64b_allocates_nothing_per_message() {
    assert_eq!(echo_inline(64), (0, 0));
}

#[test]
fn echo_inline_1kib_allocates_nothing_per_message() {
    assert_eq!(echo_inline(1 << 10), (0, 0));
}

#[test]
fn echo_inbox_64b_allocates_nothing_per_message() {
    assert_eq!(echo_inbox(64), (0, 0));
}

#[test]
fn echo_inbox_1kib_allocates_nothing_per_message() {
    assert_eq!(echo_inbox(1 << 10), (0, 0));
}

/// A 16 KiB message takes two reads (two nodes), so the reader and output
/// buffers hold two slots for a while.
#[test]
fn echo_inline_16kib_allocates_nothing_per_message() {
    assert_eq!(echo_inline(16 << 10), (0, 0));
}

// ---------------------------------------------------------------------------
// RPC: the frame layout and codec steps of `rpc/src/codec.rs`

const MAGIC: [u8; 2] = [0xFE, 0x9C];
const PREFIX_LEN: usize = 12;
const KIND_REQUEST: i32 = 1;
const KIND_RESPONSE: i32 = 2;

/// `ferropoll.rpc.Header` as the RPC layer decodes it (`Bytes` fields are
/// views into the input).
#[derive(Clone, PartialEq, prost::Message)]
struct Header {
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

/// `echo.EchoRequest` / `echo.EchoResponse` (`proto/protos/echo.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(bytes = "bytes", tag = "1")]
    payload: Bytes,
}

/// Prefix + header + payload, as `codec::encode_request` writes them.
fn request_frame(seq: u64, payload: Bytes) -> Vec<u8> {
    let header = Header {
        seq,
        kind: KIND_REQUEST,
        service: Bytes::from_static(b"echo.Echo"),
        method: Bytes::from_static(b"Echo"),
        timeout_us: 1_000_000,
        ..Header::default()
    };
    let msg = Echo { payload };
    let (hl, ml) = (header.encoded_len(), msg.encoded_len());
    let mut f = Vec::with_capacity(PREFIX_LEN + hl + ml);
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&((hl + ml) as u32).to_be_bytes());
    f.extend_from_slice(&(hl as u32).to_be_bytes());
    header.encode(&mut f).unwrap();
    msg.encode(&mut f).unwrap();
    f
}

/// How the server takes the header out of the frame.
#[derive(Clone, Copy)]
enum HeaderBy {
    /// `rpc/src/codec.rs` today: `next_bytes(header_len)`, decoded from
    /// the `Bytes`.
    NextBytes,
    /// `slice(header_len)`, decoded from the `LinkBuffer` view
    /// (`copy_to_bytes` → `next_bytes` on the view).
    Slice,
}

/// `codec::decode`: peek the prefix, skip it, take the header, slice the
/// payload. `None` while the frame is incomplete.
fn decode(buf: &mut LinkBuffer, by: HeaderBy) -> Option<(Header, LinkBuffer)> {
    let available = buf.len();
    if available < PREFIX_LEN {
        return None;
    }
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(buf.peek(PREFIX_LEN).unwrap());
    assert_eq!(prefix[..2], MAGIC);
    let body = u32::from_be_bytes(prefix[4..8].try_into().unwrap()) as usize;
    let head = u32::from_be_bytes(prefix[8..12].try_into().unwrap()) as usize;
    if available - PREFIX_LEN < body {
        return None;
    }
    buf.skip(PREFIX_LEN).unwrap();
    let header = match by {
        HeaderBy::NextBytes => Header::decode(buf.next_bytes(head).unwrap()).unwrap(),
        HeaderBy::Slice => Header::decode(buf.slice(head).unwrap()).unwrap(),
    };
    let payload = buf.slice(body - head).unwrap();
    Some((header, payload))
}

/// `codec::write_head` (header assembled on the stack, one `write_binary`)
/// then `write_message` (`malloc(encoded_len)` + `encode_raw`).
fn encode_response(out: &mut LinkBuffer, seq: u64, msg: &Echo) {
    let header = Header {
        seq,
        kind: KIND_RESPONSE,
        ..Header::default()
    };
    let (hl, ml) = (header.encoded_len(), msg.encoded_len());
    let mut stack = [0u8; 256];
    stack[..2].copy_from_slice(&MAGIC);
    stack[2] = 1;
    stack[4..8].copy_from_slice(&((hl + ml) as u32).to_be_bytes());
    stack[8..12].copy_from_slice(&(hl as u32).to_be_bytes());
    let mut rest = &mut stack[PREFIX_LEN..];
    header.encode_raw(&mut rest);
    out.write_binary(&stack[..PREFIX_LEN + hl]);
    let mut dst = out.malloc(ml);
    msg.encode_raw(&mut dst);
    assert!(dst.is_empty());
}

/// The server side of one readiness: read, decode every whole frame, run
/// the echo handler (`req.payload` into the response), encode, flush once,
/// send, release the input (the reader guard's drop).
fn rpc_server(payload: usize, by: HeaderBy, per_read: usize) -> (usize, usize) {
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|k| {
            (0..per_read)
                .flat_map(|j| request_frame((k * per_read + j) as u64, message(payload, k).into()))
                .collect()
        })
        .collect();
    let mut reader = LinkBuffer::new();
    let mut out = LinkBuffer::new();
    let mut sink = Vec::with_capacity(per_read * (payload + 64));
    // Enough rounds to cycle both 16 KiB arena chunks (a call copies its
    // header fields and its payload field, ~payload + 25 bytes).
    let warm_up = ((48 << 10) / (per_read * (payload + 25))).clamp(32, WARM_UP);
    steady(warm_up, rounds(512), |k| {
        Socket {
            data: &frames[k % frames.len()],
        }
        .read_all_into(&mut reader);
        let mut answered = 0;
        while let Some((header, payload)) = decode(&mut reader, by) {
            assert_eq!(
                (&header.service[..], &header.method[..]),
                (&b"echo.Echo"[..], &b"Echo"[..])
            );
            let req = Echo::decode(payload).unwrap();
            encode_response(
                &mut out,
                header.seq,
                &Echo {
                    payload: req.payload,
                },
            );
            answered += 1;
        }
        assert_eq!(answered, per_read);
        out.flush();
        sink.clear();
        send(&mut out, &mut sink);
        reader.release();
        assert!(sink.len() > per_read * payload);
    })
}

#[test]
fn rpc_server_64b_allocates_nothing_per_call() {
    assert_eq!(rpc_server(64, HeaderBy::NextBytes, 1), (0, 0));
}

#[test]
fn rpc_server_1kib_allocates_nothing_per_call() {
    assert_eq!(rpc_server(1 << 10, HeaderBy::NextBytes, 1), (0, 0));
}

#[test]
fn rpc_server_header_from_slice_allocates_nothing_per_call() {
    assert_eq!(rpc_server(64, HeaderBy::Slice, 1), (0, 0));
    assert_eq!(rpc_server(1 << 10, HeaderBy::Slice, 1), (0, 0));
}

#[test]
fn rpc_server_pipelined_allocates_nothing_per_batch() {
    assert_eq!(rpc_server(64, HeaderBy::NextBytes, 16), (0, 0));
}

// ---------------------------------------------------------------------------
// length-prefixed decode with `next_bytes` (the decode bench's loop)

/// Frames of `payload` bytes with a 4-byte length, arriving in 16 KiB
/// chunks; returns the calls per chunk over the measured rounds.
fn decode_next_bytes(payload: usize) -> (f64, f64) {
    const CHUNK: usize = 16 << 10;
    let stream: Vec<u8> = (0..(1 << 20) / (payload + 4))
        .flat_map(|k| {
            let mut f = (payload as u32).to_be_bytes().to_vec();
            f.extend(message(payload, k));
            f
        })
        .collect();
    let chunks: Vec<&[u8]> = stream.chunks(CHUNK).collect();
    let mut buf = LinkBuffer::new();
    let mut frames = 0;
    let n = rounds(512);
    let (a, f) = steady(WARM_UP, n, |k| {
        Socket {
            data: chunks[k % chunks.len()],
        }
        .read_all_into(&mut buf);
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf.peek(4).unwrap().try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.skip(4).unwrap();
            let b = buf.next_bytes(len).unwrap();
            assert_eq!(b.len(), payload);
            frames += 1;
        }
        buf.release();
    });
    assert!(frames > n);
    let per_chunk = (a as f64 / n as f64, f as f64 / n as f64);
    eprintln!("{payload}-byte frames: {per_chunk:?} (allocations, frees) per 16 KiB chunk");
    per_chunk
}

#[test]
fn decode_next_bytes_64b_allocates_at_most_once_per_chunk() {
    let (a, f) = decode_next_bytes(64);
    assert!(a <= 1.0 && f <= 1.0, "{a} allocations, {f} frees per chunk");
}

#[test]
fn decode_next_bytes_1kib_allocates_at_most_once_per_chunk() {
    let (a, f) = decode_next_bytes(1 << 10);
    assert!(a <= 1.0 && f <= 1.0, "{a} allocations, {f} frees per chunk");
}

/// Encoding through `BufMut` (what prost does for a message that is not
/// pre-measured) allocates nothing either once nodes are cached.
#[test]
fn bufmut_encode_and_send_allocates_nothing() {
    let msg = Echo {
        payload: Bytes::from(message(100, 1)),
    };
    let mut out = LinkBuffer::new();
    let mut sink = Vec::with_capacity(16 << 10);
    let got = steady(WARM_UP, rounds(512), |_| {
        for _ in 0..16 {
            msg.encode_length_delimited(&mut out).unwrap();
            out.put_u8(0);
        }
        out.flush();
        sink.clear();
        send(&mut out, &mut sink);
        assert_eq!(sink.len(), 16 * (msg.encoded_len() + 2));
    });
    assert_eq!(got, (0, 0));
    assert!(out.remaining() == 0);
}

/// `codec::encode_pong` and any handler that writes a head and then links a
/// payload view: the output holds two slots (the spill's case) per message.
#[test]
fn head_plus_linked_payload_allocates_nothing_per_message() {
    let msgs: Vec<Vec<u8>> = (0..64).map(|k| message(200, k)).collect();
    let mut reader = LinkBuffer::new();
    let mut out = LinkBuffer::new();
    let mut sink = Vec::with_capacity(1024);
    let got = steady(ECHO_WARM_UP, rounds(256), |k| {
        let msg = &msgs[k % msgs.len()];
        Socket { data: msg }.read_all_into(&mut reader);
        let n = reader.len();
        let payload = reader.slice(n).unwrap();
        reader.release();
        out.write_binary(&(n as u32).to_be_bytes());
        out.append(payload);
        out.flush();
        sink.clear();
        send(&mut out, &mut sink);
        assert_eq!(&sink[4..], &msg[..]);
    });
    assert_eq!(got, (0, 0));
}
