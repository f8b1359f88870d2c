//! Instances of a service and where they come from: the [`Discover`]
//! trait, the [`InstanceSet`] every source keeps current, and the static
//! list.
//!
//! A source never hands a client an event stream to interpret: it keeps
//! one [`InstanceSet`] up to date (replacing the whole list), the set bumps
//! its version when the contents really changed, and readers compare
//! versions — one atomic load on the call path — and apply the difference
//! themselves. Waiting for a change is a condition variable with a bound.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// One instance of a service: where it listens, its weight, its tags.
///
/// ```
/// use ferropoll_rpc::cluster::Instance;
/// let i = Instance::new("127.0.0.1:7000").with_weight(20).with_tag("zone", "a");
/// assert_eq!(i.addr(), "127.0.0.1:7000");
/// assert_eq!(i.weight(), 20);
/// assert_eq!(i.tag("zone"), Some("a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    addr: String,
    weight: u32,
    tags: BTreeMap<String, String>,
}

impl Instance {
    /// The default weight.
    pub const DEFAULT_WEIGHT: u32 = 10;

    /// An instance at `addr` (`"host:port"` or `"unix:/path"`, as for
    /// [`Client::connect`](crate::Client::connect)), weight
    /// [`DEFAULT_WEIGHT`](Self::DEFAULT_WEIGHT), no tags.
    pub fn new(addr: impl Into<String>) -> Instance {
        Instance {
            addr: addr.into(),
            weight: Self::DEFAULT_WEIGHT,
            tags: BTreeMap::new(),
        }
    }

    /// Sets the weight (at least 1: a weight of 0 becomes 1; remove an
    /// instance from the set to take it out).
    #[must_use = "with_weight returns the changed instance"]
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight.max(1);
        self
    }

    /// Adds a tag.
    #[must_use = "with_tag returns the changed instance"]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The weight (≥ 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// All tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// A version of an [`InstanceSet`]: its instances, sorted by address, one
/// per address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    version: u64,
    instances: Arc<[Instance]>,
}

impl Snapshot {
    /// The version: it grows each time the contents change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The instances, sorted by address.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The instances, shared.
    pub fn shared(&self) -> &Arc<[Instance]> {
        &self.instances
    }
}

struct SetState {
    snapshot: Snapshot,
    last_error: Option<String>,
}

/// The current instances of a service as one source sees them, with a
/// version counter and a bounded wait for changes. Every [`Discover`]
/// implementation keeps one.
///
/// ```
/// use std::time::Duration;
/// use ferropoll_rpc::cluster::{Instance, InstanceSet};
///
/// let set = InstanceSet::new();
/// assert!(set.update(vec![Instance::new("127.0.0.1:2"), Instance::new("127.0.0.1:1")]));
/// // the same contents again: no new version
/// assert!(!set.update(vec![Instance::new("127.0.0.1:1"), Instance::new("127.0.0.1:2")]));
/// let s = set.snapshot();
/// assert_eq!(s.version(), 1);
/// assert_eq!(s.instances()[0].addr(), "127.0.0.1:1");
/// // nothing changes within 10 ms
/// assert!(set.wait_for_change(1, Duration::from_millis(10)).is_none());
/// ```
pub struct InstanceSet {
    state: Mutex<SetState>,
    changed: Condvar,
    version: AtomicU64,
}

impl fmt::Debug for InstanceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("InstanceSet")
            .field("version", &s.snapshot.version)
            .field("instances", &s.snapshot.instances)
            .field("last_error", &s.last_error)
            .finish()
    }
}

impl Default for InstanceSet {
    fn default() -> Self {
        InstanceSet::new()
    }
}

impl InstanceSet {
    /// An empty set at version 0.
    pub fn new() -> InstanceSet {
        InstanceSet {
            state: Mutex::new(SetState {
                snapshot: Snapshot {
                    version: 0,
                    instances: Arc::from(Vec::new()),
                },
                last_error: None,
            }),
            changed: Condvar::new(),
            version: AtomicU64::new(0),
        }
    }

    /// Replaces the instances. They are sorted by address; of several with
    /// one address the last wins. Returns whether the contents changed
    /// (then the version grew and waiters were woken). Clears the last
    /// error.
    pub fn update(&self, instances: impl IntoIterator<Item = Instance>) -> bool {
        let mut by_addr: BTreeMap<String, Instance> = BTreeMap::new();
        for i in instances {
            by_addr.insert(i.addr.clone(), i);
        }
        let list: Vec<Instance> = by_addr.into_values().collect();
        let mut s = self.state.lock();
        s.last_error = None;
        if s.snapshot.instances[..] == list[..] {
            return false;
        }
        let version = s.snapshot.version + 1;
        s.snapshot = Snapshot {
            version,
            instances: Arc::from(list),
        };
        self.version.store(version, Ordering::Release);
        drop(s);
        self.changed.notify_all();
        true
    }

