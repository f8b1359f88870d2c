//! Size classes and the cache bounds of each class.
//!
//! Every pooled class is a power of two from [`MIN_CLASS`] to [`MAX_POOLED`].
//! The bounds are fixed at compile time so the worst-case memory the caches
//! may hold is a documented constant, not a function of the workload.

/// Smallest size class in bytes: `malloc(0)` to `malloc(64)` all get 64 bytes.
pub const MIN_CLASS: usize = 64;

/// Largest pooled size class in bytes (8 MiB). Larger requests go to the
/// system allocator and are freed straight back to it on drop.
pub const MAX_POOLED: usize = 8 << 20;

/// log2 of [`MIN_CLASS`].
const MIN_SHIFT: u32 = MIN_CLASS.trailing_zeros();

/// Number of pooled classes: 64 B, 128 B, ..., 8 MiB.
pub(crate) const NUM_CLASSES: usize = (MAX_POOLED.trailing_zeros() - MIN_SHIFT + 1) as usize;

/// Bytes one thread may cache per class (small classes are capped by
/// [`MAX_THREAD_SLOTS`] instead, large ones get at least one slot).
const THREAD_BYTES_PER_CLASS: usize = 128 << 10;
/// Most buffers one thread caches in one class.
const MAX_THREAD_SLOTS: usize = 64;
/// Largest class a thread caches (one buffer); larger classes use only the
/// global list.
const MAX_THREAD_CACHED_CLASS: usize = 1 << 20;

/// Bytes the global list of one class may hold (at least two buffers);
/// all classes together are held to [`MAX_GLOBAL_CACHED_BYTES`].
const GLOBAL_BYTES_PER_CLASS: usize = 16 << 20;
/// Most buffers the global list holds in one class. Each slot costs 16 bytes
/// of queue, allocated once: 295 KiB for all classes.
const MAX_GLOBAL_SLOTS: usize = 2048;

const _: () = assert!(MIN_CLASS.is_power_of_two() && MAX_POOLED.is_power_of_two());
const _: () = assert!(MIN_CLASS << (NUM_CLASSES - 1) == MAX_POOLED);
// Per-class slot counts are stored as u32 in the thread caches.
const _: () = assert!(MAX_THREAD_SLOTS <= u32::MAX as usize);

/// Capacity of class `class`.
#[inline]
pub(crate) const fn class_size(class: usize) -> usize {
    MIN_CLASS << class
}

/// The class that serves `len` bytes. `len` must be at most [`MAX_POOLED`].
#[inline]
pub(crate) fn class_index(len: usize) -> usize {
    debug_assert!(len <= MAX_POOLED);
    // (max(len, 64) - 1) has its top bit at position k-1 when the class is 2^k.
    let bits = usize::BITS - (len.max(MIN_CLASS) - 1).leading_zeros();
    (bits - MIN_SHIFT) as usize
}

/// The class index of a pooled capacity (a power of two in range).
#[inline]
pub(crate) fn class_of_capacity(cap: usize) -> usize {
    debug_assert!(cap.is_power_of_two() && (MIN_CLASS..=MAX_POOLED).contains(&cap));
    (cap.trailing_zeros() - MIN_SHIFT) as usize
}

const fn clamp(v: usize, lo: usize, hi: usize) -> usize {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

const fn thread_slots(class: usize) -> usize {
    let size = class_size(class);
    if size > MAX_THREAD_CACHED_CLASS {
        0
    } else {
        clamp(THREAD_BYTES_PER_CLASS / size, 1, MAX_THREAD_SLOTS)
    }
}

const fn global_slots(class: usize) -> usize {
    clamp(
        GLOBAL_BYTES_PER_CLASS / class_size(class),
        2,
        MAX_GLOBAL_SLOTS,
    )
}

/// Buffers one thread caches per class.
pub(crate) const THREAD_SLOTS: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = thread_slots(c) as u32;
        c += 1;
    }
    t
};

/// Buffers the global list holds per class.
pub(crate) const GLOBAL_SLOTS: [usize; NUM_CLASSES] = {
    let mut t = [0usize; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = global_slots(c);
        c += 1;
    }
    t
};

/// Where each class's slots start in a thread cache's flat slot array.
pub(crate) const SLOT_OFFSETS: [usize; NUM_CLASSES] = {
    let mut t = [0usize; NUM_CLASSES];
    let mut c = 1;
    while c < NUM_CLASSES {
        t[c] = t[c - 1] + THREAD_SLOTS[c - 1] as usize;
        c += 1;
    }
    t
};

