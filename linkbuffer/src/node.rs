//! Nodes and the slots that window them — the only module with `unsafe`.
//!
//! A [`Node`] is one mcache [`Buf`] shared by reference count ([`Arc`]). It
//! is reached through raw pointers because two kinds of users touch it at
//! once, possibly from different threads:
//!
//! - exactly one **owner** — the owned [`Slot`] in some `LinkBuffer` that
//!   allocated the node (moved, never copied, by `append`) — which may
//!   *write* the bytes at and after its `end`;
//! - any number of **views** — [`Bytes`] made by [`Slot::view`] over a
//!   [`NodeView`] — which *read* bytes before the owner's `frozen` mark.
//!
//! The disjointness invariant that makes this sound, kept by this module
//! alone (the `LinkBuffer` above it cannot break it through the API here):
//!
//! 1. every view covers only bytes below `frozen`, and `frozen <= end`;
//! 2. the owner writes only bytes at or after `end`
//!    ([`Slot::spare_mut`], [`Slot::commit_mut`]); a shared slot writes
//!    nothing (its `spare` is 0);
//! 3. `end` never moves below `frozen` ([`Slot::truncate`] refuses);
//! 4. `frozen` only grows.
//!
//! So a byte is either still writable by the (single) owner and seen by no
//! view, or frozen forever and only read. No `&mut [u8]` is ever made over a
//! byte below `end`, except by [`Slot::commit_mut`], which hands out the
//! bytes it has just moved `end` past, before any view can exist over them
//! (views need `frozen` past them, which needs a later `&mut self`).
//!
//! Pinned bytes: when an owner slot is dropped while views still hold its
//! node, the node's capacity is added to a global counter, once, and taken
//! off when the last view drops ([`pinned_bytes`]).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use ferropoll_mcache::Buf;

/// Bytes of nodes kept alive only by views after their owner let them go.
static PINNED: AtomicU64 = AtomicU64::new(0);

/// Bytes of buffer memory currently kept alive only by zero-copy views.
///
/// When a [`LinkBuffer`](crate::LinkBuffer) releases (or drops) a node while
/// views made from it — [`slice`](crate::LinkBuffer::slice),
/// [`next_bytes`](crate::LinkBuffer::next_bytes), or `Buf::copy_to_bytes` —
/// are still alive, the node cannot go back to mcache: its whole capacity is
/// *pinned* by those views. This process-wide counter adds each such node's
/// capacity once, and subtracts it when the last view drops. A value that
/// keeps growing means views are being held too long (for example, a small
/// `Bytes` field kept from each message pins each message's whole node).
///
/// ```
/// use ferropoll_linkbuffer::{LinkBuffer, pinned_bytes};
///
/// let mut buf = LinkBuffer::new();
/// buf.write_binary(b"header+payload");
/// buf.flush();
/// let payload = buf.next_bytes(6).unwrap();
/// buf.skip(buf.len()).unwrap();
/// buf.release(); // the node is consumed, but `payload` still points into it
/// assert!(pinned_bytes() >= 64);
/// drop(payload); // last view gone: the node returns to mcache
/// ```
pub fn pinned_bytes() -> u64 {
    PINNED.load(Ordering::Relaxed)
}

/// One mcache buffer, shared by its owner slot and its views.
pub(crate) struct Node {
    /// Start of the buffer, taken once through `Buf::as_mut_ptr` while the
    /// node was unique; every access goes through it.
    ptr: *mut u8,
    /// The buffer's capacity: all of it is initialised (mcache's contract).
    cap: usize,
    /// Set once when the owner let go while views remained.
    pinned: AtomicBool,
    /// Keeps the memory alive; never touched after construction except by
    /// its own `Drop`.
    _buf: Buf,
}

// SAFETY: `Node` is a `Buf` (itself `Send + Sync`) plus a pointer into it.
// Which thread may read or write which byte through that pointer is governed
// by the module invariant (one writer above `end`, readers below `frozen`),
// not by which thread holds the `Arc`, so sharing and sending it is sound.
unsafe impl Send for Node {}
// SAFETY: as for `Send`: shared access only reads frozen bytes, and the
// owner's writes never touch them.
unsafe impl Sync for Node {}

impl Node {
    /// Allocates a node of at least `size` bytes from mcache.
    fn alloc(size: usize) -> Arc<Node> {
        let buf = ferropoll_mcache::malloc(size);
        let cap = buf.capacity();
        let mut node = Arc::new(Node {
            ptr: std::ptr::null_mut(),
            cap,
            pinned: AtomicBool::new(false),
            _buf: buf,
        });
        // Take the pointer only once the `Buf` sits at its final address, so
        // no later move of the `Buf` value can retag it.
        let inner = Arc::get_mut(&mut node).expect("a fresh Arc is unique");
        inner.ptr = inner._buf.as_mut_ptr();
        node
    }

