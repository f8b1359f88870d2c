//! The `LinkBuffer` operation-sequence fuzz check, shared by the fuzz
//! target (`ops.rs`) and the corpus replay test
//! (`linkbuffer/tests/fuzz_corpus.rs`). Both include the model
//! (`tests/common/model.rs`) as the sibling module `model`.
//!
//! The bytes are decoded into operations through `arbitrary::Unstructured`
//! (the same crate libfuzzer-sys uses), so the corpus means the same
//! operations to the fuzzer and to the replay test.

use arbitrary::{Result, Unstructured as Input};

use super::model::{Harness, Op};

/// Largest single write: small enough to keep executions fast.
const MAX_LEN: usize = 64 << 10;

fn size(u: &mut Input<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=5 => u.int_in_range(0..=63)?,
        6..=7 => u.int_in_range(0..=4095)?,
        8 => u.int_in_range(0..=40_000)?,
        _ => u.int_in_range(0..=MAX_LEN)?,
    })
}

fn raw(u: &mut Input<'_>) -> Result<usize> {
    Ok(u.arbitrary::<u32>()? as usize)
}

pub fn op(u: &mut Input<'_>) -> Result<Op> {
    Ok(match u.int_in_range(0..=30u8)? {
        0 => Op::Write { len: size(u)? },
        1 => Op::WriteBytes { len: size(u)? },
        2 => Op::Malloc {
            len: size(u)?,
            ack: if u.arbitrary()? { Some(raw(u)?) } else { None },
        },
        3 => Op::MallocAck { n: raw(u)? },
        4 => Op::PutSlice { len: size(u)? },
        5 => Op::PutU16 { v: u.arbitrary()? },
        6 => Op::ChunkMut { n: size(u)? },
        7 => Op::Book {
            min: size(u)?,
            n: size(u)?,
        },
        8 => Op::Append {
            readable: size(u)?,
            skip: raw(u)?,
            unflushed: size(u)?,
        },
        9 => Op::AppendSlice { n: raw(u)? },
        10 => Op::AppendKept { idx: raw(u)? },
        11 => Op::WriteKept {
            idx: raw(u)?,
            len: size(u)?,
        },
        12 | 13 => Op::Flush,
        14 => Op::Peek { n: raw(u)? },
        15 => Op::Next { n: raw(u)? },
        16 => Op::Skip { n: raw(u)? },
        17 => Op::Until {
            delim: u.arbitrary()?,
        },
        18 => Op::ReadByte,
        19 => Op::ReadBinary { n: raw(u)? },
        20 => Op::ReadString { n: raw(u)? },
        21 => Op::Slice { n: raw(u)? },
        22 => Op::NextBytes { n: raw(u)? },
        23 => Op::CopyToBytes { n: raw(u)? },
        24 => Op::Advance { n: raw(u)? },
        25 => Op::GetU32,
        26 => Op::Vectored { max: raw(u)? },
        27 => Op::Release,
        28 => Op::DropView,
        _ => Op::ReadKept {
            idx: raw(u)?,
            n: raw(u)?,
        },
    })
}

/// Decodes `data` into operations and runs them against the model; then
/// checks that every mcache buffer came back.
pub fn run(data: &[u8]) {
    let outstanding = ferropoll_mcache::stats().outstanding;
    let mut u = Input::new(data);
    let mut h = Harness::new(MAX_LEN);
    // `Unstructured` pads missing bytes with zeros rather than failing, so
    // every input decodes to at least one operation.
    while let Ok(op) = op(&mut u) {
        h.apply(&op);
        if u.is_empty() {
            break;
        }
    }
    h.finish();
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
}
