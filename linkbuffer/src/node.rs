//! Nodes and the slots that window them — the only module with `unsafe`.
//!
//! A node is one mcache buffer shared by reference count. Its 16-byte
//! [`Header`] — the reference count and the buffer's capacity — lives in
//! the first bytes of the buffer itself, so creating and freeing a node is
//! one mcache `malloc` and one drop, both served by mcache's thread cache:
//! no call into the system allocator per node (an `Arc<Node>` cost one
//! allocation and one free per node, i.e. per message when each message
//! gets a fresh node). A [`NodeRef`] is one counted reference: a pointer to
//! the header, with the data starting [`NODE_HEADER`] bytes after it.
//!
//! Two kinds of users touch a node at once, possibly from different
//! threads:
//!
//! - exactly one **owner** — the owned [`Slot`] in some `LinkBuffer` that
//!   allocated the node (moved, never copied, by `append`) — which may
//!   *write* the bytes at and after its `end`;
//! - any number of **views** — node-view slots made by [`Slot::split_view`]
//!   (what `slice` returns) and [`Bytes`] made by [`Slot::view`] over a
//!   [`NodeView`] — which *read* bytes before the owner's `frozen` mark.
//!
//! The disjointness invariant that makes this sound, kept by this module
//! alone (the `LinkBuffer` above it cannot break it through the API here):
//!
//! 1. every view covers only bytes below `frozen`, and `frozen <= end`;
//! 2. the owner writes only bytes at or after `end`
//!    ([`Slot::spare_mut`], [`Slot::commit_mut`]); a view or shared slot
//!    writes nothing (its `limit`, hence its spare room, is 0);
//! 3. `end` never moves below `frozen` ([`Slot::truncate`] refuses);
//! 4. `frozen` only grows.
//!
//! So a byte is either still writable by the (single) owner and seen by no
//! view, or frozen forever and only read. No `&mut [u8]` is ever made over a
//! byte below `end`, except by [`Slot::commit_mut`], which hands out the
//! bytes it has just moved `end` past, before any view can exist over them
//! (views need `frozen` past them, which needs a later `&mut self`). A
//! `Bytes` is only ever made over bytes already written and frozen: its
//! pointer comes from a shared borrow of them, which later writes of other
//! bytes do not disturb.
//!
//! The header is reached only through atomics (`&Header`), never through a
//! byte slice; the data area `NODE_HEADER..capacity` is reached only
//! through the slots and views above. When the last reference drops, the
//! buffer goes back to mcache; the header's bytes are plain integers, so
//! mcache's "every byte initialised" invariant holds for the next owner.
//!
//! Pinned bytes: when an owner slot is dropped while views still hold its
//! node, the node's capacity is added to a global counter, once, and taken
//! off when the last view drops ([`pinned_bytes`]).
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

use bytes::Bytes;
use ferropoll_mcache::Buf;

use crate::arena;

/// Bytes of nodes kept alive only by views after their owner let them go,
/// counted per thread: an event loop pins and unpins a node per echoed
/// message, and a shared atomic would cost two locked read-modify-writes
/// per message and bounce one cache line between loops. Each thread adds
/// to its own counter with a plain load and store; a node pinned on one
/// thread may be unpinned on another, so a counter may wrap below zero; the
/// wrapping sum of all counters is the figure.
mod pinned {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Mutex, MutexGuard, PoisonError};

    struct Registry {
        /// Every counter ever handed out; never shrinks (8 bytes a thread,
        /// up to the peak number of live threads).
        all: Vec<&'static AtomicU64>,
        /// Counters of exited threads, ready for new ones.
        free: Vec<&'static AtomicU64>,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        all: Vec::new(),
        free: Vec::new(),
    });

    /// Counts of threads whose counter is gone (thread exit).
    static FALLBACK: AtomicU64 = AtomicU64::new(0);

    fn registry() -> MutexGuard<'static, Registry> {
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This thread's counter; written only by this thread, handed to the
    /// next new thread (under the registry lock) when this one exits.
    struct Counter(&'static AtomicU64);

    impl Drop for Counter {
        fn drop(&mut self) {
            registry().free.push(self.0);
        }
    }

    thread_local! {
        static COUNTER: Counter = {
            let mut r = registry();
            let c = r.free.pop().unwrap_or_else(|| {
                let c: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
                r.all.push(c);
                c
            });
            Counter(c)
        };
    }

    /// Adds `delta` (wrapping: a subtraction is the two's complement).
    #[inline]
    pub(super) fn add(delta: u64) {
        let done = COUNTER.try_with(|c| {
            // Only this thread writes its counter: no locked operation.
            c.0.store(c.0.load(Relaxed).wrapping_add(delta), Relaxed);
        });
        if done.is_err() {
            FALLBACK.fetch_add(delta, Relaxed);
        }
    }

    pub(super) fn sum() -> u64 {
        let r = registry();
        r.all.iter().fold(FALLBACK.load(Relaxed), |s, c| {
            s.wrapping_add(c.load(Relaxed))
        })
    }
}

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
/// buf.write_binary(&[1; 6000]); // say, a read of many frames
/// buf.flush();
/// let frame = buf.slice(100).unwrap(); // a view into the node
/// buf.skip(buf.len()).unwrap();
/// buf.release(); // the node is consumed, but `frame` still points into it
/// assert!(pinned_bytes() >= 8192);
/// drop(frame); // last view gone: the node returns to mcache
/// ```
pub fn pinned_bytes() -> u64 {
    pinned::sum()
}

