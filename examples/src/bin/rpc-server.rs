//! The ferropoll RPC server of the examples: `echo.Echo` and `kv.Kv`.
//!
//! ```text
//! rpc-server [--addr 127.0.0.1:9200] [--loops N] [--kv-pool]
//! rpc-client --addr 127.0.0.1:9200 put greeting hello
//! ```

use clap::Parser;
use ferropoll_examples::pb::{EchoService, MemKv, echo::EchoServer, kv::KvServer};
use ferropoll_rpc::{Dispatch, Listener, Server};

/// RPC server serving echo.Echo and kv.Kv.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Event-loop threads (default: number of cores).
    #[arg(long)]
    loops: Option<usize>,
    /// Run the kv handlers on the worker pool instead of the loop threads.
    #[arg(long)]
    kv_pool: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut builder = Server::builder();
    if let Some(n) = args.loops {
        builder = builder.num_loops(n);
    }
    builder.register(EchoServer::new(EchoService))?;
    builder
        .register(KvServer::new(MemKv::default()))?
        .dispatch(if args.kv_pool {
            Dispatch::Pool
        } else {
            Dispatch::Inline
        });
    let server = builder.build()?;
    let listener = match args.addr.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Listener::bind_unix(path)?
        }
        None => Listener::bind_tcp(&args.addr)?,
    };
    eprintln!(
        "rpc-server: echo.Echo and kv.Kv on {} ({} loops)",
        listener.local_addr()?,
        server.event_loop().num_loops()
    );
    server.serve(listener)?;
    Ok(())
}
