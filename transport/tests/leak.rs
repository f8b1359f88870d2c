//! After 10,000 connect/close cycles, descriptors and mcache buffers are back
//! at their baseline.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Dialer, Dispatch};

#[test]
fn ten_thousand_connect_close_cycles_leak_nothing() {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(Dispatch::Inline, 2);
    let dialer = Dialer::new().unwrap();
    const CYCLES: usize = 10_000;
    for i in 0..CYCLES {
        match i % 4 {
            // Connect and close at once.
            0 => drop(tcp(&addr)),
            // One echo, then close.
            1 => {
                let mut s = tcp(&addr);
                s.write_all(b"ping").unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).unwrap();
            }
            // Send and close without reading the echo (may reset).
            2 => {
                let mut s = tcp(&addr);
                s.write_all(&payload(3000, i as u8)).unwrap();
            }
            // A dialed connection, closed locally.
            _ => {
                let c = dialer
                    .dial_tcp(addr.as_tcp().unwrap(), Duration::from_secs(2))
                    .unwrap();
                // Bounded: a lost wake-up fails the test instead of hanging it.
                c.set_read_timeout(Some(common::socket_timeout()));
                c.writer().write_binary(b"x");
                c.flush().unwrap();
                assert_eq!(c.reader().next(1).unwrap(), b"x");
                c.close();
            }
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || lp.stats().open == 0),
        "open: {:?}",
        lp.stats()
    );
    assert!(wait_until(Duration::from_secs(10), || dialer
        .event_loop()
        .stats()
        .open
        == 0));
    let s = lp.stats();
    assert_eq!(s.accepted, CYCLES as u64);
    assert_eq!(s.closed, CYCLES as u64);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    dialer
        .event_loop()
        .shutdown(Duration::from_secs(5))
        .unwrap();
    drop((lp, dialer));
    leaks.assert_clean_within(Duration::from_secs(10));
}

#[test]
fn a_burst_of_connections_is_accepted() {
    let _leaks = LeakCheck::new();
    let (lp, addr) = server(Dispatch::Inline, 1);
    // Within the test's descriptor budget (each connection costs two here).
    let n = 2_000;
    let clients: Vec<_> = (0..n)
        .map(|_| std::net::TcpStream::connect(addr.as_tcp().unwrap()).unwrap())
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || lp.stats().accepted == n as u64),
        "{:?}",
        lp.stats()
    );
    drop(clients);
    assert!(wait_until(Duration::from_secs(10), || lp.stats().open == 0));
    lp.shutdown(Duration::from_secs(5)).unwrap();
}
