//! The key space: shards of `Mutex<HashMap>`, lazy and sampled expiry.
//!
//! Keys are spread over a power-of-two number of shards (at least four per
//! loop) by a hash seeded apart from the maps' own, so loops rarely meet on
//! one lock and a shard's keys still spread over its map's buckets.
//!
//! Expiry as Redis does it: a key past its deadline is deleted when a
//! command touches it, and a sweeper samples the keys that have a deadline
//! (each shard keeps them in an `IndexSet`, so sampling by position is
//! O(1)) every 100 ms with bounded work per shard. Invariant: an entry has
//! a deadline if and only if its key is in its shard's `volatile` set.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;
use indexmap::IndexSet;
use parking_lot::{Mutex, MutexGuard};

/// Milliseconds on a monotonic clock (since the first call; at least 1,
/// so 0 can mean "no deadline").
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A stored value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A string (copied when small, a view into the input when large).
    Str(Bytes),
    /// A string that holds an integer, as `INCR` leaves it (Redis's
    /// `OBJ_ENCODING_INT`): no allocation per increment.
    Int(i64),
    /// A list.
    List(VecDeque<Bytes>),
}

/// A value and its deadline (`now_ms` units; 0 = none).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    pub(crate) expires_at: u64,
}

impl Entry {
    #[inline]
    fn expired(&self, now: impl FnOnce() -> u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now()
    }
}

/// A stored key: `Bytes` that hashes as a byte slice and is built from
/// `&[u8]` by copying, so lookups by `&[u8]` go through the entry API with
/// one hash computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key(Bytes);

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0[..].hash(h);
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    #[inline]
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Key {
    #[inline]
    fn from(k: &[u8]) -> Key {
        Key(Bytes::copy_from_slice(k))
    }
}

/// One shard of the key space.
#[derive(Default)]
pub(crate) struct Shard {
    map: HashMap<Key, Entry>,
    volatile: IndexSet<Key, foldhash::fast::RandomState>,
    cursor: usize,
}

impl Shard {
    /// The live entry of `key`; an expired one is deleted on the way.
    #[inline]
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&mut Entry> {
        match self.map.entry_ref(key) {
            EntryRef::Vacant(_) => None,
            EntryRef::Occupied(o) => {
                if o.get().expired(now_ms) {
                    o.remove();
                    self.volatile.swap_remove(key);
                    None
                } else {
                    Some(o.into_mut())
                }
            }
        }
    }

