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

use clap::Parser;
use ferropoll_baselines::echo as tn;
use ferropoll_examples::rpc_load::{self, LoadArgs, LoadProgress};

/// Unary echo gRPC load generator (tonic client).
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:9300")]
    addr: String,
    #[command(flatten)]
    load: LoadArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cfg = args.load.config();
    let progress = Arc::new(LoadProgress::default());
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
        .tcp_nodelay(true)
        .timeout(args.load.timeout());
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
    report.print("tonic-bench", &cfg, "tonic");
    Ok(())
}
