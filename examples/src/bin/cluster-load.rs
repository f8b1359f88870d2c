//! The load of the cluster demo (`examples/bench/cluster-demo.sh`): finds
//! the `echo.Echo` instances through etcd and calls them from two cluster
//! clients at once — one that treats `echo.Echo` as idempotent (retried on
//! another instance within the retry budget), one that does not — with a
//! progress line per second showing calls/s per server and the errors.
//!
//! Phases are marked from outside: each line appended to `--phase-file`
//! (e.g. `during`, then `after`) starts a new phase, named by the line,
//! from the one-second tick in which it appeared; the summary gives each
//! phase's calls/s and failed calls, then one `key=value` line.
//!
//! ```text
//! cluster-load --etcd http://127.0.0.1:2379 --prefix /ferropoll/demo/echo --secs 24 \
//!     --phase-file /tmp/phases
//! ...
//! phases=3 before_qps=.. during_qps=.. after_qps=.. idempotent_failed=.. other_failed=.. total=..
//! ```
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ferropoll_examples::pb::echo::{EchoClient, EchoRequest};
use ferropoll_rpc::cluster::{Discover, EtcdDiscover, HealthConfig, RetryPolicy};
use ferropoll_rpc::{Client, ClientOptions, Status};
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
    let (idem_counts, other_counts) = (Counts::default(), Counts::default());
    let payload = Bytes::from(vec![b'x'; args.size]);
    let mut phases: Vec<Phase> = vec![Phase {
        name: "before".into(),
        ..Phase::default()
    }];
    std::thread::scope(|s| {
        for (client, counts) in [(&idem, &idem_counts), (&other, &other_counts)] {
            for _ in 0..args.threads.max(1) {
                let (stub, stop, payload) = (EchoClient::new(client.clone()), &stop, &payload);
                s.spawn(move || {
                    let req = EchoRequest {
                        payload: payload.clone(),
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match stub.echo(&req) {
                            Ok(r) if r.payload == req.payload => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => counts.fail(&Status::internal("wrong payload")),
                            Err(e) => counts.fail(&e),
                        }
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
        while Instant::now() < end {
            std::thread::sleep(
                Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
            );
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
            let marks = phases_marked(args.phase_file.as_ref());
            while phases.len() <= marks.len() {
                phases.push(Phase {
                    name: marks[phases.len() - 1].clone(),
                    ..Phase::default()
                });
            }
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

    println!("\nphase        secs   calls/s  failed(idempotent)  failed(other)");
    for p in &phases {
        println!(
            "{:<10} {:>6.1} {:>9.0} {:>19} {:>14}",
            p.name,
            p.secs,
            p.calls as f64 / p.secs.max(1e-9),
            p.idem_failed,
            p.other_failed
        );
    }
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
        "phases={} before_qps={:.0} during_qps={:.0} after_qps={:.0} idempotent_failed={} other_failed={} total={}",
        phases.len(),
        qps(0),
        qps(1),
        qps(2),
        idem_counts.failed.load(Ordering::Relaxed),
        other_counts.failed.load(Ordering::Relaxed),
        total
    );
    Ok(())
}
