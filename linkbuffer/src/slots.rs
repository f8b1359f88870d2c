//! The queue of slots, with the first one inline.
//!
//! Most buffers hold one node (a short message, a `slice` within one node, a
//! connection between reads), so the first slot lives inside the
//! `LinkBuffer` and only the second and later ones go to a boxed *spill*:
//! a one-node buffer allocates nothing besides its node, and creating and
//! dropping one (a `slice`) touches no queue. The spill also holds the
//! scratch buffer of cross-node `peek`/`next`, which only a buffer that has
//! spanned nodes needs. It keeps its capacity while the buffer is in use and
//! is given up when the buffer empties (or drops): an idle buffer holds no
//! heap memory. A given-up spill goes to a small per-thread pool (at most
//! [`POOL`] of them, each trimmed to [`POOL_SLOTS`] slots and
//! [`POOL_SCRATCH`] bytes of scratch) where the next buffer that spans
//! nodes takes it, so a message that briefly needs two slots — a written
//! head followed by an appended payload view — costs no allocation.
//!
//! The spill is a `Vec` read from a moving front index rather than a
//! `VecDeque`: the last slot, which every write touches, is then one
//! `last_mut()` away with no ring arithmetic. Popped front entries are
//! replaced by empty placeholders and the vector is reset when it empties
//! (the usual case: a connection drains its input) or compacted when the
//! dead prefix is at least half of it.

use std::cell::RefCell;

use crate::node::Slot;

/// Most spills one thread keeps for reuse.
const POOL: usize = 8;
/// Largest slot capacity a pooled spill keeps (80 bytes a slot).
const POOL_SLOTS: usize = 8;
/// Largest scratch capacity a pooled spill keeps.
const POOL_SCRATCH: usize = 1 << 10;

thread_local! {
    // The boxes are what is reused: a queue holds its spill boxed.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Spill>>> = const { RefCell::new(Vec::new()) };
}

/// A spill for a buffer that starts spanning nodes: a pooled one if this
/// thread has one, else a new one.
#[cold]
fn new_spill() -> Box<Spill> {
    SPARE
        .try_with(|p| p.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives up the spill of a buffer that emptied or dropped: pooled if it is
/// small and the pool has room, freed otherwise.
fn recycle(mut spill: Box<Spill>) {
    // Drop what it holds first (slots release their nodes), outside the
    // pool's borrow.
    spill.rest.clear();
    spill.front = 0;
    if spill.rest.capacity() > POOL_SLOTS {
        return;
    }
    if spill.scratch.capacity() > POOL_SCRATCH {
        spill.scratch = Vec::new();
    }
    let _ = SPARE.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut()
            && p.len() < POOL
        {
            if p.capacity() == 0 {
                p.reserve_exact(POOL);
            }
            p.push(spill);
        }
    });
}

/// A FIFO of slots whose front element is stored inline.
///
/// Invariant: `head.is_none()` implies the spill holds no slot.
pub(crate) struct Slots {
    head: Option<Slot>,
    spill: Option<Box<Spill>>,
}

impl Drop for Slots {
    #[inline]
    fn drop(&mut self) {
        if let Some(spill) = self.spill.take() {
            recycle(spill);
        }
    }
}

/// What a buffer spanning nodes needs besides its first slot.
#[derive(Default)]
struct Spill {
    /// Slots `front..` are live; those before are placeholders.
    rest: Vec<Slot>,
    front: usize,
    scratch: Vec<u8>,
}

impl Spill {
    #[inline]
    fn len(&self) -> usize {
        self.rest.len() - self.front
    }

    fn pop_front(&mut self) -> Option<Slot> {
        if self.front == self.rest.len() {
            return None;
        }
        let slot = std::mem::replace(&mut self.rest[self.front], Slot::placeholder());
        self.front += 1;
        if self.front == self.rest.len() {
            self.rest.clear();
            self.front = 0;
        } else if self.front >= 16 && self.front * 2 >= self.rest.len() {
            self.rest.drain(..self.front);
            self.front = 0;
        }
        Some(slot)
    }

    fn pop_back(&mut self) -> Option<Slot> {
        if self.front == self.rest.len() {
            return None;
        }
        let slot = self.rest.pop();
        if self.front == self.rest.len() {
            self.rest.clear();
            self.front = 0;
        }
        slot
    }

    #[inline]
    fn live(&self) -> &[Slot] {
        &self.rest[self.front..]
    }

