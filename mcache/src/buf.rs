//! [`Buf`], the owned buffer [`malloc`] hands out.
//!
//! Invariant: all `capacity` bytes behind `ptr` are initialised, for the whole
//! life of the allocation. Fresh memory comes from `alloc_zeroed`, recycled
//! memory keeps the bytes its previous owner left, and the allocator never
//! writes into a free buffer. That is what makes [`Buf::as_full_mut`] (and
//! growing with [`Buf::set_len`]) sound without zeroing on every `malloc`.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::Error;
use crate::class::{MAX_POOLED, class_index, class_of_capacity, class_size};
use crate::pool;

/// An owned byte buffer from a size class.
///
/// It dereferences to its first [`len`](Buf::len) bytes; its
/// [`capacity`](Buf::capacity) is the size class. Every byte of the capacity
/// is initialised (zero when the memory is fresh, whatever the previous owner
/// wrote when it is recycled), so the whole capacity is available as
/// `&mut [u8]` through [`as_full_mut`](Buf::as_full_mut). Dropping the buffer
/// returns it to its class's cache on the dropping thread, which may be a
/// different thread from the allocating one.
///
/// ```
/// let mut b = ferropoll_mcache::malloc(5);
/// b.copy_from_slice(b"hello");
/// assert_eq!(&b[..], b"hello");
/// assert_eq!(b.capacity(), 64);
/// b.set_len(64); // grow within the class; the new bytes are initialised
/// assert_eq!(b.len(), 64);
/// ```
pub struct Buf {
    ptr: NonNull<u8>,
    len: usize,
    /// A power of two in `MIN_CLASS..=MAX_POOLED` for pooled buffers,
    /// the requested length (> `MAX_POOLED`) for unpooled ones.
    cap: usize,
}

// SAFETY: `Buf` owns its allocation exclusively, like `Vec<u8>`; the pool it
// returns to on drop is thread-safe, from any thread.
unsafe impl Send for Buf {}
// SAFETY: `&Buf` only gives shared, read-only access to initialised bytes.
unsafe impl Sync for Buf {}

/// Allocates a buffer of `len` bytes (capacity [`size_class(len)`](crate::size_class)).
///
/// The contents are initialised but unspecified: zeros for fresh memory,
/// old bytes for a recycled buffer. Requests up to [`MAX_POOLED`] come from
/// the size-class caches; larger ones from the system allocator, unpooled.
///
/// ```
/// let b = ferropoll_mcache::malloc(1000);
/// assert_eq!((b.len(), b.capacity()), (1000, 1024));
/// let empty = ferropoll_mcache::malloc(0);
/// assert!(empty.is_empty());
/// ```
///
/// # Panics
/// When `len` does not fit a memory layout (more than `isize::MAX` bytes
/// with alignment), like `Vec::with_capacity`. When the system is out of
/// memory it calls [`std::alloc::handle_alloc_error`], like `Vec`. Use
/// [`try_malloc`] to get an error instead.
#[inline]
#[must_use = "dropping the buffer frees it at once"]
pub fn malloc(len: usize) -> Buf {
    if len <= MAX_POOLED {
        let class = class_index(len);
        let ptr = match pool::alloc_cached(class) {
            Some(p) => p,
            None => pool::alloc_uncached(class).unwrap_or_else(|| out_of_memory(class)),
        };
        Buf {
            ptr,
            len,
            cap: class_size(class),
        }
    } else {
        match try_malloc(len) {
            Ok(b) => b,
            Err(e) => e.raise(),
        }
    }
}

#[cold]
#[inline(never)]
fn out_of_memory(class: usize) -> ! {
    std::alloc::handle_alloc_error(pool::class_layout(class))
}

/// Allocates like [`malloc`], but returns an error instead of panicking or
/// aborting when `len` is too large or memory runs out.
///
/// ```
/// assert!(ferropoll_mcache::try_malloc(100).is_ok());
/// let e = ferropoll_mcache::try_malloc(usize::MAX).unwrap_err();
/// assert!(e.is_capacity_overflow());
/// ```
pub fn try_malloc(len: usize) -> Result<Buf, Error> {
    if len <= MAX_POOLED {
        let class = class_index(len);
        let ptr = match pool::alloc_cached(class) {
            Some(p) => p,
            None => pool::alloc_uncached(class).ok_or_else(|| Error::out_of_memory(len))?,
        };
        return Ok(Buf {
            ptr,
            len,
            cap: class_size(class),
        });
    }
    let layout = unpooled_layout(len).ok_or_else(|| Error::capacity_overflow(len))?;
    let ptr = pool::alloc_unpooled(layout).ok_or_else(|| Error::out_of_memory(len))?;
    Ok(Buf { ptr, len, cap: len })
}