    /// The live entry of `key`, created with `init()` and no deadline if
    /// there is none (one hash lookup either way).
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &[u8],
        init: impl FnOnce() -> Value,
    ) -> &mut Entry {
        match self.map.entry_ref(key) {
            EntryRef::Vacant(v) => v.insert(Entry {
                value: init(),
                expires_at: 0,
            }),
            EntryRef::Occupied(o) => {
                let e = o.into_mut();
                if e.expired(now_ms) {
                    *e = Entry {
                        value: init(),
                        expires_at: 0,
                    };
                    self.volatile.swap_remove(key);
                }
                e
            }
        }
    }

    /// Stores `value` under `key` with the given deadline (0: none),
    /// replacing any old value and deadline.
    pub(crate) fn insert(&mut self, key: &[u8], value: Value, expires_at: u64) {
        let entry = Entry { value, expires_at };
        match self.map.entry_ref(key) {
            EntryRef::Occupied(mut o) => {
                let had = o.get().expires_at != 0;
                *o.get_mut() = entry;
                match (had, expires_at != 0) {
                    (true, false) => {
                        self.volatile.swap_remove(key);
                    }
                    (false, true) => {
                        self.volatile.insert(o.key().clone());
                    }
                    _ => {}
                }
            }
            EntryRef::Vacant(v) => {
                if expires_at != 0 {
                    self.volatile.insert(Key::from(key));
                }
                v.insert(entry);
            }
        }
    }

    /// Stores `value` under `key`, keeping the deadline of a live old value.
    pub(crate) fn insert_keep_ttl(&mut self, key: &[u8], value: Value) {
        match self.get(key) {
            Some(e) => e.value = value,
            None => self.insert(key, value, 0),
        }
    }

    /// Deletes `key`; whether a live value was there.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            None => false,
            Some(e) => {
                if e.expires_at != 0 {
                    self.volatile.swap_remove(key);
                }
                !e.expired(now_ms)
            }
        }
    }

    /// Sets the deadline of the live entry of `key` (0: none); whether
    /// there was one.
    pub(crate) fn set_expiry(&mut self, key: &[u8], at: u64) -> bool {
        let Some(e) = self.get(key) else {
            return false;
        };
        let had = e.expires_at != 0;
        e.expires_at = at;
        if had && at == 0 {
            self.volatile.swap_remove(key);
        } else if !had && at != 0 {
            self.volatile.insert(Key::from(key));
        }
        true
    }

    /// Keys stored (expired ones not yet swept included, as Redis counts).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys with a deadline.
    pub(crate) fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    fn clear(&mut self) {
        // Give the memory back: a flushed shard should not keep a table
        // sized for its past peak.
        *self = Shard::default();
    }

    /// Looks at up to `budget` keys with a deadline, from where the last
    /// sweep stopped, deleting the expired ones; returns (looked, deleted).
    pub(crate) fn sweep(&mut self, now: u64, budget: usize) -> (usize, usize) {
        let (mut looked, mut deleted) = (0, 0);
        while looked < budget && !self.volatile.is_empty() {
            if self.cursor >= self.volatile.len() {
                self.cursor = 0;
            }
            looked += 1;
            let Some(key) = self.volatile.get_index(self.cursor) else {
                break;
            };
            let live = match self.map.get(key) {
                Some(e) if e.expires_at != 0 && e.expires_at > now => true,
                Some(e) if e.expires_at != 0 => {
                    self.map.remove(key);
                    deleted += 1;
                    false
                }
                // Not expected (the invariant), but never keep a stale key.
                _ => false,
            };
            if live {
                self.cursor += 1;
            } else {
                // The last key moves into this position: look at it next.
                self.volatile.swap_remove_index(self.cursor);
            }
        }
        (looked, deleted)
    }
}

/// Cache-line padding, so two shards' locks never share a line.
#[repr(align(128))]
struct Padded<T>(T);

/// The sharded key space.
pub struct Store {
    shards: Box<[Padded<Mutex<Shard>>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Store {
    /// A store of `shards` shards, rounded up to a power of two.
    pub fn new(shards: usize) -> Store {
        let n = shards.max(1).next_power_of_two();
        Store {
            shards: (0..n)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            mask: n - 1,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Index of the shard holding `key`.
    #[inline]
    pub(crate) fn shard_of(&self, key: &[u8]) -> usize {
        // High bits: the low ones are what a small table would use.
        (self.hasher.hash_one(key) >> 40) as usize & self.mask
    }

    /// The locked shard holding `key`.
    #[inline]
    pub(crate) fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        self.shards[self.shard_of(key)].0.lock()
    }

    /// Locks the shards of all `keys` in index order (so two multi-key
    /// commands cannot deadlock) and returns the guards with, per key, the
    /// index of its guard.
    pub(crate) fn lock_many(&self, keys: &[&[u8]]) -> (Vec<MutexGuard<'_, Shard>>, Vec<usize>) {
        let mut idx: Vec<usize> = keys.iter().map(|k| self.shard_of(k)).collect();
        let mut order = idx.clone();
        order.sort_unstable();
        order.dedup();
        let guards = order.iter().map(|&i| self.shards[i].0.lock()).collect();
        for i in &mut idx {
            // `order` is sorted and holds every index.
            *i = order.binary_search(i).unwrap_or(0);
        }
        (guards, idx)
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys that have a deadline.
    pub fn volatile_len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().volatile_len()).sum()
    }

    /// Deletes every key.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.0.lock().clear();
        }
    }

