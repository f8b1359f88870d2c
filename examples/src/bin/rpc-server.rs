//! The ferropoll RPC server of the examples: `echo.Echo` and `kv.Kv`.
//!
//! ```text
//! rpc-server [--addr 127.0.0.1:9200] [--loops N] [--kv-pool] [--handlers sync|async]
//!            [--tokio-delay-ms N]
//! rpc-client --addr 127.0.0.1:9200 put greeting hello
//! ```

use clap::{Parser, ValueEnum};
use ferropoll_examples::pb::echo::{EchoAsyncServer, EchoServer};
use ferropoll_examples::pb::kv::{KvAsyncServer, KvServer};
use ferropoll_examples::pb::{DelayedEcho, EchoService, MemKv};
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
    /// Run the kv handlers on the worker pool instead of the loop threads
    /// (sync handlers only).
    #[arg(long)]
    kv_pool: bool,
    /// Serve every method through synchronous handlers (inline on the
    /// loop; streams on the pool) or async ones (polled on the loop).
    #[arg(long, value_enum, default_value_t = Handlers::Sync)]
    handlers: Handlers,
    /// With `--handlers async`: every echo answer first awaits a tokio
    /// timer of this many ms, run on a tokio runtime beside the server
    /// (an async handler calling a tokio-based library).
    #[arg(long)]
    tokio_delay_ms: Option<u64>,
}

/// Which handler form serves the methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Handlers {
    Sync,
    Async,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut builder = Server::builder();
    if let Some(n) = args.loops {
        builder = builder.num_loops(n);
    }
    match args.handlers {
        Handlers::Sync => {
            builder.register(EchoServer::new(EchoService))?;
            builder
                .register(KvServer::new(MemKv::default()))?
                .dispatch(if args.kv_pool {
                    Dispatch::Pool
                } else {
                    Dispatch::Inline
                });
        }
        Handlers::Async => {
            match args.tokio_delay_ms {
                Some(ms) => {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("rpc-server-tokio")
                        .enable_time()
                        .build()?;
                    builder.register(EchoAsyncServer::new(DelayedEcho {
                        rt: rt.handle().clone(),
                        delay: std::time::Duration::from_millis(ms),
                    }))?;
                    // Lives as long as the process.
                    std::mem::forget(rt);
                }
                None => {
                    builder.register(EchoAsyncServer::new(EchoService))?;
                }
            }
            builder.register(KvAsyncServer::new(MemKv::default()))?;
        }
    }
    if args.tokio_delay_ms.is_some() && args.handlers != Handlers::Async {
        return Err("--tokio-delay-ms needs --handlers async".into());
    }
    let server = builder.build()?;
    let listener = match args.addr.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Listener::bind_unix(path)?
        }
        None => Listener::bind_tcp(&args.addr)?,
    };
    eprintln!(
        "rpc-server: echo.Echo and kv.Kv on {} ({} loops, {:?} handlers)",
        listener.local_addr()?,
        server.event_loop().num_loops(),
        args.handlers
    );
    server.serve(listener)?;
    Ok(())
}
