//! Discovery through etcd (feature `etcd`): servers register themselves
//! under a key prefix, clients watch it.
//!
//! A server's [`Registration`] is one key, `<prefix>/<addr>`, whose value is
//! the instance as JSON (`{"addr":"127.0.0.1:7000","weight":10,"tags":{}}`,
//! the shape Kitex's and go-micro's etcd registries use), attached to a
//! lease of a few seconds that a background task keeps alive. A graceful
//! shutdown revokes the lease, which deletes the key at once; a server that
//! dies without saying so disappears when its lease expires. A lease that
//! expired anyway (the server was cut off from etcd longer than its TTL) is
//! granted anew and the key written again.
//!
//! An [`EtcdDiscover`] reads the prefix, then watches it from the next
//! revision: every put or delete updates its [`InstanceSet`]. When the
//! watch breaks (etcd restarted, the revision was compacted), it reads the
//! prefix again and watches from there, keeping the last set meanwhile.
//!
//! The etcd client is the `etcd-client` crate (tonic, on the internal
//! discovery runtime); the API here is blocking.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client as Etcd, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::cluster::discover::{Discover, Instance, InstanceSet};
use crate::cluster::runtime;
use crate::net_server::Server;
use crate::status::Status;

/// How long a blocking call to etcd may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// The JSON value of a registration key.
#[derive(Serialize, Deserialize)]
struct Value {
    addr: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    Instance::DEFAULT_WEIGHT
}

impl Value {
    fn of(i: &Instance) -> Value {
        Value {
            addr: i.addr().to_owned(),
            weight: i.weight(),
            tags: i.tags().clone(),
        }
    }

    fn into_instance(self) -> Instance {
        self.tags.into_iter().fold(
            Instance::new(self.addr).with_weight(self.weight),
            |i, (k, v)| i.with_tag(k, v),
        )
    }
}

/// `prefix` without trailing slashes, then one: the directory of the keys.
fn dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

async fn connect(endpoints: Vec<String>) -> Result<Etcd, Status> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(ETCD_TIMEOUT);
    let unreachable = |e: etcd_client::Error| {
        Status::unavailable(format!("cannot reach etcd at {endpoints:?}: {e}"))
    };
    let mut client = Etcd::connect(&endpoints, Some(options))
        .await
        .map_err(unreachable)?;
    // The channel may connect lazily: ask once, so that a wrong endpoint is
    // an error here rather than at the first registration.
    client.status().await.map_err(unreachable)?;
    Ok(client)
}

fn etcd_error(what: &str, e: etcd_client::Error) -> Status {
    Status::unavailable(format!("etcd {what}: {e}"))
}

// ------------------------------------------------------------ registrar ---

/// Registers servers under a key prefix; see the module docs.
///
/// ```no_run
/// use std::time::Duration;
/// use ferropoll_rpc::{Listener, Server};
/// use ferropoll_rpc::cluster::{EtcdRegistrar, Instance};
///
/// let server = Server::builder().build()?;
/// let addr = server.listen(Listener::bind_tcp("127.0.0.1:7000")?)?;
/// let registrar = EtcdRegistrar::connect(["http://127.0.0.1:2379"], "/services/kv")?
///     .ttl(Duration::from_secs(5));
/// let registration = registrar.register(Instance::new(addr.to_string()))?;
/// // Deregistered first thing when the server shuts down gracefully.
/// server.on_shutdown(move || drop(registration));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EtcdRegistrar {
    client: Etcd,
    prefix: String,
    ttl: Duration,
}

