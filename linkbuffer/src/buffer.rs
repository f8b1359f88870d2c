//! [`LinkBuffer`]: the read side, the write side and the socket helpers.
//!
//! The buffer is a queue of slots (see `slots.rs`), each a window of one node
//! (`node.rs`). Its content is the concatenation of the slots' content; the
//! first `len` bytes of it are readable (flushed), the remaining
//! `total - len` are written but unflushed. So `flush` is O(1) — it moves the
//! boundary — and `malloc_ack` truncates from the back. Writes go into the
//! spare capacity of the last slot when it is a node this buffer owns.
//!
//! Slot invariant: every slot except the first and the last has content.
//! (A fully read first slot may stay until the next read or `release`,
//! so that `next` can return its bytes without copying; an empty last slot
//! is a node waiting to be written.)

use std::fmt;
use std::io::IoSlice;

use bytes::Bytes;

use crate::arena;
use crate::error::{Error, Result};
use crate::node::{NODE_HEADER, Slot};
use crate::slots::Slots;

/// Size of a node allocated for small writes (its mcache class: it holds
/// `BLOCK_SIZE - NODE_HEADER` bytes).
///
/// 8 KiB: one node holds a batch of typical RPC frames (a few hundred bytes
/// each), so a flush of a pipelined batch is one or two iovecs, while a
/// writer that holds unflushed bytes pins little; it is also mcache's class
/// with the deepest per-thread cache among the large ones.
pub const BLOCK_SIZE: usize = 8 << 10;

/// Largest node a `write_binary` allocates; longer writes span several nodes.
/// (`malloc(n)` and `book(n)` promise `n` *contiguous* bytes, so they may
/// allocate one larger node, unpooled by mcache.)
pub const MAX_NODE: usize = ferropoll_mcache::MAX_POOLED;

/// A node larger than this only takes writes of at least an eighth of its
/// capacity: small writes must not keep a big node alive (netpoll #76, #342).
const LARGE_NODE: usize = 64 << 10;

/// `write_bytes` links (no copy) payloads at least this long; shorter ones
/// are copied, which is cheaper than a new slot plus a fresh node for the
/// writes that follow.
pub const LINK_MIN: usize = 4 << 10;

/// First and smallest adaptive read size of [`LinkBuffer::book`].
pub const MIN_READ_SIZE: usize = 8 << 10;

/// Largest adaptive read size of [`LinkBuffer::book`].
///
/// 256 KiB: at memcpy speed (~10 GB/s) one such read costs ~25 µs of copying
/// against ~1–2 µs of syscall overhead, so larger reads save under 5 % while
/// multiplying the memory a bursty connection holds. It is also above the
/// kernel's default TCP receive buffer (128 KiB), so one read drains it.
pub const MAX_READ_SIZE: usize = 256 << 10;

const _: () = assert!(MAX_READ_SIZE <= u32::MAX as usize && MIN_READ_SIZE <= MAX_READ_SIZE);

/// `book` copies at most this many unread bytes into its new node rather
/// than leave them alone in the previous one (see `carry_into_new_node`).
const CARRY_MAX: usize = 4 << 10;

/// Scratch memory kept between calls while the buffer is not idle.
const SCRATCH_KEEP: usize = 4 << 10;

/// A nocopy streaming byte buffer: a queue of reference-counted nodes from
/// mcache, written at the tail and read at the head.
///
/// See the [crate documentation](crate) for the model (readable vs unflushed
/// bytes, ownership, concurrency). In short: writes are invisible to the read
/// side until [`flush`](LinkBuffer::flush); reads that fit in one node borrow
/// it without copying; [`slice`](LinkBuffer::slice) and
/// [`next_bytes`](LinkBuffer::next_bytes) give owned zero-copy views.
///
/// ```
/// use ferropoll_linkbuffer::LinkBuffer;
///
/// let mut buf = LinkBuffer::new();
/// buf.write_binary(b"\x00\x05hello");
/// assert_eq!(buf.len(), 0); // not flushed yet
/// buf.flush();
/// let n = u16::from_be_bytes(buf.next(2).unwrap().try_into().unwrap());
/// let payload = buf.next_bytes(n as usize).unwrap(); // zero-copy
/// assert_eq!(&payload[..], b"hello");
/// buf.release();
/// ```
pub struct LinkBuffer {
    slots: Slots,
    /// Readable (flushed) bytes: a prefix of the content.
    len: usize,
    /// All content bytes: readable plus unflushed.
    total: usize,
    /// Bytes handed out by the last `book`, until `book_ack` or a write.
    booked: usize,
    /// The adaptive read size for `book` (at most `MAX_READ_SIZE`).
    read_size: u32,
    /// Consecutive `book_ack`s that used under half the read size.
    small_reads: u8,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LinkBuffer>();
};

