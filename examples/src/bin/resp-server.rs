//! A Redis-protocol (RESP2) server on ferropoll.
//!
//! ```text
//! resp-server [--addr 127.0.0.1:6380] [--loops N]
//! redis-cli -p 6380 set k v        # OK
//! redis-benchmark -p 6380 -t set,get -P 16 -q
//! ```
use std::io;

use clap::Parser;

/// Redis-protocol server on ferropoll-transport.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (host:port).
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: String,
    /// Event-loop threads (default: number of cores).
    #[arg(long)]
    loops: Option<usize>,
    /// Store shards (default: a power of two ≥ max(4 × loops, 16)).
    #[arg(long)]
    shards: Option<usize>,
}

fn main() -> io::Result<()> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut b = ferropoll_examples::resp::Builder::new();
    if let Some(n) = args.loops {
        b.loops(n);
    }
    if let Some(n) = args.shards {
        b.shards(n);
    }
    let server = b.start(&args.addr)?;
    eprintln!(
        "resp-server: listening on {} ({} shards)",
        server.local_addr(),
        server.store().shard_count()
    );
    loop {
        std::thread::park();
    }
}
