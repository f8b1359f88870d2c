//! Fuzzes the gRPC server stack in memory — the HTTP/2 connection (frames,
//! HPACK, flow control, stream states) and the gRPC mapping onto the
//! engine — with arbitrary bytes after the client preface. The first byte
//! chooses where the rest is split into two reads. Whatever the input: no
//! panic, no hang, and the output is whole HTTP/2 frames.
//!
//! Run: `cd rpc && RUSTC_BOOTSTRAP=1 cargo fuzz run h2`; `fuzz/corpus/h2`
//! holds the corpus, replayed by `tests/fuzz_corpus.rs` in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, before unwinding. The HPACK
        // decoder (httlib-hpack) panics on a block that ends inside a field,
        // and the connection catches that panic and closes with
        // COMPRESSION_ERROR: let those unwind, abort on every other.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_hpack = info.location().is_some_and(|l| l.file().contains("httlib-hpack"));
            if !in_hpack {
                abort(info);
            }
        }));
    },
    |data: &[u8]| ferropoll_rpc::__fuzz_grpc_server(data)
);
