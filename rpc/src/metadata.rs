//! Key/value metadata carried by requests and statuses.

use std::fmt;

/// One metadata entry; on the wire an entry of `map<string, string>`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct MetadataEntry {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Ordered key/value pairs. An empty `Metadata` does not allocate; lookups
/// scan (metadata is small: at most [`crate::Limits::max_metadata_entries`]
/// entries arrive). With duplicate keys, [`get`](Metadata::get) returns the
/// last one, as a protobuf map would.
///
/// ```
/// use ferropoll_rpc::Metadata;
/// let mut m = Metadata::new();
/// m.insert("tenant", "a");
/// m.insert("tenant", "b");
/// assert_eq!(m.get("tenant"), Some("b"));
/// assert_eq!(m.len(), 1);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<MetadataEntry>,
}

impl Metadata {
    /// Empty metadata.
    pub const fn new() -> Metadata {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Metadata holding `entries` as they are (wire order, duplicates kept).
    pub fn from_entries(entries: Vec<MetadataEntry>) -> Metadata {
        Metadata { entries }
    }

    /// The entries in order.
    pub fn entries(&self) -> &[MetadataEntry] {
        &self.entries
    }

    /// Gives the entries back.
    pub fn into_entries(self) -> Vec<MetadataEntry> {
        self.entries
    }

    /// Sets `key` to `value`, replacing every earlier entry of that key.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        self.entries.retain(|e| e.key != key);
        self.entries.push(MetadataEntry {
            key,
            value: value.into(),
        });
    }

    /// The value of `key` (the last one with duplicates).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// Removes every entry of `key`; returns the value `get` would have returned.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.entries.iter().rposition(|e| e.key == key)?;
        let value = self.entries.swap_remove(pos).value;
        self.entries.retain(|e| e.key != key);
        Some(value)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(key, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_duplicate_wins_and_remove_clears_all() {
        let mut m = Metadata::from_entries(vec![
            MetadataEntry {
                key: "a".into(),
                value: "1".into(),
            },
            MetadataEntry {
                key: "b".into(),
                value: "2".into(),
            },
            MetadataEntry {
                key: "a".into(),
                value: "3".into(),
            },
        ]);
        assert_eq!(m.get("a"), Some("3"));
        assert_eq!(m.get("c"), None);
        assert_eq!(m.remove("a"), Some("3".to_owned()));
        assert_eq!(m.get("a"), None);
        assert_eq!(m.len(), 1);
        assert_eq!(format!("{m:?}"), r#"{"b": "2"}"#);
    }

    #[test]
    fn collect() {
        let m: Metadata = [("x", "1"), ("y", "2")].into_iter().collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![("x", "1"), ("y", "2")]);
    }
}
