//! UDP served by the event loops: echo with many peers and sizes from 0 to
//! 65,507 bytes, a burst larger than the socket buffer, truncation
//! reports, dialed endpoints.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::payload;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{EventLoop, UdpEndpoint, UdpHandler, UdpOut, handler_fn, udp_handler_fn};
use parking_lot::Mutex;

/// Largest UDP payload over IPv4.
const MAX_V4: usize = 65_507;

fn udp_echo_server(loops: usize) -> (EventLoop, UdpEndpoint) {
    let lp = EventLoop::builder()
        .num_loops(loops)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let ep = lp
        .listen_udp(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            udp_handler_fn(|data, peer, out| out.send_to(data, peer)),
        )
        .unwrap();
    (lp, ep)
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// How long a request waits for its echo before it is sent again.
fn patience() -> Duration {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(300)
    }
}

/// Sends `data` and waits for its echo, resending after each `patience`
/// without it (datagrams are lost when many peers fill the server's
/// receive buffer at once). Replies that are not `data` (late duplicates of
/// earlier requests) are skipped. Returns the number of resends.
fn request(s: &UdpSocket, server: SocketAddr, data: &[u8], patience: Duration) -> usize {
    let mut buf = vec![0u8; 65_536];
    for attempt in 0..100 {
        s.send_to(data, server).unwrap();
        let until = Instant::now() + patience;
        while Instant::now() < until {
            match s.recv_from(&mut buf) {
                Ok((n, from)) if from == server && buf[..n] == *data => return attempt,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
    panic!("no echo of {} bytes after 100 attempts", data.len());
}

#[test]
fn echo_many_peers_with_sizes_from_0_to_65507() {
    let leaks = LeakCheck::new();
    let (lp, ep) = udp_echo_server(2);
    let server = ep.local_addr();
    // Distinct sizes, so a late duplicate never passes for the next reply.
    let sizes = [
        0usize,
        1,
        64,
        1471,
        1472,
        1473,
        9000,
        32_768,
        MAX_V4 - 1,
        MAX_V4,
    ];
    let threads: Vec<_> = (0..16u8)
        .map(|t| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut resends = 0;
                for (k, &size) in sizes.iter().enumerate() {
                    let data = payload(size, t.wrapping_mul(7).wrapping_add(k as u8));
                    resends += request(&s, server, &data, patience());
                }
                resends
            })
        })
        .collect();
    let resends: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let expected = 16 * sizes.len() as u64;
    assert!(wait_until(Duration::from_secs(5), || {
        let st = lp.stats();
        st.datagrams_in >= expected
            && st.datagrams_out == st.datagrams_in
            && st.bytes_out == st.bytes_in
    }));
    let st = lp.stats();
    eprintln!(
        "16 peers x {} sizes: {resends} resends, server in {} out {}",
        sizes.len(),
        st.datagrams_in,
        st.datagrams_out
    );
    assert_eq!(st.datagrams_truncated, 0);
    assert_eq!(st.datagrams_send_failed, 0);
    assert_eq!(st.bytes_in, st.bytes_out);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    assert!(ep.is_closed(), "shutdown closes the endpoint");
    assert_eq!(
        ep.send_to(b"x", server).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    drop((lp, ep));
    leaks.assert_clean();
}

/// Counts what it receives and echoes it.
#[derive(Default)]
struct Counting {
    got: AtomicUsize,
}

struct CountingEcho(Arc<Counting>);

impl UdpHandler for CountingEcho {
    fn on_datagram(&self, data: &[u8], peer: SocketAddr, out: &mut UdpOut<'_>) {
        self.0.got.fetch_add(1, Ordering::Relaxed);
        out.send_to(data, peer);
    }
}

#[test]
fn burst_larger_than_the_socket_buffer_loses_datagrams_but_never_hangs() {
    let leaks = LeakCheck::new();
    let lp = EventLoop::builder()
        .num_loops(1)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let counting = Arc::new(Counting::default());
    let ep = lp
        .listen_udp(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            CountingEcho(counting.clone()),
        )
        .unwrap();
    let server = ep.local_addr();
    // Keep the loop busy while the burst arrives: 8 MB against a receive
    // buffer of a few hundred KiB must overflow it.
    let (busy_tx, busy_rx) = mpsc::channel();
    lp.schedule(0, move || {
        busy_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    })
    .unwrap();
    busy_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let s = client();
    const BURST: usize = 8_000;
    let data = payload(1000, 3);
    let mut sent = 0;
    for _ in 0..BURST {
        if s.send_to(&data, server).is_ok() {
            sent += 1;
        }
    }
    // Every datagram that reached the socket is handled and echoed once the
    // loop is free; nothing is left in flight after that.
    assert!(wait_until(Duration::from_secs(20), || {
        let st = lp.stats();
        st.datagrams_in == counting.got.load(Ordering::Relaxed) as u64
            && st.datagrams_out + st.datagrams_send_failed == st.datagrams_in
            && st.datagrams_in > 0
    }));
    // Drain what came back (the client's own buffer overflowed too).
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut back = 0;
    let mut buf = vec![0u8; 2048];
    let drain_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_end {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => {
                assert_eq!(&buf[..n], &data[..]);
                back += 1;
            }
            Err(_) => break,
        }
    }
    let received = counting.got.load(Ordering::Relaxed);
    let st = lp.stats();
    eprintln!(
        "burst: sent {sent}, server received {received} (lost {}), replies sent {}, replies back {back}",
        sent - received,
        st.datagrams_out
    );
    assert!(
        received < sent,
        "the burst should overflow the receive buffer"
    );
    assert!(received > 0);
    assert!(back <= received);
    // The socket still works after the flood.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(b"after", server).unwrap();
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after");
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop((lp, ep, s));
    leaks.assert_clean();
}

