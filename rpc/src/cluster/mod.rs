//! Scale-out: a [`Client`](crate::Client) over many instances of a service,
//! found through the infrastructure already in place.
//!
//! [`Client::cluster`](crate::Client::cluster) takes a [`Discover`] source
//! — a [`StaticDiscover`] list, DNS ([`DnsDiscover`], feature `dns`, on by
//! default: A/AAAA records of a name such as a Kubernetes headless service,
//! or its SRV records), or etcd (`EtcdDiscover`, feature `etcd`, fed by
//! servers that register themselves with an `EtcdRegistrar`) — and
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
//! Three servers on loopback behind a static list, called through a
//! generated stub:
//!
//! ```
//! # mod echo { include!(concat!(env!("OUT_DIR"), "/echo.rs")); }
//! use std::collections::BTreeSet;
//! use std::time::Duration;
//! use ferropoll_rpc::{Client, Context, Listener, RecvStream, SendSink, Server, Status};
//! use ferropoll_rpc::cluster::{RetryPolicy, StaticDiscover};
//! use echo::{Echo, EchoClient, EchoRequest, EchoResponse, EchoServer};
//!
//! /// Answers its own name, so that we can see who answered.
//! struct Named(&'static str);
//! impl Echo for Named {
//!     fn echo(&self, _ctx: &Context, _req: EchoRequest) -> Result<EchoResponse, Status> {
//!         Ok(EchoResponse { payload: bytes::Bytes::from_static(self.0.as_bytes()) })
//!     }
//!     fn echo_stream(&self, _: &Context, _: RecvStream<EchoRequest>, _: SendSink<EchoResponse>) -> Result<(), Status> {
//!         Err(Status::unimplemented("no streams here"))
//!     }
//! }
//!
//! let (mut servers, mut addrs) = (Vec::new(), Vec::new());
//! for name in ["a", "b", "c"] {
//!     let mut builder = Server::builder();
//!     builder.num_loops(1);
//!     builder.register(EchoServer::new(Named(name)))?;
//!     let server = builder.build()?;
//!     addrs.push(server.listen(Listener::bind_tcp("127.0.0.1:0")?)?.to_string());
//!     servers.push(server);
//! }
//!
//! // One client over the three; `echo.Echo` may be retried elsewhere.
//! let client = Client::cluster(StaticDiscover::from_addrs(addrs))
//!     .retry(RetryPolicy::new().idempotent_service("echo.Echo"))
//!     .build()?;
//! // The generated stub takes it like any client.
//! let echo = EchoClient::new(client.clone());
//! let mut answered = BTreeSet::new();
//! for _ in 0..6 {
//!     answered.insert(echo.echo(&EchoRequest::default())?.payload);
//! }
//! assert_eq!(answered.len(), 3, "round robin visits every instance");
//! for stats in client.cluster_stats().expect("a cluster client") {
//!     assert_eq!(stats.succeeded, 2);
//! }
//! for server in servers {
//!     server.shutdown(Duration::from_secs(1))?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With etcd (feature `etcd`), each server registers itself —
//! `EtcdRegistrar::connect(endpoints, "/services/echo")?.register_server(&server, instance)?`
//! keeps a lease alive and revokes it first thing in the server's graceful
//! shutdown — and clients watch the prefix:
//! `Client::cluster(EtcdDiscover::connect(endpoints, "/services/echo")?)`.
//! Both types carry a complete example.
//!
//! Every instance of one cluster client shares one client loop thread (and
//! the deadline timer on it); an instance is dialed by its first call.
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
pub use client::{ClusterBuilder, InstanceStats};
pub use discover::{Discover, Instance, InstanceSet, Snapshot, StaticDiscover};
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use dns::{DnsDiscover, DnsDiscoverBuilder};
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use etcd::{EtcdDiscover, EtcdRegistrar, Registration};
pub use health::HealthConfig;
pub use retry::{RetryBudget, RetryPolicy};
