//! Drives random sequences of every `LinkBuffer` operation, decoded from the
//! fuzzer's bytes, against the `VecDeque<u8>` model shared with the proptest
//! (`tests/common/model.rs`); then checks that every mcache buffer came back.
#![no_main]

#[path = "../../tests/common/model.rs"]
mod model;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use model::{Harness, Op};

/// Largest single write: small enough to keep executions fast.
const MAX_LEN: usize = 64 << 10;

fn size(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=5 => u.int_in_range(0..=63)?,
        6..=7 => u.int_in_range(0..=4095)?,
        8 => u.int_in_range(0..=40_000)?,
        _ => u.int_in_range(0..=MAX_LEN)?,
    })
}

fn raw(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(u.arbitrary::<u32>()? as usize)
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
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

fuzz_target!(|data: &[u8]| {
    let outstanding = ferropoll_mcache::stats().outstanding;
    let mut u = Unstructured::new(data);
    let mut h = Harness::new(MAX_LEN);
    while let Ok(op) = op(&mut u) {
        h.apply(&op);
        if u.is_empty() {
            break;
        }
    }
    h.finish();
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
});
