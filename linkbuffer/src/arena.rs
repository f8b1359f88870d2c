//! Short copies without an allocation each: a per-thread `BytesMut` arena.
//!
//! A zero-copy [`Bytes`] over node memory needs a `Bytes::from_owner`
//! — one heap allocation — for every run of bytes that no earlier view
//! covered, and it can only be made once those bytes are written. In a
//! request/response exchange every message is freshly read, so decoding a
//! short `bytes` field (a method name, a key) zero-copy costs an allocation
//! and a free per message, and pins the message's whole node while the
//! field lives. Copying the field instead into a thread-local arena costs a
//! `memcpy` and the same two atomic operations a view costs, allocates
//! nothing in steady state, and pins only a share of the arena.
//!
//! The arena is two `BytesMut` chunks of [`CHUNK`] bytes. Each copy is
//! appended to the current chunk and split off as a frozen `Bytes` sharing
//! it (as a codec over `BytesMut` does). When the current chunk is used up,
//! the arena switches to the other one and reclaims it in place
//! (`try_reclaim`), which succeeds once every `Bytes` split from it has been
//! dropped — normally long ago, since the copies of the message being
//! decoded live in the chunk just left. Only when a survivor still pins it
//! is a new chunk allocated (two allocations: its memory and its shared
//! header), so a handler that keeps fields costs an allocation per chunk,
//! not per field. Everything here is safe code over `bytes`.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Size of an arena chunk. 16 KiB: a few hundred typical short fields per
/// chunk, so a chunk pinned by one long-lived field costs little per field.
const CHUNK: usize = 16 << 10;

/// Longest run [`copy`] is used for (`Buf::copy_to_bytes` of a run that no
/// cached view covers). Up to 1 KiB a copy is cheaper than the allocation
/// and free of a view's header (see BENCHMARKS.md); longer runs stay
/// zero-copy.
pub(crate) const COPY_MAX: usize = 1 << 10;

/// The two chunks: `cur` takes the copies, `other` waits to be reclaimed.
struct Chunks {
    cur: BytesMut,
    other: BytesMut,
}

impl Chunks {
    /// Makes room for `n` bytes in `cur`.
    #[cold]
    fn switch(&mut self, n: usize) {
        std::mem::swap(&mut self.cur, &mut self.other);
        if !self.cur.try_reclaim(CHUNK) {
            // Still pinned by a live copy (or never allocated): a new chunk.
            self.cur = BytesMut::with_capacity(CHUNK.max(n));
        }
    }
}

thread_local! {
    static ARENA: RefCell<Option<Chunks>> = const { RefCell::new(None) };
}

/// A `Bytes` holding a copy of the `n` bytes `fill` writes (through
/// `extend_from_slice` calls on the arena). `n <= COPY_MAX`.
pub(crate) fn copy(n: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    debug_assert!(n <= COPY_MAX);
    let mut fill = Some(fill);
    let done = ARENA.try_with(|arena| {
        let mut arena = arena.try_borrow_mut().ok()?;
        let arena = arena.get_or_insert_with(|| Chunks {
            cur: BytesMut::new(),
            other: BytesMut::new(),
        });
        if arena.cur.capacity() < n {
            arena.switch(n);
        }
        (fill.take()?)(&mut arena.cur);
        Some(arena.cur.split().freeze())
    });
    match done {
        Ok(Some(b)) => b,
        // The thread is exiting (its arena is gone): a plain copy.
        _ => {
            let mut v = BytesMut::with_capacity(n);
            if let Some(f) = fill.take() {
                f(&mut v);
            }
            v.freeze()
        }
    }
}
