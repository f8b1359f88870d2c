//! The allocator's internals: per-thread caches, the global lists, counters,
//! and the calls into the system allocator.
//!
//! Ownership model: a free pooled buffer is owned by exactly one place at a
//! time — one slot of one thread cache, one slot of one global
//! [`ArrayQueue`], or a live [`Buf`](crate::Buf). Moving its pointer between
//! those places moves the ownership; nothing else ever reads the pointer.
//!
//! A thread's cache and counters live in a heap [`Block`] that is never
//! freed: a registry keeps every block so [`snapshot`] can sum the counters,
//! and a block whose thread exited is drained and handed to the next new
//! thread, so the registry grows only to the peak number of live threads.
//! Before a thread has a block its thread-local points at [`EMPTY`], whose
//! slot limits are all zero, so the inlined fast paths always fall through to
//! the slow path, which registers. After the thread-local is destroyed
//! (thread exit), `try_with` fails and every call takes the fallback: global
//! list or system allocator, counted in global atomics.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use crossbeam_queue::ArrayQueue;

use crate::Stats;
use crate::class::{
    GLOBAL_SLOTS, MAX_GLOBAL_CACHED_BYTES, NUM_CLASSES, SLOT_OFFSETS, THREAD_SLOTS,
    TOTAL_THREAD_SLOTS, class_size,
};

/// Alignment of every buffer. 16 keeps glibc `malloc`/`calloc` on their
/// fast path (no `memalign`) and suits any scalar type.
pub(crate) const ALIGN: usize = 16;

/// A free buffer's pointer, as stored in a global list.
struct FreePtr(NonNull<u8>);

// SAFETY: a free buffer is owned by whichever list holds its pointer (see the
// module docs); sending the pointer to another thread moves that ownership,
// and no other thread keeps an alias.
unsafe impl Send for FreePtr {}

/// One bounded global free list per class.
static GLOBAL: LazyLock<[ArrayQueue<FreePtr>; NUM_CLASSES]> =
    LazyLock::new(|| std::array::from_fn(|c| ArrayQueue::new(GLOBAL_SLOTS[c])));

/// Bytes reserved in the global lists, all classes: at most
/// [`MAX_GLOBAL_CACHED_BYTES`]. A buffer's bytes are reserved before it is
/// pushed and released after it is popped, so the lists never hold more.
static GLOBAL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Reserves global room for up to `n` buffers of `class`; returns how many
/// fit. When the budget is exhausted, buffers of other classes are evicted
/// to make room: the classes in use displace stale ones.
fn reserve_global(class: usize, n: usize) -> usize {
    let fit = try_reserve_global(class, n);
    if fit == n {
        return fit;
    }
    evict_except(class, (n - fit) * class_size(class));
    fit + try_reserve_global(class, n - fit)
}

fn try_reserve_global(class: usize, n: usize) -> usize {
    let size = class_size(class);
    let old = GLOBAL_BYTES.fetch_add(n * size, Relaxed);
    // Concurrent reservations only make `old` larger, so the sum of what is
    // granted never exceeds the budget.
    let fit = (MAX_GLOBAL_CACHED_BYTES.saturating_sub(old) / size).min(n);
    if fit < n {
        GLOBAL_BYTES.fetch_sub((n - fit) * size, Relaxed);
    }
    fit
}

/// Frees at least `bytes` of other classes' global buffers to the system
/// (largest classes first), or as much as there is.
#[cold]
fn evict_except(class: usize, bytes: usize) {
    let mut freed = 0;
    for c in (0..NUM_CLASSES).rev().filter(|&c| c != class) {
        while freed < bytes {
            let Some(FreePtr(p)) = GLOBAL[c].pop() else {
                break;
            };
            release_global(c, 1);
            // SAFETY: the global list of class `c` owned `p`, allocated with
            // `class_layout(c)`; popping it made it ours.
            unsafe { alloc::dealloc(p.as_ptr(), class_layout(c)) };
            freed += class_size(c);
        }
        if freed >= bytes {
            return;
        }
    }
}

