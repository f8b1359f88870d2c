//! The load of the cluster demo (`examples/bench/cluster-demo.sh`): finds
//! the `echo.Echo` instances through etcd and calls them from two cluster
//! clients at once — one that treats `echo.Echo` as idempotent (retried on
//! another instance within the retry budget), one that does not — with a
//! progress line per second showing calls/s per server and the errors.
//!
//! Phases are marked from outside: each line appended to `--phase-file`
//! (e.g. `during`, then `after`) starts a new phase, named by the line's
//! first word, within 10 ms of its appearing; the summary gives each
//! phase's calls/s, failed calls and latency, then one `key=value` line.
//!
//! A phase line may name the instance a fault hits (`during
//! 198.18.0.3:9000`): then the summary also says how long the clients took
//! to stop using it (`eject_ms`: ejected, breaker open or gone from
//! discovery, in both clients), how many calls of the non-idempotent client
//! were in flight on it at the mark (`inflight_other_at_fault`), and how
//! long after the next mark (the fault healed) it answered a call again
//! (`back_ms`; -1: never).
//!
//! ```text
//! cluster-load --etcd http://127.0.0.1:2379 --prefix /ferropoll/demo/echo --secs 24 \
//!     --phase-file /tmp/phases
//! ...
//! phases=3 before_qps=.. during_qps=.. after_qps=.. idempotent_failed=.. other_failed=.. total=.. \
//!     eject_ms=.. back_ms=.. inflight_other_at_fault=.. max_call_ms=.. p99_us=.. during_p99_us=..
//! ```
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ferropoll_examples::pb::echo::{EchoClient, EchoRequest};
use ferropoll_rpc::cluster::{Discover, EtcdDiscover, HealthConfig, RetryPolicy};
use ferropoll_rpc::{Client, ClientOptions, Keepalive, Status};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Cluster load over etcd discovery.
#[derive(Parser, Debug)]
struct Args {
    /// etcd endpoint (repeat for several).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: Vec<String>,
    /// Key prefix the instances register under.
    #[arg(long, default_value = "/ferropoll/demo/echo")]
    prefix: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 24)]
    secs: u64,
    /// Calling threads per client (two clients: idempotent and not).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// A file whose lines mark phases (read each second).
    #[arg(long)]
    phase_file: Option<PathBuf>,
    /// Wait (up to 10 s) until this many instances are registered.
    #[arg(long, default_value_t = 3)]
    wait_instances: usize,
    /// Keepalive ping interval of idle connections in milliseconds (0:
    /// keepalive off); connections with calls waiting are pinged after half
    /// of it.
    #[arg(long, default_value_t = 1000)]
    keepalive_ms: u64,
    /// Keepalive timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    keepalive_timeout_ms: u64,
    /// TCP_USER_TIMEOUT in milliseconds (0: the kernel's default).
    #[arg(long, default_value_t = 10_000)]
    tcp_user_timeout_ms: u64,
}

/// Counters of one client's calls.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Distinct failure messages with their counts.
    why: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn fail(&self, e: &Status) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .why
            .lock()
            .entry(format!("{:?}: {}", e.code(), e.message()))
            .or_insert(0) += 1;
    }
}

/// One phase's totals.
#[derive(Default, Clone)]
struct Phase {
    name: String,
    secs: f64,
    calls: u64,
    idem_failed: u64,
    other_failed: u64,
    /// The instance a fault hits in this phase, if the mark names one.
    fault: Option<String>,
}

/// Latencies of the calls of each phase (by phase index), in µs.
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Whether no client sends calls to `addr` now: ejected, breaker open,
/// or no longer discovered.
fn out_of_use(clients: &[&Client], addr: &str) -> bool {
    clients.iter().all(|c| {
        c.cluster_stats()
            .unwrap_or_default()
            .iter()
            .find(|s| s.instance.addr() == addr)
            .is_none_or(|s| s.ejected || s.breaker == ferropoll_rpc::cluster::BreakerState::Open)
    })
}

fn in_flight_on(client: &Client, addr: &str) -> usize {
    client
        .cluster_stats()
        .unwrap_or_default()
        .iter()
        .filter(|s| s.instance.addr() == addr)
        .map(|s| s.in_flight)
        .sum()
}

fn succeeded_on(clients: &[&Client], addr: &str) -> u64 {
    per_instance_ok(clients).get(addr).copied().unwrap_or(0)
}

/// What the fault named by a phase mark did.
#[derive(Default)]
struct FaultReport {
    addr: Option<String>,
    marked: Option<Instant>,
    inflight_other: usize,
    /// From the mark until no client used the instance.
    ejected: Option<Duration>,
    /// When the next mark (the heal) came, and the instance's answered
    /// calls then.
    healed: Option<Instant>,
    ok_at_heal: u64,
    /// From the heal until the instance answered again.
    back: Option<Duration>,
}

