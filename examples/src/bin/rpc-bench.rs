//! Closed-loop unary echo load against `rpc-server`, from one thread:
//! `--concurrency` calls in flight, each payload `--size` bytes, for `--secs`
//! after `--warmup`. Every response is checked. (`tonic-bench`, in the
//! `ferropoll-baselines` crate, runs the same driver with the tonic client.)
//! Ends with one `key=value` line:
//!
//! ```text
//! rpc-bench --addr 127.0.0.1:9200 --concurrency 50 --size 128 --secs 5
//! ...
//! qps=.. p50_us=.. p99_us=.. p999_us=.. errors=.. total=.. secs=..
//! ```
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferropoll_examples::pb::echo as fp;
use ferropoll_examples::rpc_load::{self, LoadConfig, LoadProgress};
use ferropoll_rpc::{CallOptions, Client, ClientOptions};

/// Unary echo RPC load generator.
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Multiplexed connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cfg = LoadConfig {
        concurrency: args.concurrency.max(1),
        size: args.size,
        duration: Duration::from_secs_f64(args.secs),
        warmup: Duration::from_secs_f64(args.warmup),
    };
    let progress = Arc::new(LoadProgress::default());
    let timeout = Duration::from_millis(args.timeout_ms);
    let client = Client::connect(
        &args.addr,
        ClientOptions {
            connections: args.connections,
            ..ClientOptions::default()
        },
    )?;
    let echo = fp::EchoClient::new(client);
    let opts = CallOptions::new().with_timeout(timeout);
    let report = rpc_load::run(&cfg, progress, move || {
        move |payload| {
            let call = echo.echo_async_with(&fp::EchoRequest { payload }, &opts);
            async move { call.await.map(|r| r.payload).map_err(|s| s.to_string()) }
        }
    });
    if let Some(e) = &report.first_error {
        eprintln!("rpc-bench: first error: {e}");
    }
    println!(
        "{} concurrency={} size={} client=ferropoll",
        report.summary_line(),
        cfg.concurrency,
        cfg.size,
    );
    Ok(())
}
