//! The client of `codec-server`: sends "hello" and "world" as two
//! length-field frames and prints each frame it gets back.
//!
//! ```text
//! codec-client [--addr 127.0.0.1:9000] [--timeout-ms 2000]
//! received: hello
//! received: world
//! ```
//!
//! With `--churn` it is instead the accept benchmark's load: `--concurrency`
//! connections at a time, each connecting, sending one framed `ping`,
//! reading it back and closing, for `--secs` (after `--warmup`); it ends
//! with one line `conns_per_s=... total_conns=... errors=...`.
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ferropoll_examples::codec::{MAX_FRAME, codec, round_trip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Length-field framed client.
#[derive(Parser, Debug)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Connect and read timeout.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Accept benchmark: open, ping and close connections in a loop.
    #[arg(long)]
    churn: bool,
    /// Churn: connections in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Churn: measured seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Churn: warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    if args.churn {
        return churn(&args);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let codec = codec(MAX_FRAME);
    let conn = ferropoll_transport::dial_tcp(&args.addr, timeout)?;
    for word in ["hello", "world"] {
        let back = round_trip(&codec, &conn, word.as_bytes(), timeout)?;
        println!("received: {}", String::from_utf8_lossy(&back));
    }
    conn.close();
    Ok(())
}

/// One connection's life: connect, one framed ping, its echo, close.
async fn one(addr: &str) -> io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"\0\0\0\x04ping").await?;
    let mut back = [0u8; 8];
    s.read_exact(&mut back).await?;
    if &back != b"\0\0\0\x04ping" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad echo"));
    }
    Ok(())
}

fn churn(args: &Args) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (addr, done, errors, stop) = (
                args.addr.clone(),
                done.clone(),
                errors.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match one(&addr).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let start = Instant::now();
        let base = done.load(Ordering::Relaxed);
        let base_err = errors.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
        let measured = done.load(Ordering::Relaxed) - base;
        let elapsed = start.elapsed().as_secs_f64();
        let errs = errors.load(Ordering::Relaxed) - base_err;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "conns_per_s={:.0} total_conns={} errors={errs}",
            measured as f64 / elapsed,
            done.load(Ordering::Relaxed)
        );
    });
    Ok(())
}
