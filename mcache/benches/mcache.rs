//! mcache against the system allocator (`Vec<u8>`), in the same run.
//!
//! - `alloc_free/*`: one allocation and its free, same thread, at 64 B,
//!   1 KiB, 8 KiB, 64 KiB and 1 MiB. One byte is written so neither side can
//!   skip touching the memory. Baselines: `Vec::with_capacity(n)` (glibc
//!   `malloc`, uninitialised) and `vec![0; n]` (`calloc`: initialised memory,
//!   which is what a `Buf` gives).
//! - `producer_consumer/*`: a producer thread allocates, a consumer thread
//!   drops; buffers travel in batches (up to 64 buffers, at most 1 MiB)
//!   through a queue; time per buffer. At most about 12 MiB are in flight.
//! - `producer_consumer_deep/*`: the same with up to 1152 buffers in flight:
//!   at 64 KiB and 1 MiB more than mcache's bounded caches hold, so misses
//!   fall back to fresh zeroed memory (the cost of the bound, shown openly).
//!
//! After criterion's own report, a table of medians and ratios is printed
//! from criterion's estimates of this run.
//!
//! `cargo bench -p ferropoll-mcache`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use ferropoll_mcache::{Buf, malloc, stats};

const SIZES: [(usize, &str); 5] = [
    (64, "64B"),
    (1 << 10, "1KiB"),
    (8 << 10, "8KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

fn alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free");
    g.throughput(Throughput::Elements(1));
    for (n, name) in SIZES {
        g.bench_with_input(BenchmarkId::new("mcache", name), &n, |b, &n| {
            b.iter(|| {
                let mut buf = malloc(black_box(n));
                buf.as_full_mut()[0] = 1;
                black_box(&buf);
            })
        });
        g.bench_with_input(BenchmarkId::new("vec_with_capacity", name), &n, |b, &n| {
            b.iter(|| {
                let mut v = Vec::<u8>::with_capacity(black_box(n));
                v.push(1);
                black_box(&v);
            })
        });
        g.bench_with_input(BenchmarkId::new("vec_zeroed", name), &n, |b, &n| {
            b.iter(|| {
                let mut v = vec![0u8; black_box(n)];
                v[0] = 1;
                black_box(&v);
            })
        });
    }
    g.finish();
}

/// A consumer thread that drops batches of buffers arriving on a queue.
///
/// Buffers travel in batches so the per-buffer figure measures allocating on
/// one thread and freeing on another, not the hand-off of each item between
/// two spinning threads (which on a loaded 2-core box is scheduler noise).
struct Consumer<T: Send + 'static> {
    queue: Arc<ArrayQueue<Vec<T>>>,
    consumed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Consumer<T> {
    /// `depth` batches may wait in the queue.
    fn start(depth: usize) -> Self {
        let queue = Arc::new(ArrayQueue::<Vec<T>>::new(depth));
        let consumed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (queue, consumed, stop) = (queue.clone(), consumed.clone(), stop.clone());
            thread::spawn(move || {
                let mut idle = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    match queue.pop() {
                        Some(batch) => {
                            let n = batch.len() as u64;
                            drop(batch);
                            consumed.fetch_add(n, Ordering::Release);
                            idle = 0;
                        }
                        None => backoff(&mut idle),
                    }
                }
            })
        };
        Consumer {
            queue,
            consumed,
            stop,
            handle: Some(handle),
        }
    }

    /// Sends `iters` items made by `make`, `batch` at a time; returns when
    /// all were dropped.
    fn run(&self, iters: u64, batch: usize, mut make: impl FnMut() -> T) -> Duration {
        let target = self.consumed.load(Ordering::Acquire) + iters;
        let start = Instant::now();
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(batch);
            left -= n;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(make());
            }
            let mut idle = 0u32;
            while let Err(back) = self.queue.push(items) {
                items = back;
                backoff(&mut idle);
            }
        }
        let mut idle = 0u32;
        while self.consumed.load(Ordering::Acquire) < target {
            backoff(&mut idle);
        }
        start.elapsed()
    }
}

impl<T: Send + 'static> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        while self.queue.pop().is_some() {}
    }
}

