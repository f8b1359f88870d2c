//! Model-based property test: random alloc / write / verify / free sequences
//! over sizes from 0 to 9 MiB. Checks that no two live buffers overlap, that
//! contents survive other buffers' traffic, and that `outstanding` returns
//! to where it started.

use std::sync::{Mutex, MutexGuard, PoisonError};

use ferropoll_mcache::{Buf, MAX_POOLED, malloc, size_class, stats};
use proptest::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone)]
enum Op {
    /// Allocate a buffer of this length and fill it with a pattern.
    Alloc(usize),
    /// Drop the live buffer at this index (modulo the live count).
    Free(usize),
    /// Rewrite the live buffer at this index with a new pattern.
    Rewrite(usize),
    /// Change the length of a live buffer within its capacity, then refill.
    SetLen(usize, usize),
    /// Check every live buffer.
    VerifyAll,
}

fn size() -> impl Strategy<Value = usize> {
    // Biased toward small sizes so a case stays fast (under valgrind too).
    prop_oneof![
        8 => 0..=256usize,
        6 => 0..=20_000usize,
        2 => 0..=600_000usize,
        1 => 0..=(9usize << 20),
        1 => Just(MAX_POOLED),
        1 => Just(MAX_POOLED + 1),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size().prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::Rewrite),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Op::SetLen(i, l)),
        1 => Just(Op::VerifyAll),
    ]
}

/// A pattern that depends on the seed and on the position, written and
/// compared 4 KiB at a time: chunk `j` is a seeded block whose first 8 bytes
/// are replaced by `j`. Of buffers above 256 KiB only the first and last 16
/// chunks and every 31st are written and compared; overlap is checked
/// exactly, by address, at every allocation. That keeps valgrind runs short.
struct Pattern {
    block: [u8; 4096],
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        let mut block = [0u8; 4096];
        let mut x = seed | 1;
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Pattern { block }
    }

    /// Whether chunk `j` of a buffer of `len` bytes is written and compared.
    fn sampled(len: usize, j: usize) -> bool {
        let chunks = len.div_ceil(4096);
        chunks <= 64 || j < 16 || j + 16 >= chunks || j.is_multiple_of(31)
    }

    fn write(&self, dst: &mut [u8]) {
        let len = dst.len();
        for (j, d) in dst.chunks_mut(4096).enumerate() {
            if !Self::sampled(len, j) {
                continue;
            }
            d.copy_from_slice(&self.block[..d.len()]);
            let tag = (j as u64).to_le_bytes();
            let n = d.len().min(8);
            d[..n].copy_from_slice(&tag[..n]);
        }
    }

    fn matches(&self, src: &[u8]) -> bool {
        src.chunks(4096).enumerate().all(|(j, s)| {
            if !Self::sampled(src.len(), j) {
                return true;
            }
            let tag = (j as u64).to_le_bytes();
            let n = s.len().min(8);
            s[..n] == tag[..n] && s[n..] == self.block[n..s.len()]
        })
    }
}

struct Live {
    buf: Buf,
    pattern: Pattern,
}

fn disjoint(a: &Buf, b: &Buf) -> bool {
    let (a0, b0) = (a.as_ptr() as usize, b.as_ptr() as usize);
    a0 + a.capacity() <= b0 || b0 + b.capacity() <= a0
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let start = stats().outstanding;
    let mut live: Vec<Live> = Vec::new();
    let mut seed = 1u64;
    for op in ops {
        match op {
            Op::Alloc(len) => {
                if live.len() >= 24 {
                    live.swap_remove(0);
                }
                let mut buf = malloc(len);
                prop_assert_eq!(buf.len(), len);
                prop_assert_eq!(buf.capacity(), size_class(len));
                for other in &live {
                    prop_assert!(disjoint(&buf, &other.buf), "live buffers overlap");
                }
                seed += 1;
                let pattern = Pattern::new(seed);
                pattern.write(&mut buf);
                live.push(Live { buf, pattern });
            }
            Op::Free(i) if !live.is_empty() => {
                let l = live.swap_remove(i % live.len());
                prop_assert!(l.pattern.matches(&l.buf), "contents intact at free");
            }
            Op::Rewrite(i) if !live.is_empty() => {
                let n = live.len();
                let l = &mut live[i % n];
                prop_assert!(l.pattern.matches(&l.buf));
                seed += 1;
                l.pattern = Pattern::new(seed);
                l.pattern.write(&mut l.buf);
            }
            Op::SetLen(i, len) if !live.is_empty() => {
                let n = live.len();
                let l = &mut live[i % n];
                let cap = l.buf.capacity();
                let len = len % (cap + 1);
                prop_assert!(l.buf.try_set_len(cap + 1).is_err());
                l.buf.set_len(len);
                prop_assert_eq!(l.buf.len(), len);
                prop_assert_eq!(l.buf.as_full_mut().len(), cap);
                seed += 1;
                l.pattern = Pattern::new(seed);
                l.pattern.write(&mut l.buf);
            }
            Op::VerifyAll => {
                for l in &live {
                    prop_assert!(l.pattern.matches(&l.buf), "contents intact");
                }
            }
            Op::Free(_) | Op::Rewrite(_) | Op::SetLen(..) => {}
        }
    }
    for l in &live {
        prop_assert!(l.pattern.matches(&l.buf), "contents intact at the end");
    }
    prop_assert_eq!(stats().outstanding, start + live.len() as u64);
    drop(live);
    prop_assert_eq!(stats().outstanding, start, "outstanding back to start");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `.ci/test` sets PROPTEST_CASES=24 under valgrind.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn alloc_write_verify_free(ops in proptest::collection::vec(op(), 1..120)) {
        let _g = serial();
        run(ops)?;
    }
}

/// The same model, with buffers freed on another thread.
#[test]
fn model_with_cross_thread_frees() {
    let _g = serial();
    let start = stats().outstanding;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    let strategy = proptest::collection::vec(size(), 1..60);
    runner
        .run(&strategy, |sizes| {
            let bufs: Vec<Live> = sizes
                .into_iter()
                .enumerate()
                .map(|(i, len)| {
                    let mut buf = malloc(len);
                    let pattern = Pattern::new(i as u64 + 99);
                    pattern.write(&mut buf);
                    Live { buf, pattern }
                })
                .collect();
            let ok = std::thread::spawn(move || bufs.iter().all(|l| l.pattern.matches(&l.buf)))
                .join()
                .unwrap();
            prop_assert!(ok);
            Ok(())
        })
        .unwrap();
    assert_eq!(stats().outstanding, start);
}
