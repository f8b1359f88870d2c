//! gopool against `std::thread::spawn` per task, the `threadpool` crate and
//! tokio's `spawn_blocking`, in one run.
//!
//! 1. Throughput: one thread submits `GOPOOL_BENCH_TASKS` (default 1M) tiny
//!    tasks (each bumps a counter) and waits until all have run;
//!    `spawn_blocking` gets a fifth of them and `thread::spawn` a hundredth
//!    (they are that much slower), all reported as tasks per second.
//!    Contenders alternate round by round (A B C D A B C D ...) and each
//!    figure is the median of `GOPOOL_BENCH_ROUNDS` (default 5) rounds.
//! 2. Submit-to-run latency with idle workers: a timestamp taken just before
//!    submitting, read in the task; one task at a time, 50 µs of sleep
//!    between tasks so the workers have parked; `GOPOOL_BENCH_SAMPLES`
//!    (default 100k) samples per contender, taken in interleaved chunks.
//!    Also without the gap (back to back), where gopool's spinning worker
//!    matters.
//!
//! Run: `cargo bench -p ferropoll-gopool --bench gopool`. The last line is
//! `key=value` pairs for scripts. `GOPOOL_BENCH_ONLY=<name>` runs only that
//! contender's throughput rounds (for profiling); `GOPOOL_BENCH_MAX_WORKERS`
//! and `GOPOOL_BENCH_MAX_IDLE_MS` configure the gopool contender (defaults
//! 512 and 10,000, the pool's own defaults).
#![cfg(not(loom))]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferropoll_gopool::Pool;
use hdrhistogram::Histogram;

/// Counts finished tasks; wakes the waiter when the last one is in.
struct Latch {
    done: AtomicUsize,
    target: AtomicUsize,
    lock: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    fn leak() -> &'static Latch {
        Box::leak(Box::new(Latch {
            done: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            lock: Mutex::new(false),
            cv: Condvar::new(),
        }))
    }

    fn arm(&self, target: usize) {
        self.done.store(0, Ordering::SeqCst);
        *self.lock.lock().unwrap() = false;
        self.target.store(target, Ordering::SeqCst);
    }

    fn hit(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            *self.lock.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn wait(&self) {
        let mut done = self.lock.lock().unwrap();
        while !*done {
            done = self.cv.wait(done).unwrap();
        }
    }
}

/// Where a closure runs. An enum, not a boxed `Fn`, so that no contender
/// pays for an extra allocation per task.
enum Runner {
    Gopool(Pool),
    ThreadPool(threadpool::ThreadPool),
    SpawnBlocking(tokio::runtime::Handle),
    ThreadSpawn,
}

impl Runner {
    fn submit(&self, f: impl FnOnce() + Send + 'static) {
        match self {
            Runner::Gopool(pool) => pool.go(f),
            Runner::ThreadPool(pool) => pool.execute(f),
            Runner::SpawnBlocking(handle) => drop(handle.spawn_blocking(f)),
            Runner::ThreadSpawn => drop(thread::spawn(f)),
        }
    }
}

struct Contender {
    name: &'static str,
    runner: Runner,
    /// Tasks per throughput round (thread::spawn gets fewer).
    tasks: usize,
}

fn contenders(tasks: usize) -> Vec<Contender> {
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    // Keep the runtime alive for the whole run.
    Box::leak(Box::new(runtime));
    vec![
        Contender {
            name: "gopool",
            runner: Runner::Gopool(
                Pool::builder()
                    .name("bench")
                    .max_workers(env("GOPOOL_BENCH_MAX_WORKERS", 512))
                    .max_idle(Duration::from_millis(
                        env("GOPOOL_BENCH_MAX_IDLE_MS", 10_000) as u64,
                    ))
                    .build()
                    .unwrap(),
            ),
            tasks,
        },
        Contender {
            name: "threadpool",
            runner: Runner::ThreadPool(threadpool::ThreadPool::new(cores)),
            tasks,
        },
        Contender {
            name: "spawn_blocking",
            runner: Runner::SpawnBlocking(handle),
            // ~20x slower than the pools: fewer tasks, scaled, to keep the run short.
            tasks: (tasks / 5).max(1000),
        },
        Contender {
            name: "thread_spawn",
            runner: Runner::ThreadSpawn,
            tasks: (tasks / 100).max(1000),
        },
    ]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time (user + system) the whole process has used so far, in seconds.
/// Includes threads that have exited. 10 ms resolution.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second here).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => f64::NAN,
    }
}

/// One throughput round: (tasks per second, CPU nanoseconds per task).
fn throughput_round(c: &Contender, latch: &'static Latch) -> (f64, f64) {
    latch.arm(c.tasks);
    let cpu0 = process_cpu();
    let start = Instant::now();
    for _ in 0..c.tasks {
        c.runner.submit(move || latch.hit());
    }
    latch.wait();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    (c.tasks as f64 / elapsed, cpu * 1e9 / c.tasks as f64)
}