    /// One round of active expiry: per shard, samples up to 20 keys with a
    /// deadline and repeats while more than a quarter of them had expired,
    /// at most `max_rounds` times. Returns the keys deleted.
    pub fn sweep(&self, max_rounds: usize) -> usize {
        const SAMPLE: usize = 20;
        let now = now_ms();
        let mut total = 0;
        for s in self.shards.iter() {
            for _ in 0..max_rounds.max(1) {
                let (looked, deleted) = s.0.lock().sweep(now, SAMPLE);
                total += deleted;
                if looked == 0 || deleted * 4 <= looked {
                    break;
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &Value) -> &[u8] {
        match v {
            Value::Str(b) => b,
            _ => panic!("not a string"),
        }
    }

    #[test]
    fn insert_get_remove_keep_the_volatile_invariant() {
        let mut sh = Shard::default();
        sh.insert(b"a", Value::Str(Bytes::from_static(b"1")), 0);
        sh.insert(
            b"b",
            Value::Str(Bytes::from_static(b"2")),
            now_ms() + 100_000,
        );
        assert_eq!((sh.len(), sh.volatile_len()), (2, 1));
        assert_eq!(s(&sh.get(b"b").unwrap().value), b"2");
        // Overwrite without deadline drops it from the volatile set.
        sh.insert(b"b", Value::Int(3), 0);
        assert_eq!(sh.volatile_len(), 0);
        assert!(sh.set_expiry(b"a", now_ms() + 100_000));
        assert_eq!(sh.volatile_len(), 1);
        assert!(sh.set_expiry(b"a", 0));
        assert_eq!(sh.volatile_len(), 0);
        assert!(!sh.set_expiry(b"zz", 5));
        assert!(sh.remove(b"a"));
        assert!(!sh.remove(b"a"));
        assert_eq!(sh.len(), 1);
    }

    #[test]
    fn expired_keys_vanish_lazily_and_by_sweep() {
        let mut sh = Shard::default();
        let past = 1; // now_ms() is at least 1 and grows
        std::thread::sleep(std::time::Duration::from_millis(2));
        sh.insert(b"gone", Value::Int(1), past);
        assert!(sh.get(b"gone").is_none());
        assert_eq!((sh.len(), sh.volatile_len()), (0, 0));
        for i in 0..100u32 {
            let at = if i % 2 == 0 { past } else { now_ms() + 100_000 };
            sh.insert(&i.to_be_bytes(), Value::Int(i as i64), at);
        }
        let mut deleted = 0;
        for _ in 0..20 {
            deleted += sh.sweep(now_ms(), 20).1;
        }
        assert_eq!(deleted, 50);
        assert_eq!((sh.len(), sh.volatile_len()), (50, 50));
    }

    #[test]
    fn store_shards_and_sweeps() {
        let st = Store::new(10);
        assert_eq!(st.shard_count(), 16);
        for i in 0..1000u32 {
            st.shard(&i.to_be_bytes())
                .insert(&i.to_be_bytes(), Value::Int(0), 1);
        }
        let used = (0..1000u32)
            .map(|i| st.shard_of(&i.to_be_bytes()))
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(used.len(), 16, "keys spread over every shard");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut deleted = 0;
        for _ in 0..100 {
            deleted += st.sweep(16);
            if st.is_empty() {
                break;
            }
        }
        assert_eq!(deleted, 1000);
        assert_eq!(st.volatile_len(), 0);
    }

    #[test]
    fn lock_many_orders_and_maps() {
        let st = Store::new(16);
        let keys: Vec<[u8; 4]> = (0..50u32).map(|i| i.to_be_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let (guards, idx) = st.lock_many(&refs);
        assert!(guards.len() <= 16);
        assert_eq!(idx.len(), 50);
        assert!(idx.iter().all(|&i| i < guards.len()));
    }
}
