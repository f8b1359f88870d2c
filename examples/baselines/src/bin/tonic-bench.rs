//! The tonic side of `rpc-bench`: the same closed-loop unary echo load (one
//! thread, `--concurrency` calls in flight, `--size`-byte payloads, every
//! response checked), driven by the same `ferropoll_examples::rpc_load`
//! driver, through the tonic client against `tonic-echo`. Ends with one
//! `key=value` line:
//!
//! ```text
//! tonic-bench --addr 127.0.0.1:9300 --concurrency 50 --size 128 --secs 5
//! ...
//! qps=.. p50_us=.. p99_us=.. p999_us=.. errors=.. total=.. secs=..
//! ```
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferropoll_baselines::echo as tn;
use ferropoll_examples::rpc_load::{self, LoadConfig, LoadProgress};

/// Unary echo gRPC load generator (tonic client).
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:9300")]
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
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
        .tcp_nodelay(true)
        .timeout(Duration::from_millis(args.timeout_ms));
    let report = rpc_load::run(&cfg, progress, move || {
        // The channel's connection task runs on the load's runtime.
        let client = tn::echo_client::EchoClient::new(endpoint.connect_lazy());
        move |payload| {
            let mut client = client.clone();
            async move {
                client
                    .echo(tn::EchoRequest { payload })
                    .await
                    .map(|r| r.into_inner().payload)
                    .map_err(|s| s.to_string())
            }
        }
    });
    if let Some(e) = &report.first_error {
        eprintln!("tonic-bench: first error: {e}");
    }
    println!(
        "{} concurrency={} size={} client=tonic",
        report.summary_line(),
        cfg.concurrency,
        cfg.size,
    );
    Ok(())
}