impl Default for LinkBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LinkBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkBuffer")
            .field("len", &self.len)
            .field("unflushed", &(self.total - self.len))
            .field("nodes", &self.slots.len())
            .field("read_size", &self.read_size)
            .finish()
    }
}

/// Size of a node whose data area holds at least `room` bytes: each node
/// starts with a small header (its reference count and capacity) inside its
/// own mcache buffer.
#[inline]
fn node_size(room: usize) -> usize {
    room.saturating_add(NODE_HEADER)
}

/// Whether an owned tail node should take a write of `n` bytes at all
/// (the large-node trim), spare room aside.
#[inline]
fn accepts(tail: &Slot, n: usize) -> bool {
    tail.limit() <= LARGE_NODE || n >= tail.limit() / 8
}

/// Whether a tail slot can take a write of `n` bytes now (a shared slot
/// has no spare room).
#[inline]
fn fits(tail: &Slot, n: usize) -> bool {
    tail.spare() >= n && accepts(tail, n)
}

impl LinkBuffer {
    /// An empty buffer. Allocates nothing until written.
    pub const fn new() -> Self {
        LinkBuffer {
            slots: Slots::new(),
            len: 0,
            total: 0,
            booked: 0,
            read_size: MIN_READ_SIZE as u32,
            small_reads: 0,
        }
    }

    // ------------------------------------------------------------------
    // Read side
    // ------------------------------------------------------------------

