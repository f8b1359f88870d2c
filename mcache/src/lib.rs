//! Size-class byte-buffer allocator with bounded per-thread caches — the
//! memory under every `linkbuffer` node, in the spirit of netpoll's `mcache`.
//!
//! ```
//! use ferropoll_mcache::{malloc, stats};
//!
//! let mut b = malloc(1000); // capacity 1024: the power-of-two class
//! b.copy_from_slice(&[1; 1000]);
//! b.as_full_mut()[1000..].fill(2); // the whole class is usable
//! b.set_len(1024);
//! assert_eq!(b[1023], 2);
//! drop(b); // back to this thread's cache for class 1024
//!
//! let again = malloc(700); // class 1024 again: served from the cache
//! assert_eq!(again.capacity(), 1024);
//! assert!(stats().cache_hits > 0);
//! ```
//!
//! # Design
//!
//! **Size classes.** A request of `len` bytes gets a [`Buf`] whose capacity is
//! the power of two at or above `len`, from [`MIN_CLASS`] (64 B; `malloc(0)`
//! included) to [`MAX_POOLED`] (8 MiB): 18 classes. Network buffers are
//! allocated and freed at a high rate in a few recurring sizes, so recycling
//! them by class replaces a trip through the system allocator (and, for large
//! sizes, `mmap`, page faults and `munmap`) by a pop from a small stack. The
//! cost is at most 2× internal waste, which is why the user may grow a buffer
//! into its spare capacity ([`Buf::set_len`], [`Buf::as_full_mut`]).
//! Requests above 8 MiB are rare and would pin too much memory: they go to the
//! system allocator and are freed straight back to it.
//!
//! **Two levels of caching.** Each thread keeps a small stack of free buffers
//! per class; `malloc` pops from it and dropping a `Buf` pushes onto it, with
//! no atomic read-modify-write and no lock. When a thread's stack for a class
//! is full, its older half moves to that class's global list, a bounded
//! lock-free queue (`crossbeam_queue::ArrayQueue`); when the thread's stack is
//! empty, `malloc` takes from the global list (and refills half the stack
//! from it) before asking the system for fresh memory. What the global list
//! has no room for is freed to the system. A thread caches at most one
//! buffer of each class from 128 KiB to 1 MiB, and none above 1 MiB: those
//! only the global lists hold.
//!
//! **Bounded.** Without a garbage collector an unbounded cache is a leak, so
//! every cache is bounded. One thread's cache has a fixed number of slots per
//! class and holds at most [`MAX_THREAD_CACHED_BYTES`] (2 812 KiB). The
//! global lists share a budget of [`MAX_GLOBAL_CACHED_BYTES`] (32 MiB; each
//! class is also capped by its slots, 16 MiB of buffers at most), so a
//! workload that uses a few classes can keep more of each. When the budget
//! is full, a class that needs room evicts other classes' global buffers
//! (largest first) back to the system, so buffers of a class no longer in
//! use do not hold the budget forever. The memory held
//! by free buffers is therefore at most `threads × 2 812 KiB + 32 MiB`, the
//! per-thread part reached only when a thread has used every class. [`trim`]
//! gives the global lists and the calling thread's cache back to the system.
//!
//! | class   | slots per thread | bytes per thread | global slots | global bytes at most |
//! |--------:|-----------------:|-----------------:|-------------:|---------------------:|
//! | 64 B    | 64 | 4 KiB   | 2048 | 128 KiB |
//! | 128 B   | 64 | 8 KiB   | 2048 | 256 KiB |
//! | 256 B   | 64 | 16 KiB  | 2048 | 512 KiB |
//! | 512 B   | 64 | 32 KiB  | 2048 | 1 MiB   |
//! | 1 KiB   | 64 | 64 KiB  | 2048 | 2 MiB   |
//! | 2 KiB   | 64 | 128 KiB | 2048 | 4 MiB   |
//! | 4 KiB   | 32 | 128 KiB | 2048 | 8 MiB   |
//! | 8 KiB   | 16 | 128 KiB | 2048 | 16 MiB  |
//! | 16 KiB  | 8  | 128 KiB | 1024 | 16 MiB  |
//! | 32 KiB  | 4  | 128 KiB | 512  | 16 MiB  |
//! | 64 KiB  | 2  | 128 KiB | 256  | 16 MiB  |
//! | 128 KiB | 1  | 128 KiB | 128  | 16 MiB  |
//! | 256 KiB | 1  | 256 KiB | 64   | 16 MiB  |
//! | 512 KiB | 1  | 512 KiB | 32   | 16 MiB  |
//! | 1 MiB   | 1  | 1 MiB   | 16   | 16 MiB  |
//! | 2 MiB   | 0  | 0       | 8    | 16 MiB  |
//! | 4 MiB   | 0  | 0       | 4    | 16 MiB  |
//! | 8 MiB   | 0  | 0       | 2    | 16 MiB  |
//! | **all** |    | **2 812 KiB** | 18 430 | **32 MiB** (shared budget) |
//!
//! The global lists' queues themselves take 295 KiB (16 bytes a slot),
//! allocated on first use; a thread's cache block takes 3.7 KiB.
//!
//! **The initialisation invariant.** Every byte of a `Buf`'s capacity is
//! always initialised: fresh memory comes from `alloc_zeroed` (for large
//! classes that is `mmap`'s zero pages, which cost nothing until touched),
//! recycled buffers keep whatever their previous owner wrote, and the
//! allocator itself never writes into a free buffer (its free lists are
//! arrays of pointers, not links stored inside the buffers). So handing out
//! `&mut [u8]` over the whole capacity is sound without zeroing on every
//! `malloc`. The contents of a new buffer are therefore unspecified — never
//! rely on them being zero, and never put secrets in a buffer without
//! overwriting them before dropping it.
//!
//! **Cross-thread free.** `Buf` is `Send + Sync`; dropping it on another
//! thread pushes it to *that* thread's cache (or the global list), so a
//! producer/consumer pair recycles its buffers through the global list.
//!
//! **Thread exit.** A thread's cache is a thread-local whose destructor moves
//! its buffers to the global lists (freeing what does not fit). A `Buf`
//! dropped or allocated after that destructor ran (from another
//! thread-local's destructor) bypasses the thread cache and goes straight to
//! the global list or the system, so nothing leaks whatever the destructor
//! order.
//!
//! **Counters.** [`stats`] reports allocations, cache hits, bytes held by the
//! caches and outstanding buffers. Each thread counts in its own block with
//! plain loads and stores (no shared atomic per call); `stats` sums the
//! blocks under a lock. `outstanding` is exact when no allocation or drop is
//! in flight, which makes "outstanding is back to where it started" a leak
//! check for tests.
//!
//! # Limits
//!
//! - Buffers are 16-byte aligned; nothing more is promised.
//! - The memory bound above is per thread: a process with thousands of
//!   threads that each touch every class may hold that many caches. Threads
//!   that go idle for long can call [`flush_thread_cache`].
//! - Another thread's cache cannot be trimmed from outside; it is returned
//!   when that thread exits or flushes.
//! - A buffer over 8 MiB costs a system allocation and free every time.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod buf;
mod class;
mod error;
mod pool;
mod stats;

pub use buf::{Buf, malloc, try_malloc};
pub use class::{
    MAX_GLOBAL_CACHED_BYTES, MAX_POOLED, MAX_THREAD_CACHED_BYTES, MIN_CLASS, size_class,
};
pub use error::Error;
pub use stats::{Stats, flush_thread_cache, stats, trim};
