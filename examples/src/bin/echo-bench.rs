//! Echo load generator: `--conns` connections each send `--size`-byte
//! messages (`--pipeline` at a time) and check every echoed byte; progress on
//! stderr; one `key=value` line at the end:
//!
//! ```text
//! msgs_per_s=... p50_us=... p99_us=... p999_us=... errors=... total_msgs=...
//! ```
//!
//! (`total_msgs` includes the warm-up, for server CPU per message measured
//! around the whole run.)
//!
//! With `--idle N` it instead opens N connections at once (a burst), pings
//! each once, prints `idle_conns=N burst_ms=...` and `ready`, and holds them
//! idle for `--secs` (so a script can read the server's RSS).
//!
//! The client is a single-threaded tokio runtime by default (`--threads`),
//! independent of the server under test.
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ferropoll_examples::echo::{message, pattern};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echo load generator.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open this many idle connections instead of generating load.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: connection attempts in flight at once. Loopback SYNs go
    /// through the kernel's per-CPU backlog (`net.core.netdev_max_backlog`,
    /// 1000 here); more at once get dropped and retried a second later,
    /// which measures the kernel, not the server.
    #[arg(long, default_value_t = 512)]
    connect_concurrency: usize,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    msgs: AtomicU64,
    /// Messages including the warm-up (for CPU per message over the whole run).
    all_msgs: AtomicU64,
    errors: AtomicU64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let rt = ferropoll_examples::tokio_runtime(args.threads)?;
    rt.block_on(async move {
        match args.idle {
            Some(n) => idle(&args, n).await,
            None => load(&args).await,
        }
    })
}

async fn idle(args: &Args, n: usize) -> io::Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    for _ in 0..n {
        let addr = args.addr.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.map_err(io::Error::other)?;
            let s = TcpStream::connect(&addr).await;
            drop(permit);
            let mut s = s?;
            s.set_nodelay(true)?;
            s.write_all(b"!").await?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await?;
            Ok::<_, io::Error>(s)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => conns.push(s),
            _ => errors += 1,
        }
    }
    let burst = start.elapsed();
    println!(
        "idle_conns={} burst_ms={:.1} errors={errors}",
        conns.len(),
        burst.as_secs_f64() * 1e3
    );
    println!("ready");
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    drop(conns);
    Ok(())
}

async fn load(args: &Args) -> io::Result<()> {
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        msgs: AtomicU64::new(0),
        all_msgs: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(args.conns);
    for id in 0..args.conns {
        let s = TcpStream::connect(&args.addr).await?;
        s.set_nodelay(true)?;
        tasks.push(tokio::spawn(conn_task(
            s,
            id as u64,
            args.size,
            args.pipeline.max(1),
            shared.clone(),
        )));
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message("warming up");
    bar.enable_steady_tick(Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    shared.measuring.store(true, Ordering::Release);
    let start = Instant::now();
    let total = Duration::from_secs_f64(args.secs);
    let mut last = (Instant::now(), 0u64);
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500).min(total.saturating_sub(start.elapsed())))
            .await;
        let now = (Instant::now(), shared.msgs.load(Ordering::Relaxed));
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
        bar.set_message(format!(
            "{:.1}/{:.0} s  {:.0} msgs/s  errors {}",
            start.elapsed().as_secs_f64(),
            args.secs,
            rate,
            shared.errors.load(Ordering::Relaxed)
        ));
        last = now;
    }
    shared.measuring.store(false, Ordering::Release);
    let elapsed = start.elapsed().as_secs_f64();
    let msgs = shared.msgs.load(Ordering::Relaxed);
    shared.stop.store(true, Ordering::Release);
    bar.finish_and_clear();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(h).expect("same bounds");
        }
    }
    println!(
        "msgs_per_s={:.0} p50_us={} p99_us={} p999_us={} errors={} total_msgs={}",
        msgs as f64 / elapsed,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        shared.errors.load(Ordering::Relaxed),
        shared.all_msgs.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn conn_task(
    mut s: TcpStream,
    id: u64,
    size: usize,
    pipeline: usize,
    shared: Arc<Shared>,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let pat = pattern(size, id.wrapping_mul(7919));
    let mut out = Vec::with_capacity(size * pipeline);
    let mut back = vec![0u8; size * pipeline];
    let mut k = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        out.clear();
        for j in 0..pipeline as u64 {
            out.extend_from_slice(message(&pat, size, k + j));
        }
        let t0 = Instant::now();
        let ok = async {
            s.write_all(&out).await?;
            s.read_exact(&mut back).await?;
            Ok::<_, io::Error>(())
        }
        .await;
        let us = t0.elapsed().as_micros() as u64;
        if ok.is_err() || back != out {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        k += pipeline as u64;
        shared
            .all_msgs
            .fetch_add(pipeline as u64, Ordering::Relaxed);
        if shared.measuring.load(Ordering::Relaxed) {
            shared.msgs.fetch_add(pipeline as u64, Ordering::Relaxed);
            let _ = hist.record_n(us.max(1), pipeline as u64);
        }
    }
    hist
}
