//! The UDP echo load of `udp-bench`: `flows` dialed UDP endpoints on one
//! ferropoll client loop (so the load itself sends and receives in
//! `sendmmsg`/`recvmmsg` batches and is not the bottleneck), each keeping
//! `window` datagrams in flight. Every echo is checked and answered at
//! once with the next datagram of its flow.
//!
//! Losses: a flow that got no echo for `loss_timeout` while datagrams were
//! in flight counts them lost, starts a new epoch (echoes of an older epoch
//! arrive late and are only counted) and sends a fresh window. So a burst
//! of drops costs throughput for one timeout, and the load never hangs.
//!
//! Datagram layout: flow (u32 LE), epoch (u32 LE), sequence (u64 LE), then
//! a pattern byte `seq + i` at offset `i`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferropoll_transport::{EventLoop, UdpEndpoint, handler_fn, udp_handler_fn};

/// Bytes of the header every datagram carries.
pub const HEADER: usize = 16;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Dialed UDP sockets.
    pub flows: usize,
    /// Datagrams in flight per flow.
    pub window: usize,
    /// Datagram size (at least [`HEADER`]).
    pub size: usize,
    /// Not measured.
    pub warmup: Duration,
    /// Measured.
    pub secs: Duration,
    /// No echo for this long: what is in flight is lost.
    pub loss_timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Echoes per second in the measured window.
    pub dgrams_per_s: f64,
    /// Echoes in the measured window.
    pub replies: u64,
    /// Datagrams declared lost in the measured window.
    pub lost: u64,
    /// Echoes of the whole run (warm-up included).
    pub total_replies: u64,
    /// Datagrams sent in the whole run.
    pub total_sent: u64,
    /// Echoes that came after their datagram was declared lost.
    pub late: u64,
    /// Echoes whose bytes were wrong.
    pub errors: u64,
}

impl LoadReport {
    /// The one `key=value` line of `udp-bench`.
    pub fn line(&self) -> String {
        format!(
            "dgrams_per_s={:.0} lost={} replies={} total_replies={} total_sent={} late={} errors={}",
            self.dgrams_per_s,
            self.lost,
            self.replies,
            self.total_replies,
            self.total_sent,
            self.late,
            self.errors
        )
    }
}

#[derive(Default)]
struct Flow {
    epoch: AtomicU32,
    in_flight: AtomicU64,
    next_seq: AtomicU64,
    /// Nanoseconds since the start of the last echo (or refill).
    last_rx: AtomicU64,
}

