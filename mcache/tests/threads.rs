//! Buffers crossing threads, many threads at once, and thread exit.
//!
//! Every test holds `SERIAL` so the process-wide counter deltas they assert
//! are theirs alone.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;

use crossbeam_queue::ArrayQueue;
use ferropoll_mcache::{Buf, MAX_THREAD_CACHED_BYTES, malloc, size_class, stats, trim};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fewer iterations under valgrind (30-50x slower, and it runs one thread
/// at a time).
fn scale(n: usize) -> usize {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        (n / 50).max(1)
    } else {
        n
    }
}

/// The positions `fill` writes: the first 256 bytes and the last 64 (enough
/// to catch two owners of one buffer, and cheap in a debug build).
fn sampled(len: usize) -> impl Iterator<Item = usize> {
    (0..len.min(256)).chain(len.saturating_sub(64).max(256)..len)
}

fn fill(b: &mut Buf, tag: u64) {
    let bytes = tag.to_le_bytes();
    for i in sampled(b.len()) {
        b[i] = bytes[i % 8] ^ (i as u8);
    }
}

fn check(b: &Buf, tag: u64) -> bool {
    let bytes = tag.to_le_bytes();
    sampled(b.len()).all(|i| b[i] == bytes[i % 8] ^ (i as u8))
}

/// Waits (bounded) until every exited thread's cache is drained and trims
/// everything, so `cached_bytes` is zero.
fn settle() {
    for _ in 0..10_000 {
        trim();
        if stats().cached_bytes == 0 {
            return;
        }
        thread::yield_now();
    }
    panic!("cached bytes never reached zero: {:?}", stats());
}

#[test]
fn allocate_on_one_thread_free_on_another_and_reuse() {
    let _g = serial();
    settle();
    let start = stats().outstanding;
    const N: usize = 1000; // fits the 2 KiB global list (1024 slots)
    for round in 0..scale(10).max(3) {
        let (tx, rx) = mpsc::channel::<Buf>();
        let consumer = thread::spawn(move || {
            let mut seen = 0u64;
            for (i, b) in rx.iter().enumerate() {
                assert!(check(&b, i as u64), "contents intact across threads");
                seen += 1;
                drop(b); // into the consumer's cache, spilling to the global list
            }
            seen
        });
        // All allocated before any is sent, so all are distinct.
        let bufs: Vec<Buf> = (0..N)
            .map(|i| {
                let mut b = malloc(1500); // 2 KiB class
                fill(&mut b, i as u64);
                b
            })
            .collect();
        let addrs: HashSet<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        for b in bufs {
            tx.send(b).unwrap();
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), N as u64);
        assert_eq!(addrs.len(), N);
        assert_eq!(stats().outstanding, start, "round {round}");
        // The consumer exited: its cache went to the global list, so this
        // thread now gets the very same memory back.
        let s0 = stats();
        let again: Vec<Buf> = (0..N).map(|_| malloc(2000)).collect();
        let s1 = stats();
        assert_eq!(
            s1.cache_hits - s0.cache_hits,
            N as u64,
            "all served by caches"
        );
        let reused = again
            .iter()
            .filter(|b| addrs.contains(&(b.as_ptr() as usize)))
            .count();
        assert_eq!(reused, N, "memory freed on the consumer is reused here");
        drop(again);
        assert_eq!(stats().outstanding, start);
        settle();
    }
}

#[test]
fn producer_consumer_through_a_queue_without_joining_between() {
    let _g = serial();
    let start = stats().outstanding;
    let q = Arc::new(ArrayQueue::<Buf>::new(64));
    let total = scale(20_000);
    let consumer = {
        let q = Arc::clone(&q);
        thread::spawn(move || {
            let mut got = 0;
            while got < total {
                match q.pop() {
                    Some(b) => {
                        assert!(check(&b, b.len() as u64));
                        got += 1;
                    }
                    None => thread::yield_now(),
                }
            }
        })
    };
    for i in 0..total {
        let len = [10, 900, 5000, 70_000][i % 4];
        let mut b = malloc(len);
        fill(&mut b, len as u64);
        let mut item = b;
        while let Err(back) = q.push(item) {
            item = back;
            thread::yield_now();
        }
    }
    consumer.join().unwrap();
    assert_eq!(stats().outstanding, start);
}

