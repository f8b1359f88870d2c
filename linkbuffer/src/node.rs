//! Nodes and the slots that window them — the only module with `unsafe`.
//!
//! A [`Node`] is one mcache [`Buf`] shared by reference count ([`Arc`]). It
//! is reached through raw pointers because two kinds of users touch it at
//! once, possibly from different threads:
//!
//! - exactly one **owner** — an [`OwnedSlot`] in some `LinkBuffer`, the slot
//!   that allocated the node (moved, never copied, by `append`) — which may
//!   *write* the bytes at and after its `end`;
//! - any number of **views** — [`Bytes`] made by [`OwnedSlot::view`] over a
//!   [`NodeView`] — which *read* bytes before the owner's `frozen` mark.
//!
//! The disjointness invariant that makes this sound, kept by this module
//! alone (the `LinkBuffer` above it cannot break it through the API here):
//!
//! 1. every view covers only bytes below `frozen`, and `frozen <= end`;
//! 2. the owner writes only bytes at or after `end`
//!    ([`OwnedSlot::spare_mut`], [`OwnedSlot::commit_mut`]);
//! 3. `end` never moves below `frozen` ([`OwnedSlot::truncate`] refuses);
//! 4. `frozen` only grows.
//!
//! So a byte is either still writable by the (single) owner and seen by no
//! view, or frozen forever and only read. No `&mut [u8]` is ever made over a
//! byte below `end`... except by [`OwnedSlot::commit_mut`], which hands out
//! the bytes it has just moved `end` past, before any view can exist over
//! them (views need `frozen` past them, which needs a later `&mut self`).
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

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
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
        // this view (`OwnedSlot::view`): the bytes are initialised (mcache
        // initialises the whole capacity), the `Arc` keeps them allocated,
        // and nothing writes them ever again (invariants 1–4).
        unsafe { std::slice::from_raw_parts(self.node.ptr.add(self.off), self.len) }
    }
}

/// A slot that owns its node: it reads `start..end` and may write `end..cap`.
pub(crate) struct OwnedSlot {
    node: Arc<Node>,
    start: usize,
    end: usize,
    /// Bytes below this offset may be referenced by views: never written.
    frozen: usize,
    /// A view over `cache_off..frozen` (its start is `cache.as_ptr()`),
    /// sliced by `view` so most views cost a refcount increment only.
    cache: Option<Bytes>,
}

impl OwnedSlot {
    /// A fresh, empty slot over a new node of at least `size` bytes.
    pub(crate) fn alloc(size: usize) -> OwnedSlot {
        OwnedSlot {
            node: Node::alloc(size),
            start: 0,
            end: 0,
            frozen: 0,
            cache: None,
        }
    }

    /// Content bytes (`end - start`).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Writable bytes after the content.
    #[inline]
    pub(crate) fn spare(&self) -> usize {
        self.node.cap - self.end
    }

