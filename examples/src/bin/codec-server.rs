//! A length-field framed echo server on several loops (gnet's v1 codec
//! example, multi-core): each frame (u32 big-endian length + body) comes
//! back as it was; an oversized or malformed frame closes its connection.
//!
//! ```text
//! codec-server [--addr 127.0.0.1:9000] [--loops N] [--reuseport] [--max-frame BYTES]
//! codec-client --addr 127.0.0.1:9000          # received: hello / received: world
//! ```
//!
//! With `--reuseport` every loop binds its own `SO_REUSEPORT` socket and
//! accepts on it (see `examples/bench/accept-compare.sh`).
use std::io;

use clap::Parser;
use ferropoll_examples::codec::{MAX_FRAME, codec, echo_frames};
use ferropoll_transport::{EventLoop, handler_fn};

/// Length-field framed echo server.
#[derive(Parser, Debug)]
struct Args {
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Event-loop threads (default: number of cores).
    #[arg(long)]
    loops: Option<usize>,
    /// One SO_REUSEPORT listening socket per loop.
    #[arg(long)]
    reuseport: bool,
    /// Largest frame accepted, header included.
    #[arg(long, default_value_t = MAX_FRAME)]
    max_frame: usize,
}

fn main() -> io::Result<()> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let codec = codec(args.max_frame);
    let mut b = EventLoop::builder();
    b.name("codec").reuse_port(args.reuseport);
    if let Some(n) = args.loops {
        b.num_loops(n);
    }
    let server = b.build(handler_fn(move |conn| echo_frames(&codec, conn)))?;
    let addr = server.listen_tcp(&args.addr)?;
    eprintln!(
        "codec-server: listening on {addr} ({} loops{})",
        server.num_loops(),
        if args.reuseport {
            ", SO_REUSEPORT per loop"
        } else {
            ""
        }
    );
    server.wait();
    Ok(())
}
