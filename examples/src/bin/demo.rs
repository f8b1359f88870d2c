//! The ferropoll demo: an RPC server and a client on loopback.
//!
//! ```text
//! cargo run --release -p ferropoll-examples --bin demo
//! ```
//!
//! Starts a server with the example services (`echo.Echo`, `kv.Kv`, and a
//! `demo.Slow` that sleeps on a pool worker), makes one call of each kind —
//! success, a handler's error (NotFound), a timeout, an unknown method —
//! then runs a short closed-loop load with a progress bar and prints a
//! summary. Finishes by itself in about five seconds.
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_examples::pb::{EchoService, MemKv, echo, kv};
use ferropoll_examples::rpc_load::{self, LoadConfig, LoadProgress};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Context, Dispatch, LinkBuffer, Listener, Reply, Server,
    Service, Status,
};
use indicatif::{ProgressBar, ProgressStyle};

/// `demo.Slow/Sleep(ms) -> ms`: sleeps on a pool worker (a handler that
/// blocks must not run on a loop thread).
struct Slow;

impl Service for Slow {
    fn name(&self) -> &'static str {
        "demo.Slow"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Sleep"]
    }
    fn dispatch(&self, _method: usize) -> Dispatch {
        Dispatch::Pool
    }
    fn call(&self, _method: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
        reply.unary(ctx, request, |ctx, ms: u64| {
            let want = Duration::from_millis(ms.min(10_000));
            // Give up early when the caller will not wait that long.
            if ctx.remaining().is_some_and(|left| left < want) {
                std::thread::sleep(ctx.remaining().unwrap_or_default());
                return Err(Status::deadline_exceeded("gave up: not enough time left"));
            }
            std::thread::sleep(want);
            Ok(ms)
        })
    }
}

