//! The ferropoll echo server.
//!
//! ```text
//! echo-server [--addr 127.0.0.1:9000] [--loops N] [--dispatch inline|pool]
//! echo -e "dddd" | nc 127.0.0.1 9000     # prints dddd
//! ```
use std::io;

use clap::{Parser, ValueEnum};
use ferropoll_transport::{Dispatch, EventLoop, Listener, handler_fn};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Inline,
    Pool,
}

/// Echo server on ferropoll-transport.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Event-loop threads (default: number of cores).
    #[arg(long)]
    loops: Option<usize>,
    /// Where the handler runs.
    #[arg(long, value_enum, default_value = "inline")]
    dispatch: Mode,
}

fn main() -> io::Result<()> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut b = EventLoop::builder();
    b.name("echo");
    if let Some(n) = args.loops {
        b.num_loops(n);
    }
    b.dispatch(match args.dispatch {
        Mode::Inline => Dispatch::Inline,
        Mode::Pool => Dispatch::Pool,
    });
    let server = b.build(handler_fn(ferropoll_examples::echo::echo))?;
    let listener = match args.addr.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Listener::bind_unix(path)?
        }
        None => Listener::bind_tcp(&args.addr)?,
    };
    eprintln!(
        "echo-server: listening on {} ({} loops, {:?} dispatch)",
        listener.local_addr()?,
        server.num_loops(),
        args.dispatch
    );
    server.serve(listener)
}