impl fmt::Debug for EtcdRegistrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistrar")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl EtcdRegistrar {
    /// Connects to etcd (`"http://host:port"` endpoints). Registrations live
    /// under `prefix`, with a 5 s lease by default.
    ///
    /// # Errors
    ///
    /// UNAVAILABLE if etcd cannot be reached.
    pub fn connect<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        prefix: &str,
    ) -> Result<EtcdRegistrar, Status> {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let client = runtime::block_on(connect(endpoints), ETCD_TIMEOUT)??;
        Ok(EtcdRegistrar {
            client,
            prefix: dir(prefix),
            ttl: Duration::from_secs(5),
        })
    }

    /// The lease TTL (whole seconds, at least 1): how long a dead server
    /// stays registered. The lease is renewed every third of it.
    #[must_use = "ttl returns the changed registrar"]
    pub fn ttl(mut self, ttl: Duration) -> EtcdRegistrar {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The key `instance` is registered under.
    pub fn key_of(&self, instance: &Instance) -> String {
        format!("{}{}", self.prefix, instance.addr())
    }

    /// Registers `server` as `instance` now and deregisters it first thing
    /// in its graceful [`shutdown`](Server::shutdown) (through
    /// [`Server::on_shutdown`]), so that clients move away while it still
    /// answers. If the server is dropped without a graceful shutdown, its
    /// pending hook is dropped, which deregisters it too.
    ///
    /// ```no_run
    /// use ferropoll_rpc::{Listener, Server};
    /// use ferropoll_rpc::cluster::{EtcdRegistrar, Instance};
    ///
    /// let server = Server::builder().build()?;
    /// let addr = server.listen(Listener::bind_tcp("127.0.0.1:7000")?)?;
    /// EtcdRegistrar::connect(["http://127.0.0.1:2379"], "/services/kv")?
    ///     .register_server(&server, Instance::new(addr.to_string()))?;
    /// // ... serve; then the key goes before the server stops taking calls:
    /// server.shutdown(std::time::Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register); nothing is hooked then.
    pub fn register_server(&self, server: &Server, instance: Instance) -> Result<(), Status> {
        let registration = self.register(instance)?;
        server.on_shutdown(move || {
            if let Err(e) = registration.deregister() {
                tracing::warn!("etcd deregistration at shutdown: {e}");
            }
        });
        Ok(())
    }

    /// Registers `instance` (under a new lease, kept alive in the
    /// background) until the [`Registration`] is dropped or deregistered.
    ///
    /// # Errors
    ///
    /// UNAVAILABLE if etcd refuses or cannot be reached.
    pub fn register(&self, instance: Instance) -> Result<Registration, Status> {
        let key = self.key_of(&instance);
        let value = serde_json::to_string(&Value::of(&instance))
            .map_err(|e| Status::internal(format!("cannot encode the registration: {e}")))?;
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut client = self.client.clone();
        let (k, v) = (key.clone(), value.clone());
        let lease = runtime::block_on(
            async move { put_with_lease(&mut client, &k, &v, ttl).await },
            ETCD_TIMEOUT,
        )??;
        let lease = Arc::new(std::sync::atomic::AtomicI64::new(lease));
        let task = {
            let (client, lease, key) = (self.client.clone(), Arc::clone(&lease), key.clone());
            runtime::spawn(keep_alive(client, key, value, ttl, lease))?
        };
        tracing::info!(%key, ttl, "registered in etcd");
        Ok(Registration {
            client: self.client.clone(),
            key,
            lease,
            task: Some(task),
        })
    }
}

/// Grants a lease and writes the key under it; returns the lease id.
async fn put_with_lease(
    client: &mut Etcd,
    key: &str,
    value: &str,
    ttl: i64,
) -> Result<i64, Status> {
    let lease = client
        .lease_grant(ttl, None)
        .await
        .map_err(|e| etcd_error("lease grant", e))?
        .id();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(|e| etcd_error("put", e))?;
    Ok(lease)
}

/// Renews the lease every third of its TTL; re-registers if it expired;
/// reconnects after errors.
async fn keep_alive(
    mut client: Etcd,
    key: String,
    value: String,
    ttl: i64,
    lease: Arc<std::sync::atomic::AtomicI64>,
) {
    use std::sync::atomic::Ordering;
    let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(1) * 1000 / 3);
    loop {
        let id = lease.load(Ordering::SeqCst);
        let result: Result<(), Status> = async {
            let (mut keeper, mut stream) = client
                .lease_keep_alive(id)
                .await
                .map_err(|e| etcd_error("keep-alive", e))?;
            loop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| etcd_error("keep-alive", e))?;
                match stream
                    .message()
                    .await
                    .map_err(|e| etcd_error("keep-alive", e))?
                {
                    Some(resp) if resp.ttl() > 0 => {}
                    _ => return Err(Status::not_found("lease expired")),
                }
                tokio::time::sleep(period).await;
            }
        }
        .await;
        let Err(status) = result else { continue };
        tracing::warn!(%key, "etcd registration: {status}; registering again");
        tokio::time::sleep(period.min(Duration::from_secs(1))).await;
        match put_with_lease(&mut client, &key, &value, ttl).await {
            Ok(new) => lease.store(new, Ordering::SeqCst),
            Err(e) => tracing::warn!(%key, "etcd registration failed: {e}"),
        }
    }
}

/// A live registration: the key exists while this lives. Dropping it
/// deregisters (revokes the lease, waiting up to 5 s for etcd);
/// [`deregister`](Registration::deregister) does the same and reports the
/// outcome.
pub struct Registration {
    client: Etcd,
    key: String,
    lease: Arc<std::sync::atomic::AtomicI64>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Registration {
    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops the keep-alive and revokes the lease (the key goes with it).
    ///
    /// # Errors
    ///
    /// UNAVAILABLE if etcd cannot be reached (the key then expires with
    /// its lease).
    pub fn deregister(mut self) -> Result<(), Status> {
        self.revoke()
    }

    /// Stops keeping the lease alive *without* revoking it: the key stays
    /// until the lease expires (its TTL), exactly as when the process dies
    /// without a word. For a process about to exit abruptly, and for tests
    /// of what clients see then.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            tracing::info!(key = %self.key, "etcd registration abandoned to its lease");
        }
    }

    fn revoke(&mut self) -> Result<(), Status> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        task.abort();
        let id = self.lease.load(std::sync::atomic::Ordering::SeqCst);
        let mut client = self.client.clone();
        let result = runtime::block_on(
            async move { client.lease_revoke(id).await.map(drop) },
            ETCD_TIMEOUT,
        )?;
        tracing::info!(key = %self.key, "deregistered from etcd");
        result.map_err(|e| etcd_error("lease revoke", e))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = self.revoke() {
            tracing::warn!(key = %self.key, "etcd deregistration: {e}");
        }
    }
}