fn show<T: std::fmt::Debug>(what: &str, took: Duration, outcome: &Result<T, Status>) {
    let took = format!("{:.2} ms", took.as_secs_f64() * 1e3);
    match outcome {
        Ok(v) => println!("  {what:<44} -> OK {v:?}  ({took})"),
        Err(s) => println!("  {what:<44} -> {} \"{}\"  ({took})", s.code(), s.message()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: two event loops, handlers inline except demo.Slow.
    let mut builder = Server::builder();
    builder.num_loops(2);
    builder.register(echo::EchoServer::new(EchoService))?;
    builder.register(kv::KvServer::new(MemKv::default()))?;
    builder.register(Slow)?;
    let server = builder.build()?;
    let addr = server.listen(Listener::bind_tcp("127.0.0.1:0")?)?;
    println!("ferropoll demo: RPC server on {addr} (2 event loops)\n");

    let client = Client::connect(&addr.to_string(), ClientOptions::default())?;
    let echo = echo::EchoClient::new(client.clone());
    let kv = kv::KvClient::new(client.clone());
    let second = CallOptions::new().with_timeout(Duration::from_secs(1));

    println!("One call of each kind:");
    let t = Instant::now();
    let r = echo
        .echo_with(
            &echo::EchoRequest {
                payload: Bytes::from_static(b"hello, ferropoll"),
            },
            &second,
        )
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned());
    show("echo.Echo/Echo(\"hello, ferropoll\")", t.elapsed(), &r);
    let t = Instant::now();
    let r = kv
        .put_with(
            &kv::PutRequest {
                key: "greeting".into(),
                value: Bytes::from_static(b"hi"),
                if_absent: false,
            },
            &second,
        )
        .map(|r| if r.replaced { "replaced" } else { "created" });
    show("kv.Kv/Put(greeting = hi)", t.elapsed(), &r);
    let t = Instant::now();
    let r = kv
        .get_with(
            &kv::GetRequest {
                key: "greeting".into(),
            },
            &second,
        )
        .map(|r| String::from_utf8_lossy(&r.value).into_owned());
    show("kv.Kv/Get(greeting)", t.elapsed(), &r);
    let t = Instant::now();
    let r = kv.get_with(
        &kv::GetRequest {
            key: "missing".into(),
        },
        &second,
    );
    show("kv.Kv/Get(missing)             [NotFound]", t.elapsed(), &r);
    let t = Instant::now();
    let r = client.unary::<u64, u64>(
        "demo.Slow",
        "Sleep",
        &500,
        &CallOptions::new().with_timeout(Duration::from_millis(50)),
    );
    show("demo.Slow/Sleep(500 ms), 50 ms timeout", t.elapsed(), &r);
    let t = Instant::now();
    let r = client.unary::<(), ()>("kv.Kv", "Rename", &(), &second);
    show("kv.Kv/Rename                   [unknown]", t.elapsed(), &r);
    let t = Instant::now();
    let r = ferropoll_examples::block_on(kv.get_async(&kv::GetRequest {
        key: "greeting".into(),
    }))
    .map(|r| String::from_utf8_lossy(&r.value).into_owned());
    show("kv.Kv/Get(greeting), as a Future", t.elapsed(), &r);

    // A short load: 32 calls in flight from one thread, 128-byte echoes.
    let cfg = LoadConfig {
        concurrency: 32,
        size: 128,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(300),
        stream: false,
    };
    println!(
        "\nLoad: {} concurrent echo calls of {} B for {} s (one client thread, one connection):",
        cfg.concurrency,
        cfg.size,
        cfg.duration.as_secs()
    );
    let progress = Arc::new(LoadProgress::default());
    let done = Arc::new(AtomicBool::new(false));
    let bar = ProgressBar::new(cfg.duration.as_millis() as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("  [{bar:40.cyan/blue}] {msg}")?.progress_chars("=> "),
    );
    let ticker = {
        let (bar, progress, done) = (bar.clone(), Arc::clone(&progress), Arc::clone(&done));
        let warmup = cfg.warmup;
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                let ran = start.elapsed().saturating_sub(warmup);
                let calls = progress.calls.load(Ordering::Relaxed);
                bar.set_position(ran.as_millis() as u64);
                bar.set_message(format!(
                    "{calls} calls, {:.0} calls/s",
                    calls as f64 / ran.as_secs_f64().max(1e-3)
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let load_echo = echo.clone();
    let report = rpc_load::run(&cfg, Arc::clone(&progress), move || {
        move |_, payload| {
            let call = load_echo.echo_async(&echo::EchoRequest { payload });
            async move { call.await.map(|r| r.payload).map_err(|s| s.to_string()) }
        }
    });
    done.store(true, Ordering::Release);
    let _ = ticker.join();
    bar.finish_and_clear();

    println!("  +----------+------------+---------+---------+----------+--------+");
    println!("  | calls    | calls/s    | p50 µs  | p99 µs  | p99.9 µs | errors |");
    println!("  +----------+------------+---------+---------+----------+--------+");
    println!(
        "  | {:<8} | {:<10.0} | {:<7} | {:<7} | {:<8} | {:<6} |",
        report.calls,
        report.qps(),
        report.percentile_us(50.0),
        report.percentile_us(99.0),
        report.percentile_us(99.9),
        report.errors
    );
    println!("  +----------+------------+---------+---------+----------+--------+");
    if let Some(e) = &report.first_error {
        println!("  first error: {e}");
    }
    let stats = server.stats();
    println!(
        "  server: {} connection(s) accepted, {} bytes in, {} bytes out",
        stats.accepted, stats.bytes_in, stats.bytes_out
    );

    drop((echo, kv, client));
    server.shutdown(Duration::from_secs(2))?;
    println!(
        "\nServer shut down gracefully. Next: `rpc-server`, `rpc-client`, `rpc-bench` (see README)."
    );
    if report.errors > 0 || report.calls == 0 {
        return Err("the load saw errors".into());
    }
    Ok(())
}
