//! Model-based property test: random sequences of every read and write
//! operation, checked against a `VecDeque<u8>` model after each step, with
//! views kept alive past `release`; afterwards mcache's outstanding count
//! and the pinned-bytes counter are back where they started.
//!
//! Everything that asserts on the process-global counters holds `LOCK`.

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};

use common::model::{Harness, Op};
use ferropoll_linkbuffer::pinned_bytes;
use proptest::collection::vec;
use proptest::prelude::*;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn under_valgrind() -> bool {
    std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some()
}

/// Largest single write: 1 MiB, or 32 KiB under valgrind.
fn max_len() -> usize {
    if under_valgrind() { 32 << 10 } else { 1 << 20 }
}

/// Operations per case: fewer under valgrind.
fn max_ops() -> usize {
    if under_valgrind() { 40 } else { 80 }
}

/// Write sizes: mostly small, sometimes a few nodes, rarely up to `max`.
fn size() -> impl Strategy<Value = usize> {
    let max = max_len();
    prop_oneof![
        6 => 0..64usize,
        3 => 0..4096usize,
        2 => 0..40_000usize,
        1 => 0..=max,
    ]
}

/// Read sizes are mapped onto the current length by the harness.
fn raw() -> impl Strategy<Value = usize> {
    any::<u32>().prop_map(|n| n as usize)
}

fn op() -> impl Strategy<Value = Op> {
    let writes = prop_oneof![
        size().prop_map(|len| Op::Write { len }),
        size().prop_map(|len| Op::WriteBytes { len }),
        (size(), proptest::option::of(raw())).prop_map(|(len, ack)| Op::Malloc { len, ack }),
        raw().prop_map(|n| Op::MallocAck { n }),
        size().prop_map(|len| Op::PutSlice { len }),
        any::<u16>().prop_map(|v| Op::PutU16 { v }),
        size().prop_map(|n| Op::ChunkMut { n }),
        (size(), size()).prop_map(|(min, n)| Op::Book { min, n }),
        (size(), raw(), size()).prop_map(|(readable, skip, unflushed)| Op::Append {
            readable,
            skip,
            unflushed
        }),
        raw().prop_map(|n| Op::AppendSlice { n }),
        raw().prop_map(|idx| Op::AppendKept { idx }),
        (raw(), size()).prop_map(|(idx, len)| Op::WriteKept { idx, len }),
    ];
    let reads = prop_oneof![
        raw().prop_map(|n| Op::Peek { n }),
        raw().prop_map(|n| Op::Next { n }),
        raw().prop_map(|n| Op::Skip { n }),
        any::<u8>().prop_map(|delim| Op::Until { delim }),
        Just(Op::ReadByte),
        raw().prop_map(|n| Op::ReadBinary { n }),
        raw().prop_map(|n| Op::ReadString { n }),
        raw().prop_map(|n| Op::Slice { n }),
        raw().prop_map(|n| Op::NextBytes { n }),
        raw().prop_map(|n| Op::CopyToBytes { n }),
        raw().prop_map(|n| Op::Advance { n }),
        Just(Op::GetU32),
        raw().prop_map(|max| Op::Vectored { max }),
        (raw(), raw()).prop_map(|(idx, n)| Op::ReadKept { idx, n }),
    ];
    prop_oneof![
        5 => writes,
        6 => reads,
        3 => Just(Op::Flush),
        2 => Just(Op::Release),
        1 => Just(Op::DropView),
    ]
}

fn run(ops: &[Op]) {
    let mut h = Harness::new(max_len());
    for (i, op) in ops.iter().enumerate() {
        h.apply(op);
        if i % 8 == 7 {
            h.check();
        }
    }
    h.finish();
}

proptest! {
    #[test]
    fn linkbuffer_matches_vecdeque_model(ops in vec(op(), 1..max_ops())) {
        let _guard = lock();
        let outstanding = ferropoll_mcache::stats().outstanding;
        let pinned = pinned_bytes();
        run(&ops);
        prop_assert_eq!(ferropoll_mcache::stats().outstanding, outstanding, "mcache buffers leaked");
        prop_assert_eq!(pinned_bytes(), pinned, "pinned bytes not given back");
    }
}