/// Length of a thread cache's flat slot array.
pub(crate) const TOTAL_THREAD_SLOTS: usize =
    SLOT_OFFSETS[NUM_CLASSES - 1] + THREAD_SLOTS[NUM_CLASSES - 1] as usize;

/// The most bytes one thread's cache can hold, over all classes
/// (2 812 KiB: see the table in the crate docs).
pub const MAX_THREAD_CACHED_BYTES: usize = {
    let mut sum = 0;
    let mut c = 0;
    while c < NUM_CLASSES {
        sum += THREAD_SLOTS[c] as usize * class_size(c);
        c += 1;
    }
    sum
};

/// The most bytes the global lists hold, all classes together (32 MiB). A
/// budget shared by the classes, so a workload that uses few classes can
/// cache more of each; each class is also capped by its slots (see the table
/// in the crate docs).
pub const MAX_GLOBAL_CACHED_BYTES: usize = 32 << 20;

/// The capacity [`malloc(len)`](crate::malloc) gives: the power-of-two class
/// at or above `len` (at least [`MIN_CLASS`]) when `len <= MAX_POOLED`,
/// otherwise exactly `len` (unpooled).
///
/// ```
/// use ferropoll_mcache::{size_class, MAX_POOLED};
/// assert_eq!(size_class(0), 64);
/// assert_eq!(size_class(1000), 1024);
/// assert_eq!(size_class(1024), 1024);
/// assert_eq!(size_class(MAX_POOLED + 1), MAX_POOLED + 1);
/// ```
#[inline]
#[must_use]
pub fn size_class(len: usize) -> usize {
    if len <= MAX_POOLED {
        class_size(class_index(len))
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_rounds_up_to_powers_of_two() {
        assert_eq!(NUM_CLASSES, 18);
        for (len, cap) in [
            (0, 64),
            (1, 64),
            (63, 64),
            (64, 64),
            (65, 128),
            (127, 128),
            (128, 128),
            (129, 256),
            (1000, 1024),
            (4097, 8192),
            ((1 << 20) - 1, 1 << 20),
            (1 << 20, 1 << 20),
            ((1 << 20) + 1, 2 << 20),
            (MAX_POOLED - 1, MAX_POOLED),
            (MAX_POOLED, MAX_POOLED),
        ] {
            let c = class_index(len);
            assert_eq!(class_size(c), cap, "len {len}");
            assert_eq!(class_of_capacity(cap), c, "cap {cap}");
        }
    }

    #[test]
    fn every_len_fits_its_class_and_not_the_one_below() {
        for len in (0..70_000).chain(MAX_POOLED - 70_000..=MAX_POOLED) {
            let c = class_index(len);
            assert!(class_size(c) >= len);
            assert!(c == 0 || class_size(c - 1) < len, "len {len}");
        }
    }

    /// The table in the crate docs, checked against the constants.
    #[test]
    fn documented_limits_table() {
        #[rustfmt::skip]
        let table: [(usize, u32, usize); NUM_CLASSES] = [
            (64, 64, 2048), (128, 64, 2048), (256, 64, 2048), (512, 64, 2048),
            (1 << 10, 64, 2048), (2 << 10, 64, 2048), (4 << 10, 32, 2048),
            (8 << 10, 16, 2048), (16 << 10, 8, 1024), (32 << 10, 4, 512),
            (64 << 10, 2, 256), (128 << 10, 1, 128), (256 << 10, 1, 64),
            (512 << 10, 1, 32), (1 << 20, 1, 16), (2 << 20, 0, 8),
            (4 << 20, 0, 4), (8 << 20, 0, 2),
        ];
        for (c, &(size, thread, global)) in table.iter().enumerate() {
            assert_eq!(
                (class_size(c), THREAD_SLOTS[c], GLOBAL_SLOTS[c]),
                (size, thread, global)
            );
        }
        assert_eq!(MAX_THREAD_CACHED_BYTES, 2812 << 10);
        let slots: usize = GLOBAL_SLOTS.iter().sum();
        assert_eq!(slots * 16, 18_430 * 16, "295 KiB of queue slots");
        assert_eq!(
            TOTAL_THREAD_SLOTS,
            6 * 64 + 32 + 16 + 8 + 4 + 2 + 1 + 1 + 1 + 1
        );
    }
}