    /// Records that the source failed to refresh (the instances stay as
    /// they were: a name server that is down must not empty a cluster).
    pub fn set_error(&self, error: impl Into<String>) {
        self.state.lock().last_error = Some(error.into());
    }

    /// The last refresh error, if the last refresh failed.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().last_error.clone()
    }

    /// The current version (one atomic load).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current instances.
    pub fn snapshot(&self) -> Snapshot {
        self.state.lock().snapshot.clone()
    }

    /// Waits until the version is past `seen` (returns the new snapshot)
    /// or `timeout` passes (returns `None`).
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> Option<Snapshot> {
        let end = Instant::now() + timeout;
        let mut s = self.state.lock();
        while s.snapshot.version <= seen {
            if self.changed.wait_until(&mut s, end).timed_out() {
                break;
            }
        }
        (s.snapshot.version > seen).then(|| s.snapshot.clone())
    }
}

/// A source of instances: a static list ([`StaticDiscover`]), DNS
/// ([`DnsDiscover`](crate::cluster::DnsDiscover), feature `dns`), etcd
/// (`EtcdDiscover`, feature `etcd`), or
/// your own — keep an [`InstanceSet`] current and return it.
///
/// ```
/// use ferropoll_rpc::cluster::{Discover, Instance, InstanceSet};
///
/// /// A source fed by hand (say, from a config file watcher).
/// #[derive(Debug, Default)]
/// struct Manual(InstanceSet);
/// impl Discover for Manual {
///     fn instances(&self) -> &InstanceSet { &self.0 }
/// }
///
/// let m = Manual::default();
/// m.0.update([Instance::new("127.0.0.1:1")]);
/// assert_eq!(m.instances().snapshot().instances().len(), 1);
/// ```
pub trait Discover: Send + Sync + fmt::Debug + 'static {
    /// The set this source keeps current.
    fn instances(&self) -> &InstanceSet;
}

impl<D: Discover + ?Sized> Discover for Arc<D> {
    fn instances(&self) -> &InstanceSet {
        (**self).instances()
    }
}

/// A fixed list of instances (which may still be replaced by hand with
/// [`set`](StaticDiscover::set)).
///
/// ```
/// use ferropoll_rpc::cluster::{Discover, StaticDiscover};
/// let d = StaticDiscover::from_addrs(["127.0.0.1:7001", "127.0.0.1:7002"]);
/// assert_eq!(d.instances().snapshot().instances().len(), 2);
/// ```
#[derive(Debug)]
pub struct StaticDiscover {
    set: InstanceSet,
}

impl StaticDiscover {
    /// A source of exactly `instances`.
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> StaticDiscover {
        let set = InstanceSet::new();
        set.update(instances);
        StaticDiscover { set }
    }

    /// A source of these addresses, each with the default weight.
    pub fn from_addrs<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> StaticDiscover {
        StaticDiscover::new(addrs.into_iter().map(Instance::new))
    }

    /// Replaces the list; returns whether it changed.
    pub fn set(&self, instances: impl IntoIterator<Item = Instance>) -> bool {
        self.set.update(instances)
    }
}

impl Discover for StaticDiscover {
    fn instances(&self) -> &InstanceSet {
        &self.set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_sorts_dedups_and_versions() {
        let set = InstanceSet::new();
        assert_eq!(set.version(), 0);
        assert!(set.update([
            Instance::new("b:1"),
            Instance::new("a:1").with_weight(3),
            Instance::new("a:1").with_weight(5),
        ]));
        let s = set.snapshot();
        assert_eq!(s.version(), 1);
        let addrs: Vec<&str> = s.instances().iter().map(Instance::addr).collect();
        assert_eq!(addrs, ["a:1", "b:1"]);
        assert_eq!(s.instances()[0].weight(), 5, "the last of one address wins");
        assert!(!set.update([Instance::new("b:1"), Instance::new("a:1").with_weight(5)]));
        assert_eq!(set.version(), 1);
        // A weight change is a change.
        assert!(set.update([Instance::new("b:1"), Instance::new("a:1")]));
        assert_eq!(set.version(), 2);
    }

    #[test]
    fn errors_keep_the_instances() {
        let set = InstanceSet::new();
        set.update([Instance::new("a:1")]);
        set.set_error("name server down");
        assert_eq!(set.last_error().as_deref(), Some("name server down"));
        assert_eq!(set.snapshot().instances().len(), 1);
        set.update([Instance::new("a:1")]);
        assert_eq!(set.last_error(), None);
    }

    #[test]
    fn wait_for_change_wakes_on_update() {
        let set = Arc::new(InstanceSet::new());
        let waiter = {
            let set = Arc::clone(&set);
            std::thread::spawn(move || set.wait_for_change(0, Duration::from_secs(10)))
        };
        set.update([Instance::new("a:1")]);
        let got = waiter.join().unwrap().expect("woken by the update");
        assert_eq!(got.version(), 1);
    }

    #[test]
    fn weight_zero_becomes_one() {
        assert_eq!(Instance::new("a:1").with_weight(0).weight(), 1);
    }
}