/// Records truncation reports; echoes whole datagrams.
#[derive(Default)]
struct TruncRecorder {
    reports: Mutex<Vec<(usize, usize)>>,
}

struct TruncEcho(Arc<TruncRecorder>);

impl UdpHandler for TruncEcho {
    fn on_datagram(&self, data: &[u8], peer: SocketAddr, out: &mut UdpOut<'_>) {
        out.send_to(data, peer);
    }
    fn on_truncated(&self, prefix: &[u8], len: usize, peer: SocketAddr, out: &mut UdpOut<'_>) {
        self.0.reports.lock().push((prefix.len(), len));
        out.send_to(format!("truncated {len}").as_bytes(), peer);
    }
}

#[test]
fn datagrams_longer_than_a_slot_are_reported_truncated() {
    let lp = EventLoop::builder()
        .num_loops(1)
        .udp_max_datagram(1024)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let rec = Arc::new(TruncRecorder::default());
    let ep = lp
        .listen_udp(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            TruncEcho(rec.clone()),
        )
        .unwrap();
    let s = client();
    let mut buf = vec![0u8; 65_536];
    for size in [1024usize, 1025, 3000, MAX_V4] {
        s.send_to(&payload(size, 1), ep.local_addr()).unwrap();
        let (n, _) = s.recv_from(&mut buf).unwrap();
        if size <= 1024 {
            assert_eq!(n, size, "a datagram that fits comes back whole");
        } else {
            assert_eq!(&buf[..n], format!("truncated {size}").as_bytes());
        }
    }
    assert_eq!(
        *rec.reports.lock(),
        vec![(1024, 1025), (1024, 3000), (1024, MAX_V4)]
    );
    assert_eq!(lp.stats().datagrams_truncated, 3);
    lp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn dialed_endpoint_sends_and_receives_in_batches() {
    let leaks = LeakCheck::new();
    let (server_lp, server) = udp_echo_server(1);
    let client_lp = EventLoop::builder()
        .num_loops(1)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    let conn = client_lp
        .dial_udp(
            server.local_addr(),
            udp_handler_fn(move |data, _peer, _out| {
                let _ = tx.lock().send(data.to_vec());
            }),
        )
        .unwrap();
    assert_eq!(conn.peer_addr(), Some(server.local_addr()));
    conn.send(b"hello").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"hello");
    let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + i as usize]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    assert_eq!(conn.send_many(&refs).unwrap(), 100);
    let mut back: Vec<Vec<u8>> = (0..100)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    back.sort();
    let mut want = msgs.clone();
    want.sort();
    assert_eq!(back, want);
    conn.close();
    assert!(conn.is_closed());
    assert_eq!(conn.send(b"x").unwrap_err().kind(), ErrorKind::NotConnected);
    client_lp.shutdown(Duration::from_secs(5)).unwrap();
    server_lp.shutdown(Duration::from_secs(5)).unwrap();
    drop((client_lp, server_lp, conn, server));
    leaks.assert_clean();
}

#[test]
fn replies_from_the_handler_to_a_dialed_peer_use_send() {
    // A ping-pong entirely between two loops: the client handler answers
    // each echo with the next number until 50.
    let (server_lp, server) = udp_echo_server(1);
    let client_lp = EventLoop::builder()
        .num_loops(1)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let conn = client_lp
        .dial_udp(
            server.local_addr(),
            udp_handler_fn(move |data, _peer, out| {
                let n = u32::from_le_bytes(data.try_into().unwrap());
                if n < 50 {
                    out.send(&(n + 1).to_le_bytes());
                } else {
                    d.store(n as usize, Ordering::SeqCst);
                }
            }),
        )
        .unwrap();
    conn.send(&0u32.to_le_bytes()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || done
        .load(Ordering::SeqCst)
        == 50));
    assert_eq!(server_lp.stats().datagrams_in, 51);
    client_lp.shutdown(Duration::from_secs(5)).unwrap();
    server_lp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn replies_to_one_peer_are_grouped_and_arrive_whole_and_in_order() {
    // Equal-size replies to one peer go out as UDP GSO messages where the
    // kernel supports it; the peer must still see separate, intact
    // datagrams, in order.
    let (lp, ep) = udp_echo_server(1);
    let (busy_tx, busy_rx) = mpsc::channel();
    lp.schedule(0, move || {
        busy_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    })
    .unwrap();
    busy_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let s = client();
    const N: u32 = 120;
    for i in 0..N {
        let mut d = payload(100, i as u8);
        d[..4].copy_from_slice(&i.to_le_bytes());
        s.send_to(&d, ep.local_addr()).unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    let mut next = 0u32;
    while next < N {
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(n, 100, "a reply of the wrong size");
        let i = u32::from_le_bytes(buf[..4].try_into().unwrap());
        assert_eq!(i, next, "replies out of order");
        let mut want = payload(100, i as u8);
        want[..4].copy_from_slice(&i.to_le_bytes());
        assert!(buf[..n] == want[..]);
        next += 1;
    }
    assert!(wait_until(Duration::from_secs(5), || lp
        .stats()
        .datagrams_out
        == N as u64));
    assert_eq!(lp.stats().datagrams_send_failed, 0);
    lp.shutdown(Duration::from_secs(5)).unwrap();
}