fn release_global(class: usize, n: usize) {
    if n > 0 {
        GLOBAL_BYTES.fetch_sub(n * class_size(class), Relaxed);
    }
}

/// Gives free buffers of `class` to the global list, as far as the budget
/// and the list's slots allow; the rest go back to the system.
fn to_global(class: usize, bufs: impl ExactSizeIterator<Item = NonNull<u8>>) {
    let fit = reserve_global(class, bufs.len());
    for (i, p) in bufs.enumerate() {
        let rejected = if i < fit {
            match GLOBAL[class].push(FreePtr(p)) {
                Ok(()) => continue,
                Err(FreePtr(p)) => {
                    release_global(class, 1);
                    p
                }
            }
        } else {
            p
        };
        // SAFETY: pooled buffers of `class` are allocated with
        // `class_layout(class)`, and the caller owned `rejected` (a free
        // buffer it hands over).
        unsafe { alloc::dealloc(rejected.as_ptr(), class_layout(class)) };
    }
}

/// Takes a free buffer of `class` from the global list.
fn from_global(class: usize) -> Option<NonNull<u8>> {
    let p = GLOBAL[class].pop()?.0;
    release_global(class, 1);
    Some(p)
}

/// Counts of calls made by threads whose thread-local cache is already gone.
static FALLBACK_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static FALLBACK_MISSES: AtomicU64 = AtomicU64::new(0);
static FALLBACK_FREES: AtomicU64 = AtomicU64::new(0);

/// A thread's cache and counters. Written only by its owning thread; the
/// atomics are there so [`snapshot`] may read them from any thread.
#[repr(align(64))]
struct Block {
    /// Cached buffers per class (the first `lens[c]` slots of class `c`).
    lens: [AtomicU32; NUM_CLASSES],
    /// Slots per class: [`THREAD_SLOTS`] for a real block, zeros for [`EMPTY`].
    limits: [u32; NUM_CLASSES],
    /// Buffers handed out on this thread (pooled and unpooled).
    allocations: AtomicU64,
    /// Of those, the ones no cache could serve.
    misses: AtomicU64,
    /// Buffers dropped on this thread.
    frees: AtomicU64,
    /// The cached pointers; class `c` owns `SLOT_OFFSETS[c]..+limits[c]`.
    slots: UnsafeCell<[*mut u8; TOTAL_THREAD_SLOTS]>,
}

// SAFETY: `slots` is read and written only by the thread that currently owns
// the block (it is handed between threads under the registry mutex, which
// orders the accesses); `EMPTY`'s slots are never touched because its limits
// and lengths are zero. Every other field is atomic or immutable.
unsafe impl Sync for Block {}

impl Block {
    const fn new(limits: [u32; NUM_CLASSES]) -> Block {
        Block {
            lens: [const { AtomicU32::new(0) }; NUM_CLASSES],
            limits,
            allocations: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            slots: UnsafeCell::new([ptr::null_mut(); TOTAL_THREAD_SLOTS]),
        }
    }

