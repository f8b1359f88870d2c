//! The tonic side of `rpc-bench`: the same closed-loop echo load (one
//! thread, `--concurrency` calls in flight, `--size`-byte payloads, every
//! response checked; `--stream`: one bidi `EchoStream` per caller, one
//! message in flight each), driven by the same `ferropoll_examples::rpc_load`
//! driver, through the tonic client against `tonic-echo`. Ends with one
//! `key=value` line:
//!
//! ```text
//! tonic-bench --addr 127.0.0.1:9300 --concurrency 50 --size 128 --secs 5
//! ...
//! qps=.. p50_us=.. p99_us=.. p999_us=.. errors=.. total=.. secs=..
//! ```
use std::rc::Rc;
use std::sync::Arc;

use clap::Parser;
use ferropoll_baselines::echo as tn;
use ferropoll_examples::rpc_load::{self, LoadArgs, LoadProgress, PerCaller};
use futures::SinkExt;
use futures::channel::mpsc;

/// Echo gRPC load generator (tonic client; unary, or bidi streams with `--stream`).
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
    if cfg.stream {
        let streams = Rc::new(PerCaller::new(cfg.concurrency));
        let report = rpc_load::run(&cfg, progress, move || {
            let client = tn::echo_client::EchoClient::new(endpoint.connect_lazy());
            move |caller, payload| {
                let (client, streams) = (client.clone(), Rc::clone(&streams));
                async move {
                    let (mut tx, mut rx) = match streams.take(caller) {
                        Some(s) => s,
                        None => {
                            // A small channel: one message is in flight.
                            let (tx, requests) = mpsc::channel::<tn::EchoRequest>(4);
                            let rx = client
                                .clone()
                                .echo_stream(requests)
                                .await
                                .map_err(|s| s.to_string())?
                                .into_inner();
                            (tx, rx)
                        }
                    };
                    tx.send(tn::EchoRequest { payload })
                        .await
                        .map_err(|e| e.to_string())?;
                    let back = match rx.message().await {
                        Ok(Some(r)) => r.payload,
                        Ok(None) => return Err("the stream ended".to_owned()),
                        Err(s) => return Err(s.to_string()),
                    };
                    streams.put(caller, (tx, rx));
                    Ok(back)
                }
            }
        });
        report.print("tonic-bench", &cfg, "tonic");
        return Ok(());
    }
    let report = rpc_load::run(&cfg, progress, move || {
        // The channel's connection task runs on the load's runtime.
        let client = tn::echo_client::EchoClient::new(endpoint.connect_lazy());
        move |_, payload| {
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
