//! Scale-out: a [`Client`](crate::Client) over many instances of a service,
//! found through the infrastructure already in place.
//!
//! [`Client::cluster`](crate::Client::cluster) takes a [`Discover`] source
//! — a [`StaticDiscover`] list, DNS ([`DnsDiscover`], feature `dns`, on by
//! default: A/AAAA records of a name such as a Kubernetes headless service,
//! or its SRV records), or etcd ([`EtcdDiscover`], feature `etcd`, fed by
//! servers that register themselves with an [`EtcdRegistrar`]) — and
//! returns an ordinary `Client`: the generated stubs (`KvClient::new`)
//! take it unchanged.
//!
//! How a call goes:
//!
//! 1. The instance set is refreshed if the source's version moved (one
//!    atomic load per call; the client loop's health timer also applies
//!    changes). Instances still present keep their connections.
//! 2. The [`Balancer`] picks among the *available* instances — not
//!    ejected by the health checks ([`HealthConfig`]), their
//!    [`CircuitBreaker`] not open, not already tried by this call:
//!    [`RoundRobin`], [`WeightedRandom`], [`PowerOfTwoChoices`] on calls in
//!    flight, or [`ConsistentHash`] on
//!    [`CallOptions::with_hash_key`](crate::CallOptions::with_hash_key).
//! 3. The request goes out on that instance's multiplexed connection, as
//!    with a single-server client. If it cannot leave (dial refused), the
//!    instance is ejected and the call moves on at once; if the answer is
//!    UNAVAILABLE and the method is idempotent, it is retried elsewhere
//!    within the [`RetryPolicy`]'s attempts, the deadline and the
//!    [`RetryBudget`] (see the [`retry`](RetryPolicy) docs).
//! 4. The outcome feeds the instance's circuit breaker and counters
//!    ([`Client::cluster_stats`](crate::Client::cluster_stats)).
//!
//! Every instance of one cluster client shares one client loop thread (and
//! one deadline timer thread); an instance is dialed by its first call.
//! DNS and etcd run on one small internal tokio runtime thread, started by
//! the first source that needs it; the public API stays blocking and
//! runtime-agnostic, like the rest of the crate.

mod balancer;
mod breaker;
mod client;
mod discover;
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod health;
mod retry;
#[cfg(any(feature = "dns", feature = "etcd"))]
mod runtime;

pub use balancer::{
    Balancer, ConsistentHash, Endpoints, PowerOfTwoChoices, RoundRobin, WeightedRandom, hash_bytes,
};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, is_instance_failure};
pub(crate) use client::ClusterCore;
pub use client::{ClusterBuilder, InstanceStats};
pub use discover::{Discover, Instance, InstanceSet, Snapshot, StaticDiscover};
#[cfg(feature = "dns")]
pub use dns::{DnsDiscover, DnsDiscoverBuilder};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdDiscover, EtcdRegistrar, Registration};
pub use health::HealthConfig;
pub use retry::{RetryBudget, RetryPolicy};
