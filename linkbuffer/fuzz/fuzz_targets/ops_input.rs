//! The `LinkBuffer` operation-sequence fuzz check, shared by the fuzz
//! target (`ops.rs`) and the corpus replay test
//! (`linkbuffer/tests/fuzz_corpus.rs`). Both include the model
//! (`tests/common/model.rs`) as the sibling module `model`.
//!
//! The bytes are decoded into operations by [`Input`], a copy of the
//! subset of `arbitrary::Unstructured` (1.x) the decoder uses, byte for byte
//! the same, so that the replay test needs no `arbitrary` dependency and the
//! corpus means the same operations to both.

use super::model::{Harness, Op};

/// Decoding never fails: missing bytes read as zeros, as in `arbitrary`.
type Result<T> = std::result::Result<T, std::convert::Infallible>;

/// The fuzzer's bytes, consumed from the front.
pub struct Input<'a> {
    data: &'a [u8],
}

/// Integers `Input` can produce (`arbitrary`'s `Int`, for what is used).
pub trait Int: Copy {
    /// Width in bytes.
    const BYTES: usize;
    /// As `u64`.
    fn to_u64(self) -> u64;
    /// From `u64` (truncating).
    fn from_u64(v: u64) -> Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn to_u64(self) -> u64 { self as u64 }
            fn from_u64(v: u64) -> Self { v as $t }
        }
    )*};
}
int!(u8, u16, u32, u64, usize);

/// Values `Input::arbitrary` can produce.
pub trait FromInput: Sized {
    /// Takes one value from the front of `u`.
    fn take(u: &mut Input<'_>) -> Self;
}

impl<'a> Input<'a> {
    /// Wraps the fuzzer's bytes.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// `arbitrary::Unstructured::int_in_range`: big-endian bytes, only as
    /// many as the width of the range needs, reduced modulo its size.
    pub fn int_in_range<T: Int>(&mut self, range: std::ops::RangeInclusive<T>) -> Result<T> {
        let (start, end) = (range.start().to_u64(), range.end().to_u64());
        if start == end {
            return Ok(T::from_u64(start));
        }
        let delta = end.wrapping_sub(start) & mask::<T>();
        let mut v: u64 = 0;
        let mut used = 0;
        while used < T::BYTES && (delta >> (used * 8)) > 0 {
            let Some(&b) = self.data.get(used) else { break };
            used += 1;
            v = if T::BYTES == 1 {
                u64::from(b)
            } else {
                (v << 8) | u64::from(b)
            };
        }
        self.data = &self.data[used..];
        let offset = if delta == mask::<T>() {
            v
        } else {
            v % (delta + 1)
        };
        Ok(T::from_u64(start.wrapping_add(offset) & mask::<T>()))
    }

    /// `arbitrary::Arbitrary::arbitrary` for the types the decoder uses.
    pub fn arbitrary<T: FromInput>(&mut self) -> Result<T> {
        Ok(T::take(self))
    }

    /// Little-endian, zero-padded when the bytes run out (`fill_buffer`).
    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut buf = [0u8; N];
        let n = N.min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        buf
    }
}

fn mask<T: Int>() -> u64 {
    if T::BYTES >= 8 {
        u64::MAX
    } else {
        (1u64 << (T::BYTES * 8)) - 1
    }
}

impl FromInput for u8 {
    fn take(u: &mut Input<'_>) -> Self {
        u8::from_le_bytes(u.le::<1>())
    }
}
impl FromInput for u16 {
    fn take(u: &mut Input<'_>) -> Self {
        u16::from_le_bytes(u.le::<2>())
    }
}
impl FromInput for u32 {
    fn take(u: &mut Input<'_>) -> Self {
        u32::from_le_bytes(u.le::<4>())
    }
}
impl FromInput for bool {
    fn take(u: &mut Input<'_>) -> Self {
        u8::take(u) & 1 == 1
    }
}

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
    loop {
        let Ok(op) = op(&mut u);
        h.apply(&op);
        if u.is_empty() {
            break;
        }
    }
    h.finish();
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
}