    #[inline]
    fn live_mut(&mut self) -> &mut [Slot] {
        &mut self.rest[self.front..]
    }
}

impl Slots {
    /// An empty queue; allocates nothing.
    pub(crate) const fn new() -> Slots {
        Slots {
            head: None,
            spill: None,
        }
    }

    /// Whether the queue holds at most one slot (the inline one): the
    /// common case, which every hot path tests first.
    #[inline(always)]
    pub(crate) fn single(&self) -> bool {
        self.spill.as_ref().is_none_or(|x| x.len() == 0)
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.spill.as_ref().map_or(0, |x| x.len())
    }

    /// The first slot.
    #[inline]
    pub(crate) fn front(&self) -> Option<&Slot> {
        self.head.as_ref()
    }

    /// The first slot, mutably.
    #[inline]
    pub(crate) fn front_mut(&mut self) -> Option<&mut Slot> {
        self.head.as_mut()
    }

    /// The last slot.
    #[inline]
    pub(crate) fn back(&self) -> Option<&Slot> {
        match &self.spill {
            Some(x) if x.len() > 0 => x.rest.last(),
            _ => self.head.as_ref(),
        }
    }

    /// The last slot, mutably.
    #[inline]
    pub(crate) fn back_mut(&mut self) -> Option<&mut Slot> {
        if matches!(&self.spill, Some(x) if x.len() > 0) {
            self.spill.as_mut().and_then(|x| x.rest.last_mut())
        } else {
            self.head.as_mut()
        }
    }

    /// Appends a slot.
    #[inline]
    pub(crate) fn push_back(&mut self, slot: Slot) {
        if self.head.is_none() {
            self.head = Some(slot);
        } else {
            self.spill.get_or_insert_with(new_spill).rest.push(slot);
        }
    }

    /// Removes the first slot.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Slot> {
        let head = self.head.take();
        self.head = self.spill.as_mut().and_then(|x| x.pop_front());
        head
    }

    /// Removes the last slot.
    pub(crate) fn pop_back(&mut self) -> Option<Slot> {
        match self.spill.as_mut().and_then(|x| x.pop_back()) {
            Some(s) => Some(s),
            None => self.head.take(),
        }
    }

    /// All slots, front to back.
    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.head
            .iter()
            .chain(self.spill.iter().flat_map(|x| x.live().iter()))
    }

    /// All slots, front to back, mutably.
    #[inline]
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.head
            .iter_mut()
            .chain(self.spill.iter_mut().flat_map(|x| x.live_mut().iter_mut()))
    }

    /// Drops every slot and frees the spill.
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.head = None;
        if let Some(spill) = self.spill.take() {
            recycle(spill);
        }
    }

    /// Moves every slot of `other` to the back, keeping only those for which
    /// `keep` holds (the rest are dropped).
    #[inline]
    pub(crate) fn append_from(&mut self, mut other: Slots, keep: impl Fn(&Slot) -> bool) {
        if other.spill.is_none() {
            // One slot (a `slice` within a node, a buffer of one read).
            if let Some(slot) = other.head.take()
                && keep(&slot)
            {
                self.push_back(slot);
            }
            return;
        }
        while let Some(slot) = other.pop_front() {
            if keep(&slot) {
                self.push_back(slot);
            }
        }
    }

    /// Heap bytes of the spill (queue and scratch), for the memory report.
    pub(crate) fn spill_bytes(&self) -> usize {
        self.spill.as_ref().map_or(0, |x| {
            std::mem::size_of::<Spill>()
                + x.rest.capacity() * std::mem::size_of::<Slot>()
                + x.scratch.capacity()
        })
    }

    /// Takes the scratch buffer out (empty if there was none), to fill it
    /// while reading the slots; give it back with `put_scratch`.
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        self.spill
            .as_mut()
            .map(|x| std::mem::take(&mut x.scratch))
            .unwrap_or_default()
    }

    /// Stores the scratch buffer and returns it as a slice.
    pub(crate) fn put_scratch(&mut self, scratch: Vec<u8>) -> &[u8] {
        let spill = self.spill.get_or_insert_with(new_spill);
        spill.scratch = scratch;
        &spill.scratch
    }

    /// Frees the scratch buffer if it holds more than `keep` bytes.
    pub(crate) fn shrink_scratch(&mut self, keep: usize) {
        if let Some(x) = &mut self.spill
            && x.scratch.capacity() > keep
        {
            x.scratch = Vec::new();
        }
    }
}
