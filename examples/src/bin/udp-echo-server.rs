//! The ferropoll UDP echo server: every datagram goes back to its sender.
//! Datagrams are received in `recvmmsg` batches and the replies of a batch
//! sent with one `sendmmsg`, those to one peer grouped as UDP GSO messages.
//!
//! ```text
//! udp-echo-server [--addr 127.0.0.1:9200] [--loops N] [--batch 32] [--reuseport] [--no-gso]
//! ```
use std::io;

use clap::Parser;
use ferropoll_transport::{EventLoop, handler_fn, udp_handler_fn};

/// UDP echo server on ferropoll-transport.
#[derive(Parser, Debug)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Event-loop threads (default: number of cores). Without
    /// `--reuseport` one socket is served by one loop.
    #[arg(long)]
    loops: Option<usize>,
    /// Datagrams per `recvmmsg` / `sendmmsg` (1 to 64).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// One SO_REUSEPORT socket per loop.
    #[arg(long)]
    reuseport: bool,
    /// Send every reply as its own datagram (no UDP GSO grouping).
    #[arg(long)]
    no_gso: bool,
}

fn main() -> io::Result<()> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut b = EventLoop::builder();
    b.name("udp-echo")
        .udp_batch(args.batch)
        .udp_gso(!args.no_gso)
        .reuse_port(args.reuseport);
    if let Some(n) = args.loops {
        b.num_loops(n);
    }
    // No TCP here: the connection handler is never called.
    let server = b.build(handler_fn(|_| Ok(())))?;
    let eps = server.bind_udp(
        &args.addr,
        udp_handler_fn(|data, peer, out| out.send_to(data, peer)),
    )?;
    eprintln!(
        "udp-echo-server: listening on {} ({} socket(s), {} loops, batch {}, gso {})",
        eps[0].local_addr(),
        eps.len(),
        server.num_loops(),
        args.batch,
        if args.no_gso { "off" } else { "on" }
    );
    server.wait();
    Ok(())
}