    /// Marks the node pinned (its owner let go while views remain).
    fn pin(&self) {
        if !self.pinned.swap(true, Ordering::Relaxed) {
            PINNED.fetch_add(self.cap as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if *self.pinned.get_mut() {
            PINNED.fetch_sub(self.cap as u64, Ordering::Relaxed);
        }
    }
}

/// The owner of a [`Bytes`] made over frozen node bytes.
struct NodeView {
    node: Arc<Node>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for NodeView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `off + len <= frozen <= cap` of the owner slot that made
        // this view (`Slot::view`): the bytes are initialised (mcache
        // initialises the whole capacity), the `Arc` keeps them allocated,
        // and nothing writes them ever again (invariants 1–4).
        unsafe { std::slice::from_raw_parts(self.node.ptr.add(self.off), self.len) }
    }
}

/// How a slot keeps its bytes alive.
enum Backing {
    /// A node this slot allocated: it alone may write the node, after `end`.
    Owned {
        node: Arc<Node>,
        /// The latest view made of the node, over `off..frozen` (see
        /// [`Slot::frozen`]); `view` slices it, so most views cost one
        /// refcount increment. Every view ever made of the node ends at or
        /// before its end, since each new one covers all readable bytes and
        /// those only grow. Kept until the slot drops.
        cache: Option<Bytes>,
    },
    /// Read-only bytes: a view of another buffer's node (from `slice`) or a
    /// linked `Bytes` (from `write_bytes`).
    Shared(Bytes),
}

/// One run of content in a `LinkBuffer`: the bytes `ptr[start..end]`.
///
/// `ptr` is the start of the backing memory (the node, or the `Bytes`), and
/// `limit` the end of what may be written (the node's capacity; 0 for a
/// shared slot), so neither the read nor the write path matches on the
/// backing.
pub(crate) struct Slot {
    ptr: *mut u8,
    start: usize,
    end: usize,
    limit: usize,
    backing: Backing,
}

// SAFETY: `ptr` points into memory kept alive by `backing` (an `Arc<Node>`
// or a `Bytes`, both `Send + Sync`); reads and writes through it follow the
// module invariant, which does not depend on the thread.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`; `&Slot` only reads content bytes.
unsafe impl Sync for Slot {}

impl Slot {
    /// A fresh, empty slot over a new node of at least `size` bytes.
    pub(crate) fn alloc(size: usize) -> Slot {
        let node = Node::alloc(size);
        Slot {
            ptr: node.ptr,
            start: 0,
            end: 0,
            limit: node.cap,
            backing: Backing::Owned { node, cache: None },
        }
    }

    /// A read-only slot over all of `bytes`.
    pub(crate) fn shared(bytes: Bytes) -> Slot {
        Slot {
            // Never written through: `spare()` is 0 for shared slots.
            ptr: bytes.as_ptr().cast_mut(),
            start: 0,
            end: bytes.len(),
            limit: 0,
            backing: Backing::Shared(bytes),
        }
    }

    /// An empty shared slot that holds nothing (for vacated queue entries).
    #[inline]
    pub(crate) fn placeholder() -> Slot {
        Slot::shared(Bytes::new())
    }

    /// Content bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// The content bytes.
    #[inline]
    pub(crate) fn content(&self) -> &[u8] {
        // SAFETY: `start <= end` and `ptr[..end]` is initialised memory kept
        // alive by `backing` (mcache initialises a node's whole capacity; a
        // `Bytes` is `end` bytes long at least). Nobody writes it while
        // `&self` lives: only an owned slot writes, only at or after `end`,
        // and it needs `&mut self`; views only read.
        unsafe { std::slice::from_raw_parts(self.ptr.add(self.start), self.end - self.start) }
    }

    /// Consumes `n <= len()` content bytes and returns them.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        assert!(n <= self.len(), "take beyond the slot's content");
        let from = self.start;
        self.start += n;
        // SAFETY: `from + n <= end`: content bytes, as in `content`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(from), n) }
    }