    /// Reads slot `i`. Only the owning thread calls this, never reentrantly.
    #[inline(always)]
    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: only the owning thread accesses `slots` (see `impl Sync`),
        // and no reference into the array outlives this expression.
        unsafe { (*self.slots.get())[i] }
    }

    /// Writes slot `i`. Only the owning thread calls this, never reentrantly.
    #[inline(always)]
    fn set_slot(&self, i: usize, p: *mut u8) {
        // SAFETY: as in `slot`.
        unsafe { (*self.slots.get())[i] = p }
    }

    /// Takes a cached buffer of `class`, if any (the allocation fast path).
    #[inline(always)]
    fn pop(&self, class: usize) -> Option<NonNull<u8>> {
        let n = self.lens[class].load(Relaxed);
        if n == 0 {
            return None;
        }
        let n = n - 1;
        let p = self.slot(SLOT_OFFSETS[class] + n as usize);
        self.lens[class].store(n, Relaxed);
        bump(&self.allocations);
        NonNull::new(p)
    }

    /// Caches a freed buffer of `class` if there is room (the free fast path).
    #[inline(always)]
    fn push(&self, class: usize, p: NonNull<u8>) -> bool {
        let stashed = self.stash(class, p);
        if stashed {
            bump(&self.frees);
        }
        stashed
    }

    /// Puts a free buffer of `class` in the cache if there is room, uncounted.
    #[inline(always)]
    fn stash(&self, class: usize, p: NonNull<u8>) -> bool {
        let n = self.lens[class].load(Relaxed);
        if n >= self.limits[class] {
            return false;
        }
        self.set_slot(SLOT_OFFSETS[class] + n as usize, p.as_ptr());
        self.lens[class].store(n + 1, Relaxed);
        true
    }

    /// After a miss: moves up to half a cache of `class` from the global
    /// list into this cache, so the next allocations hit.
    fn refill(&self, class: usize) {
        let want = (self.limits[class] / 2).saturating_sub(self.lens[class].load(Relaxed));
        let mut moved = 0;
        while moved < want {
            let Some(FreePtr(p)) = GLOBAL[class].pop() else {
                break;
            };
            moved += 1;
            if !self.stash(class, p) {
                // Cannot happen (`want` leaves room); never lose the buffer.
                release_global(class, moved as usize);
                to_global(class, std::iter::once(p));
                return;
            }
        }
        release_global(class, moved as usize);
    }

    /// Moves every cached buffer to the global lists (or the system). The
    /// caller holds the registry lock, so [`snapshot`] sees the buffers either
    /// here or there, never in both or neither.
    fn drain(&self, _registry: &MutexGuard<'_, Registry>) {
        for (class, len) in self.lens.iter().enumerate() {
            let off = SLOT_OFFSETS[class];
            let n = len.load(Relaxed) as usize;
            to_global(class, (off..off + n).map(|i| self.cached(i)));
            len.store(0, Relaxed);
        }
    }

    /// The pointer in slot `i`, which holds a cached buffer.
    fn cached(&self, i: usize) -> NonNull<u8> {
        NonNull::new(self.slot(i)).expect("slots below a class's length hold buffers")
    }

    /// The cache is full: moves its older half to the global list.
    #[cold]
    fn spill(&self, class: usize) {
        let n = self.lens[class].load(Relaxed) as usize;
        let off = SLOT_OFFSETS[class];
        let moved = n.div_ceil(2);
        to_global(class, (off..off + moved).map(|i| self.cached(i)));
        for i in moved..n {
            self.set_slot(off + i - moved, self.slot(off + i));
        }
        self.lens[class].store((n - moved) as u32, Relaxed);
    }

    fn cached_bytes(&self) -> u64 {
        (0..NUM_CLASSES)
            .map(|c| u64::from(self.lens[c].load(Relaxed)) * class_size(c) as u64)
            .sum()
    }
}

/// Adds one to a counter that only the current thread writes: a plain load
/// and store, no locked read-modify-write.
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
}

/// The block of threads that have not registered yet: no slots, so every
/// fast path falls through to the slow path.
static EMPTY: Block = Block::new([0; NUM_CLASSES]);

struct Registry {
    /// Every block ever created (live or free); never shrinks.
    all: Vec<&'static Block>,
    /// Blocks whose thread has exited, drained, ready for reuse.
    free: Vec<&'static Block>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    all: Vec::new(),
    free: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // Nothing panics while holding the lock; recover from poison regardless.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread-local handle on this thread's block.
struct Local {
    block: Cell<&'static Block>,
}

impl Local {
    /// This thread's block, registering one on first use.
    fn registered(&self) -> &'static Block {
        let b = self.block.get();
        if !ptr::eq(b, &EMPTY) {
            return b;
        }
        let b = {
            let mut reg = registry();
            match reg.free.pop() {
                Some(b) => b,
                None => {
                    let b: &'static Block = Box::leak(Box::new(Block::new(THREAD_SLOTS)));
                    reg.all.push(b);
                    b
                }
            }
        };
        self.block.set(b);
        b
    }
}

