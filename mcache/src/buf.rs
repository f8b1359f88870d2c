//! Placeholder: every `Buf` comes from the system allocator, zero-filled.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Smallest size class in bytes.
pub const MIN_CLASS: usize = 64;
/// Largest pooled size class in bytes; larger requests are not pooled.
pub const MAX_POOLED: usize = 8 << 20;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

/// Counters of the allocator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Buffers handed out by [`malloc`].
    pub allocations: u64,
    /// Allocations served from a cache.
    pub cache_hits: u64,
    /// Bytes held by caches.
    pub cached_bytes: u64,
    /// Buffers handed out and not yet dropped.
    pub outstanding: u64,
}

/// A snapshot of the allocator's counters.
pub fn stats() -> Stats {
    let a = ALLOCS.load(Ordering::Relaxed);
    let f = FREES.load(Ordering::Relaxed);
    Stats {
        allocations: a,
        cache_hits: 0,
        cached_bytes: 0,
        outstanding: a - f,
    }
}

/// An owned byte buffer from a size class.
pub struct Buf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: `Buf` owns its allocation exclusively, like `Vec<u8>`.
unsafe impl Send for Buf {}
// SAFETY: shared access only reads.
unsafe impl Sync for Buf {}

fn capacity_for(len: usize) -> usize {
    if len > MAX_POOLED {
        len
    } else {
        len.max(MIN_CLASS).next_power_of_two()
    }
}

/// Allocates a buffer of `len` initialised bytes.
pub fn malloc(len: usize) -> Buf {
    let cap = capacity_for(len);
    let layout = Layout::from_size_align(cap, 16).expect("buffer too large");
    // SAFETY: layout has non-zero size (cap >= MIN_CLASS).
    let raw = unsafe { alloc::alloc_zeroed(layout) };
    let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    Buf { ptr, len, cap }
}

impl Buf {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Capacity (the size class).
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Sets the length; panics above capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "Buf::set_len: {len} > capacity {}",
            self.cap
        );
        self.len = len;
    }
    /// The whole capacity as bytes.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: all `cap` bytes are initialised and owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
    /// Raw pointer to the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    /// Raw mutable pointer to the first byte.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= cap` bytes are initialised and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `deref`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, 16).expect("layout was valid at malloc");
        // SAFETY: allocated in `malloc` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        FREES.fetch_add(1, Ordering::Relaxed);
    }
}
