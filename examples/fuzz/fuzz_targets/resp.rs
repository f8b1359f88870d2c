//! Fuzzes the RESP request parsers: the one-slice fast path and the
//! incremental parser must agree on every command and error, whatever the
//! bytes and however they are split across reads; neither may panic, loop
//! or allocate from a length it has not received.
//!
//! Run: `cd examples && RUSTC_BOOTSTRAP=1 cargo fuzz run resp` (or with
//! `+nightly`); `fuzz/corpus/resp` holds the seeds, and
//! `tests/fuzz_corpus.rs` replays them (and `fuzz/regressions/resp`) in
//! `cargo test`.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/resp/parse.rs"]
mod parse;
#[path = "resp_input.rs"]
mod resp_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resp_input::run(data));