impl Drop for Local {
    /// Thread exit: return the cached buffers and the block itself.
    fn drop(&mut self) {
        let b = self.block.replace(&EMPTY);
        if !ptr::eq(b, &EMPTY) {
            let mut reg = registry();
            b.drain(&reg);
            reg.free.push(b);
        }
    }
}

thread_local! {
    static LOCAL: Local = const { Local { block: Cell::new(&EMPTY) } };
}

/// Allocation fast path: a buffer of `class` from this thread's cache.
#[inline(always)]
pub(crate) fn alloc_cached(class: usize) -> Option<NonNull<u8>> {
    LOCAL.try_with(|l| l.block.get().pop(class)).ok().flatten()
}

/// Allocation slow path: the global list, else fresh memory. `None` only when
/// the system is out of memory.
#[cold]
#[inline(never)]
pub(crate) fn alloc_uncached(class: usize) -> Option<NonNull<u8>> {
    let reused = from_global(class);
    count_allocation(reused.is_none());
    if reused.is_some() {
        let _ = LOCAL.try_with(|l| l.registered().refill(class));
    }
    reused.or_else(|| {
        let p = fresh(class_layout(class));
        if p.is_none() {
            uncount_allocation();
        }
        p
    })
}

/// Free fast path: caches a buffer of `class` on this thread if there is room.
#[inline(always)]
pub(crate) fn free_cached(class: usize, p: NonNull<u8>) -> bool {
    matches!(LOCAL.try_with(|l| l.block.get().push(class, p)), Ok(true))
}

/// Free slow path: registers the thread, spills a full cache, or (after
/// thread-local teardown, or for uncached classes) uses the global list.
#[cold]
#[inline(never)]
pub(crate) fn free_uncached(class: usize, p: NonNull<u8>) {
    let done = LOCAL.try_with(|l| {
        let b = l.registered();
        if b.limits[class] == 0 {
            bump(&b.frees);
            to_global(class, std::iter::once(p));
            return;
        }
        if !b.push(class, p) {
            b.spill(class);
            if !b.push(class, p) {
                // Cannot happen (a spill frees at least one slot); never
                // lose the buffer regardless.
                bump(&b.frees);
                to_global(class, std::iter::once(p));
            }
        }
    });
    if done.is_err() {
        FALLBACK_FREES.fetch_add(1, Relaxed);
        to_global(class, std::iter::once(p));
    }
}

/// Allocates `layout` unpooled (zeroed). `None` when out of memory.
#[cold]
#[inline(never)]
pub(crate) fn alloc_unpooled(layout: Layout) -> Option<NonNull<u8>> {
    let p = fresh(layout)?;
    count_allocation(true);
    Some(p)
}

/// Frees an unpooled buffer.
///
/// # Safety
/// `p` must come from [`alloc_unpooled`] with this `layout`, and not be used
/// afterwards.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_unpooled(p: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller guarantees `p` was allocated with `layout` by the
    // global allocator and is no longer used.
    unsafe { alloc::dealloc(p.as_ptr(), layout) };
    count_free();
}

/// Layout of a pooled class.
#[inline]
pub(crate) fn class_layout(class: usize) -> Layout {
    // Powers of two up to 8 MiB with alignment 16 always form a valid layout.
    Layout::from_size_align(class_size(class), ALIGN).expect("size classes are valid layouts")
}

/// Zeroed memory from the global allocator (free zero pages for large sizes).
/// Zeroing is what makes every byte of a buffer initialised (crate docs).
fn fresh(layout: Layout) -> Option<NonNull<u8>> {
    // SAFETY: every layout used here has a non-zero size (>= MIN_CLASS, or an
    // unpooled length > MAX_POOLED).
    NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
}

