//! Fuzzes the frame decoder and the server engine with arbitrary bytes.
//!
//! The first input byte chooses where the rest is split into two reads, so
//! incomplete-frame handling is exercised too. Whatever the input, decoding
//! must end in `Ok(None)` or an error — never a panic, a hang or an
//! allocation beyond the limits — and the engine's output must decode.
//!
//! Run: `cd rpc && cargo +nightly fuzz run decode` (or on stable with
//! `RUSTC_BOOTSTRAP=1`); `fuzz/corpus/decode` holds the corpus, replayed
//! (with `fuzz/regressions/decode`) by `tests/fuzz_corpus.rs` in `cargo test`.
//! The check itself is `decode_input.rs`.
#![no_main]

#[path = "decode_input.rs"]
mod decode_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| decode_input::run(data));
