//! Faults across a real network: a cluster of test hosts in network
//! namespaces (see `net.rs`) — etcd on host 0, three `cluster-server`s on
//! hosts 1–3 registered there, `cluster-load` (two cluster clients over
//! etcd discovery: one retrying `echo.Echo` as idempotent, one not) on
//! host 4 — and one fault per test on host 2 while the load runs.
//!
//! What each test asserts, from `cluster-load`'s closing `key=value` line:
//! no idempotent call fails; a non-retrying caller loses at most the call
//! it had on the faulty instance; the instance is out of use within
//! `2 × keepalive interval + timeout` (3 s with the defaults) plus the
//! health tick; no call waits past its deadline by more than a small
//! bound; the instance serves again after the fault heals.
//!
//! Built only with `--features netns` (etcd discovery and the delay line);
//! `.ci/test` runs it as root with etcd, iproute2 and nftables installed.

mod net;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use net::Net;

const PORT: u16 = 9000;
const PREFIX: &str = "/ferropoll/netns/echo";
/// The clients' call deadline (cluster-load `--timeout-ms`).
const DEADLINE_MS: u64 = 2000;
/// Slack on time bounds for the health tick (50 ms), the load's 10 ms
/// monitor and a loaded 2-core machine.
const SLACK_MS: i64 = 1000;

/// One cluster at a time: each runs its load flat out on the machine's
/// cores, and the time bounds assume it has them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The test cluster: etcd, three servers, and a running load.
struct Cluster {
    net: Net,
    servers: Vec<u32>,
    phases: PathBuf,
    load: u32,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bin(name: &str) -> &'static str {
    match name {
        "cluster-server" => env!("CARGO_BIN_EXE_cluster-server"),
        "cluster-load" => env!("CARGO_BIN_EXE_cluster-load"),
        _ => unreachable!(),
    }
}

