//! Counters and cache maintenance.

use crate::pool;

/// A snapshot of the allocator's counters, process-wide.
///
/// Every thread counts in its own block (a plain load and store, no shared
/// atomic on the hot path); [`stats`] sums the blocks. The sums are exact
/// when no `malloc` or drop is in flight; while other threads run they may
/// be a few operations stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Buffers handed out by [`malloc`](crate::malloc) and
    /// [`try_malloc`](crate::try_malloc) since the process started,
    /// pooled and unpooled.
    pub allocations: u64,
    /// Allocations served from a cache (the thread's own or a global list)
    /// rather than fresh memory.
    pub cache_hits: u64,
    /// Bytes of free buffers held by all thread caches and global lists.
    pub cached_bytes: u64,
    /// Buffers handed out and not yet dropped (wherever they are dropped).
    pub outstanding: u64,
}

/// A snapshot of the allocator's counters.
///
/// ```
/// let before = ferropoll_mcache::stats();
/// let b = ferropoll_mcache::malloc(100);
/// let during = ferropoll_mcache::stats();
/// assert!(during.allocations > before.allocations);
/// drop(b);
/// ```
#[must_use]
pub fn stats() -> Stats {
    pool::snapshot()
}

/// Moves the calling thread's cached buffers to the global lists (those
/// that do not fit are freed to the system). Threads do this on exit by
/// themselves; call it before parking a thread for a long time.
pub fn flush_thread_cache() {
    pool::flush_thread_cache()
}

/// Flushes the calling thread's cache, then frees every buffer held by the
/// global lists back to the system; returns the bytes freed. Other threads'
/// caches are not touched.
///
/// ```
/// drop(ferropoll_mcache::malloc(4096)); // cached on this thread
/// let freed = ferropoll_mcache::trim(); // includes it, unless another thread took it
/// println!("trim released {freed} bytes");
/// ```
pub fn trim() -> usize {
    pool::trim()
}