/// A run that no cached view covers gets a view of its own (one
/// `Bytes::from_owner`, which allocates, covering every readable byte of the
/// node so that later runs share it) when at least this many readable bytes
/// follow it in the node; a run of at most [`arena::COPY_MAX`] bytes with
/// fewer behind it is copied into the thread's arena instead. So a read of
/// many frames costs one view for all of them, and a read of one short
/// message allocates nothing.
const SHARE_MIN: usize = 4 << 10;

/// Bytes at the start of every node's mcache buffer taken by the node's
/// header (its reference count and capacity); the data area follows. So a
/// node of an `n`-byte size class holds `n - NODE_HEADER` bytes of content,
/// and a [`book`](crate::LinkBuffer::book) into a fresh node offers the read
/// size less `NODE_HEADER`. 16 keeps the data 16-byte aligned.
pub const NODE_HEADER: usize = 16;

/// A node's bookkeeping, stored in the first [`NODE_HEADER`] bytes of its
/// own buffer. `repr(C)` of two `usize`s: no padding, so every byte of it
/// is initialised (mcache's contract for the next owner).
#[repr(C)]
struct Header {
    /// Counted references — the owner slot, node-view slots, `NodeView`s —
    /// plus [`PINNED_BIT`] once the owner let go while views remained
    /// (set by the same atomic operation that drops the owner's reference).
    refs: AtomicUsize,
    /// The buffer's mcache capacity, header included. Never changes.
    cap: usize,
}

const PINNED_BIT: usize = 1 << (usize::BITS - 1);

const _: () = {
    assert!(std::mem::size_of::<Header>() == NODE_HEADER);
    // mcache buffers are 16-byte aligned.
    assert!(std::mem::align_of::<Header>() <= 16 && NODE_HEADER.is_multiple_of(16));
    // The smallest class has room for the header and some data.
    assert!(ferropoll_mcache::MIN_CLASS > NODE_HEADER);
};

/// One counted reference to a node (see the module docs).
///
/// Invariant: `self.0` points to the initialised [`Header`] at the start of
/// a live mcache buffer of `capacity()` bytes, obtained from
/// [`Buf::into_raw`]; the buffer is rebuilt and freed exactly once, by the
/// drop of the last reference.
pub(crate) struct NodeRef(NonNull<Header>);

// SAFETY: a `NodeRef` is a counted share of a heap buffer whose header is
// only touched through atomics; which thread may read or write which data
// byte is governed by the module invariant (one writer above `end`, readers
// below `frozen`), not by which thread holds the reference.
unsafe impl Send for NodeRef {}
// SAFETY: as for `Send`: `&NodeRef` only reads the header's atomics.
unsafe impl Sync for NodeRef {}

impl NodeRef {
    /// A node over a new mcache buffer of at least `size` bytes, header
    /// included (at least one data byte).
    ///
    /// # Panics
    ///
    /// When mcache cannot allocate `size` bytes (as `Vec` does).
    fn alloc(size: usize) -> NodeRef {
        let buf = ferropoll_mcache::malloc(size.max(NODE_HEADER + 1));
        let (ptr, _, cap) = buf.into_raw();
        let header = ptr.cast::<Header>();
        // SAFETY: `ptr` is the start of a buffer of `cap > NODE_HEADER`
        // bytes that we now own alone (`into_raw`), 16-byte aligned (mcache
        // buffers are), so the header fits and is aligned.
        unsafe {
            header.as_ptr().write(Header {
                refs: AtomicUsize::new(1),
                cap,
            });
        }
        NodeRef(header)
    }