// ------------------------------------------------------------- discover ---

/// Instances registered under an etcd prefix; see the module docs.
///
/// ```no_run
/// use ferropoll_rpc::Client;
/// use ferropoll_rpc::cluster::EtcdDiscover;
///
/// let kv = EtcdDiscover::connect(["http://127.0.0.1:2379"], "/services/kv")?;
/// let client = Client::cluster(kv).build()?;
/// # let _ = client;
/// # Ok::<(), ferropoll_rpc::Status>(())
/// ```
pub struct EtcdDiscover {
    prefix: String,
    set: Arc<InstanceSet>,
    task: JoinHandle<()>,
}

impl fmt::Debug for EtcdDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscover")
            .field("prefix", &self.prefix)
            .field("set", &self.set)
            .finish()
    }
}

/// The instances under `dir` now, and the revision they were read at.
async fn read_all(
    client: &mut Etcd,
    dir: &str,
) -> Result<(BTreeMap<Vec<u8>, Instance>, i64), Status> {
    let resp = client
        .get(dir, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| etcd_error("get", e))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut map = BTreeMap::new();
    for kv in resp.kvs() {
        if let Some(i) = parse(kv.key(), kv.value()) {
            map.insert(kv.key().to_vec(), i);
        }
    }
    Ok((map, revision))
}

fn parse(key: &[u8], value: &[u8]) -> Option<Instance> {
    match serde_json::from_slice::<Value>(value) {
        Ok(v) => Some(v.into_instance()),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), "skipping a bad registration: {e}");
            None
        }
    }
}

/// Watches `dir` from `revision + 1`, applying events to `map` and `set`;
/// returns when the watch ends (with why).
async fn watch(
    client: &mut Etcd,
    dir: &str,
    revision: i64,
    map: &mut BTreeMap<Vec<u8>, Instance>,
    set: &InstanceSet,
) -> Status {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = match client.watch(dir, Some(options)).await {
        Ok(s) => s,
        Err(e) => return etcd_error("watch", e),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Status::unavailable("etcd watch stream ended"),
            Err(e) => return etcd_error("watch", e),
        };
        if resp.canceled() {
            return Status::unavailable(format!(
                "etcd watch cancelled (compacted at revision {})",
                resp.compact_revision()
            ));
        }
        let mut changed = false;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Some(i) = parse(kv.key(), kv.value()) {
                        map.insert(kv.key().to_vec(), i);
                        changed = true;
                    }
                }
                EventType::Delete => changed |= map.remove(kv.key()).is_some(),
            }
        }
        if changed {
            set.update(map.values().cloned());
        }
    }
}

impl EtcdDiscover {
    /// Connects to etcd, reads the instances under `prefix` and starts
    /// watching it.
    ///
    /// # Errors
    ///
    /// UNAVAILABLE if etcd cannot be reached or read.
    pub fn connect<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        prefix: &str,
    ) -> Result<EtcdDiscover, Status> {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let dir = dir(prefix);
        let (mut client, map, revision) = {
            let dir = dir.clone();
            runtime::block_on(
                async move {
                    let mut client = connect(endpoints).await?;
                    let (map, revision) = read_all(&mut client, &dir).await?;
                    Ok::<_, Status>((client, map, revision))
                },
                ETCD_TIMEOUT,
            )??
        };
        let set = Arc::new(InstanceSet::new());
        set.update(map.values().cloned());
        let task = {
            let (set, dir) = (Arc::clone(&set), dir.clone());
            runtime::spawn(async move {
                let (mut map, mut revision) = (map, revision);
                loop {
                    let why = watch(&mut client, &dir, revision, &mut map, &set).await;
                    tracing::warn!(prefix = %dir, "{why}; reading the prefix again");
                    set.set_error(why.to_string());
                    // Resynchronise: read everything again, then watch on.
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        match read_all(&mut client, &dir).await {
                            Ok((m, r)) => {
                                (map, revision) = (m, r);
                                set.update(map.values().cloned());
                                break;
                            }
                            Err(e) => set.set_error(e.to_string()),
                        }
                    }
                }
            })?
        };
        Ok(EtcdDiscover {
            prefix: dir,
            set,
            task,
        })
    }
}

impl Discover for EtcdDiscover {
    fn instances(&self) -> &InstanceSet {
        &self.set
    }
}

impl Drop for EtcdDiscover {
    fn drop(&mut self) {
        self.task.abort();
    }
}