    /// The node's capacity.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.node.cap
    }

    /// The content bytes.
    #[inline]
    pub(crate) fn content(&self) -> &[u8] {
        // SAFETY: `start <= end <= cap`, all initialised. Only this slot may
        // write the node, only at or after `end`, and it cannot while `&self`
        // is borrowed; views only read.
        unsafe { std::slice::from_raw_parts(self.node.ptr.add(self.start), self.end - self.start) }
    }

    /// Consumes `n <= len()` content bytes and returns them.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        assert!(n <= self.len(), "take beyond the slot's content");
        let from = self.start;
        self.start += n;
        // SAFETY: `from + n <= end <= cap`: initialised content bytes that
        // nobody writes while this borrow of `self` lives (as `content`).
        unsafe { std::slice::from_raw_parts(self.node.ptr.add(from), n) }
    }

    /// Consumes `n <= len()` content bytes.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance beyond the slot's content");
        self.start += n;
    }

    /// The spare bytes after the content, to write into.
    #[inline]
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: `end <= cap`, all initialised. This slot is the node's only
        // writer, views cover only bytes below `frozen <= end`, and
        // `content`/`take` borrows of `self` cannot coexist with `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(self.node.ptr.add(self.end), self.node.cap - self.end)
        }
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
        // SAFETY: `from + n <= cap`, initialised; `from >= frozen`, so no view
        // covers these bytes, and none can be made while this `&mut` borrow
        // of `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.node.ptr.add(from), n) }
    }

    /// Appends a copy of `src` (`src.len() <= spare()`).
    #[inline]
    pub(crate) fn write(&mut self, src: &[u8]) {
        self.commit_mut(src.len()).copy_from_slice(src);
    }

    /// Keeps only the first `len` content bytes (`len <= len()`).
    ///
    /// # Panics
    ///
    /// If that would drop bytes a view may still read (below `frozen`);
    /// the buffer only truncates unflushed bytes, which no view covers.
    pub(crate) fn truncate(&mut self, len: usize) {
        assert!(len <= self.len(), "truncate beyond the slot's content");
        let end = self.start + len;
        assert!(end >= self.frozen, "truncate below bytes held by views");
        self.end = end;
    }

    /// A zero-copy view of the first `n` content bytes, where the first
    /// `readable >= n` content bytes are published (flushed) and may be
    /// frozen for good. Does not consume.
    pub(crate) fn view(&mut self, n: usize, readable: usize) -> Bytes {
        assert!(
            n <= readable && readable <= self.len(),
            "view beyond readable bytes"
        );
        if n == 0 {
            return Bytes::new();
        }
        let base = self.node.ptr as usize;
        if let Some(cache) = &self.cache {
            // The cache starts at or before `start` (reads only move forward)
            // unless `start` moved past its end; check both ends.
            let cache_off = cache.as_ptr() as usize - base;
            if cache_off <= self.start && self.start + n <= cache_off + cache.len() {
                let from = self.start - cache_off;
                return cache.slice(from..from + n);
            }
        }
        let end = self.start + readable;
        self.frozen = self.frozen.max(end);
        let cache = Bytes::from_owner(NodeView {
            node: Arc::clone(&self.node),
            off: self.start,
            len: readable,
        });
        let view = cache.slice(..n);
        self.cache = Some(cache);
        view
    }
}

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        // Our own cache holds the node too; let it go before counting.
        self.cache = None;
        if Arc::strong_count(&self.node) > 1 {
            // Views outlive the owner: the node is pinned until they drop.
            // Marked before our `Arc` drops, so the last `Arc`'s drop (which
            // synchronises with ours) sees the mark and takes it off.
            self.node.pin();
        }
    }
}

/// Read-only bytes: a view of another buffer's node, or a linked `Bytes`.
pub(crate) struct SharedSlot {
    bytes: Bytes,
    /// Consumed bytes at the front of `bytes`.
    start: usize,
}

impl SharedSlot {
    /// A slot over all of `bytes`.
    pub(crate) fn new(bytes: Bytes) -> SharedSlot {
        SharedSlot { bytes, start: 0 }
    }
}

/// One run of content in a `LinkBuffer`.
pub(crate) enum Slot {
    /// A node this buffer allocated: readable, and writable after its end.
    Owned(OwnedSlot),
    /// Read-only bytes: a view of another buffer's node (from `slice`), or a
    /// linked `Bytes` (from `write_bytes`).
    Shared(SharedSlot),
}

impl Slot {
    /// Content bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Slot::Owned(s) => s.len(),
            Slot::Shared(s) => s.bytes.len() - s.start,
        }
    }

    /// The content bytes.
    #[inline]
    pub(crate) fn content(&self) -> &[u8] {
        match self {
            Slot::Owned(s) => s.content(),
            Slot::Shared(s) => &s.bytes[s.start..],
        }
    }

    /// Consumes `n <= len()` bytes and returns them.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        match self {
            Slot::Owned(s) => s.take(n),
            Slot::Shared(s) => {
                let from = s.start;
                s.start += n;
                &s.bytes[from..s.start]
            }
        }
    }

    /// Consumes `n <= len()` bytes.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        match self {
            Slot::Owned(s) => s.advance(n),
            Slot::Shared(s) => {
                assert!(
                    n <= s.bytes.len() - s.start,
                    "advance beyond the slot's content"
                );
                s.start += n;
            }
        }
    }

    /// A zero-copy view of the first `n` content bytes of which `readable`
    /// are published; does not consume.
    #[inline]
    pub(crate) fn view(&mut self, n: usize, readable: usize) -> Bytes {
        match self {
            Slot::Owned(s) => s.view(n, readable),
            Slot::Shared(s) => s.bytes.slice(s.start..s.start + n),
        }
    }

    /// Keeps only the first `len` content bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        match self {
            Slot::Owned(s) => s.truncate(len),
            Slot::Shared(s) => s.bytes.truncate(s.start + len),
        }
    }

    /// Memory this slot keeps alive, for diagnostics.
    pub(crate) fn held(&self) -> usize {
        match self {
            Slot::Owned(s) => s.node.capacity(),
            Slot::Shared(s) => s.bytes.len(),
        }
    }
}
