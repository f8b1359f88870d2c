//! Closed-loop echo load against `rpc-server`, from one thread:
//! `--concurrency` calls in flight, each payload `--size` bytes, for `--secs`
//! after `--warmup`. Every response is checked. With `--stream`, each caller
//! keeps one message in flight on a bidi `EchoStream` stream of its own
//! (all on one connection) and `qps` counts messages. (`tonic-bench`, in the
//! `ferropoll-baselines` crate, runs the same driver with the tonic client.)
//! Ends with one `key=value` line:
//!
//! ```text
//! rpc-bench --addr 127.0.0.1:9200 --concurrency 50 --size 128 --secs 5
//! ...
//! qps=.. p50_us=.. p99_us=.. p999_us=.. errors=.. total=.. secs=..
//! ```
use std::rc::Rc;
use std::sync::Arc;

use clap::Parser;
use ferropoll_examples::pb::echo as fp;
use ferropoll_examples::rpc_load::{self, LoadArgs, LoadProgress, PerCaller};
use ferropoll_rpc::{CallOptions, Client, ClientOptions};

/// Echo RPC load generator (unary, or bidi streams with `--stream`).
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Multiplexed connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[command(flatten)]
    load: LoadArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cfg = args.load.config();
    let progress = Arc::new(LoadProgress::default());
    let client = Client::connect(
        &args.addr,
        ClientOptions {
            connections: args.connections,
            ..ClientOptions::default()
        },
    )?;
    let echo = fp::EchoClient::new(client);
    let opts = CallOptions::new().with_timeout(args.load.timeout());
    let report = if cfg.stream {
        // One bidi EchoStream per caller, one message in flight on each.
        let streams = Rc::new(PerCaller::new(cfg.concurrency));
        rpc_load::run(&cfg, progress, move || {
            move |caller, payload| {
                let (echo, opts, streams) = (echo.clone(), opts.clone(), Rc::clone(&streams));
                async move {
                    let (mut tx, mut rx) = match streams.take(caller) {
                        Some(s) => s,
                        None => echo.echo_stream_with(&opts).map_err(|s| s.to_string())?,
                    };
                    tx.send_async(&fp::EchoRequest { payload })
                        .await
                        .map_err(|s| s.to_string())?;
                    let back = match rx.message().await {
                        Some(Ok(r)) => r.payload,
                        Some(Err(s)) => return Err(s.to_string()),
                        None => return Err("the stream ended".to_owned()),
                    };
                    streams.put(caller, (tx, rx));
                    Ok(back)
                }
            }
        })
    } else {
        rpc_load::run(&cfg, progress, move || {
            move |_, payload| {
                let call = echo.echo_async_with(&fp::EchoRequest { payload }, &opts);
                async move { call.await.map(|r| r.payload).map_err(|s| s.to_string()) }
            }
        })
    };
    report.print("rpc-bench", &cfg, "ferropoll");
    Ok(())
}