#[derive(Default)]
struct Totals {
    replies: AtomicU64,
    sent: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Writes datagram `seq` of `flow` in `epoch` into `buf` (`size` bytes).
pub fn fill(buf: &mut Vec<u8>, size: usize, flow: u32, epoch: u32, seq: u64) {
    let size = size.max(HEADER);
    buf.clear();
    buf.extend_from_slice(&flow.to_le_bytes());
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend((HEADER..size).map(|i| (seq as u8).wrapping_add(i as u8)));
}

/// `(flow, epoch, seq)` of a datagram of `size` bytes with an intact
/// pattern, else `None`.
pub fn check(data: &[u8], size: usize) -> Option<(u32, u32, u64)> {
    if data.len() != size.max(HEADER) {
        return None;
    }
    let flow = u32::from_le_bytes(data[0..4].try_into().ok()?);
    let epoch = u32::from_le_bytes(data[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(data[8..16].try_into().ok()?);
    let ok = data[HEADER..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (seq as u8).wrapping_add((HEADER + i) as u8));
    ok.then_some((flow, epoch, seq))
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends a fresh window on `flow`'s endpoint (from any thread).
fn refill(ep: &UdpEndpoint, flow_id: u32, flow: &Flow, totals: &Totals, cfg: &LoadConfig) {
    let epoch = flow.epoch.load(Ordering::Relaxed);
    let dgrams: Vec<Vec<u8>> = (0..cfg.window)
        .map(|_| {
            let mut b = Vec::with_capacity(cfg.size);
            let seq = flow.next_seq.fetch_add(1, Ordering::Relaxed);
            fill(&mut b, cfg.size, flow_id, epoch, seq);
            b
        })
        .collect();
    let refs: Vec<&[u8]> = dgrams.iter().map(|d| d.as_slice()).collect();
    let sent = ep.send_many(&refs).unwrap_or(0) as u64;
    flow.in_flight.fetch_add(sent, Ordering::Relaxed);
    totals.sent.fetch_add(sent, Ordering::Relaxed);
}

/// Runs the load; `progress` prints one line per second on stderr.
pub fn run(cfg: &LoadConfig, progress: bool) -> io::Result<LoadReport> {
    let cfg = Arc::new(cfg.clone());
    let client = EventLoop::builder()
        .name("udp-bench")
        .num_loops(1)
        .build(handler_fn(|_| Ok(())))?;
    let start = Instant::now();
    let totals = Arc::new(Totals::default());
    let flows: Arc<Vec<Flow>> = Arc::new((0..cfg.flows.max(1)).map(|_| Flow::default()).collect());
    let endpoints: Arc<OnceLock<Vec<UdpEndpoint>>> = Arc::default();
    let mut eps = Vec::with_capacity(flows.len());
    for flow_id in 0..flows.len() {
        let (flows, totals, cfg) = (flows.clone(), totals.clone(), cfg.clone());
        let ep = client.dial_udp(
            cfg.addr,
            udp_handler_fn(move |data, _peer, out| {
                let Some((f, epoch, _seq)) = check(data, cfg.size) else {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let flow = &flows[flow_id];
                if f as usize != flow_id {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if epoch != flow.epoch.load(Ordering::Relaxed) {
                    totals.late.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                totals.replies.fetch_add(1, Ordering::Relaxed);
                flow.in_flight.fetch_sub(1, Ordering::Relaxed);
                flow.last_rx
                    .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if totals.stop.load(Ordering::Relaxed) {
                    return;
                }
                let seq = flow.next_seq.fetch_add(1, Ordering::Relaxed);
                SCRATCH.with(|s| {
                    let mut s = s.borrow_mut();
                    fill(&mut s, cfg.size, flow_id as u32, epoch, seq);
                    out.send(&s);
                });
                flow.in_flight.fetch_add(1, Ordering::Relaxed);
                totals.sent.fetch_add(1, Ordering::Relaxed);
            }),
        )?;
        eps.push(ep);
    }
    let _ = endpoints.set(eps);
    // Loss detection on the client loop's timer heap.
    let tick = {
        let (flows, totals, cfg, endpoints) = (
            flows.clone(),
            totals.clone(),
            cfg.clone(),
            endpoints.clone(),
        );
        let timeout = cfg.loss_timeout.as_nanos() as u64;
        client.every(0, Duration::from_millis(10), move || {
            if totals.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = start.elapsed().as_nanos() as u64;
            let Some(eps) = endpoints.get() else { return };
            for (i, flow) in flows.iter().enumerate() {
                let quiet = now.saturating_sub(flow.last_rx.load(Ordering::Relaxed));
                if quiet < timeout {
                    continue;
                }
                let lost = flow.in_flight.swap(0, Ordering::Relaxed);
                totals.lost.fetch_add(lost, Ordering::Relaxed);
                flow.epoch.fetch_add(1, Ordering::Relaxed);
                flow.last_rx.store(now, Ordering::Relaxed);
                refill(&eps[i], i as u32, flow, &totals, &cfg);
            }
        })?
    };
    let eps = endpoints.get().expect("endpoints set");
    for (i, flow) in flows.iter().enumerate() {
        flow.last_rx
            .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        refill(&eps[i], i as u32, flow, &totals, &cfg);
    }
    let sleep_reporting = |d: Duration| {
        let end = Instant::now() + d;
        let mut last = totals.replies.load(Ordering::Relaxed);
        while Instant::now() < end {
            let step = (end - Instant::now()).min(Duration::from_secs(1));
            std::thread::sleep(step);
            if progress {
                let now = totals.replies.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>10.0} dgrams/s  lost {}",
                    (now - last) as f64 / step.as_secs_f64().max(1e-9),
                    totals.lost.load(Ordering::Relaxed)
                );
                last = now;
            }
        }
    };
    sleep_reporting(cfg.warmup);
    let (r0, l0) = (
        totals.replies.load(Ordering::Relaxed),
        totals.lost.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    sleep_reporting(cfg.secs);
    let (r1, l1) = (
        totals.replies.load(Ordering::Relaxed),
        totals.lost.load(Ordering::Relaxed),
    );
    let elapsed = t0.elapsed().as_secs_f64();
    totals.stop.store(true, Ordering::Relaxed);
    tick.cancel();
    client.shutdown(Duration::from_secs(2)).ok();
    Ok(LoadReport {
        dgrams_per_s: (r1 - r0) as f64 / elapsed,
        replies: r1 - r0,
        lost: l1 - l0,
        total_replies: totals.replies.load(Ordering::Relaxed),
        total_sent: totals.sent.load(Ordering::Relaxed),
        late: totals.late.load(Ordering::Relaxed),
        errors: totals.errors.load(Ordering::Relaxed),
    })
}
