//! Discovery through DNS, as a Kubernetes headless service answers it: a
//! name resolves to the addresses of every ready pod (A/AAAA records, one
//! port for all), or to SRV records naming each instance's host and port.
//!
//! The name is resolved once when the source is built (so that a client
//! starts with its instances), then again every interval on the internal
//! discovery runtime, bypassing the resolver's cache; each answer replaces
//! the [`InstanceSet`], whose version only moves when the set really
//! changed — so the cluster client applies the difference and keeps the
//! connections of the instances that stayed. A failed lookup (server down,
//! NXDOMAIN, no records) keeps the last good set and records the error: a
//! flapping name server must not empty the cluster. The resolver is
//! hickory's; the name servers are `/etc/resolv.conf`'s or given.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::task::JoinHandle;

use crate::cluster::discover::{Discover, Instance, InstanceSet};
use crate::cluster::runtime;
use crate::status::Status;

/// Configures a [`DnsDiscover`].
#[derive(Clone, Debug)]
pub struct DnsDiscoverBuilder {
    name: String,
    port: Option<u16>,
    srv: bool,
    name_servers: Vec<SocketAddr>,
    interval: Duration,
    timeout: Duration,
}

impl DnsDiscoverBuilder {
    /// The port of every instance found through A/AAAA records (required
    /// unless [`srv`](Self::srv)).
    pub fn port(&mut self, port: u16) -> &mut Self {
        self.port = Some(port);
        self
    }

    /// Looks up SRV records instead: each names an instance's host (whose
    /// A/AAAA records give its addresses) and port; its weight becomes the
    /// instance's weight.
    pub fn srv(&mut self) -> &mut Self {
        self.srv = true;
        self
    }

    /// Asks this name server (UDP, then TCP) instead of `/etc/resolv.conf`'s;
    /// call again to add more.
    pub fn name_server(&mut self, addr: SocketAddr) -> &mut Self {
        self.name_servers.push(addr);
        self
    }

    /// How often the name is resolved again (at least 10 ms). Default 5 s.
    pub fn interval(&mut self, d: Duration) -> &mut Self {
        self.interval = d;
        self
    }

    /// Longest wait for one resolution (at least 10 ms). Default 5 s.
    pub fn timeout(&mut self, d: Duration) -> &mut Self {
        self.timeout = d;
        self
    }

    /// Resolves the name once and starts re-resolving it.
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT without a port for A/AAAA lookups, with a name
    /// that is not a DNS name or an interval or timeout under 10 ms;
    /// UNAVAILABLE when the first lookup fails
    /// (the name server is unreachable, the name has no records) or the
    /// system configuration cannot be read.
    pub fn build(&mut self) -> Result<DnsDiscover, Status> {
        let min = Duration::from_millis(10);
        if self.interval < min || self.timeout < min {
            return Err(Status::invalid_argument(format!(
                "DnsDiscover interval ({:?}) and timeout ({:?}) must be at least {min:?}",
                self.interval, self.timeout
            )));
        }
        if !self.srv && self.port.is_none() {
            return Err(Status::invalid_argument(
                "DnsDiscover needs a port for A/AAAA lookups (or .srv())",
            ));
        }
        hickory_resolver::proto::rr::Name::from_utf8(&self.name)
            .map_err(|e| Status::invalid_argument(format!("bad DNS name {:?}: {e}", self.name)))?;
        let query = Arc::new(Query {
            name: self.name.clone(),
            port: self.port,
            srv: self.srv,
        });
        let (servers, timeout) = (self.name_servers.clone(), self.timeout);
        let resolver =
            runtime::block_on(async move { make_resolver(&servers, timeout) }, timeout)??;
        let set = Arc::new(InstanceSet::new());
        let first = {
            let (resolver, query) = (resolver.clone(), Arc::clone(&query));
            runtime::block_on(async move { query.resolve(&resolver).await }, timeout)?
        };
        set.update(first.map_err(Status::unavailable)?);
        let task = {
            let (set, query, interval) = (Arc::clone(&set), Arc::clone(&query), self.interval);
            let resolver = resolver.clone();
            runtime::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick is now: we just resolved
                loop {
                    tick.tick().await;
                    match tokio::time::timeout(timeout, query.resolve(&resolver)).await {
                        Ok(Ok(instances)) => {
                            if set.update(instances) {
                                tracing::debug!(name = %query.name, "DNS instances changed");
                            }
                        }
                        Ok(Err(e)) => set.set_error(e),
                        Err(_) => set.set_error(format!("DNS lookup timed out after {timeout:?}")),
                    }
                }
            })?
        };
        Ok(DnsDiscover {
            query,
            resolver,
            timeout,
            set,
            task,
        })
    }
}