fn phases_marked(file: Option<&PathBuf>) -> Vec<String> {
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn per_instance_ok(clients: &[&Client]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in clients {
        for s in c.cluster_stats().unwrap_or_default() {
            *out.entry(s.instance.addr().to_owned()).or_insert(0) += s.succeeded;
        }
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let discover = Arc::new(EtcdDiscover::connect(
        args.etcd.iter().cloned(),
        &args.prefix,
    )?);
    let t0 = Instant::now();
    while discover.instances().snapshot().instances().len() < args.wait_instances
        && t0.elapsed() < Duration::from_secs(10)
    {
        let seen = discover.instances().version();
        discover
            .instances()
            .wait_for_change(seen, Duration::from_millis(200));
    }
    let found = discover.instances().snapshot();
    eprintln!(
        "cluster-load: {} instance(s) under {}: {}",
        found.instances().len(),
        args.prefix,
        found
            .instances()
            .iter()
            .map(|i| i.addr())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        default_timeout: Some(Duration::from_millis(args.timeout_ms.max(1))),
        keepalive: (args.keepalive_ms > 0).then(|| Keepalive {
            interval: Duration::from_millis(args.keepalive_ms),
            interval_with_calls: Duration::from_millis(args.keepalive_ms / 2),
            timeout: Duration::from_millis(args.keepalive_timeout_ms.max(1)),
            ..Keepalive::default()
        }),
        tcp_user_timeout: (args.tcp_user_timeout_ms > 0)
            .then(|| Duration::from_millis(args.tcp_user_timeout_ms)),
        ..ClientOptions::default()
    };
    let health = HealthConfig {
        max_backoff: Duration::from_secs(1),
        ..HealthConfig::default()
    };
    let idem = Client::cluster(Arc::clone(&discover))
        .options(options.clone())
        .health(health)
        .retry(RetryPolicy::new().idempotent_service("echo.Echo"))
        .build()?;
    let other = Client::cluster(Arc::clone(&discover))
        .options(options)
        .health(health)
        .build()?;

    let stop = AtomicBool::new(false);
    let phase_now = AtomicUsize::new(0);
    let latencies: Mutex<Vec<Histogram<u64>>> = Mutex::new(Vec::new());
    let (idem_counts, other_counts) = (Counts::default(), Counts::default());
    let payload = Bytes::from(vec![b'x'; args.size]);
    let mut phases: Vec<Phase> = vec![Phase {
        name: "before".into(),
        ..Phase::default()
    }];
    let mut fault_report = FaultReport::default();
    std::thread::scope(|s| {
        for (client, counts) in [(&idem, &idem_counts), (&other, &other_counts)] {
            for _ in 0..args.threads.max(1) {
                let (stub, stop, payload) = (EchoClient::new(client.clone()), &stop, &payload);
                let (phase_now, latencies) = (&phase_now, &latencies);
                s.spawn(move || {
                    let req = EchoRequest {
                        payload: payload.clone(),
                    };
                    let mut mine: Vec<Histogram<u64>> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let result = stub.echo(&req);
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let phase = phase_now.load(Ordering::Relaxed);
                        while mine.len() <= phase {
                            mine.push(histogram());
                        }
                        mine[phase].saturating_record(us.max(1));
                        match result {
                            Ok(r) if r.payload == req.payload => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => counts.fail(&Status::internal("wrong payload")),
                            Err(e) => counts.fail(&e),
                        }
                    }
                    let mut all = latencies.lock();
                    for (i, h) in mine.iter().enumerate() {
                        while all.len() <= i {
                            all.push(histogram());
                        }
                        all[i].add(h).expect("same bounds");
                    }
                });
            }
        }

        let start = Instant::now();
        let end = start + Duration::from_secs(args.secs);
        let mut last_tick = start;
        let mut last_ok = 0u64;
        let mut last_failed = (0u64, 0u64);
        let mut last_per = per_instance_ok(&[&idem, &other]);
        let clients = [&idem, &other];
        while Instant::now() < end {
            // Every 10 ms: phase marks and the fault's effects; every
            // second: a progress line.
            let next_line = (last_tick + Duration::from_secs(1)).min(end);
            while Instant::now() < next_line {
                std::thread::sleep(Duration::from_millis(10));
                let now = Instant::now();
                let marks = phases_marked(args.phase_file.as_ref());
                while phases.len() <= marks.len() {
                    let mut words = marks[phases.len() - 1].split_whitespace();
                    let name = words.next().unwrap_or("phase").to_owned();
                    let fault = words.next().map(str::to_owned);
                    if let Some(addr) = &fault {
                        fault_report.inflight_other = in_flight_on(&other, addr);
                        fault_report.addr = Some(addr.clone());
                        fault_report.marked = Some(now);
                    } else if let Some(addr) = &fault_report.addr
                        && fault_report.healed.is_none()
                    {
                        fault_report.healed = Some(now);
                        fault_report.ok_at_heal = succeeded_on(&clients, addr);
                    }
                    phases.push(Phase {
                        name,
                        fault,
                        ..Phase::default()
                    });
                    phase_now.store(phases.len() - 1, Ordering::Relaxed);
                }
                if let (Some(addr), Some(at)) = (&fault_report.addr, fault_report.marked) {
                    if fault_report.ejected.is_none() && out_of_use(&clients, addr) {
                        fault_report.ejected = Some(now - at);
                    }
                    if let Some(healed) = fault_report.healed
                        && fault_report.back.is_none()
                        && succeeded_on(&clients, addr) > fault_report.ok_at_heal
                    {
                        fault_report.back = Some(now - healed);
                    }
                }
            }
            let now = Instant::now();
            let dt = now.duration_since(last_tick).as_secs_f64().max(1e-9);
            last_tick = now;
            let ok =
                idem_counts.ok.load(Ordering::Relaxed) + other_counts.ok.load(Ordering::Relaxed);
            let failed = (
                idem_counts.failed.load(Ordering::Relaxed),
                other_counts.failed.load(Ordering::Relaxed),
            );
            let per = per_instance_ok(&[&idem, &other]);
            let phase = phases.last_mut().expect("one phase at least");
            phase.secs += dt;
            phase.calls += ok - last_ok;
            phase.idem_failed += failed.0 - last_failed.0;
            phase.other_failed += failed.1 - last_failed.1;
            let servers: Vec<String> = per
                .iter()
                .map(|(addr, n)| {
                    // A re-added instance starts its counters again.
                    let before = last_per.get(addr).copied().filter(|b| b <= n);
                    format!("{addr} {:>6.0}/s", (n - before.unwrap_or(0)) as f64 / dt)
                })
                .collect();
            println!(
                "[{:>5.1}s {:<8}] {:>7.0} calls/s | {} | failed: idempotent {} other {}",
                now.duration_since(start).as_secs_f64(),
                phase.name,
                (ok - last_ok) as f64 / dt,
                servers.join("  "),
                failed.0,
                failed.1
            );
            (last_ok, last_failed, last_per) = (ok, failed, per);
        }
        stop.store(true, Ordering::Relaxed);
    });

    let latencies = latencies.into_inner();
    let p99 = |i: usize| latencies.get(i).map_or(0, |h| h.value_at_quantile(0.99));
    println!(
        "\nphase        secs   calls/s  failed(idempotent)  failed(other)   p99_us   max_us  fault"
    );
    for (i, p) in phases.iter().enumerate() {
        println!(
            "{:<10} {:>6.1} {:>9.0} {:>19} {:>14} {:>8} {:>8}  {}",
            p.name,
            p.secs,
            p.calls as f64 / p.secs.max(1e-9),
            p.idem_failed,
            p.other_failed,
            p99(i),
            latencies.get(i).map_or(0, Histogram::max),
            p.fault.as_deref().unwrap_or("-"),
        );
    }
    let mut all = histogram();
    for h in &latencies {
        all.add(h).expect("same bounds");
    }
    let ms = |d: Option<Duration>| d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(-1));
    for (label, counts) in [("idempotent", &idem_counts), ("other", &other_counts)] {
        for (why, n) in counts.why.lock().iter() {
            println!("  {label} failures: {n} x {why}");
        }
    }
    let qps = |i: usize| {
        phases
            .get(i)
            .map_or(0.0, |p| p.calls as f64 / p.secs.max(1e-9))
    };
    let total = idem_counts.ok.load(Ordering::Relaxed)
        + other_counts.ok.load(Ordering::Relaxed)
        + idem_counts.failed.load(Ordering::Relaxed)
        + other_counts.failed.load(Ordering::Relaxed);
    println!(
        "phases={} before_qps={:.0} during_qps={:.0} after_qps={:.0} idempotent_failed={} other_failed={} total={} \
         eject_ms={} back_ms={} inflight_other_at_fault={} max_call_ms={} p99_us={} during_p99_us={}",
        phases.len(),
        qps(0),
        qps(1),
        qps(2),
        idem_counts.failed.load(Ordering::Relaxed),
        other_counts.failed.load(Ordering::Relaxed),
        total,
        ms(fault_report.ejected),
        ms(fault_report.back),
        fault_report.inflight_other,
        all.max() / 1000,
        all.value_at_quantile(0.99),
        p99(1),
    );
    Ok(())
}