    #[inline(always)]
    fn header(&self) -> &Header {
        // SAFETY: the header was initialised by `alloc` and stays valid
        // while any reference (this one) lives; `refs` is only accessed
        // atomically and `cap` never written again, so shared access from
        // many threads is fine.
        unsafe { self.0.as_ref() }
    }

    /// Start of the data area.
    #[inline(always)]
    fn data(&self) -> NonNull<u8> {
        // SAFETY: `NODE_HEADER < capacity`: still inside the buffer.
        unsafe { self.0.cast::<u8>().add(NODE_HEADER) }
    }

    /// The buffer's capacity, header included (what the node holds).
    #[inline]
    fn capacity(&self) -> usize {
        self.header().cap
    }

    /// Bytes of the data area.
    #[inline]
    fn room(&self) -> usize {
        self.capacity() - NODE_HEADER
    }

    /// Another counted reference to the same node.
    #[inline]
    fn clone_ref(&self) -> NodeRef {
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        // As `Arc`: a count this large means references were leaked in a
        // loop; going on could overflow into the pinned bit and free the
        // node under a view.
        if old & !PINNED_BIT > (isize::MAX as usize) / 2 {
            std::process::abort();
        }
        NodeRef(self.0)
    }

    /// Drops the owner's reference (consuming it): when views remain, the
    /// node becomes pinned — marked in the same atomic operation, and its
    /// capacity counted in [`pinned_bytes`] until the last view drops.
    fn drop_owner(self) {
        let this = std::mem::ManuallyDrop::new(self);
        let header = this.header();
        if header.refs.load(Ordering::Acquire) == 1 {
            // The last reference (see `drop`), never pinned.
            this.free(false);
            return;
        }
        // Count first, so the figure never runs below the truth: the last
        // view subtracts only after it sees the mark set below.
        pinned::add(header.cap as u64);
        // -1 reference, +PINNED_BIT (the owner lets go once: never set yet).
        let old = header
            .refs
            .fetch_add(PINNED_BIT.wrapping_sub(1), Ordering::AcqRel);
        if old == 1 {
            // The views went away meanwhile: ours was the last reference.
            pinned::add((header.cap as u64).wrapping_neg());
            this.free(false);
        }
    }

    /// Gives the buffer back to mcache; `pinned`: whether its capacity is
    /// counted in [`pinned_bytes`]. The caller held the last reference and
    /// does not use it again.
    fn free(&self, pinned: bool) {
        let cap = self.header().cap;
        if pinned {
            pinned::add((cap as u64).wrapping_neg());
        }
        // SAFETY: the caller held the last reference: nobody else reads or
        // writes the buffer any more, and it is freed once (the caller
        // gives the reference up). The pointer and capacity are those of
        // the `into_raw` in `alloc`; every byte is still initialised (the
        // header holds plain integers, the data area only ever received
        // initialised bytes).
        drop(unsafe { Buf::from_raw(self.0.cast(), 0, cap) });
    }
}

impl Drop for NodeRef {
    #[inline]
    fn drop(&mut self) {
        let refs = &self.header().refs;
        // The last reference cannot race with a clone (clones come from
        // references), so when the count is 1 it is ours alone: no
        // read-modify-write needed. The acquire load (or fence) orders every
        // other holder's accesses before the free, as in `Arc`.
        let mut seen = refs.load(Ordering::Acquire);
        if seen & !PINNED_BIT != 1 {
            seen = refs.fetch_sub(1, Ordering::Release);
            if seen & !PINNED_BIT != 1 {
                return;
            }
            fence(Ordering::Acquire);
        }
        self.free(seen & PINNED_BIT != 0);
    }
}

/// The owner of a [`Bytes`] made over frozen node bytes.
struct NodeView {
    node: NodeRef,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for NodeView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `off + len <= frozen <= room` of the owner slot that made
        // this view (`Slot::view`): the bytes are initialised (mcache
        // initialises the whole capacity), the node reference keeps them
        // allocated, and nothing writes them ever again (invariants 1–4).
        unsafe { std::slice::from_raw_parts(self.node.data().as_ptr().add(self.off), self.len) }
    }
}