impl Cluster {
    /// Starts everything; the load runs `secs` seconds with `load_args`.
    /// `setup` shapes the network first.
    fn start(tag: &str, secs: u64, load_args: &[&str], setup: impl FnOnce(&mut Net)) -> Cluster {
        let mut net = Net::new(tag, 5);
        setup(&mut net);
        let dir = std::env::temp_dir().join(format!("fpn-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let etcd_ip = net.host(0).addr;
        let etcd_url = format!("http://{etcd_ip}:2379");
        let data = dir.join("etcd");
        net.spawn_with(
            0,
            "etcd",
            &[
                "--name",
                "fpn",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "fpn=http://127.0.0.1:2380",
                "--log-level",
                "error",
            ],
            false,
            false,
        );
        // Ready when the client host can reach its health endpoint.
        let t0 = Instant::now();
        loop {
            let ok = net
                .command(4, "curl", &["-sf", &format!("{etcd_url}/health")], true)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "etcd did not start on {}",
                net.host(0).ns
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut servers = Vec::new();
        for i in 1..=3 {
            let addr = format!("{}:{PORT}", net.host(i).addr);
            servers.push(net.spawn(
                i,
                bin("cluster-server"),
                &[
                    "--addr", &addr, "--etcd", &etcd_url, "--prefix", PREFIX, "--ttl", "3",
                ],
                false,
            ));
        }
        let phases = dir.join("phases");
        std::fs::write(&phases, "").unwrap();
        let secs = secs.to_string();
        let timeout = DEADLINE_MS.to_string();
        let threads = THREADS.to_string();
        let mut args = vec![
            "--etcd",
            &etcd_url,
            "--prefix",
            PREFIX,
            "--secs",
            &secs,
            "--threads",
            &threads,
            "--timeout-ms",
            &timeout,
            "--wait-instances",
            "3",
            "--phase-file",
            phases.to_str().unwrap(),
        ];
        args.extend_from_slice(load_args);
        let load = net.spawn(4, bin("cluster-load"), &args, true);
        Cluster {
            net,
            servers,
            phases,
            load,
            _dir: TempDir(dir),
        }
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:{PORT}", self.net.host(i).addr)
    }

    /// Starts a phase (`name`, and the instance a fault hits, if any).
    fn mark(&self, line: &str) {
        let mut all = std::fs::read_to_string(&self.phases).unwrap();
        all.push_str(line);
        all.push('\n');
        std::fs::write(&self.phases, all).unwrap();
    }

    /// Waits for the load to end; returns its progress lines and its
    /// closing `key=value` pairs.
    fn finish(mut self) -> (String, HashMap<String, String>) {
        let mut child = self.net.take_child(self.load);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "cluster-load failed ({status}):\n{out}");
        let last = out.lines().last().unwrap_or_default().to_owned();
        let kv = last
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        (out, kv)
    }
}

fn num(kv: &HashMap<String, String>, key: &str, out: &str) -> i64 {
    kv.get(key)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {key} in the load's output:\n{out}")) as i64
}

/// Runs `fault` on host 2 after 4 s of load, `heal` 6 s later, and 6 s of
/// load after that; returns the load's report.
fn fault_run(
    tag: &str,
    load_args: &[&str],
    fault: impl FnOnce(&Cluster),
    heal: impl FnOnce(&Cluster),
) -> (String, HashMap<String, String>) {
    shaped_run(tag, load_args, |_| {}, Some(2), fault, heal)
}

/// [`fault_run`] on a network shaped by `setup` first, with the fault's
/// victim (whose ejection the load measures) named or not.
fn shaped_run(
    tag: &str,
    load_args: &[&str],
    setup: impl FnOnce(&mut Net),
    victim: Option<usize>,
    fault: impl FnOnce(&Cluster),
    heal: impl FnOnce(&Cluster),
) -> (String, HashMap<String, String>) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cluster = Cluster::start(tag, 18, load_args, setup);
    // The load waits for the three instances (up to 10 s) before its
    // clock starts.
    std::thread::sleep(Duration::from_secs(4));
    fault(&cluster);
    match victim {
        Some(i) => cluster.mark(&format!("during {}", cluster.addr(i))),
        None => cluster.mark("during"),
    }
    std::thread::sleep(Duration::from_secs(6));
    heal(&cluster);
    cluster.mark("after");
    let (out, kv) = cluster.finish();
    eprintln!("{out}");
    (out, kv)
}

/// The assertions every fault shares.
fn assert_fault_handled(out: &str, kv: &HashMap<String, String>, eject_bound_ms: i64) {
    assert_eq!(num(kv, "phases", out), 3, "{out}");
    assert_eq!(num(kv, "idempotent_failed", out), 0, "{out}");
    let eject = num(kv, "eject_ms", out);
    assert!(
        (0..=eject_bound_ms + SLACK_MS).contains(&eject),
        "eject_ms={eject}, bound {eject_bound_ms} ms + {SLACK_MS}:\n{out}"
    );
    let max_call = num(kv, "max_call_ms", out);
    assert!(
        max_call <= i64::try_from(DEADLINE_MS).unwrap() + SLACK_MS,
        "a call waited {max_call} ms (deadline {DEADLINE_MS}):\n{out}"
    );
    let back = num(kv, "back_ms", out);
    assert!(back >= 0, "the instance never served again:\n{out}");
    assert!(num(kv, "after_qps", out) > 0, "{out}");
    // Each thread of the non-retrying client loses at most the one call it
    // had on the instance when it went silent: once that call fails, the
    // instance is out.
    assert!(num(kv, "other_failed", out) <= THREADS, "{out}");
}

/// Keepalive defaults: 1 s interval (500 ms with calls waiting), 1 s
/// timeout.
const KEEPALIVE_BOUND_MS: i64 = 2 * 1000 + 1000;
/// Calling threads per client.
const THREADS: i64 = 4;

#[test]
fn a_silently_partitioned_server_is_ejected_by_keepalive_and_comes_back() {
    let (out, kv) = fault_run("part", &[], |c| c.net.partition(2), |c| c.net.heal(2));
    assert_fault_handled(&out, &kv, KEEPALIVE_BOUND_MS);
    // Calls of the non-retrying client that were on the victim when it
    // went silent, or sent there before it was found dead, fail; report
    // them beside the in-flight count at the fault.
    eprintln!(
        "partition: other_failed={} inflight_other_at_fault={} eject_ms={} back_ms={}",
        num(&kv, "other_failed", &out),
        num(&kv, "inflight_other_at_fault", &out),
        num(&kv, "eject_ms", &out),
        num(&kv, "back_ms", &out)
    );
}

#[test]
fn a_frozen_server_process_is_ejected_by_keepalive_and_comes_back() {
    let pids = std::cell::Cell::new(0u32);
    let (out, kv) = fault_run(
        "freeze",
        &[],
        |c| {
            pids.set(c.servers[1]);
            Net::signal(c.servers[1], "STOP");
        },
        |_| Net::signal(pids.get(), "CONT"),
    );
    assert_fault_handled(&out, &kv, KEEPALIVE_BOUND_MS);
}

#[test]
fn without_keepalive_tcp_user_timeout_still_bounds_a_partition() {
    // Keepalive off, TCP_USER_TIMEOUT 1 s: calls in flight to the silent
    // server leave unacknowledged data, so the kernel fails the connection
    // after 1 s; the calls fail over (idempotent) or fail fast.
    let (out, kv) = fault_run(
        "uto",
        &["--keepalive-ms", "0", "--tcp-user-timeout-ms", "1000"],
        |c| c.net.partition(2),
        |c| c.net.heal(2),
    );
    assert_fault_handled(&out, &kv, 1000 + 1000);
}

#[test]
fn one_percent_loss_costs_no_call() {
    let (out, kv) = fault_run("loss", &[], |c| c.net.loss(2, 1), |c| c.net.heal(2));
    assert_eq!(num(&kv, "idempotent_failed", &out), 0, "{out}");
    assert_eq!(num(&kv, "other_failed", &out), 0, "{out}");
    assert!(num(&kv, "during_qps", &out) > 0, "{out}");
    eprintln!(
        "loss 1%: during_p99_us={} p99_us={} max_call_ms={}",
        num(&kv, "during_p99_us", &out),
        num(&kv, "p99_us", &out),
        num(&kv, "max_call_ms", &out)
    );
}

#[test]
fn a_bandwidth_cap_on_one_server_costs_no_call() {
    let (out, kv) = fault_run(
        "tbf",
        &[],
        |c| c.net.bandwidth(2, "5mbit"),
        |c| c.net.unbandwidth(2),
    );
    assert_eq!(num(&kv, "idempotent_failed", &out), 0, "{out}");
    assert_eq!(num(&kv, "other_failed", &out), 0, "{out}");
    assert!(num(&kv, "during_qps", &out) > 0, "{out}");
    eprintln!(
        "5 mbit/s cap: before_qps={} during_qps={} during_p99_us={} max_call_ms={}",
        num(&kv, "before_qps", &out),
        num(&kv, "during_qps", &out),
        num(&kv, "during_p99_us", &out),
        num(&kv, "max_call_ms", &out)
    );
}

#[test]
fn a_server_that_comes_back_on_a_new_address_is_found_through_etcd() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut cluster = Cluster::start("readdr", 18, &[], |_| {});
    std::thread::sleep(Duration::from_secs(4));
    let old = cluster.addr(2);
    // The server dies (its key stays until the 3 s lease expires), its
    // host comes back with a new address, a new server starts there.
    Net::signal(cluster.servers[1], "KILL");
    let new_ip = cluster.net.readdress(2);
    let new = format!("{new_ip}:{PORT}");
    let etcd_url = format!("http://{}:2379", cluster.net.host(0).addr);
    cluster.net.spawn(
        2,
        bin("cluster-server"),
        &[
            "--addr", &new, "--etcd", &etcd_url, "--prefix", PREFIX, "--ttl", "3",
        ],
        false,
    );
    cluster.mark(&format!("during {old}"));
    std::thread::sleep(Duration::from_secs(6));
    cluster.mark("after");
    let (out, kv) = cluster.finish();
    eprintln!("{out}");
    assert_eq!(num(&kv, "idempotent_failed", &out), 0, "{out}");
    // The killed server's connections closed: calls on them failed at
    // once — per non-retrying thread the call it had there, and at most
    // one more sent on the connection before its close was read (CI saw
    // 6 of 8 once; the cluster demo's SIGKILL on loopback shows the same).
    assert!(num(&kv, "other_failed", &out) <= 2 * THREADS, "{out}");
    let eject = num(&kv, "eject_ms", &out);
    assert!((0..=SLACK_MS).contains(&eject), "eject_ms={eject}:\n{out}");
    // The last progress line shows the new address serving.
    let last_progress = out
        .lines()
        .rfind(|l| l.starts_with('['))
        .unwrap_or_default();
    let rate = last_progress
        .split('|')
        .nth(1)
        .and_then(|servers| {
            let words: Vec<&str> = servers.split_whitespace().collect();
            let at = words.iter().position(|w| *w == new)?;
            words
                .get(at + 1)?
                .trim_end_matches("/s")
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(rate > 0.0, "the new address {new} serves nothing:\n{out}");
}

#[test]
fn fifty_ms_round_trips_with_one_percent_loss_cost_no_call() {
    // The client host's link gets 25 ms each way (RTT 50 ms to every
    // server and to etcd); then 1% loss in both directions on it too.
    let (out, kv) = shaped_run(
        "rtt",
        &[],
        |net| net.delay(4, 25, 0, 0),
        None,
        |c| c.net.loss(4, 1),
        |c| c.net.heal(4),
    );
    assert_eq!(num(&kv, "idempotent_failed", &out), 0, "{out}");
    assert_eq!(num(&kv, "other_failed", &out), 0, "{out}");
    assert!(num(&kv, "during_qps", &out) > 0, "{out}");
    let p99 = num(&kv, "p99_us", &out);
    assert!(
        p99 >= 50_000,
        "the delay line is not in the path: p99 {p99} us:\n{out}"
    );
    eprintln!(
        "50 ms RTT: before_qps={} p99_us={} | + 1% loss: during_qps={} during_p99_us={} max_call_ms={}",
        num(&kv, "before_qps", &out),
        p99,
        num(&kv, "during_qps", &out),
        num(&kv, "during_p99_us", &out),
        num(&kv, "max_call_ms", &out)
    );
}

#[test]
fn jitter_reordering_and_duplication_cost_no_call() {
    // 5 ms plus 0–10 ms of jitter each way on the client host's link
    // (frames overtake each other) and 1% of frames sent twice.
    let (out, kv) = shaped_run(
        "jitter",
        &[],
        |net| net.delay(4, 5, 10, 1),
        None,
        |_| {},
        |_| {},
    );
    assert_eq!(num(&kv, "idempotent_failed", &out), 0, "{out}");
    assert_eq!(num(&kv, "other_failed", &out), 0, "{out}");
    assert!(num(&kv, "during_qps", &out) > 0, "{out}");
    eprintln!(
        "jitter 5+0..10 ms, 1% dup: qps={} p99_us={} max_call_ms={}",
        num(&kv, "during_qps", &out),
        num(&kv, "p99_us", &out),
        num(&kv, "max_call_ms", &out)
    );
}
