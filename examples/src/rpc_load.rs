//! Closed-loop RPC load for `demo`, `rpc-bench` and (in ferropoll-baselines)
//! `tonic-bench`: `concurrency` callers on one thread (a tokio current-thread
//! runtime), each sending an echo request, awaiting its response, checking it
//! and sending the next one — as unary calls, or (`--stream`) as messages
//! of one bidi `EchoStream` stream per caller, one message in flight each.
//! Latencies go into an HDR histogram (µs); the warm-up is not recorded.
//!
//! The same driver runs the ferropoll client and the tonic client, so the
//! two differ only in the client and server under test.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Calls in flight at once (one caller each).
    pub concurrency: usize,
    /// Payload bytes per request (the response echoes them).
    pub size: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before the measurement (calls made, not recorded).
    pub warmup: Duration,
    /// Bidi stream messages instead of unary calls (the caller's `call`
    /// does either; this only labels the report).
    pub stream: bool,
}

/// The command-line options `rpc-bench` and `tonic-bench` share; each
/// flattens them into its own arguments (address, client options).
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Calls in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Per-call timeout in milliseconds (with `--stream`: of each stream,
    /// which lasts the whole run).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Bidi streaming instead of unary calls: `--concurrency` `EchoStream`
    /// streams on one connection, each keeping one message in flight;
    /// `qps` counts messages per second.
    #[arg(long)]
    pub stream: bool,
}

impl LoadArgs {
    /// The load these options describe (at least one call in flight).
    pub fn config(&self) -> LoadConfig {
        LoadConfig {
            concurrency: self.concurrency.max(1),
            size: self.size,
            duration: Duration::from_secs_f64(self.secs),
            warmup: Duration::from_secs_f64(self.warmup),
            stream: self.stream,
        }
    }

    /// The per-call timeout; with `--stream`, at least the whole run plus
    /// a minute, so that no stream times out while it is measured.
    pub fn timeout(&self) -> Duration {
        let own = Duration::from_millis(self.timeout_ms);
        if self.stream {
            own.max(Duration::from_secs_f64(self.secs + self.warmup + 60.0))
        } else {
            own
        }
    }
}

/// Counters a progress display may read while the load runs.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Calls completed in the measured period.
    pub calls: AtomicU64,
    /// Calls failed in the measured period.
    pub errors: AtomicU64,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct LoadReport {
    /// Calls completed (successfully) in the measured period.
    pub calls: u64,
    /// Calls that failed or returned a wrong payload.
    pub errors: u64,
    /// The measured period.
    pub elapsed: Duration,
    /// Latency of successful calls, µs.
    pub latency_us: Histogram<u64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Calls per second.
    pub fn qps(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile `q` (0–100) in µs.
    pub fn percentile_us(&self, q: f64) -> u64 {
        self.latency_us.value_at_percentile(q)
    }

    /// Ends a load generator's run: the first error (if any) on stderr,
    /// prefixed by `tool`, then the summary line with the load's shape and
    /// `client=<client>` on stdout.
    pub fn print(&self, tool: &str, cfg: &LoadConfig, client: &str) {
        if let Some(e) = &self.first_error {
            eprintln!("{tool}: first error: {e}");
        }
        println!(
            "{} concurrency={} size={} client={client}{}",
            self.summary_line(),
            cfg.concurrency,
            cfg.size,
            if cfg.stream { " mode=stream" } else { "" },
        );
    }

    /// The one-line `key=value` summary `rpc-bench` ends with.
    pub fn summary_line(&self) -> String {
        format!(
            "qps={:.0} p50_us={} p99_us={} p999_us={} errors={} total={} secs={:.2}",
            self.qps(),
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.percentile_us(99.9),
            self.errors,
            self.calls,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A payload of `size` bytes (a repeating pattern); requests share it
/// without copying.
pub fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i * 7 + 3) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// Runs the load: `init()` (called inside the runtime, so it may spawn
/// tasks) returns `call`; `call(caller, payload)` must send one echo
/// request for caller number `caller` (0 .. concurrency; callers never
/// overlap their own calls) and resolve to the echoed payload (or an
/// error text). Blocks the calling thread for warm-up + duration.
pub fn run<I, F, Fut>(cfg: &LoadConfig, progress: Arc<LoadProgress>, init: I) -> LoadReport
where
    I: FnOnce() -> F,
    F: Fn(usize, Bytes) -> Fut + 'static,
    Fut: Future<Output = Result<Bytes, String>> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    let local = tokio::task::LocalSet::new();
    let call = Rc::new(local.block_on(&rt, async { init() }));
    let data = payload(cfg.size);
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ));
    let first_error = Rc::new(RefCell::new(None::<String>));
    local.block_on(&rt, async {
        let mut tasks = Vec::with_capacity(cfg.concurrency);
        for caller in 0..cfg.concurrency.max(1) {
            let (call, data, hist, progress, first_error) = (
                Rc::clone(&call),
                data.clone(),
                Rc::clone(&hist),
                Arc::clone(&progress),
                Rc::clone(&first_error),
            );
            tasks.push(tokio::task::spawn_local(async move {
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = call(caller, data.clone()).await;
                    let done = Instant::now();
                    if sent < measure_from {
                        continue;
                    }
                    match outcome {
                        Ok(back) if back == data => {
                            let us = done.duration_since(sent).as_micros() as u64;
                            let _ = hist.borrow_mut().record(us.max(1));
                            progress.calls.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            progress.errors.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.borrow_mut();
                            if first.is_none() {
                                *first = Some(match other {
                                    Ok(_) => "the echoed payload differs".to_owned(),
                                    Err(e) => e,
                                });
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from);
    let latency_us = hist.borrow().clone();
    let first_error = first_error.borrow_mut().take();
    LoadReport {
        calls: progress.calls.load(Ordering::Relaxed),
        errors: progress.errors.load(Ordering::Relaxed),
        elapsed: if elapsed.is_zero() {
            cfg.duration
        } else {
            elapsed
        },
        latency_us,
        first_error,
    }
}

/// One stream per caller, opened on first use by `open` and kept in a
/// cell between messages (each caller has one message in flight, so a
/// stream is never used twice at once). For the `--stream` mode of
/// `rpc-bench` and `tonic-bench`.
pub struct PerCaller<S> {
    slots: Vec<std::cell::Cell<Option<S>>>,
}

impl<S> PerCaller<S> {
    /// Room for `n` callers' streams.
    pub fn new(n: usize) -> Self {
        PerCaller {
            slots: (0..n.max(1)).map(|_| std::cell::Cell::new(None)).collect(),
        }
    }

    /// Takes caller `i`'s stream (to use across an await), if open.
    pub fn take(&self, i: usize) -> Option<S> {
        self.slots[i].take()
    }

    /// Puts caller `i`'s stream back.
    pub fn put(&self, i: usize, s: S) {
        self.slots[i].set(Some(s));
    }
}
