//! Drives random sequences of every `LinkBuffer` operation, decoded from the
//! fuzzer's bytes, against the `VecDeque<u8>` model shared with the proptest
//! (`tests/common/model.rs`); then checks that every mcache buffer came back.
//!
//! The check itself is `ops_input.rs`, which `tests/fuzz_corpus.rs` also
//! runs over the checked-in corpus and reproducers in `cargo test`.
#![no_main]

#[path = "../../tests/common/model.rs"]
mod model;
#[path = "ops_input.rs"]
mod ops_input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ops_input::run(data));
