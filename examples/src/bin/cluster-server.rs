//! One instance of the cluster demo (`examples/bench/cluster-demo.sh`): an
//! `echo.Echo` server that registers itself in etcd under a prefix (a lease
//! kept alive in the background) and deregisters first thing in its
//! graceful shutdown, on SIGTERM or SIGINT. Killed with SIGKILL, it stays
//! registered until its lease expires — what clients must cope with.
//!
//! Built only with the etcd feature (its build needs `protoc`):
//!
//! ```text
//! cargo build --release -p ferropoll-examples --features ferropoll-rpc/etcd --bin cluster-server
//! cluster-server --addr 127.0.0.1:9261 --etcd http://127.0.0.1:2379 --prefix /ferropoll/demo/echo
//! ```
use std::io;
use std::time::Duration;

use clap::Parser;
use ferropoll_examples::pb::{EchoService, echo::EchoServer};
use ferropoll_rpc::cluster::{EtcdRegistrar, Instance};
use ferropoll_rpc::{Listener, Server};

/// echo.Echo server registered in etcd.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (host:port); also the address registered.
    #[arg(long, default_value = "127.0.0.1:9261")]
    addr: String,
    /// etcd endpoint (repeat for several).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: Vec<String>,
    /// Key prefix the instances register under.
    #[arg(long, default_value = "/ferropoll/demo/echo")]
    prefix: String,
    /// Lease TTL in seconds: how long a killed server stays registered.
    #[arg(long, default_value_t = 3)]
    ttl: u64,
    /// Instance weight.
    #[arg(long, default_value_t = Instance::DEFAULT_WEIGHT)]
    weight: u32,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    loops: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut builder = Server::builder();
    builder.num_loops(args.loops.max(1));
    builder.register(EchoServer::new(EchoService))?;
    let server = builder.build()?;
    let addr = server.listen(Listener::bind_tcp(&args.addr)?)?;
    let registrar = EtcdRegistrar::connect(args.etcd.iter().cloned(), &args.prefix)?
        .ttl(Duration::from_secs(args.ttl));
    let instance = Instance::new(addr.to_string()).with_weight(args.weight);
    let key = registrar.key_of(&instance);
    registrar.register_server(&server, instance)?;
    eprintln!("cluster-server: echo.Echo on {addr}, registered as {key}");

    // Wait for SIGTERM or SIGINT on a small runtime of its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        Ok::<(), io::Error>(())
    })?;
    eprintln!("cluster-server {addr}: deregistering and draining");
    server.shutdown(Duration::from_secs(5))?;
    eprintln!("cluster-server {addr}: stopped");
    Ok(())
}