#[test]
fn many_threads_allocate_and_free_concurrently() {
    let _g = serial();
    let start = stats();
    let iters = scale(20_000);
    let threads = 4;
    let shared = Arc::new(ArrayQueue::<(Buf, u64)>::new(256));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut live: Vec<(Buf, u64)> = Vec::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut allocated = 0u64;
                for i in 0..iters {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let len = match rng % 16 {
                        0..=9 => (rng >> 8) as usize % 512,
                        10..=13 => (rng >> 8) as usize % 20_000,
                        14 => (rng >> 8) as usize % 300_000,
                        _ => (rng >> 8) as usize % (2 << 20),
                    };
                    let tag = (t as u64) << 32 | i as u64;
                    let mut b = malloc(len);
                    allocated += 1;
                    assert_eq!(b.capacity(), size_class(len));
                    // Sample the contents: first and last bytes are enough to
                    // see two owners of one buffer, cheaply.
                    let n = b.len().min(64);
                    b[..n].fill(tag as u8);
                    if rng & 1 == 0 {
                        // hand it to whichever thread pops it
                        if let Err(back) = shared.push((b, tag)) {
                            live.push(back);
                        }
                    } else {
                        live.push((b, tag));
                    }
                    if live.len() > 32 || rng & 6 == 0 {
                        for (b, tag) in live.drain(..live.len() / 2) {
                            let n = b.len().min(64);
                            assert!(b[..n].iter().all(|&x| x == tag as u8));
                        }
                    }
                    if let Some((b, tag)) = shared.pop() {
                        let n = b.len().min(64);
                        assert!(b[..n].iter().all(|&x| x == tag as u8));
                    }
                }
                allocated
            })
        })
        .collect();
    let allocated: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    while shared.pop().is_some() {}
    let end = stats();
    assert_eq!(end.allocations - start.allocations, allocated);
    assert_eq!(end.outstanding, start.outstanding);
}

#[test]
fn thread_exit_returns_a_full_cache() {
    let _g = serial();
    settle();
    let start = stats().outstanding;
    let (filled_tx, filled_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        // Fill every per-thread slot of every class (the per-thread slots of
        // the crate docs' table), without spilling anything.
        let slots = [64, 64, 64, 64, 64, 64, 32, 16, 8, 4, 2, 1, 1, 1, 1];
        for (c, &n) in slots.iter().enumerate() {
            let bufs: Vec<Buf> = (0..n).map(|_| malloc(64 << c)).collect();
            drop(bufs);
        }
        filled_tx.send(stats()).unwrap();
        go_rx.recv().unwrap();
        // exit with a full cache
    });
    let while_alive = filled_rx.recv().unwrap();
    assert_eq!(while_alive.outstanding, start);
    assert_eq!(while_alive.cached_bytes, MAX_THREAD_CACHED_BYTES as u64);
    go_tx.send(()).unwrap();
    t.join().unwrap();
    let after = stats();
    assert_eq!(after.outstanding, start);
    // Every buffer of the exited thread's cache moved to a global list
    // (which has room for all of them): nothing was lost or freed twice.
    assert_eq!(after.cached_bytes, while_alive.cached_bytes);
    assert_eq!(trim() as u64, while_alive.cached_bytes);
}

#[test]
fn many_short_lived_threads_do_not_grow_the_caches() {
    let _g = serial();
    settle();
    let start = stats().outstanding;
    for _ in 0..scale(200).max(10) {
        thread::spawn(|| {
            let bufs: Vec<Buf> = (0..8).map(|i| malloc(1000 * i)).collect();
            drop(bufs);
        })
        .join()
        .unwrap();
    }
    assert_eq!(stats().outstanding, start);
    // Each exiting thread leaves its eight buffers in the global lists and
    // the next thread takes exactly those: what stays cached is one thread's
    // worth, not two hundred.
    let one_thread = 64 + 1024 + 2048 + 2 * 4096 + 3 * 8192;
    assert_eq!(stats().cached_bytes, one_thread);
}

/// A thread-local that holds buffers and allocates in its destructor.
struct Holder(RefCell<Vec<Buf>>);

impl Drop for Holder {
    fn drop(&mut self) {
        for b in self.0.borrow_mut().drain(..) {
            assert!(check(&b, 7));
        }
        // malloc and free during thread-local teardown
        let mut b = malloc(3000);
        fill(&mut b, 7);
        assert!(check(&b, 7));
        drop(b);
    }
}

thread_local! {
    static HOLDER: Holder = const { Holder(RefCell::new(Vec::new())) };
}

fn hold_buffers() {
    HOLDER.with(|h| {
        for len in [100, 5000, 100_000, 600_000, 9 << 20] {
            let mut b = malloc(len);
            fill(&mut b, 7);
            h.0.borrow_mut().push(b);
        }
    });
}

#[test]
fn buffers_dropped_in_thread_local_destructors_are_freed() {
    let _g = serial();
    let start = stats();
    // Thread-local destructors run in reverse order of first use. Holder
    // first, mcache second: mcache's cache is destroyed first, so the
    // holder's drops and its malloc take the fallback path.
    thread::spawn(|| {
        HOLDER.with(|_| {});
        hold_buffers();
    })
    .join()
    .unwrap();
    // mcache first, holder second: the holder's drops reach a live cache.
    thread::spawn(|| {
        drop(malloc(10));
        hold_buffers();
    })
    .join()
    .unwrap();
    let end = stats();
    assert_eq!(end.outstanding, start.outstanding);
    assert_eq!(end.allocations - start.allocations, 2 * 6 + 1);
}
