//! UDP echo load generator: `--flows` dialed sockets each keep `--window`
//! datagrams of `--size` bytes in flight against an echo server, check
//! every echo, count losses, print progress on stderr and end with one
//! `key=value` line:
//!
//! ```text
//! dgrams_per_s=... lost=... replies=... total_replies=... total_sent=... late=... errors=...
//! ```
//!
//! (`total_replies` covers the warm-up too, for server CPU per datagram
//! measured around the whole run.) The load runs on one ferropoll client
//! loop with batched sends and receives; see `ferropoll_examples::udp_load`.
use std::io;
use std::net::ToSocketAddrs;
use std::time::Duration;

use clap::Parser;
use ferropoll_examples::udp_load::{LoadConfig, run};

/// UDP echo load generator.
#[derive(Parser, Debug)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Client sockets.
    #[arg(long, default_value_t = 8)]
    flows: usize,
    /// Datagrams in flight per socket.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Datagram size in bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// A socket with no echo for this long counts its in-flight datagrams lost.
    #[arg(long, default_value_t = 200)]
    loss_timeout_ms: u64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let addr = args
        .addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let report = run(
        &LoadConfig {
            addr,
            flows: args.flows,
            window: args.window,
            size: args.size,
            warmup: Duration::from_secs_f64(args.warmup),
            secs: Duration::from_secs_f64(args.secs),
            loss_timeout: Duration::from_millis(args.loss_timeout_ms),
        },
        !args.quiet,
    )?;
    println!("{}", report.line());
    Ok(())
}
