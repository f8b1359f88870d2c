//! The public API on one thread: classes, lengths, errors, counters.
//!
//! `stats()` is process-wide and the harness runs tests on parallel threads,
//! so every test here holds `SERIAL`: the counter deltas they assert cannot be
//! disturbed by another test of this binary.

use std::sync::{Mutex, MutexGuard, PoisonError};

use ferropoll_mcache::{
    Buf, MAX_GLOBAL_CACHED_BYTES, MAX_POOLED, MAX_THREAD_CACHED_BYTES, MIN_CLASS,
    flush_thread_cache, malloc, size_class, stats, trim, try_malloc,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn capacity_is_the_power_of_two_class() {
    let _g = serial();
    for (len, cap) in [
        (0, 64),
        (1, 64),
        (64, 64),
        (65, 128),
        (1000, 1024),
        (1024, 1024),
        (1025, 2048),
        (8 << 10, 8 << 10),
        ((64 << 10) + 1, 128 << 10),
        (1 << 20, 1 << 20),
        (MAX_POOLED, MAX_POOLED),
    ] {
        let b = malloc(len);
        assert_eq!((b.len(), b.capacity()), (len, cap), "malloc({len})");
        assert_eq!(size_class(len), cap);
        assert_eq!(b.as_ptr() as usize % 16, 0, "16-byte aligned");
    }
}

#[test]
fn malloc_zero_is_an_empty_min_class_buffer() {
    let _g = serial();
    let mut b = malloc(0);
    assert!(b.is_empty());
    assert_eq!(&b[..], &[] as &[u8]);
    assert_eq!(b.capacity(), MIN_CLASS);
    b.as_full_mut()[MIN_CLASS - 1] = 9;
    b.set_len(MIN_CLASS);
    assert_eq!(b[MIN_CLASS - 1], 9);
}

#[test]
fn set_len_grows_and_shrinks_within_capacity() {
    let _g = serial();
    let mut b = malloc(10);
    b.copy_from_slice(b"0123456789");
    b.spare_capacity_mut().fill(b'x');
    b.set_len(64);
    assert_eq!(&b[..12], b"0123456789xx");
    assert_eq!(b[63], b'x');
    b.set_len(3);
    assert_eq!(&b[..], b"012");
    assert_eq!(b.as_ref(), b"012");
    b.as_mut()[0] = b'a';
    assert_eq!(&b[..], b"a12");
    let e = b.try_set_len(65).unwrap_err();
    assert!(e.is_len_above_capacity() && !e.is_out_of_memory() && !e.is_capacity_overflow());
    assert_eq!(e.to_string(), "mcache: length 65 above capacity 64");
    assert_eq!(b.len(), 3, "a failed try_set_len leaves the length alone");
    b.clear();
    assert!(b.is_empty());
    assert_eq!(b.capacity(), 64);
    assert_eq!(format!("{b:?}"), "Buf { len: 0, capacity: 64, .. }");
}

#[test]
#[should_panic(expected = "mcache: length 129 above capacity 128")]
fn set_len_above_capacity_panics() {
    let _g = serial();
    let mut b = malloc(100);
    b.set_len(129);
}

#[test]
fn as_full_mut_covers_the_whole_capacity() {
    let _g = serial();
    let mut b = malloc(3000);
    let full = b.as_full_mut();
    assert_eq!(full.len(), 4096);
    for (i, x) in full.iter_mut().enumerate() {
        *x = i as u8;
    }
    b.set_len(4096);
    assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
    assert_eq!(b.as_mut_ptr().cast_const(), b.as_ptr());
}

#[test]
fn huge_requests_are_errors_not_panics() {
    let _g = serial();
    let before = stats();
    let e = try_malloc(usize::MAX).unwrap_err();
    assert!(e.is_capacity_overflow());
    assert!(e.to_string().contains("capacity overflow"));
    assert!(try_malloc(isize::MAX as usize).is_err());
    let after = stats();
    assert_eq!(
        after.allocations, before.allocations,
        "failures are not counted"
    );
    assert_eq!(after.outstanding, before.outstanding);
    let ok = try_malloc(5000).unwrap();
    assert_eq!(ok.capacity(), 8192);
}

#[test]
#[should_panic(expected = "capacity overflow")]
fn malloc_of_an_impossible_size_panics_like_vec() {
    let _g = serial();
    let _ = malloc(usize::MAX);
}

#[test]
fn counters_follow_malloc_and_drop() {
    let _g = serial();
    let s0 = stats();
    let a = malloc(300); // class 512
    let s1 = stats();
    assert_eq!(s1.allocations, s0.allocations + 1);
    assert_eq!(s1.outstanding, s0.outstanding + 1);
    drop(a);
    let s2 = stats();
    assert_eq!(s2.outstanding, s0.outstanding);
    assert_eq!(
        s2.cached_bytes,
        s1.cached_bytes + 512,
        "kept in the thread cache"
    );
    let b = malloc(400); // the same class: a cache hit
    let s3 = stats();
    assert_eq!(s3.cache_hits, s2.cache_hits + 1);
    assert_eq!(s3.cached_bytes, s2.cached_bytes - 512);
    assert_eq!(s3.allocations, s2.allocations + 1);
    drop(b);
    assert_eq!(stats().outstanding, s0.outstanding);
}

#[test]
fn freed_buffer_is_reused_lifo_on_the_same_thread() {
    let _g = serial();
    let a = malloc(20_000); // 32 KiB class
    let addr = a.as_ptr();
    drop(a);
    let b = malloc(17_000);
    assert_eq!(b.as_ptr(), addr);
}

#[test]
fn above_max_pooled_is_unpooled() {
    let _g = serial();
    let s0 = stats();
    let mut b = malloc(MAX_POOLED + 1);
    assert_eq!(b.capacity(), MAX_POOLED + 1);
    assert_eq!(size_class(MAX_POOLED + 1), MAX_POOLED + 1);
    b[MAX_POOLED] = 1;
    assert!(b[..4096].iter().all(|&x| x == 0), "fresh memory is zeroed");
    let s1 = stats();
    assert_eq!(s1.allocations, s0.allocations + 1);
    assert_eq!(s1.cache_hits, s0.cache_hits, "never a cache hit");
    drop(b);
    let s2 = stats();
    assert_eq!(s2.outstanding, s0.outstanding);
    assert_eq!(s2.cached_bytes, s0.cached_bytes, "not cached on drop");
}

#[test]
fn large_classes_recycle_through_the_global_list() {
    let _g = serial();
    let a = malloc(3 << 20); // 4 MiB: no per-thread slot
    let addr = a.as_ptr();
    drop(a);
    let b = malloc(4 << 20);
    assert_eq!(b.as_ptr(), addr);
}

#[test]
fn trim_empties_the_global_lists_and_this_threads_cache() {
    let _g = serial();
    let bufs: Vec<Buf> = (0..10).map(|_| malloc(100_000)).collect(); // 128 KiB
    drop(bufs); // one stays in the thread cache, nine go to the global list
    let s0 = stats();
    assert!(s0.cached_bytes >= 10 * (128 << 10));
    let freed = trim();
    assert!(freed >= 10 * (128 << 10));
    // The thread of a test that just finished may not have run its
    // thread-local destructor yet; its cache still counts. Trim until it has
    // (bounded: a handful of rounds at most).
    let mut rounds = 0;
    while stats().cached_bytes != 0 {
        rounds += 1;
        assert!(rounds < 10_000, "cached bytes never reached zero");
        std::thread::yield_now();
        trim();
    }
    drop(malloc(100));
    assert_eq!(stats().cached_bytes, 128, "in this thread's cache");
    flush_thread_cache();
    assert_eq!(stats().cached_bytes, 128, "moved to the global list");
    assert_eq!(trim(), 128);
    assert_eq!(stats().cached_bytes, 0);
}

#[test]
fn global_lists_hold_at_most_the_shared_budget() {
    let _g = serial();
    let mut rounds = 0;
    while {
        trim();
        stats().cached_bytes != 0
    } {
        rounds += 1;
        assert!(rounds < 10_000, "cached bytes never reached zero");
        std::thread::yield_now();
    }
    let start = stats().outstanding;
    // 48 MiB of classes that only the global lists cache (no thread slots):
    // 8 x 2 MiB, 4 x 4 MiB, 2 x 8 MiB, freed in that order.
    let mut bufs = Vec::new();
    for (len, n) in [(2 << 20, 8), (4 << 20, 4), (8 << 20, 2)] {
        bufs.extend((0..n).map(|_| malloc(len)));
    }
    drop(bufs);
    let held = stats().cached_bytes;
    assert_eq!(
        held, MAX_GLOBAL_CACHED_BYTES as u64,
        "the budget, and no more"
    );
    // The budget is full of large buffers nobody uses any more; a class in
    // use displaces them instead of being refused.
    let small: Vec<Buf> = (0..100).map(|_| malloc(8 << 10)).collect();
    drop(small);
    assert!(stats().cached_bytes <= (MAX_GLOBAL_CACHED_BYTES + MAX_THREAD_CACHED_BYTES) as u64);
    let s0 = stats();
    let small: Vec<Buf> = (0..100).map(|_| malloc(8 << 10)).collect();
    assert_eq!(
        stats().cache_hits - s0.cache_hits,
        100,
        "all 100 were cached"
    );
    drop(small);
    // A class's own cap: 8 MiB buffers have two global slots.
    trim();
    let bufs: Vec<Buf> = (0..3).map(|_| malloc(8 << 20)).collect();
    drop(bufs);
    assert_eq!(stats().cached_bytes, 16 << 20);
    assert_eq!(trim(), 16 << 20);
    assert_eq!(stats().outstanding, start);
}

#[test]
fn into_raw_keeps_the_buffer_outstanding_until_from_raw() {
    let _g = serial();
    let s0 = stats();
    for len in [10, 5000, MAX_POOLED + 7] {
        let mut b = malloc(len);
        b[len - 1] = 9;
        let (ptr, l, cap) = b.into_raw();
        assert_eq!((l, cap), (len, size_class(len)));
        assert_eq!(stats().outstanding, s0.outstanding + 1, "still held");
        // SAFETY: the parts of one `into_raw`, rebuilt once; nothing was
        // written through `ptr`.
        let b = unsafe { Buf::from_raw(ptr, l, cap) };
        assert_eq!((b.len(), b.capacity(), b[len - 1]), (len, cap, 9));
        drop(b);
        assert_eq!(
            stats().outstanding,
            s0.outstanding,
            "freed by the rebuilt Buf"
        );
    }
}
