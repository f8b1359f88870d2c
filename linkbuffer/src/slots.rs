//! The queue of slots, with the first one inline.
//!
//! Most buffers hold one node (a short message, a `slice` within one node, a
//! connection between reads), so the first slot lives inside the
//! `LinkBuffer` and only the second and later ones go to a `VecDeque`: a
//! one-node buffer allocates nothing besides its node. The deque keeps its
//! capacity while the buffer is in use and is freed when the buffer empties.

use std::collections::VecDeque;

use crate::node::Slot;

/// A FIFO of slots whose front element is stored inline.
///
/// Invariant: `head.is_none()` implies `rest.is_empty()`.
pub(crate) struct Slots {
    head: Option<Slot>,
    rest: VecDeque<Slot>,
}

impl Slots {
    /// An empty queue; allocates nothing.
    pub(crate) const fn new() -> Slots {
        Slots {
            head: None,
            rest: VecDeque::new(),
        }
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
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
        self.rest.back().or(self.head.as_ref())
    }

    /// The last slot, mutably.
    #[inline]
    pub(crate) fn back_mut(&mut self) -> Option<&mut Slot> {
        match self.rest.back_mut() {
            Some(s) => Some(s),
            None => self.head.as_mut(),
        }
    }

    /// Appends a slot.
    #[inline]
    pub(crate) fn push_back(&mut self, slot: Slot) {
        if self.head.is_none() {
            self.head = Some(slot);
        } else {
            self.rest.push_back(slot);
        }
    }

    /// Removes the first slot.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Slot> {
        let head = self.head.take();
        self.head = self.rest.pop_front();
        head
    }

    /// Removes the last slot.
    pub(crate) fn pop_back(&mut self) -> Option<Slot> {
        match self.rest.pop_back() {
            Some(s) => Some(s),
            None => self.head.take(),
        }
    }

    /// All slots, front to back.
    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.head.iter().chain(self.rest.iter())
    }

    /// All slots, front to back, mutably.
    #[inline]
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.head.iter_mut().chain(self.rest.iter_mut())
    }

    /// Drops every slot and frees the deque's memory.
    pub(crate) fn clear(&mut self) {
        self.head = None;
        self.rest = VecDeque::new();
    }

    /// Moves every slot of `other` to the back, keeping only those for which
    /// `keep` holds (the rest are dropped).
    pub(crate) fn append_from(&mut self, mut other: Slots, keep: impl Fn(&Slot) -> bool) {
        while let Some(slot) = other.pop_front() {
            if keep(&slot) {
                self.push_back(slot);
            }
        }
    }

    /// Slots moved out, leaving this queue empty.
    pub(crate) fn take(&mut self) -> Slots {
        std::mem::replace(self, Slots::new())
    }

    /// Capacity of the spill deque, for the memory report.
    pub(crate) fn spill_capacity(&self) -> usize {
        self.rest.capacity()
    }
}