fn backoff(idle: &mut u32) {
    *idle += 1;
    if *idle < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

fn producer_consumer(c: &mut Criterion) {
    // Batches of up to 64 buffers and 1 MiB; up to 16 batches queued, at
    // most about 12 MiB in flight: what mcache's caches hold.
    handoff(c, "producer_consumer", &SIZES, |n| {
        let batch = ((1 << 20) / n).clamp(1, 64);
        let depth = ((12 << 20) / (batch * n)).saturating_sub(2).clamp(2, 16);
        (batch, depth)
    });
    // Batches of 64, sixteen queued: up to 1152 buffers in flight. At 8 KiB
    // (9 MiB) that fits the caches; at 64 KiB (72 MiB) and 1 MiB (1.1 GiB)
    // it does not, and every miss is a fresh zeroed allocation.
    handoff(c, "producer_consumer_deep", &SIZES[2..], |_| (64, 16));
}

/// `params(size)` gives the batch size and the queue depth in batches.
fn handoff(
    c: &mut Criterion,
    group: &str,
    sizes: &[(usize, &str)],
    params: impl Fn(usize) -> (usize, usize),
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for &(n, name) in sizes {
        let (batch, depth) = params(n);
        let consumer = Consumer::<Buf>::start(depth);
        g.bench_with_input(BenchmarkId::new("mcache", name), &n, |b, &n| {
            b.iter_custom(|iters| {
                consumer.run(iters, batch, || {
                    let mut buf = malloc(n);
                    buf.as_full_mut()[0] = 1;
                    buf
                })
            })
        });
        drop(consumer);
        let consumer = Consumer::<Vec<u8>>::start(depth);
        g.bench_with_input(BenchmarkId::new("vec_with_capacity", name), &n, |b, &n| {
            b.iter_custom(|iters| {
                consumer.run(iters, batch, || {
                    let mut v = Vec::<u8>::with_capacity(n);
                    v.push(1);
                    v
                })
            })
        });
        drop(consumer);
    }
    g.finish();
}

/// Where criterion writes: `<target>/criterion`, found from this executable
/// (`<target>/release/deps/mcache-*`) unless `CRITERION_HOME` says otherwise.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<exe>");
    target.join("criterion")
}

/// Median time in ns of one benchmark of this run, from criterion's estimates.
fn median_ns(dir: &std::path::Path, group: &str, function: &str, param: &str) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join(param)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // {"mean":{...},"median":{"confidence_interval":{...},"point_estimate":N,...
    let median = &text[text.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}'])?;
    value[..end].trim().parse().ok()
}

fn print_ratios(dir: &std::path::Path) {
    println!("\nmcache vs the system allocator (medians of this run; ratio = baseline / mcache)");
    println!(
        "{:<22} {:>6} {:>12} {:>12} {:>7} {:>12} {:>7}",
        "group", "size", "mcache ns", "Vec ns", "ratio", "vec![0] ns", "ratio"
    );
    for group in ["alloc_free", "producer_consumer", "producer_consumer_deep"] {
        for (_, name) in SIZES {
            let m = median_ns(dir, group, "mcache", name);
            let v = median_ns(dir, group, "vec_with_capacity", name);
            let z = median_ns(dir, group, "vec_zeroed", name);
            let (Some(m), Some(v)) = (m, v) else {
                continue;
            };
            let zero = z.map_or(String::from("-"), |z| format!("{z:.1}"));
            let zero_ratio = z.map_or(String::from("-"), |z| format!("{:.2}x", z / m));
            println!(
                "{group:<22} {name:>6} {m:>12.1} {v:>12.1} {:>6.2}x {zero:>12} {zero_ratio:>7}",
                v / m
            );
        }
    }
    let s = stats();
    println!(
        "\nmcache after the run: {} allocations, {} cache hits, {} outstanding, {} KiB cached",
        s.allocations,
        s.cache_hits,
        s.outstanding,
        s.cached_bytes >> 10
    );
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    alloc_free(&mut c);
    producer_consumer(&mut c);
    c.final_summary();
    print_ratios(&dir);
}