fn make_resolver(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, Status> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| {
            Status::unavailable(format!("cannot read the system DNS configuration: {e}"))
        })?
    } else {
        let name_servers = servers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], name_servers),
            provider,
        )
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = timeout;
    opts.attempts = 1;
    builder
        .build()
        .map_err(|e| Status::unavailable(format!("cannot build the DNS resolver: {e}")))
}

/// What to look up.
#[derive(Debug)]
struct Query {
    name: String,
    port: Option<u16>,
    srv: bool,
}

impl Query {
    /// The instances the name stands for now (never from the cache).
    async fn resolve(&self, resolver: &TokioResolver) -> Result<Vec<Instance>, String> {
        resolver.clear_cache();
        let mut out = Vec::new();
        if self.srv {
            let lookup = resolver
                .srv_lookup(self.name.as_str())
                .await
                .map_err(|e| format!("SRV lookup of {}: {e}", self.name))?;
            for record in lookup.answers() {
                let RData::SRV(srv) = &record.data else {
                    continue;
                };
                // Addresses of the target from the additional section, or
                // looked up.
                let mut ips: Vec<IpAddr> = lookup
                    .additionals()
                    .iter()
                    .filter(|r| r.name == srv.target)
                    .filter_map(|r| r.data.ip_addr())
                    .collect();
                if ips.is_empty() {
                    ips = resolver
                        .lookup_ip(srv.target.clone())
                        .await
                        .map_err(|e| format!("lookup of SRV target {}: {e}", srv.target))?
                        .iter()
                        .collect();
                }
                for ip in ips {
                    out.push(
                        Instance::new(SocketAddr::new(ip, srv.port).to_string())
                            .with_weight(u32::from(srv.weight)),
                    );
                }
            }
        } else {
            let port = self.port.unwrap_or_default();
            let lookup = resolver
                .lookup_ip(self.name.as_str())
                .await
                .map_err(|e| format!("lookup of {}: {e}", self.name))?;
            out.extend(
                lookup
                    .iter()
                    .map(|ip| Instance::new(SocketAddr::new(ip, port).to_string())),
            );
        }
        if out.is_empty() {
            return Err(format!("{} has no records", self.name));
        }
        Ok(out)
    }
}

/// Instances from DNS; see the module docs.
///
/// ```no_run
/// use std::time::Duration;
/// use ferropoll_rpc::Client;
/// use ferropoll_rpc::cluster::DnsDiscover;
///
/// // A Kubernetes headless service: every ready pod's address, port 7000.
/// let pods = DnsDiscover::builder("kv.default.svc.cluster.local.")
///     .port(7000)
///     .interval(Duration::from_secs(5))
///     .build()?;
/// let client = Client::cluster(pods).build()?;
/// # let _ = client;
/// # Ok::<(), ferropoll_rpc::Status>(())
/// ```
pub struct DnsDiscover {
    query: Arc<Query>,
    resolver: TokioResolver,
    timeout: Duration,
    set: Arc<InstanceSet>,
    task: JoinHandle<()>,
}

impl fmt::Debug for DnsDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscover")
            .field("name", &self.query.name)
            .field("port", &self.query.port)
            .field("srv", &self.query.srv)
            .field("set", &self.set)
            .finish()
    }
}

impl DnsDiscover {
    /// A builder for `name` (a fully qualified name ends with a dot).
    pub fn builder(name: impl Into<String>) -> DnsDiscoverBuilder {
        DnsDiscoverBuilder {
            name: name.into(),
            port: None,
            srv: false,
            name_servers: Vec::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }

    /// Resolves the name now (outside the interval); returns whether the
    /// instances changed.
    ///
    /// # Errors
    ///
    /// UNAVAILABLE if the lookup fails (the instances are kept),
    /// DEADLINE_EXCEEDED after the timeout.
    pub fn resolve_now(&self) -> Result<bool, Status> {
        let (resolver, query) = (self.resolver.clone(), Arc::clone(&self.query));
        match runtime::block_on(async move { query.resolve(&resolver).await }, self.timeout)? {
            Ok(instances) => Ok(self.set.update(instances)),
            Err(e) => {
                self.set.set_error(e.clone());
                Err(Status::unavailable(e))
            }
        }
    }
}

impl Discover for DnsDiscover {
    fn instances(&self) -> &InstanceSet {
        &self.set
    }
}

impl Drop for DnsDiscover {
    fn drop(&mut self) {
        self.task.abort();
    }
}
