//! The frame-decoder fuzz check, shared by the fuzz target (`decode.rs`)
//! and the corpus replay test (`rpc/tests/fuzz_corpus.rs`).
//!
//! The first input byte chooses where the rest is split into two reads, so
//! incomplete-frame handling is exercised too. Whatever the input, decoding
//! must end in `Ok(None)` or an error — never a panic, a hang or an
//! allocation beyond the limits — and the engine's output must decode.

use std::sync::Arc;
use std::time::Instant;

use ferropoll_linkbuffer::LinkBuffer;
use ferropoll_rpc::codec::{self, MessageType};
use ferropoll_rpc::sansio::{Outbox, ServerConn};
use ferropoll_rpc::{
    Context, Limits, MethodKind, PeerAddr, Reply, ServerEngine, Service, Status, StreamCall,
};

/// Echoes a `BytesValue`-encoded payload; method 1 fails; method 2
/// (`Chat`) is a bidi stream, so stream frames reach open streams. (No
/// panicking method: libFuzzer's panic hook aborts even on a panic that is
/// caught.)
struct Echo;

/// Collects what stream handlers would send.
#[derive(Default)]
struct Collect(std::sync::Mutex<LinkBuffer>);

impl Outbox for Collect {
    fn send(&self, frames: LinkBuffer) {
        self.0.lock().unwrap().append(frames);
    }
}

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo.Echo"
    }

    fn methods(&self) -> &'static [&'static str] {
        &["Echo", "Fail", "Chat"]
    }

    fn kind(&self, method: usize) -> MethodKind {
        if method == 2 {
            MethodKind::Bidi
        } else {
            MethodKind::Unary
        }
    }

    fn call_stream(&self, _: usize, _: &Context, stream: StreamCall) -> Result<(), Status> {
        let (requests, mut responses) = stream.into_parts::<Vec<u8>, Vec<u8>>();
        for req in requests {
            responses.send(&req?)?;
        }
        Ok(())
    }

    fn call(&self, method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        match method {
            0 => reply.unary(ctx, request, |_, v: Vec<u8>| Ok(v)),
            _ => reply.unary(ctx, request, |_, _: Vec<u8>| -> Result<Vec<u8>, _> {
                Err(ferropoll_rpc::Status::not_found("failed on purpose"))
            }),
        }
    }
}

fn limits() -> Limits {
    Limits {
        max_body_len: 1 << 16,
        max_header_len: 1 << 12,
        ..Limits::default()
    }
}

/// Decodes `data` (split in two reads) with the decoder alone and with the
/// server engine; checks the invariants above.
pub fn run(data: &[u8]) {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split) % (bytes.len() + 1);
    let limits = limits();

    // The decoder alone, fed in two reads.
    let mut buf = LinkBuffer::new();
    let mut failed = false;
    for part in [&bytes[..cut], &bytes[cut..]] {
        buf.write_binary(part);
        buf.flush();
        while !failed {
            match codec::decode(&mut buf, &limits) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= limits.max_body_len as usize);
                    let _ = frame.message_type();
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.status();
                    failed = true;
                }
            }
        }
        buf.release();
    }

    // The engine over the same bytes; its output must be well-formed.
    let mut engine = ServerEngine::with_limits(limits);
    engine.register(Echo).expect("one registration");
    let outbox = Arc::new(Collect::default());
    let conn = ServerConn::with_outbox(PeerAddr::unknown(), Arc::clone(&outbox) as Arc<dyn Outbox>);
    let (mut input, mut output, mut deferred) = (LinkBuffer::new(), LinkBuffer::new(), Vec::new());
    for part in [&bytes[..cut], &bytes[cut..]] {
        input.write_binary(part);
        input.flush();
        if engine
            .process(
                &conn,
                &mut input,
                &mut output,
                &mut deferred,
                Instant::now(),
            )
            .is_err()
        {
            break;
        }
        input.release();
    }
    // Stream handlers, which a server runs on its pool, are not run here
    // (one waiting for more input would never end): each deferred call is
    // answered as the pool's refusal would be.
    drop(conn);
    for call in deferred.drain(..) {
        let abandoned = Status::cancelled("input over");
        call.reject(&abandoned, &mut output);
    }
    output.flush();
    while let Some(frame) =
        codec::decode(&mut output, &Limits::default()).expect("engine output decodes")
    {
        assert!(matches!(
            frame.message_type(),
            Some(
                MessageType::Response
                    | MessageType::Pong
                    | MessageType::Error
                    | MessageType::Window
            )
        ));
    }
    let mut streamed = std::mem::take(&mut *outbox.0.lock().unwrap());
    streamed.flush();
    while let Some(frame) =
        codec::decode(&mut streamed, &Limits::default()).expect("stream output decodes")
    {
        assert!(matches!(
            frame.message_type(),
            Some(MessageType::Response | MessageType::Message | MessageType::Window)
        ));
    }
}
