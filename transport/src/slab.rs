//! Registration keys: slab index + generation, never pointers.
//!
//! File descriptors are reused as soon as they are closed, so an epoll event
//! or a timer that outlives its connection must not reach the connection that
//! took the same descriptor (or the same slot) next. Each slot carries a
//! generation bumped on removal; a key is `generation << 32 | index`, and a
//! stale key simply finds nothing.

/// Keys at or above this value are reserved for the loop's own registrations
/// (waker, listeners); slab keys stay below because generations wrap at 2^31.
pub(crate) const RESERVED: u64 = 1 << 63;

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab of values addressed by generation-checked keys.
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        self.len += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[index as usize];
        e.value = Some(value);
        (u64::from(e.generation) << 32) | u64::from(index)
    }

    fn split(key: u64) -> (usize, u32) {
        ((key & 0xffff_ffff) as usize, (key >> 32) as u32)
    }

    /// The value under `key`, if the key is still current.
    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        let (i, g) = Self::split(key);
        let e = self.entries.get(i)?;
        if e.generation == g {
            e.value.as_ref()
        } else {
            None
        }
    }

    /// Removes and returns the value under `key`, if the key is still current.
    pub(crate) fn remove(&mut self, key: u64) -> Option<T> {
        let (i, g) = Self::split(key);
        let e = self.entries.get_mut(i)?;
        if e.generation != g {
            return None;
        }
        let v = e.value.take()?;
        e.generation = (e.generation + 1) & 0x7fff_ffff;
        self.free.push(i as u32);
        self.len -= 1;
        Some(v)
    }

    /// Keys of all stored values.
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| (u64::from(e.generation) << 32) | i as u64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_ne!(a, b, "a reused slot gets a new generation");
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
        assert!(b < RESERVED);
        assert_eq!(s.keys(), vec![b]);
    }
}
