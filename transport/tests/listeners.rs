//! Several listeners on one EventLoop (TCP, Unix and UDP at once) and
//! per-loop `SO_REUSEPORT` listeners.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Connection, EventLoop, Handler, Listener, udp_handler_fn};
use parking_lot::Mutex;

#[test]
fn one_event_loop_serves_tcp_unix_and_udp_at_once() {
    let leaks = LeakCheck::new();
    let dir = std::env::temp_dir().join(format!("ferropoll-multi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("echo.sock");

    let lp = EventLoop::builder()
        .num_loops(2)
        .build(echo_handler())
        .unwrap();
    let tcp_addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let tcp_addr2 = lp.listen_tcp("127.0.0.1:0").unwrap();
    let unix_addr = lp.listen(Listener::bind_unix(&sock_path).unwrap()).unwrap();
    let udp = lp
        .listen_udp(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            udp_handler_fn(|d, p, out| out.send_to(d, p)),
        )
        .unwrap();
    assert_eq!(
        lp.local_addrs(),
        vec![tcp_addr.clone(), tcp_addr2.clone(), unix_addr]
    );

    // All four at the same time, from four threads.
    let mut threads = Vec::new();
    for (i, addr) in [tcp_addr, tcp_addr2].into_iter().enumerate() {
        threads.push(std::thread::spawn(move || {
            for round in 0..50 {
                let data = payload(100 + round * 37, i as u8);
                let back = echo_through(tcp(&addr), &data);
                assert!(back == data);
            }
        }));
    }
    let path = sock_path.clone();
    threads.push(std::thread::spawn(move || {
        for round in 0..50 {
            let s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(common::socket_timeout())).unwrap();
            let data = payload(100 + round * 37, 9);
            let back = echo_through(s, &data);
            assert!(back == data);
        }
    }));
    let udp_addr = udp.local_addr();
    threads.push(std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(common::socket_timeout())).unwrap();
        let mut buf = [0u8; 4096];
        for round in 0..50 {
            let data = payload(100 + round * 37, 5);
            s.send_to(&data, udp_addr).unwrap();
            let (n, _) = s.recv_from(&mut buf).unwrap();
            assert!(buf[..n] == data[..]);
        }
    }));
    for t in threads {
        t.join().unwrap();
    }
    let st = lp.stats();
    assert_eq!(st.accepted, 150);
    assert_eq!(st.datagrams_in, 50);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop((lp, udp));
    let _ = std::fs::remove_dir_all(&dir);
    leaks.assert_clean();
}

/// Records which loop each connection landed on; echoes.
struct Where(Arc<Mutex<Vec<usize>>>);

impl Handler for Where {
    type State = ();
    fn on_connect(&self, conn: &Connection) {
        self.0.lock().push(conn.loop_index());
    }
    fn on_request(&self, _: &mut (), conn: &Connection) -> std::io::Result<()> {
        echo_round(conn)
    }
}

#[test]
fn reuse_port_gives_each_loop_its_own_listener() {
    let leaks = LeakCheck::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let lp = EventLoop::builder()
        .num_loops(2)
        .reuse_port(true)
        .build(Where(seen.clone()))
        .unwrap();
    let fds_before = ferropoll_transport::testing::open_fds();
    let addr = lp.listen_tcp("127.0.0.1:0").unwrap();
    // One listening socket per loop.
    assert_eq!(ferropoll_transport::testing::open_fds(), fds_before + 2);
    let mut clients = Vec::new();
    for i in 0..64u8 {
        let mut s = tcp(&addr);
        s.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
        clients.push(s);
    }
    assert!(wait_until(Duration::from_secs(5), || seen.lock().len() == 64));
    let placed = seen.lock().clone();
    let loops: HashSet<usize> = placed.iter().copied().collect();
    eprintln!(
        "reuse_port: loop 0 accepted {}, loop 1 accepted {}",
        placed.iter().filter(|&&l| l == 0).count(),
        placed.iter().filter(|&&l| l == 1).count()
    );
    // The kernel spreads 64 connections over both sockets.
    assert_eq!(loops.len(), 2, "one loop accepted everything: {placed:?}");
    assert_eq!(lp.stats().accepted, 64);
    drop(clients);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn reuse_port_udp_binds_one_socket_per_loop() {
    // Not beside the descriptor-counting tests.
    let _serial = ferropoll_transport::testing::serial();
    let lp = EventLoop::builder()
        .num_loops(2)
        .reuse_port(true)
        .build(echo_handler())
        .unwrap();
    let eps = lp
        .bind_udp("127.0.0.1:0", udp_handler_fn(|d, p, out| out.send_to(d, p)))
        .unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].local_addr(), eps[1].local_addr());
    assert_ne!(eps[0].loop_index(), eps[1].loop_index());
    let target = eps[0].local_addr();
    for i in 0..16u8 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(common::socket_timeout())).unwrap();
        s.send_to(&[i], target).unwrap();
        let mut b = [0u8; 4];
        let (n, _) = s.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], &[i]);
    }
    assert_eq!(lp.stats().datagrams_in, 16);
    lp.shutdown(Duration::from_secs(5)).unwrap();
}
