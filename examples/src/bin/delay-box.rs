//! A delay line between two network interfaces, for test networks whose
//! kernel has no `sch_netem` (the network-namespace tests and the veth
//! benchmark): every Ethernet frame received on one interface is sent out
//! of the other after `--delay-us` plus a uniform random `0..--jitter-us`
//! (frames may overtake each other: reordering), and `--dup-percent` of
//! them are sent twice.
//!
//! Runs in a namespace of its own that holds only the two interfaces (no
//! addresses): `--a` faces one host, whose `eth0` MAC is `--host-mac`,
//! `--b` faces the rest of the network. A raw socket also sees the frames
//! it sends itself; they are told apart by that MAC (on `a` every frame
//! received comes from the host; on `b`, none does). Prints one line on
//! stderr when it forwards, then runs until killed.
//!
//! ```text
//! delay-box --a dly0 --b dly1 --host-mac 3a:c6:c1:8c:09:28 --delay-us 500
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use parking_lot::{Condvar, Mutex};
use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender, MacAddr, NetworkInterface};

/// Delay line between two interfaces.
#[derive(Parser, Debug)]
struct Args {
    /// The interface facing the host.
    #[arg(long)]
    a: String,
    /// The interface facing the network.
    #[arg(long)]
    b: String,
    /// The MAC address of the host's interface (the peer of `--a`).
    #[arg(long)]
    host_mac: MacAddr,
    /// Delay of every frame, each way, in microseconds.
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// Extra random delay of up to this many microseconds per frame.
    #[arg(long, default_value_t = 0)]
    jitter_us: u64,
    /// Percentage of frames sent twice.
    #[arg(long, default_value_t = 0.0)]
    dup_percent: f64,
}

/// A frame waiting for its time: when, arrival order (ties), the bytes.
type Pending = Reverse<(Instant, u64, Vec<u8>)>;

/// Frames waiting for their time, earliest first (ties in arrival order).
#[derive(Default)]
struct Line {
    queue: Mutex<BinaryHeap<Pending>>,
    ready: Condvar,
}

fn open(iface: &NetworkInterface) -> (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>) {
    let config = Config {
        read_buffer_size: 65536,
        write_buffer_size: 65536,
        ..Config::default()
    };
    match pnet_datalink::channel(iface, config) {
        Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
        Ok(_) => panic!("{}: not an Ethernet channel", iface.name),
        Err(e) => panic!("{}: cannot open a raw socket: {e}", iface.name),
    }
}

/// Source MAC of an Ethernet frame.
fn source(frame: &[u8]) -> Option<MacAddr> {
    let s = frame.get(6..12)?;
    Some(MacAddr::new(s[0], s[1], s[2], s[3], s[4], s[5]))
}

/// Reads frames from `rx` (those `keep` accepts) into `line`.
fn receive(
    mut rx: Box<dyn DataLinkReceiver>,
    line: &Line,
    args: &Args,
    keep: impl Fn(MacAddr) -> bool,
) {
    let mut seq = 0u64;
    loop {
        let frame = match rx.next() {
            Ok(f) => f,
            Err(e) => panic!("delay-box: read failed: {e}"),
        };
        if !source(frame).is_some_and(&keep) {
            continue;
        }
        let now = Instant::now();
        let copies = if args.dup_percent > 0.0 && fastrand::f64() * 100.0 < args.dup_percent {
            2
        } else {
            1
        };
        let mut q = line.queue.lock();
        for _ in 0..copies {
            let jitter = if args.jitter_us > 0 {
                fastrand::u64(0..=args.jitter_us)
            } else {
                0
            };
            let due = now + Duration::from_micros(args.delay_us + jitter);
            q.push(Reverse((due, seq, frame.to_vec())));
            seq += 1;
        }
        drop(q);
        line.ready.notify_one();
    }
}

/// Sends the frames of `line` on `tx` when their time comes.
fn send(mut tx: Box<dyn DataLinkSender>, line: &Line) {
    let mut q = line.queue.lock();
    loop {
        let now = Instant::now();
        match q.peek() {
            None => line.ready.wait(&mut q),
            Some(Reverse((due, _, _))) if *due > now => {
                let due = *due;
                line.ready.wait_until(&mut q, due);
            }
            Some(_) => {
                let Some(Reverse((_, _, frame))) = q.pop() else {
                    continue;
                };
                drop(q);
                if let Some(Err(e)) = tx.send_to(&frame, None) {
                    eprintln!("delay-box: dropped a {}-byte frame: {e}", frame.len());
                }
                q = line.queue.lock();
            }
        }
    }
}

fn main() {
    let args = Arc::new(Args::parse());
    let find = |name: &str| {
        pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("delay-box: no interface {name}"))
    };
    let (tx_a, rx_a) = open(&find(&args.a));
    let (tx_b, rx_b) = open(&find(&args.b));
    let to_b = Arc::new(Line::default());
    let to_a = Arc::new(Line::default());
    eprintln!(
        "delay-box: {} <-> {} delay {} us jitter {} us dup {}%",
        args.a, args.b, args.delay_us, args.jitter_us, args.dup_percent
    );
    let host = args.host_mac;
    std::thread::scope(|s| {
        let (args1, args2) = (&*args, &*args);
        let (l1, l2, l3, l4) = (&*to_b, &*to_a, &*to_b, &*to_a);
        s.spawn(move || receive(rx_a, l1, args1, move |src| src == host));
        s.spawn(move || receive(rx_b, l2, args2, move |src| src != host));
        s.spawn(move || send(tx_b, l3));
        s.spawn(move || send(tx_a, l4));
    });
}