/// One run of content in a `LinkBuffer`: the bytes `ptr[start..end]`.
///
/// Three kinds, told apart by `node` and `limit`:
/// - **owned** (`node` set, `limit` = the node's data room): the node this
///   buffer allocated, which it alone may write after `end`;
/// - **node view** (`node` set, `limit` 0): a read-only window of another
///   slot's frozen bytes, made by `slice`: one reference, no allocation;
/// - **shared** (`node` unset): read-only bytes of the `Bytes` in `cache`
///   (a view from a node's cached `Bytes`, or a `write_bytes` payload).
///
/// `ptr` is the start of the memory the offsets count from (the node's data
/// area, or the `Bytes`), so neither the read nor the write path matches on
/// the kind.
pub(crate) struct Slot {
    ptr: NonNull<u8>,
    start: usize,
    end: usize,
    limit: usize,
    /// Owned slots: bytes below it may be read by views and are never
    /// written again. 0 for the other kinds, which never write.
    frozen: usize,
    node: Option<NodeRef>,
    /// Node slots: the latest `Bytes` made of the node through this slot,
    /// over frozen bytes ending at or before `frozen` (`view` slices it, so
    /// most `next_bytes` cost one refcount increment); kept until the slot
    /// drops. Shared slots: the bytes themselves.
    cache: Option<Bytes>,
}

// Ten words: every queue operation moves slots, so keep them small.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Slot>() == 80);

// SAFETY: `ptr` points into memory kept alive by `node` or `cache` (both
// `Send + Sync`); reads and writes through it follow the module invariant,
// which does not depend on the thread.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`; `&Slot` only reads content bytes.
unsafe impl Sync for Slot {}

impl Slot {
    /// A fresh, empty owned slot over a new node of at least `size` bytes,
    /// its [`NODE_HEADER`] included.
    pub(crate) fn alloc(size: usize) -> Slot {
        let node = NodeRef::alloc(size);
        Slot {
            ptr: node.data(),
            start: 0,
            end: 0,
            limit: node.room(),
            frozen: 0,
            node: Some(node),
            cache: None,
        }
    }

    /// A read-only slot over all of `bytes`.
    pub(crate) fn shared(bytes: Bytes) -> Slot {
        Slot {
            // Never written through: `limit` is 0. A `Bytes` pointer is
            // never null (empty ones point at a static).
            ptr: NonNull::new(bytes.as_ptr().cast_mut()).unwrap_or(NonNull::dangling()),
            start: 0,
            end: bytes.len(),
            limit: 0,
            frozen: 0,
            node: None,
            cache: Some(bytes),
        }
    }