    /// Consumes `n <= len()` content bytes.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance beyond the slot's content");
        self.start += n;
    }

    /// Whether this slot owns its node (and so may write after its end).
    #[inline]
    pub(crate) fn is_owned(&self) -> bool {
        matches!(self.backing, Backing::Owned { .. })
    }

    /// End of the writable area: the node's capacity, 0 for a shared slot.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Writable bytes after the content: 0 unless the slot owns its node.
    #[inline]
    pub(crate) fn spare(&self) -> usize {
        self.limit.saturating_sub(self.end)
    }

    /// Appends one byte if there is room; returns whether it did.
    #[inline]
    pub(crate) fn push_byte(&mut self, b: u8) -> bool {
        if self.end >= self.limit {
            return false;
        }
        // SAFETY: `end < limit`: a byte of an owned node's capacity
        // (`limit` is 0 for shared slots), initialised, at or after `end`,
        // so no view covers it (invariants 1–2), and this `&mut self` is the
        // node's only writer.
        unsafe { self.ptr.add(self.end).write(b) };
        self.end += 1;
        true
    }

    /// The spare bytes after the content, to write into (empty unless owned).
    #[inline]
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        let spare = self.spare();
        // SAFETY: `end + spare <= limit`, the capacity of an owned node
        // (`spare` is 0 for a shared slot), all initialised. This slot is the node's only writer,
        // views cover only bytes below `frozen <= end`, and no `content`
        // borrow of `self` can coexist with this `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.end), spare) }
    }

    /// Appends `n <= spare()` bytes already written into `spare_mut`.
    #[inline]
    pub(crate) fn commit(&mut self, n: usize) {
        assert!(n <= self.spare(), "commit beyond the node's capacity");
        self.end += n;
    }

    /// Appends `n <= spare()` bytes and returns them to be written.
    #[inline]
    pub(crate) fn commit_mut(&mut self, n: usize) -> &mut [u8] {
        assert!(n <= self.spare(), "commit beyond the node's capacity");
        let from = self.end;
        self.end += n;
        // SAFETY: `from + n <= limit`, the capacity of an owned node (`n` is
        // 0 for a shared slot), initialised; `from >= frozen`, so no view
        // covers these bytes, and none can be made while this `&mut` borrow
        // of `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(from), n) }
    }

    /// Appends a copy of `src` (`src.len() <= spare()`).
    #[inline]
    pub(crate) fn write(&mut self, src: &[u8]) {
        self.commit_mut(src.len()).copy_from_slice(src);
    }

    /// The `frozen` mark: bytes of the node below it may be read by views
    /// and are never written again. It is the end of the cached view (0
    /// without one), which only grows.
    #[inline]
    fn frozen(&self) -> usize {
        match &self.backing {
            Backing::Owned { cache: Some(c), .. } => {
                c.as_ptr() as usize - self.ptr as usize + c.len()
            }
            _ => 0,
        }
    }

    /// Keeps only the first `len <= len()` content bytes.
    ///
    /// # Panics
    ///
    /// If that would drop bytes a view may still read (below `frozen`);
    /// the buffer only truncates unflushed bytes, which no view covers.
    pub(crate) fn truncate(&mut self, len: usize) {
        assert!(len <= self.len(), "truncate beyond the slot's content");
        let end = self.start + len;
        assert!(end >= self.frozen(), "truncate below bytes held by views");
        self.end = end;
    }

    /// A zero-copy view of the first `n` content bytes, of which the first
    /// `readable >= n` are published (flushed) and may be frozen for good.
    /// Does not consume.
    #[inline(always)]
    pub(crate) fn view(&mut self, n: usize, readable: usize) -> Bytes {
        // Fast path: a slice of the cached view (one refcount increment).
        if let Backing::Owned { cache: Some(c), .. } = &self.backing {
            // Reads only move forward, so the cache starts at or before
            // `start`; check both ends anyway.
            let off = c.as_ptr() as usize - self.ptr as usize;
            let from = self.start.wrapping_sub(off);
            if self.start >= off && n <= c.len().saturating_sub(from) {
                return c.slice(from..from + n);
            }
        }
        self.view_slow(n, readable)
    }

    #[inline(never)]
    fn view_slow(&mut self, n: usize, readable: usize) -> Bytes {
        assert!(
            n <= readable && readable <= self.len(),
            "view beyond readable bytes"
        );
        let start = self.start;
        match &mut self.backing {
            Backing::Shared(b) => b.slice(start..start + n),
            Backing::Owned { .. } if n == 0 => Bytes::new(),
            Backing::Owned { .. } => {
                // Never let `frozen` move back, whatever `readable` says:
                // cover at least up to the old mark (bytes below it are
                // frozen already, and `frozen <= end`).
                let cover = readable.max(self.frozen().saturating_sub(start));
                let Backing::Owned { node, cache } = &mut self.backing else {
                    unreachable!("matched above");
                };
                // The new cache, and so `frozen`, ends at `start + cover`.
                let c = Bytes::from_owner(NodeView {
                    node: Arc::clone(node),
                    off: start,
                    len: cover,
                });
                let view = c.slice(..n);
                *cache = Some(c);
                view
            }
        }
    }

    /// As [`view`](Slot::view), then consumes the `n` bytes.
    #[inline(always)]
    pub(crate) fn take_bytes(&mut self, n: usize, readable: usize) -> Bytes {
        let b = self.view(n, readable);
        self.start += n;
        b
    }

    /// Memory this slot keeps alive, for diagnostics.
    pub(crate) fn held(&self) -> usize {
        match &self.backing {
            Backing::Owned { node, .. } => node.cap,
            Backing::Shared(b) => b.len(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Backing::Owned { node, cache, .. } = &mut self.backing {
            // Our own cache holds the node too; let it go before counting.
            *cache = None;
            if Arc::strong_count(node) > 1 {
                // Views outlive the owner: the node is pinned until they
                // drop. Marked before our `Arc` drops, so the last `Arc`'s
                // drop (which synchronises with ours) sees the mark.
                node.pin();
            }
        }
    }
}