fn unpooled_layout(cap: usize) -> Option<Layout> {
    Layout::from_size_align(cap, pool::ALIGN).ok()
}

impl Buf {
    /// Length in bytes: how much of the buffer `Deref` exposes.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is zero.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in bytes: the size class (or the exact length of an
    /// unpooled buffer above [`MAX_POOLED`]).
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length, growing or shrinking within the capacity. Bytes
    /// exposed by growing are initialised (see the type docs) but unspecified.
    ///
    /// # Panics
    /// If `len > self.capacity()`; [`try_set_len`](Buf::try_set_len) returns
    /// an error instead.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        if let Err(e) = self.try_set_len(len) {
            e.raise()
        }
    }

    /// Sets the length like [`set_len`](Buf::set_len), or returns an error
    /// (and leaves the length alone) if `len` exceeds the capacity.
    ///
    /// ```
    /// let mut b = ferropoll_mcache::malloc(10);
    /// assert!(b.try_set_len(64).is_ok());
    /// assert!(b.try_set_len(65).unwrap_err().is_len_above_capacity());
    /// assert_eq!(b.len(), 64);
    /// ```
    #[inline]
    pub fn try_set_len(&mut self, len: usize) -> Result<(), Error> {
        if len > self.cap {
            return Err(Error::len_above_capacity(len, self.cap));
        }
        self.len = len;
        Ok(())
    }

    /// Sets the length to zero (the capacity stays).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The whole capacity as bytes, regardless of the length.
    #[inline]
    #[must_use]
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: all `cap` bytes are initialised (module invariant) and
        // owned exclusively by `self`, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// The bytes after the length, up to the capacity.
    ///
    /// ```
    /// let mut b = ferropoll_mcache::malloc(60);
    /// b.spare_capacity_mut().fill(7);
    /// b.set_len(64);
    /// assert_eq!(&b[60..], &[7, 7, 7, 7]);
    /// ```
    #[inline]
    #[must_use]
    pub fn spare_capacity_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_full_mut()[len..]
    }

    /// Raw pointer to the first byte; valid for reads of `capacity()` bytes
    /// while the buffer lives and is not mutated.
    #[inline]
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer to the first byte; valid for reads and writes of
    /// `capacity()` bytes while the buffer lives.
    #[inline]
    #[must_use]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Consumes the buffer without freeing it and returns its pointer,
    /// length and capacity. The caller now owns the memory: it is leaked
    /// (and counted as outstanding) unless given back with
    /// [`Buf::from_raw`]. For data structures that keep their own header
    /// inside the buffer (linkbuffer's nodes do).
    ///
    /// ```
    /// use ferropoll_mcache::{Buf, malloc};
    ///
    /// let mut b = malloc(100);
    /// b[0] = 42;
    /// let (ptr, len, cap) = b.into_raw();
    /// assert_eq!((len, cap), (100, 128));
    /// // SAFETY: the parts come from `into_raw` and are used once; no byte
    /// // of the capacity was de-initialised.
    /// let b = unsafe { Buf::from_raw(ptr, len, cap) };
    /// assert_eq!(b[0], 42);
    /// ```
    #[inline]
    #[must_use = "the memory leaks unless it is given back with `Buf::from_raw`"]
    pub fn into_raw(self) -> (NonNull<u8>, usize, usize) {
        let parts = (self.ptr, self.len, self.cap);
        std::mem::forget(self);
        parts
    }

    /// Rebuilds a buffer from the parts [`Buf::into_raw`] returned; dropping
    /// it then returns the memory to its class as usual.
    ///
    /// # Safety
    ///
    /// 1. `ptr` and `capacity` are the pointer and capacity returned by one
    ///    call of [`Buf::into_raw`], and no other `Buf` has been rebuilt
    ///    from them since (the memory has exactly one owner);
    /// 2. `len <= capacity`;
    /// 3. every byte of the capacity is still initialised: the caller wrote
    ///    only initialised values into it (no padding bytes, no
    ///    `MaybeUninit::uninit()`), since the next owner may read any of them.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, capacity: usize) -> Buf {
        debug_assert!(len <= capacity);
        Buf {
            ptr,
            len,
            cap: capacity,
        }
    }
}

impl Deref for Buf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= cap` bytes are initialised and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for Buf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Buf {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Drop for Buf {
    #[inline]
    fn drop(&mut self) {
        if self.cap <= MAX_POOLED {
            let class = class_of_capacity(self.cap);
            if !pool::free_cached(class, self.ptr) {
                pool::free_uncached(class, self.ptr);
            }
        } else {
            let layout = unpooled_layout(self.cap).expect("layout was valid at allocation");
            // SAFETY: unpooled buffers are allocated by `alloc_unpooled` with
            // `unpooled_layout(cap)`, and `self` is gone after this.
            unsafe { pool::free_unpooled(self.ptr, layout) };
        }
    }
}