    /// An empty slot that holds nothing (for vacated queue entries).
    #[inline]
    pub(crate) fn placeholder() -> Slot {
        Slot {
            ptr: NonNull::dangling(),
            start: 0,
            end: 0,
            limit: 0,
            frozen: 0,
            node: None,
            cache: None,
        }
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
        // alive by `node` or `cache` (mcache initialises a node's whole
        // capacity; a `Bytes` is `end` bytes long at least; a placeholder is
        // empty). Nobody writes it while `&self` lives: only an owned slot
        // writes, only at or after `end`, and it needs `&mut self`; views
        // only read.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.end - self.start)
        }
    }

    /// Consumes `n <= len()` content bytes and returns them.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        assert!(n <= self.len(), "take beyond the slot's content");
        let from = self.start;
        self.start += n;
        // SAFETY: `from + n <= end`: content bytes, as in `content`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(from), n) }
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
        self.limit > 0
    }

    /// End of the writable area: the node's data room, 0 unless owned.
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
        // SAFETY: `end < limit`: a byte of an owned node's data room
        // (`limit` is 0 for the other kinds), initialised, at or after
        // `end`, so no view covers it (invariants 1–2), and this `&mut self`
        // is the node's only writer.
        unsafe { self.ptr.as_ptr().add(self.end).write(b) };
        self.end += 1;
        true
    }

    /// The spare bytes after the content, to write into (empty unless owned).
    #[inline]
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        let spare = self.spare();
        // SAFETY: `end + spare <= limit`, the data room of an owned node
        // (`spare` is 0 for the other kinds), all initialised. This slot is
        // the node's only writer, views cover only bytes below
        // `frozen <= end`, and no `content` borrow of `self` can coexist
        // with this `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.end), spare) }
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
        // SAFETY: `from + n <= limit`, the data room of an owned node (`n`
        // is 0 for the other kinds), initialised; `from >= frozen`, so no
        // view covers these bytes, and none can be made while this `&mut`
        // borrow of `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(from), n) }
    }

    /// Appends a copy of `src` (`src.len() <= spare()`).
    #[inline]
    pub(crate) fn write(&mut self, src: &[u8]) {
        self.commit_mut(src.len()).copy_from_slice(src);
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
        assert!(end >= self.frozen, "truncate below bytes held by views");
        self.end = end;
    }

    /// Marks the first `n` content bytes frozen: views may now read them.
    #[inline(always)]
    fn freeze(&mut self, n: usize) {
        if self.limit > 0 {
            self.frozen = self.frozen.max(self.start + n);
        }
    }

    /// The first `n` content bytes as a slice of the cached `Bytes`, if it
    /// covers them.
    #[inline(always)]
    pub(crate) fn cached_view(&self, n: usize) -> Option<Bytes> {
        let c = self.cache.as_ref()?;
        // Reads only move forward, so the cache starts at or before
        // `start`; check both ends anyway.
        let off = (c.as_ptr() as usize).wrapping_sub(self.ptr.as_ptr() as usize);
        let from = self.start.wrapping_sub(off);
        (self.start >= off && n <= c.len().saturating_sub(from)).then(|| c.slice(from..from + n))
    }

    /// A zero-copy view of the first `n` content bytes, of which the first
    /// `readable >= n` are published (flushed) and may be frozen for good.
    /// Does not consume.
    #[inline(always)]
    pub(crate) fn view(&mut self, n: usize, readable: usize) -> Bytes {
        // Fast path: a slice of the cached view (one refcount increment).
        // Written out rather than through `cached_view`: every move of the
        // new `Bytes` through a temporary (an `Option`) costs a
        // store-forwarding stall right after `Bytes::clone`'s indirect call
        // (measured: ~20 % of a 64-byte frame's decode).
        if let Some(c) = &self.cache {
            let off = (c.as_ptr() as usize).wrapping_sub(self.ptr.as_ptr() as usize);
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
        if n == 0 {
            return Bytes::new();
        }
        if n <= arena::COPY_MAX && readable - n < SHARE_MIN {
            // Few bytes follow: a new cached view would serve little more
            // than this run, and costs an allocation; copy it instead.
            return arena::copy(n, |dst| dst.extend_from_slice(&self.content()[..n]));
        }
        let Some(node) = &self.node else {
            unreachable!("a shared slot's cache covers all its content");
        };
        // Cover every readable byte, so the views of the next frames of
        // this read hit the cache; never let `frozen` move back.
        let start = self.start;
        let cover = readable.max(self.frozen.saturating_sub(start));
        // Offsets of a node slot count from the node's data area.
        let c = Bytes::from_owner(NodeView {
            node: node.clone_ref(),
            off: start,
            len: cover,
        });
        self.freeze(cover);
        let view = c.slice(..n);
        self.cache = Some(c);
        view
    }

    /// As [`view`](Slot::view), then consumes the `n` bytes.
    #[inline(always)]
    pub(crate) fn take_bytes(&mut self, n: usize, readable: usize) -> Bytes {
        let b = self.view(n, readable);
        self.start += n;
        b
    }

    /// A read-only slot over the first `n <= readable` content bytes
    /// (published ones), which it freezes. Does not consume. A slice of
    /// the cached `Bytes` when that covers them (later `next_bytes` on the
    /// new slot are then free too), else a node view: one reference, no
    /// allocation.
    #[inline]
    pub(crate) fn split_view(&mut self, n: usize, readable: usize) -> Slot {
        assert!(
            n <= readable && readable <= self.len(),
            "view beyond readable bytes"
        );
        if let Some(b) = self.cached_view(n) {
            return Slot::shared(b);
        }
        let Some(node) = &self.node else {
            unreachable!("a shared slot's cache covers all its content");
        };
        let view = Slot {
            ptr: self.ptr,
            start: self.start,
            end: self.start + n,
            limit: 0,
            frozen: 0,
            node: Some(node.clone_ref()),
            cache: None,
        };
        self.freeze(n);
        view
    }

    /// Memory this slot keeps alive, for diagnostics: an owned node's
    /// capacity, a view's or a shared slot's length.
    pub(crate) fn held(&self) -> usize {
        match (&self.node, &self.cache) {
            (Some(node), _) if self.limit > 0 => node.capacity(),
            (Some(_), _) => self.len(),
            (None, Some(b)) => b.len(),
            (None, None) => 0,
        }
    }
}

impl Drop for Slot {
    #[inline]
    fn drop(&mut self) {
        if self.limit > 0 {
            // Our own cache holds the node too; let it go before counting.
            self.cache = None;
            if let Some(node) = self.node.take() {
                node.drop_owner();
            }
        }
    }
}