    /// Readable bytes: those written *and flushed*.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is readable.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn check(&self, n: usize) -> Result<()> {
        if n > self.len {
            return Err(Error::Insufficient {
                requested: n,
                available: self.len,
            });
        }
        Ok(())
    }

    /// Drops fully read slots at the front, keeping at least one slot.
    fn trim_front(&mut self) {
        while self.slots.len() > 1 && self.slots.front().is_some_and(|s| s.len() == 0) {
            self.slots.pop_front();
        }
    }

    /// Whether the first `n` readable bytes lie in the first slot
    /// (after `trim_front`).
    #[inline(always)]
    fn front_holds(&self, n: usize) -> bool {
        match self.slots.front() {
            Some(s) => s.len() >= n,
            None => n == 0,
        }
    }

    /// Consumes `n <= len` readable bytes, dropping the slots it empties
    /// (except the last one, which the writer may still fill).
    #[inline]
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let single = self.slots.single();
        if let Some(front) = self.slots.front_mut() {
            // Within the first slot; exhausting it too when it is the only
            // one (the writer may still fill it).
            if n < front.len() || (single && n == front.len()) {
                front.advance(n);
                self.len -= n;
                self.total -= n;
                return;
            }
        }
        self.consume_slow(n);
    }

    #[inline(never)]
    fn consume_slow(&mut self, mut n: usize) {
        self.len -= n;
        self.total -= n;
        while n > 0 {
            let last = self.slots.len() == 1;
            let Some(front) = self.slots.front_mut() else {
                unreachable!("readable bytes lie in slots");
            };
            let l = front.len();
            if n < l || (n == l && last) {
                front.advance(n);
                return;
            }
            n -= l;
            self.slots.pop_front();
        }
    }

    /// Copies the first `n <= len` readable bytes to the end of `dst`.
    fn copy_prefix(&self, n: usize, dst: &mut Vec<u8>) {
        let mut left = n;
        for s in self.slots.iter() {
            if left == 0 {
                break;
            }
            let c = s.content();
            let m = c.len().min(left);
            dst.extend_from_slice(&c[..m]);
            left -= m;
        }
    }

    /// Copies the first `n <= len` readable bytes to the end of `dst`.
    fn copy_prefix_into(&self, n: usize, dst: &mut bytes::BytesMut) {
        let mut left = n;
        for s in self.slots.iter() {
            if left == 0 {
                break;
            }
            let c = s.content();
            let m = c.len().min(left);
            dst.extend_from_slice(&c[..m]);
            left -= m;
        }
    }

    /// The next `n` readable bytes, without consuming them.
    ///
    /// Zero-copy when they lie in one node; otherwise they are copied once
    /// into a scratch buffer owned by `self` and reused by later calls. The
    /// slice borrows the buffer, so it cannot outlive a later `release` or
    /// write — the compiler enforces what netpoll leaves to convention.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// let mut buf = LinkBuffer::new();
    /// buf.write_binary(b"abc");
    /// buf.flush();
    /// assert_eq!(buf.peek(2).unwrap(), b"ab");
    /// assert_eq!(buf.len(), 3);
    /// assert!(buf.peek(4).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable.
    #[inline]
    pub fn peek(&mut self, n: usize) -> Result<&[u8]> {
        self.check(n)?;
        if self.front_holds(n) {
            return Ok(self.front_prefix(n));
        }
        Ok(self.peek_slow(n))
    }

    /// The first `n` content bytes of the first slot, which holds them.
    #[inline]
    fn front_prefix(&self, n: usize) -> &[u8] {
        match self.slots.front() {
            Some(s) => &s.content()[..n],
            None => &[],
        }
    }

    /// `peek` when the bytes are not all in the first slot (or it is a
    /// drained one): drop drained slots, then borrow or copy to scratch.
    #[inline(never)]
    fn peek_slow(&mut self, n: usize) -> &[u8] {
        self.trim_front();
        if self.front_holds(n) {
            return self.front_prefix(n);
        }
        let scratch = self.copy_to_scratch(n);
        self.slots.put_scratch(scratch)
    }

    /// The first `n` readable bytes, copied into the (reused) scratch
    /// buffer, which the caller gives back with `Slots::put_scratch`.
    fn copy_to_scratch(&mut self, n: usize) -> Vec<u8> {
        let mut scratch = self.slots.take_scratch();
        scratch.clear();
        self.copy_prefix(n, &mut scratch);
        scratch
    }

    /// The next `n` readable bytes, consumed.
    ///
    /// As [`peek`](LinkBuffer::peek): zero-copy within one node, else copied
    /// once into the reused scratch buffer.
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable; nothing
    /// is consumed then.
    #[inline]
    pub fn next(&mut self, n: usize) -> Result<&[u8]> {
        self.check(n)?;
        if !self.front_holds(n) {
            self.trim_front();
            if !self.front_holds(n) {
                let scratch = self.copy_to_scratch(n);
                self.consume(n);
                return Ok(self.slots.put_scratch(scratch));
            }
        }
        self.len -= n;
        self.total -= n;
        Ok(match self.slots.front_mut() {
            Some(s) => s.take(n),
            None => &[],
        })
    }

    /// Consumes `n` readable bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.check(n)?;
        self.consume(n);
        Ok(())
    }

    /// The readable bytes up to and including the first `delim`, consumed.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::{Error, LinkBuffer};
    /// let mut buf = LinkBuffer::new();
    /// buf.write_binary(b"GET /\r\nHost");
    /// buf.flush();
    /// assert_eq!(buf.until(b'\n').unwrap(), b"GET /\r\n");
    /// assert_eq!(buf.until(b'\n'), Err(Error::DelimiterNotFound));
    /// assert_eq!(buf.len(), 4); // nothing consumed by the failure
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::DelimiterNotFound`] if no readable byte is `delim`; nothing
    /// is consumed then.
    pub fn until(&mut self, delim: u8) -> Result<&[u8]> {
        let mut pos = 0;
        let mut found = None;
        for s in self.slots.iter() {
            let left = self.len - pos;
            if left == 0 {
                break;
            }
            let c = s.content();
            let c = &c[..c.len().min(left)];
            if let Some(i) = memchr::memchr(delim, c) {
                found = Some(pos + i);
                break;
            }
            pos += c.len();
        }
        match found {
            Some(i) => self.next(i + 1),
            None => Err(Error::DelimiterNotFound),
        }
    }

    /// The next readable byte, consumed.
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if the buffer is empty.
    #[inline]
    pub fn read_byte(&mut self) -> Result<u8> {
        self.check(1)?;
        if !self.front_holds(1) {
            self.trim_front();
        }
        let b = self.front_prefix(1)[0];
        self.consume(1);
        Ok(b)
    }

    /// The next `n` readable bytes, consumed and copied into a new `Vec`
    /// (an owned value never pins a node).
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable.
    pub fn read_binary(&mut self, n: usize) -> Result<Vec<u8>> {
        self.check(n)?;
        let mut v = Vec::with_capacity(n);
        self.copy_prefix(n, &mut v);
        self.consume(n);
        Ok(v)
    }

    /// The next `n` readable bytes as a `String`, consumed and copied.
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable;
    /// [`Error::InvalidUtf8`] if they are not UTF-8. Nothing is consumed
    /// on error.
    pub fn read_string(&mut self, n: usize) -> Result<String> {
        self.check(n)?;
        let mut v = Vec::with_capacity(n);
        self.copy_prefix(n, &mut v);
        let s = String::from_utf8(v).map_err(|_| Error::InvalidUtf8)?;
        self.consume(n);
        Ok(s)
    }

    /// Gives back the nodes that are fully read.
    ///
    /// Reads already drop the nodes they pass over; `release` also drops a
    /// fully read first node, and when the buffer holds nothing at all —
    /// no readable and no unflushed byte — it frees every node, the slot
    /// queue and the scratch buffer, so an idle buffer holds no heap memory
    /// (it also cancels a pending [`book`](LinkBuffer::book) then). Nodes
    /// still referenced by views ([`slice`](LinkBuffer::slice),
    /// [`next_bytes`](LinkBuffer::next_bytes)) stay alive until those drop;
    /// see [`pinned_bytes`](crate::pinned_bytes).
    #[inline]
    pub fn release(&mut self) {
        if self.total == 0 {
            self.slots.clear();
            self.booked = 0;
        } else {
            if !self.slots.single() {
                self.trim_front();
            }
            self.slots.shrink_scratch(SCRATCH_KEEP);
        }
    }

    /// The next `n` readable bytes as an owned buffer, consumed, without
    /// copying: the new buffer shares this one's nodes by reference count
    /// and outlives [`release`](LinkBuffer::release). Its bytes are all
    /// readable; it can be written to (into nodes of its own).
    ///
    /// It allocates nothing: within one node, the slice holds one reference
    /// to the node (or a slice of the node's cached `Bytes`, if one covers
    /// the bytes). A slice spanning `k` nodes keeps `k` slots (a queue of
    /// more than one slot is a small allocation).
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// let mut buf = LinkBuffer::new();
    /// buf.write_binary(b"frame1frame2");
    /// buf.flush();
    /// let mut first = buf.slice(6).unwrap();
    /// buf.release();
    /// assert_eq!(first.next(6).unwrap(), b"frame1");
    /// assert_eq!(buf.len(), 6);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable.
    #[inline]
    pub fn slice(&mut self, n: usize) -> Result<LinkBuffer> {
        self.check(n)?;
        if n > 0 && self.front_holds(n) {
            let readable = self.len;
            let view = match self.slots.front_mut() {
                Some(s) => {
                    let r = s.len().min(readable);
                    s.split_view(n, r)
                }
                None => unreachable!("n > 0 readable bytes lie in a slot"),
            };
            self.consume(n);
            let mut out = LinkBuffer::new();
            out.slots.push_back(view);
            out.len = n;
            out.total = n;
            return Ok(out);
        }
        Ok(self.slice_slow(n))
    }

    #[inline(never)]
    fn slice_slow(&mut self, n: usize) -> LinkBuffer {
        self.trim_front();
        let mut out = LinkBuffer::new();
        let mut left = n;
        let mut readable = self.len;
        for s in self.slots.iter_mut() {
            if left == 0 {
                break;
            }
            let l = s.len();
            let take = left.min(l);
            if take > 0 {
                out.slots.push_back(s.split_view(take, l.min(readable)));
            }
            left -= take;
            readable -= l.min(readable);
        }
        out.len = n;
        out.total = n;
        self.consume(n);
        out
    }

    /// The next `n` readable bytes as [`Bytes`], consumed.
    ///
    /// Zero-copy when they lie in one node: the `Bytes` shares the node by
    /// reference count and outlives [`release`](LinkBuffer::release). Each
    /// node caches one `Bytes` over all its readable bytes and hands out
    /// slices of it, so a call costs one atomic increment, plus one small
    /// allocation for the first view of each read. Except: a short run (at
    /// most 1 KiB) that no cached `Bytes` covers and with fewer than 4 KiB
    /// readable after it in its node — typically a field of the last
    /// message of a read — is copied into a per-thread arena, which
    /// allocates nothing and keeps no node alive (see the crate docs,
    /// "Views and copies"). Bytes spanning nodes are copied (a `Bytes` is
    /// contiguous): into the arena up to 1 KiB, else into a new allocation;
    /// use [`slice`](LinkBuffer::slice) to avoid that.
    ///
    /// # Errors
    ///
    /// [`Error::Insufficient`] if fewer than `n` bytes are readable.
    #[inline]
    pub fn next_bytes(&mut self, n: usize) -> Result<Bytes> {
        self.check(n)?;
        if n == 0 {
            return Ok(Bytes::new());
        }
        if !self.front_holds(n) {
            self.trim_front();
            if !self.front_holds(n) {
                return Ok(self.next_bytes_copied(n));
            }
        }
        let readable = self.len;
        self.len -= n;
        self.total -= n;
        // A drained first slot stays until the next read or `release`.
        Ok(match self.slots.front_mut() {
            Some(s) => {
                let r = s.len().min(readable);
                s.take_bytes(n, r)
            }
            None => unreachable!("n > 0 readable bytes lie in a slot"),
        })
    }

    #[inline(never)]
    fn next_bytes_copied(&mut self, n: usize) -> Bytes {
        let b = if n <= arena::COPY_MAX {
            arena::copy(n, |dst| self.copy_prefix_into(n, dst))
        } else {
            let mut v = Vec::with_capacity(n);
            self.copy_prefix(n, &mut v);
            Bytes::from(v)
        };
        self.consume(n);
        b
    }

    /// Fills `dst` with the readable bytes, one `IoSlice` per node, for
    /// `writev`/`sendmsg`; returns how many entries were filled. Consumes
    /// nothing: after the write, [`skip`](LinkBuffer::skip) what was sent
    /// and [`release`](LinkBuffer::release).
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// # use std::io::IoSlice;
    /// let mut buf = LinkBuffer::new();
    /// buf.write_binary(b"ping");
    /// buf.flush();
    /// let mut iov = [IoSlice::new(&[]); 8];
    /// let n = buf.readable_vectored(&mut iov);
    /// assert_eq!((n, &*iov[0]), (1, &b"ping"[..]));
    /// ```
    #[inline]
    pub fn readable_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        if self.slots.single() {
            return match (self.slots.front(), dst.first_mut()) {
                (Some(s), Some(d)) if self.len > 0 => {
                    *d = IoSlice::new(&s.content()[..self.len]);
                    1
                }
                _ => 0,
            };
        }
        self.readable_vectored_slow(dst)
    }

    fn readable_vectored_slow<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut i = 0;
        let mut left = self.len;
        for s in self.slots.iter() {
            if i == dst.len() || left == 0 {
                break;
            }
            let c = s.content();
            let m = c.len().min(left);
            if m == 0 {
                continue;
            }
            dst[i] = IoSlice::new(&c[..m]);
            i += 1;
            left -= m;
        }
        i
    }

    /// The first non-empty run of readable bytes (`bytes::Buf::chunk`).
    pub(crate) fn first_chunk(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        for s in self.slots.iter() {
            let c = s.content();
            if !c.is_empty() {
                return &c[..c.len().min(self.len)];
            }
        }
        &[]
    }

    // ------------------------------------------------------------------
    // Write side
    // ------------------------------------------------------------------

    /// Appends a fresh owned node of at least `size` bytes, dropping an
    /// empty last slot first.
    fn push_node(&mut self, size: usize) {
        if self.slots.back().is_some_and(|s| s.len() == 0) {
            self.slots.pop_back();
        }
        self.slots.push_back(Slot::alloc(size));
    }

    /// The last slot, which the caller has just made sure exists.
    #[inline]
    fn tail(&mut self) -> &mut Slot {
        match self.slots.back_mut() {
            Some(t) => t,
            None => unreachable!("the buffer has a last slot"),
        }
    }

    /// A last slot with `n` spare bytes, allocating a node of `alloc >= n`
    /// bytes when the current one cannot take them.
    #[inline]
    fn tail_with(&mut self, n: usize, alloc: usize) -> &mut Slot {
        if !self.slots.back().is_some_and(|t| fits(t, n)) {
            self.push_node(alloc);
        }
        self.tail()
    }

    /// `n` contiguous writable bytes, counted as written (unflushed) at once.
    ///
    /// The bytes hold unspecified old data: write all of them, or give back
    /// the unwritten end with [`malloc_ack`](LinkBuffer::malloc_ack). A new
    /// node of `max(n + NODE_HEADER, BLOCK_SIZE)` bytes is allocated when
    /// the last one lacks room; above [`MAX_NODE`] that is one unpooled
    /// node, since the bytes must be contiguous.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// let mut buf = LinkBuffer::new();
    /// let header = buf.malloc(4);
    /// header.copy_from_slice(&7u32.to_be_bytes());
    /// buf.write_binary(b"payload");
    /// assert_eq!(buf.malloc_len(), 11);
    /// buf.flush();
    /// assert_eq!(buf.next(4).unwrap(), [0, 0, 0, 7]);
    /// ```
    ///
    /// # Panics
    ///
    /// If memory for the node cannot be allocated (as `Vec` does).
    pub fn malloc(&mut self, n: usize) -> &mut [u8] {
        self.booked = 0;
        if n == 0 {
            return &mut [];
        }
        self.total += n;
        self.tail_with(n, node_size(n).max(BLOCK_SIZE))
            .commit_mut(n)
    }

    /// Bytes written since the last flush, by any write (`malloc`,
    /// `write_*`, `BufMut`, `append`). Always equal to
    /// [`unflushed_len`](LinkBuffer::unflushed_len); both names are kept for
    /// netpoll's API.
    #[inline]
    pub fn malloc_len(&self) -> usize {
        self.total - self.len
    }

    /// Keeps only the first `n` bytes written since the last flush and
    /// discards the rest, whatever wrote them. The usual use: `malloc` room
    /// for the largest encoding, write fewer bytes, acknowledge those.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// let mut buf = LinkBuffer::new();
    /// let room = buf.malloc(16);
    /// room[..5].copy_from_slice(b"hello");
    /// buf.malloc_ack(5).unwrap();
    /// buf.flush();
    /// assert_eq!(buf.next(buf.len()).unwrap(), b"hello");
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::AckTooLarge`] if `n > malloc_len()`; nothing changes then.
    pub fn malloc_ack(&mut self, n: usize) -> Result<()> {
        let unflushed = self.total - self.len;
        if n > unflushed {
            return Err(Error::AckTooLarge {
                requested: n,
                available: unflushed,
            });
        }
        self.booked = 0;
        let mut excess = unflushed - n;
        self.total -= excess;
        while excess > 0 {
            let last = self.slots.len() == 1;
            let Some(back) = self.slots.back_mut() else {
                unreachable!("unflushed bytes lie in slots");
            };
            let l = back.len();
            if l <= excess && !last {
                excess -= l;
                self.slots.pop_back();
            } else {
                // Only unflushed bytes are cut, and no view covers those.
                back.truncate(l - excess);
                excess = 0;
            }
        }
        Ok(())
    }

    /// Appends one byte (`BufMut::put_u8`, which prost calls per varint
    /// byte).
    #[inline]
    pub(crate) fn write_byte(&mut self, b: u8) {
        self.booked = 0;
        if let Some(t) = self.slots.back_mut()
            && t.limit() <= LARGE_NODE
            && t.push_byte(b)
        {
            self.total += 1;
            return;
        }
        self.write_slow(&[b]);
    }

    /// Appends a copy of `src` (unflushed until [`flush`](LinkBuffer::flush)).
    /// Fills the last node's spare room, then allocates nodes of up to
    /// [`MAX_NODE`] bytes.
    #[inline]
    pub fn write_binary(&mut self, src: &[u8]) {
        self.booked = 0;
        if let Some(t) = self.slots.back_mut()
            && fits(t, src.len())
        {
            t.write(src);
            self.total += src.len();
            return;
        }
        self.write_slow(src);
    }

    #[cold]
    fn write_slow(&mut self, mut src: &[u8]) {
        if src.is_empty() {
            return;
        }
        self.total += src.len();
        if let Some(t) = self.slots.back_mut()
            && accepts(t, src.len())
        {
            let m = t.spare().min(src.len());
            t.write(&src[..m]);
            src = &src[m..];
        }
        while !src.is_empty() {
            self.push_node(node_size(src.len()).clamp(BLOCK_SIZE, MAX_NODE));
            let t = self.tail();
            let m = t.spare().min(src.len());
            t.write(&src[..m]);
            src = &src[m..];
        }
    }

    /// Appends `b`: linked without copying when it is at least
    /// [`LINK_MIN`] bytes (the buffer keeps a reference to `b`'s memory),
    /// copied otherwise.
    pub fn write_bytes(&mut self, b: Bytes) {
        if b.len() < LINK_MIN {
            self.write_binary(&b);
            return;
        }
        self.booked = 0;
        if self.slots.back().is_some_and(|s| s.len() == 0) {
            self.slots.pop_back();
        }
        self.total += b.len();
        self.slots.push_back(Slot::shared(b));
    }

    /// Links all of `other`'s bytes — readable and unflushed — after this
    /// buffer's, without copying: O(number of nodes), no allocation per
    /// byte. They count as unflushed here and become readable at the next
    /// [`flush`](LinkBuffer::flush). If `other`'s last node is its own, this
    /// buffer continues writing into it.
    ///
    /// This is the hand-off between threads: a producer fills its own
    /// buffer, then the consumer side appends it under a short lock.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// let mut input = LinkBuffer::new();
    /// let mut chunk = LinkBuffer::new();
    /// chunk.write_binary(b"from the loop thread");
    /// input.append(chunk);
    /// assert_eq!(input.len(), 0);
    /// input.flush();
    /// assert_eq!(input.len(), 20);
    /// ```
    #[inline]
    pub fn append(&mut self, other: LinkBuffer) {
        self.booked = 0;
        // Moved out whole: `other` has no drop glue left to run.
        let LinkBuffer { slots, total, .. } = other;
        if total == 0 {
            return;
        }
        if self.slots.back().is_some_and(|s| s.len() == 0) {
            self.slots.pop_back();
        }
        self.total += total;
        self.slots.append_from(slots, |s| s.len() > 0);
    }

    /// Makes every written byte readable. O(1).
    #[inline]
    pub fn flush(&mut self) {
        self.len = self.total;
    }

    /// Bytes written but not yet flushed.
    #[inline]
    pub fn unflushed_len(&self) -> usize {
        self.total - self.len
    }

    // ------------------------------------------------------------------
    // Socket helpers
    // ------------------------------------------------------------------

    /// Free contiguous space to `read()` into: at least `min` bytes, and
    /// about the adaptive [`read_size`](LinkBuffer::read_size). Nothing is
    /// written until [`book_ack`](LinkBuffer::book_ack).
    ///
    /// The space is the last node's spare room if that holds at least
    /// `min` bytes and half the read size (and the node is not a large one
    /// kept for small reads), else a new node of `max(min, read_size)`
    /// bytes (`min` plus the [`NODE_HEADER`](crate::NODE_HEADER) when `min`
    /// is the larger): a power-of-two read size fills an mcache class, so a
    /// fresh node offers the read size less the 16-byte header.
    /// When the buffer then holds only a few unread bytes (at most 4 KiB
    /// and a quarter of the read size, in one node: typically the start of
    /// a frame whose end is still in the kernel), they are copied to the
    /// start of the new node, so that the frame stays contiguous and can
    /// be read without copying it whole later.
    /// Booking after `malloc`/writes without a flush is allowed: the space
    /// lies after those bytes, and `book_ack` flushes them together. Any
    /// other write, `append`, `malloc_ack`, or an emptying `release`
    /// between `book` and `book_ack` cancels the booking.
    ///
    /// ```
    /// # use ferropoll_linkbuffer::LinkBuffer;
    /// # use std::io::Read;
    /// let mut buf = LinkBuffer::new();
    /// let mut socket: &[u8] = b"bytes from the kernel";
    /// let space = buf.book(1);
    /// let n = socket.read(space).unwrap();
    /// buf.book_ack(n);
    /// assert_eq!(buf.len(), n);
    /// ```
    pub fn book(&mut self, min: usize) -> &mut [u8] {
        let want = min.max(self.read_size as usize);
        if self.slots.front().is_none() {
            // An idle buffer (the usual case between messages): a new node.
            self.slots.push_back(Slot::alloc(want.max(node_size(min))));
            let size = self.tail().spare().min(want);
            self.booked = size;
            return &mut self.tail().spare_mut()[..size];
        }
        let reuse = self.slots.back().is_some_and(|t| {
            let s = t.spare();
            t.is_owned() && s >= min && s >= want / 2 && accepts(t, want)
        });
        if !reuse {
            let carry =
                self.slots.len() == 1 && self.total <= CARRY_MAX.min(want / 4) && want <= MAX_NODE;
            if carry {
                self.carry_into_new_node(want);
            } else {
                // A power-of-two read size fills its class exactly, less
                // the node header; `min` itself must fit whole.
                self.push_node(want.max(node_size(min)));
            }
        }
        let size = self.tail().spare().min(want);
        self.booked = size;
        &mut self.tail().spare_mut()[..size]
    }

    /// Replaces the only slot, holding a few unread bytes (`total`), by a
    /// new node of `total + want` bytes that starts with a copy of them.
    ///
    /// This is what keeps a decoder zero-copy: the partial frame left at the
    /// end of one read continues contiguously in the next, instead of
    /// straddling two nodes (which would cost a copy of the whole frame on
    /// `next`/`next_bytes`, and keep the old node alive). The copy is at
    /// most `CARRY_MAX` bytes; readers see the same content, and views taken
    /// from the old node keep it alive as usual.
    #[cold]
    fn carry_into_new_node(&mut self, want: usize) {
        let mut slot = Slot::alloc(node_size(self.total + want));
        if let Some(old) = self.slots.pop_back() {
            slot.write(old.content());
        }
        self.slots.push_back(slot);
    }

    /// Records that `n` bytes were read into the space of the last
    /// [`book`](LinkBuffer::book), then flushes everything written, and
    /// adapts the read size: it doubles (up to [`MAX_READ_SIZE`]) when a
    /// read fills a full-size booking, and halves (down to
    /// [`MIN_READ_SIZE`]) after two reads in a row of under half of it.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the booked space (including when no booking is
    /// pending and `n > 0`): that is a bug in the caller, and accepting it
    /// would publish bytes nobody wrote.
    pub fn book_ack(&mut self, n: usize) {
        let booked = std::mem::take(&mut self.booked);
        assert!(
            n <= booked,
            "book_ack({n}) exceeds the {booked} bytes of the pending booking"
        );
        if n > 0 {
            self.tail().commit(n);
            self.total += n;
        }
        self.flush();
        if booked > 0 {
            self.adapt(n, booked);
        }
    }

    fn adapt(&mut self, n: usize, booked: usize) {
        let size = self.read_size as usize;
        // A fresh node of the read size has room for the read size less the
        // node header: a booking that large is a full-size one.
        let next = if n == booked && booked >= size - NODE_HEADER {
            self.small_reads = 0;
            (size * 2).min(MAX_READ_SIZE)
        } else if n < size / 2 {
            self.small_reads += 1;
            if self.small_reads < 2 {
                return;
            }
            self.small_reads = 0;
            (size / 2).max(MIN_READ_SIZE)
        } else {
            self.small_reads = 0;
            size
        };
        // Both bounds are far below `u32::MAX`.
        self.read_size = next as u32;
    }

    /// The current adaptive read size of [`book`](LinkBuffer::book).
    pub fn read_size(&self) -> usize {
        self.read_size as usize
    }

    // ------------------------------------------------------------------
    // BufMut support and diagnostics
    // ------------------------------------------------------------------

    /// Spare room of the last node for `BufMut::chunk_mut` (never empty).
    pub(crate) fn spare_chunk(&mut self) -> &mut [u8] {
        self.booked = 0;
        self.tail_with(1, BLOCK_SIZE).spare_mut()
    }

    /// Counts `n` bytes written into `spare_chunk` (`BufMut::advance_mut`).
    pub(crate) fn commit_spare(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.slots.back_mut() {
            Some(t) if t.spare() >= n => t.commit(n),
            _ => panic!("advance_mut({n}) beyond the space of chunk_mut"),
        }
        self.booked = 0;
        self.total += n;
    }

    /// All content bytes, readable and unflushed (for `remaining_mut`).
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Number of nodes (slots) the buffer references, for diagnostics.
    pub fn node_count(&self) -> usize {
        self.slots.len()
    }

    /// Heap bytes this buffer keeps alive: the capacity of the nodes it
    /// owns, the length of the nodes it shares, its slot queue and scratch
    /// buffer. Zero for a new or idle (released) buffer.
    pub fn held_bytes(&self) -> usize {
        self.slots.iter().map(Slot::held).sum::<usize>() + self.slots.spill_bytes()
    }
}