fn count_allocation(miss: bool) {
    let counted = LOCAL.try_with(|l| {
        let b = l.registered();
        bump(&b.allocations);
        if miss {
            bump(&b.misses);
        }
    });
    if counted.is_err() {
        FALLBACK_ALLOCATIONS.fetch_add(1, Relaxed);
        if miss {
            FALLBACK_MISSES.fetch_add(1, Relaxed);
        }
    }
}

/// Undoes `count_allocation(true)` when the fresh allocation then failed.
fn uncount_allocation() {
    let done = LOCAL.try_with(|l| {
        let b = l.registered();
        b.allocations
            .store(b.allocations.load(Relaxed).wrapping_sub(1), Relaxed);
        b.misses
            .store(b.misses.load(Relaxed).wrapping_sub(1), Relaxed);
    });
    if done.is_err() {
        FALLBACK_ALLOCATIONS.fetch_sub(1, Relaxed);
        FALLBACK_MISSES.fetch_sub(1, Relaxed);
    }
}

fn count_free() {
    if LOCAL.try_with(|l| bump(&l.registered().frees)).is_err() {
        FALLBACK_FREES.fetch_add(1, Relaxed);
    }
}

/// Sums every thread's counters, the fallback counters and the cached bytes.
pub(crate) fn snapshot() -> Stats {
    let mut allocations = 0u64;
    let mut misses = 0u64;
    let mut frees = 0u64;
    let mut cached_bytes = 0u64;
    {
        // Under the lock thread exits and flushes cannot move buffers
        // between a thread cache and a global list while we count.
        let reg = registry();
        // Frees before allocations: a buffer allocated and freed while we
        // read can then only make `outstanding` too high, never negative.
        for b in &reg.all {
            frees = frees.wrapping_add(b.frees.load(Relaxed));
        }
        frees = frees.wrapping_add(FALLBACK_FREES.load(Relaxed));
        for b in &reg.all {
            allocations = allocations.wrapping_add(b.allocations.load(Relaxed));
            misses = misses.wrapping_add(b.misses.load(Relaxed));
            cached_bytes += b.cached_bytes();
        }
        for (c, q) in GLOBAL.iter().enumerate() {
            cached_bytes += q.len() as u64 * class_size(c) as u64;
        }
    }
    allocations = allocations.wrapping_add(FALLBACK_ALLOCATIONS.load(Relaxed));
    misses = misses.wrapping_add(FALLBACK_MISSES.load(Relaxed));
    Stats {
        allocations,
        cache_hits: allocations.saturating_sub(misses),
        cached_bytes,
        outstanding: allocations.saturating_sub(frees),
    }
}

/// Moves the calling thread's cached buffers to the global lists.
pub(crate) fn flush_thread_cache() {
    let _ = LOCAL.try_with(|l| {
        let b = l.block.get();
        if !ptr::eq(b, &EMPTY) {
            b.drain(&registry());
        }
    });
}

/// Flushes this thread's cache, then frees every buffer of the global lists
/// to the system. Returns the bytes freed.
pub(crate) fn trim() -> usize {
    flush_thread_cache();
    let mut freed = 0;
    for (c, q) in GLOBAL.iter().enumerate() {
        while let Some(FreePtr(p)) = q.pop() {
            release_global(c, 1);
            // SAFETY: the global list of class `c` owned `p`, allocated with
            // `class_layout(c)`; popping it made it ours.
            unsafe { alloc::dealloc(p.as_ptr(), class_layout(c)) };
            freed += class_size(c);
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_is_as_documented() {
        // "a thread's cache block takes 3.7 KiB" (crate docs)
        assert_eq!(std::mem::size_of::<Block>(), 3776);
    }

    #[test]
    fn global_reservations_never_exceed_the_budget() {
        // Class 17 (8 MiB): the budget has room for four of them at most.
        let granted = reserve_global(17, 100);
        assert!(granted <= MAX_GLOBAL_CACHED_BYTES / class_size(17));
        assert!(GLOBAL_BYTES.load(Relaxed) <= MAX_GLOBAL_CACHED_BYTES);
        release_global(17, granted);
    }
}
