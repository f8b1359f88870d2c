//! How each balancing policy spreads accepted connections over loops.
//! (Run with `--nocapture` to see the distributions.)

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Addr, Balance, Connection, EventLoop, Handler, Listener};
use parking_lot::Mutex;

const LOOPS: usize = 4;

#[derive(Default)]
struct Seen {
    /// (peer, loop index) in accept order.
    conns: Mutex<Vec<(SocketAddr, usize)>>,
    gone: AtomicUsize,
}

struct Recorder(Arc<Seen>);

impl Handler for Recorder {
    type State = ();
    fn on_connect(&self, conn: &Connection) {
        if let Addr::Tcp(peer) = conn.peer_addr() {
            self.0.conns.lock().push((*peer, conn.loop_index()));
        }
    }
    fn on_request(&self, _: &mut (), _conn: &Connection) -> std::io::Result<()> {
        Ok(())
    }
    fn on_disconnect(&self, _: &mut (), _conn: &Connection) {
        self.0.gone.fetch_add(1, Ordering::SeqCst);
    }
}

fn server(balance: Balance) -> (EventLoop, Addr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let lp = EventLoop::builder()
        .num_loops(LOOPS)
        .balance(balance)
        .build(Recorder(seen.clone()))
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    (lp, addr, seen)
}

/// Connects one client and waits until the server has placed it; returns
/// the stream and the loop it went to.
fn connect(addr: &Addr, seen: &Seen) -> (TcpStream, usize) {
    let s = tcp(addr);
    let me = s.local_addr().unwrap();
    let mut idx = None;
    assert!(wait_until(Duration::from_secs(10), || {
        idx = seen.conns.lock().iter().find(|c| c.0 == me).map(|c| c.1);
        idx.is_some()
    }));
    (s, idx.unwrap())
}

fn histogram(loops: impl IntoIterator<Item = usize>) -> [usize; LOOPS] {
    let mut h = [0; LOOPS];
    for l in loops {
        h[l] += 1;
    }
    h
}

#[test]
fn round_robin_takes_turns() {
    let leaks = LeakCheck::new();
    let (lp, addr, seen) = server(Balance::RoundRobin);
    let placed: Vec<(TcpStream, usize)> = (0..40).map(|_| connect(&addr, &seen)).collect();
    let order: Vec<usize> = placed.iter().map(|p| p.1).collect();
    eprintln!(
        "round robin, 40 connections: per loop {:?}",
        histogram(order.iter().copied())
    );
    for w in order.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % LOOPS, "not in turn: {order:?}");
    }
    assert_eq!(histogram(order), [10; LOOPS]);
    drop(placed);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn least_connections_fills_the_emptiest_loop() {
    let leaks = LeakCheck::new();
    let (lp, addr, seen) = server(Balance::LeastConnections);
    let mut placed: Vec<(TcpStream, usize)> = (0..8).map(|_| connect(&addr, &seen)).collect();
    let first = histogram(placed.iter().map(|p| p.1));
    eprintln!("least connections, 8 connections: per loop {first:?}");
    assert_eq!(first, [2; LOOPS]);
    // Empty loops 0 and 1: the next four connections all go there.
    let before = seen.gone.load(Ordering::SeqCst);
    placed.retain(|p| p.1 >= 2);
    // (`stats().open` drops after the per-loop count the policy reads.)
    assert!(wait_until(Duration::from_secs(10), || {
        seen.gone.load(Ordering::SeqCst) == before + 4 && lp.stats().open == 4
    }));
    let more: Vec<(TcpStream, usize)> = (0..4).map(|_| connect(&addr, &seen)).collect();
    let refill = histogram(more.iter().map(|p| p.1));
    eprintln!("least connections, after closing loops 0 and 1, 4 more: per loop {refill:?}");
    assert_eq!(refill, [2, 2, 0, 0]);
    drop((placed, more));
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn source_addr_hash_maps_each_address_to_its_loop() {
    let leaks = LeakCheck::new();
    let (lp, addr, seen) = server(Balance::SourceAddrHash);
    let placed: Vec<(TcpStream, usize)> = (0..64).map(|_| connect(&addr, &seen)).collect();
    let mut by_loop: HashMap<usize, usize> = HashMap::new();
    for (s, idx) in &placed {
        let me = s.local_addr().unwrap();
        assert_eq!(
            *idx,
            Balance::source_addr_loop(&me, LOOPS),
            "{me} went to the wrong loop"
        );
        *by_loop.entry(*idx).or_default() += 1;
    }
    let h = histogram(placed.iter().map(|p| p.1));
    eprintln!("source address hash, 64 connections: per loop {h:?}");
    // 64 ephemeral ports over 4 loops: each loop gets some.
    assert!(h.iter().all(|&n| n > 0), "a loop got nothing: {h:?}");
    drop(placed);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn source_addr_hash_is_stable_and_spreads_ports() {
    // The function itself, over many ports of one address.
    let mut h = [0usize; LOOPS];
    for port in 30_000..34_000u16 {
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        let i = Balance::source_addr_loop(&a, LOOPS);
        assert_eq!(i, Balance::source_addr_loop(&a, LOOPS));
        h[i] += 1;
    }
    // Within 10 % of even.
    for n in h {
        assert!((900..=1100).contains(&n), "uneven: {h:?}");
    }
    assert_eq!(
        Balance::source_addr_loop(&"[::1]:80".parse().unwrap(), 0),
        0
    );
}