/// Views kept past `release` pin their node, and give it back when dropped.
#[test]
fn views_pin_released_nodes_until_dropped() {
    let _guard = lock();
    let outstanding = ferropoll_mcache::stats().outstanding;
    let pinned = pinned_bytes();

    let mut buf = ferropoll_linkbuffer::LinkBuffer::new();
    // Enough bytes after the view for `next_bytes` to make a view (a short
    // run at the end of a read would be copied instead).
    buf.write_binary(&[7; 5000]);
    buf.flush();
    let view = buf.next_bytes(10).unwrap();
    let slice = buf.slice(10).unwrap();
    let len = buf.len();
    buf.skip(len).unwrap();
    assert_eq!(pinned_bytes(), pinned, "the owner still holds the node");
    buf.release();
    let node = ferropoll_linkbuffer::BLOCK_SIZE as u64;
    assert_eq!(pinned_bytes(), pinned + node, "one node, counted once");
    drop(view);
    assert_eq!(pinned_bytes(), pinned + node, "the slice still pins it");
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding + 1);
    drop(slice);
    assert_eq!(pinned_bytes(), pinned);
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
    drop(buf);
}

/// A fixed sequence touching every operation, as a quick regression check.
#[test]
fn fixed_sequence_of_every_operation() {
    let _guard = lock();
    let outstanding = ferropoll_mcache::stats().outstanding;
    let ops = [
        Op::Write { len: 10_000 },
        Op::PutU16 { v: 0x0a0a },
        Op::Malloc {
            len: 20_000,
            ack: Some(7_000),
        },
        Op::Flush,
        Op::NextBytes { n: 12 },
        Op::Slice { n: 9_000 },
        Op::Release,
        Op::WriteBytes { len: 5_000 },
        Op::ChunkMut { n: 300 },
        Op::Book { min: 1, n: 4_000 },
        Op::Until { delim: b'\n' },
        Op::Append {
            readable: 50,
            skip: 20,
            unflushed: 9,
        },
        Op::AppendSlice { n: 100 },
        Op::AppendKept { idx: 0 },
        Op::MallocAck { n: 3 },
        Op::Flush,
        Op::Peek { n: 30_000 },
        Op::Next { n: 17 },
        Op::ReadString { n: 5 },
        Op::ReadBinary { n: 4_000 },
        Op::ReadByte,
        Op::GetU32,
        Op::Advance { n: 3 },
        Op::CopyToBytes { n: 2_000 },
        Op::Vectored { max: 3 },
        Op::Slice { n: 64 },
        Op::WriteKept { idx: 0, len: 10 },
        Op::ReadKept { idx: 0, n: 70 },
        Op::DropView,
        Op::Skip { n: 1 << 30 },
        Op::Release,
    ];
    run(&ops);
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
}

/// A node pinned on one thread and let go on others: the per-thread
/// counters behind `pinned_bytes` still sum back to the baseline.
#[test]
fn pins_released_on_other_threads_are_given_back() {
    let _guard = lock();
    let outstanding = ferropoll_mcache::stats().outstanding;
    let pinned = pinned_bytes();
    let mut views = Vec::new();
    for i in 0..8u8 {
        let mut buf = ferropoll_linkbuffer::LinkBuffer::new();
        buf.write_binary(&[i; 100]);
        buf.flush();
        views.push(buf.slice(100).unwrap());
        buf.release(); // the owner lets go: the node is pinned here
    }
    assert_eq!(
        pinned_bytes(),
        pinned + 8 * ferropoll_linkbuffer::BLOCK_SIZE as u64
    );
    let handles: Vec<_> = views
        .into_iter()
        .map(|mut v| std::thread::spawn(move || v.read_binary(100).unwrap()))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), vec![i as u8; 100]);
    }
    assert_eq!(pinned_bytes(), pinned, "unpinned on the other threads");
    assert_eq!(ferropoll_mcache::stats().outstanding, outstanding);
}