/// `samples` submit-to-run latencies in nanoseconds, `gap` apart.
fn latency_chunk(c: &Contender, samples: usize, gap: Option<Duration>, hist: &mut Histogram<u64>) {
    static SLOT: AtomicU64 = AtomicU64::new(0);
    for _ in 0..samples {
        SLOT.store(0, Ordering::SeqCst);
        let t0 = Instant::now();
        c.runner.submit(move || {
            let ns = t0.elapsed().as_nanos() as u64;
            SLOT.store(ns.max(1), Ordering::SeqCst);
        });
        let mut spins = 0u32;
        let ns = loop {
            let ns = SLOT.load(Ordering::SeqCst);
            if ns != 0 {
                break ns;
            }
            spins += 1;
            if spins > 100 {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        hist.saturating_record(ns);
        if let Some(gap) = gap {
            thread::sleep(gap);
        }
    }
}

fn main() {
    let tasks = env("GOPOOL_BENCH_TASKS", 1_000_000);
    let rounds = env("GOPOOL_BENCH_ROUNDS", 5).max(1);
    let samples = env("GOPOOL_BENCH_SAMPLES", 100_000);
    let contenders = contenders(tasks);
    let latch = Latch::leak();

    println!(
        "== throughput: {tasks} tiny tasks from one thread (thread_spawn: fewer, scaled); median of {rounds} rounds"
    );
    let only = std::env::var("GOPOOL_BENCH_ONLY").ok();
    let selected = |c: &Contender| only.as_deref().is_none_or(|o| o == c.name);
    // Warm-up: start workers, fault in memory.
    for c in contenders.iter().filter(|c| selected(c)) {
        black_box(throughput_round(c, latch));
    }
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut workers_after = 0;
    for _ in 0..rounds {
        for (i, c) in contenders.iter().enumerate() {
            if !selected(c) {
                per[i].push(f64::NAN);
                per_cpu[i].push(f64::NAN);
                continue;
            }
            let (rate, cpu) = throughput_round(c, latch);
            per[i].push(rate);
            per_cpu[i].push(cpu);
            if let Runner::Gopool(pool) = &c.runner {
                workers_after = workers_after.max(pool.worker_count());
            }
        }
    }
    let tput: Vec<f64> = per.into_iter().map(median).collect();
    let cpu: Vec<f64> = per_cpu.into_iter().map(median).collect();
    println!("gopool: most workers alive right after a round: {workers_after}");
    for ((c, t), ns) in contenders.iter().zip(&tput).zip(&cpu) {
        println!(
            "{:>15}: {:>12.0} tasks/s  gopool/this = {:>6.2}x   CPU {:>8.0} ns/task  this/gopool = {:.2}x",
            c.name,
            t,
            tput[0] / t,
            ns,
            ns / cpu[0]
        );
    }

    if only.is_some() {
        return;
    }
    let latency_contenders = &contenders[..3];
    let mut results = Vec::new();
    for (label, gap) in [
        ("idle", Some(Duration::from_micros(50))),
        ("back_to_back", None),
    ] {
        println!(
            "== submit-to-run latency, {label}: {samples} samples each{}",
            if gap.is_some() {
                ", 50 us sleep between tasks"
            } else {
                ""
            }
        );
        let mut hists: Vec<Histogram<u64>> = latency_contenders
            .iter()
            .map(|_| Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap())
            .collect();
        let chunks = 10;
        for c in latency_contenders {
            let mut warm = Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap();
            latency_chunk(c, 1000.min(samples), gap, &mut warm);
        }
        for _ in 0..chunks {
            for (c, h) in latency_contenders.iter().zip(hists.iter_mut()) {
                latency_chunk(c, samples.div_ceil(chunks), gap, h);
            }
        }
        let p50_gopool = hists[0].value_at_quantile(0.5) as f64;
        for (c, h) in latency_contenders.iter().zip(&hists) {
            let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{:>15}: p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>8.1} us  this/gopool p50 = {:.2}x",
                c.name,
                q(0.5),
                q(0.99),
                q(0.999),
                h.value_at_quantile(0.5) as f64 / p50_gopool
            );
        }
        results.push((label, hists));
    }

    let mut kv = vec![
        format!("tput_gopool={:.0}", tput[0]),
        format!("tput_threadpool={:.0}", tput[1]),
        format!("tput_spawn_blocking={:.0}", tput[2]),
        format!("tput_thread_spawn={:.0}", tput[3]),
        format!("ratio_vs_thread_spawn={:.1}", tput[0] / tput[3]),
        format!("ratio_vs_threadpool={:.2}", tput[0] / tput[1]),
        format!("ratio_vs_spawn_blocking={:.2}", tput[0] / tput[2]),
        format!("gopool_workers={workers_after}"),
        format!("cpu_ns_per_task_gopool={:.0}", cpu[0]),
        format!("cpu_ns_per_task_threadpool={:.0}", cpu[1]),
        format!("cpu_ns_per_task_spawn_blocking={:.0}", cpu[2]),
        format!("cpu_ns_per_task_thread_spawn={:.0}", cpu[3]),
    ];
    for (label, hists) in &results {
        for (c, h) in latency_contenders.iter().zip(hists) {
            kv.push(format!(
                "p50_us_{label}_{}={:.1}",
                c.name,
                h.value_at_quantile(0.5) as f64 / 1000.0
            ));
            kv.push(format!(
                "p99_us_{label}_{}={:.1}",
                c.name,
                h.value_at_quantile(0.99) as f64 / 1000.0
            ));
        }
    }
    println!("{}", kv.join(" "));
}
