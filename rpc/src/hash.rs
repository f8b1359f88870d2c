//! Cheap hashers for the two hot maps, instead of std's SipHash (whose
//! DoS resistance these keys do not need: sequence ids are chosen by this
//! side, service names are registered by the server's own code).

use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of a `u64` sequence id: one multiplication spreads
/// consecutive ids over the high bits, which the hash table probes with.
#[derive(Default, Clone, Copy)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; fold anything else in, FNV-style.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// FNV-1a over the bytes of a short name.
#[derive(Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xCBF2_9CE4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        // Mix the low bits up: hashbrown takes its tag from the top bits.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

pub(crate) type SeqMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<SeqHasher>>;
/// HTTP/2 stream ids (odd, increasing, and at most a connection's stream
/// limit of them live at once).
pub(crate) type StreamIdMap<V> = std::collections::HashMap<u32, V, BuildHasherDefault<SeqHasher>>;
pub(crate) type NameMap<V> =
    std::collections::HashMap<Box<[u8]>, V, BuildHasherDefault<NameHasher>>;

/// A map keyed by owned strings, looked up by `&str`, hashed as names are.
pub(crate) type StrMap<V> = std::collections::HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// Values by a small dense id (a registered method's
/// [`method_id`](crate::intercept::CallStart::method_id)): an index under a
/// read lock instead of hashing names on every call.
pub(crate) struct IdTable<T> {
    slots: parking_lot::RwLock<Vec<Option<T>>>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            slots: parking_lot::RwLock::new(Vec::new()),
        }
    }
}

impl<T> IdTable<T> {
    /// Runs `f` on the value of `id`, if there is one.
    pub(crate) fn with<R>(&self, id: usize, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.slots.read().get(id).and_then(Option::as_ref).map(f)
    }

    /// Sets the value of `id`.
    pub(crate) fn insert(&self, id: usize, value: T) {
        let mut slots = self.slots.write();
        if slots.len() <= id {
            slots.resize_with(id + 1, || None);
        }
        slots[id] = Some(value);
    }
}
