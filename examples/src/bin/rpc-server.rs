//! The ferropoll RPC server of the examples: `echo.Echo` and `kv.Kv`, over
//! ferropoll's protocol and over gRPC (HTTP/2 cleartext) on the same port,
//! with the standard health service (`grpc.health.v1.Health`).
//!
//! ```text
//! rpc-server [--addr 127.0.0.1:9200] [--loops N] [--kv-pool] [--handlers sync|async]
//!            [--tokio-delay-ms N] [--metrics-addr ADDR] [--trace] [--method-limit N]
//! rpc-client --addr 127.0.0.1:9200 put greeting hello
//! ```

use clap::{Parser, ValueEnum};
use ferropoll_examples::pb::echo::{EchoAsyncServer, EchoServer};
use ferropoll_examples::pb::kv::{KvAsyncServer, KvServer};
use ferropoll_examples::pb::{DelayedEcho, EchoService, MemKv};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ferropoll_rpc::intercept::{ConcurrencyLimit, TracingInterceptor};
use ferropoll_rpc::{Dispatch, Listener, MetricsInterceptor, Server};

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
    /// Count calls (by method and status), calls in flight and latencies,
    /// and serve them in the Prometheus text format at
    /// `http://ADDR/metrics` (port 0: any; the address is printed).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// A tracing span per call (at DEBUG: shown with `RUST_LOG=debug`),
    /// continuing the caller's W3C `traceparent`.
    #[arg(long)]
    trace: bool,
    /// Answer RESOURCE_EXHAUSTED beyond this many calls in flight per
    /// method.
    #[arg(long)]
    method_limit: Option<usize>,
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
    // grpc.health.v1.Health: SERVING for each service, NOT_SERVING on shutdown.
    builder.health();
    if let Some(n) = args.loops {
        builder.num_loops(n);
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
    // Metrics first, so that they count the calls the others reject.
    let metrics = args
        .metrics_addr
        .as_ref()
        .map(|_| Arc::new(MetricsInterceptor::new()));
    if let Some(metrics) = &metrics {
        builder.intercept_arc(metrics.clone());
    }
    if args.trace {
        builder.intercept(TracingInterceptor::new());
    }
    if let Some(n) = args.method_limit {
        builder.intercept(ConcurrencyLimit::new().default_limit(n));
    }
    if let (Some(addr), Some(metrics)) = (&args.metrics_addr, metrics) {
        let listener = std::net::TcpListener::bind(addr)?;
        eprintln!(
            "rpc-server: metrics on http://{}/metrics",
            listener.local_addr()?
        );
        std::thread::Builder::new()
            .name("rpc-server-metrics".into())
            .spawn(move || serve_metrics(&listener, &metrics))?;
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

/// Answers `GET /metrics` with the metrics, anything else with 404, one
/// request per connection.
fn serve_metrics(listener: &std::net::TcpListener, metrics: &MetricsInterceptor) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        // The request head, up to 8 KiB.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (status, kind, body) = if head.starts_with(b"GET /metrics ") {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain",
                "not found: try /metrics\n".to_owned(),
            )
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
