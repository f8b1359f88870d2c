//! Echo correctness over real loopback TCP and Unix sockets.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Dispatch, EventLoop, Listener, dial_tcp};

const SIZES: &[usize] = &[1, 2, 100, 4095, 4096, 4097, 65_536, 1 << 20, 8 << 20];

fn echo_sizes(dispatch: Dispatch) {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(dispatch, 2);
    for (i, &size) in SIZES.iter().enumerate() {
        let data = payload(size, i as u8);
        let back = echo_through(tcp(&addr), &data);
        assert!(back == data, "{dispatch:?}: echo of {size} bytes differs");
    }
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn echo_1b_to_8mib_inline() {
    echo_sizes(Dispatch::Inline);
}

#[test]
fn echo_1b_to_8mib_pool() {
    echo_sizes(Dispatch::Pool);
}

fn echo_concurrent(dispatch: Dispatch) {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(dispatch, 2);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = tcp(&addr);
                for round in 0..20usize {
                    let size = 1 + (t * 977 + round * 7919) % 70_000;
                    let data = payload(size, (t + round) as u8);
                    s.write_all(&data).unwrap();
                    let mut back = vec![0; size];
                    s.read_exact(&mut back).unwrap();
                    assert!(back == data, "conn {t} round {round}: echo differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The sender counts its bytes just after `sendmsg`, so the client may
    // have them before the counter moves: wait (bounded) for it.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = lp.stats();
            s.bytes_in == s.bytes_out
        }),
        "{:?}",
        lp.stats()
    );
    assert_eq!(lp.stats().accepted, 32);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn echo_many_connections_inline() {
    echo_concurrent(Dispatch::Inline);
}

#[test]
fn echo_many_connections_pool() {
    echo_concurrent(Dispatch::Pool);
}

#[test]
fn echo_over_unix_sockets_both_modes() {
    let leaks = LeakCheck::new();
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let dir = std::env::temp_dir().join(format!(
            "ferropoll-echo-{}-{dispatch:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&dir);
        let lp = EventLoop::builder()
            .num_loops(1)
            .dispatch(dispatch)
            .build(ferropoll_transport::handler_fn(match dispatch {
                Dispatch::Pool => blocking_echo_round,
                _ => echo_round,
            }))
            .unwrap();
        lp.listen(Listener::bind_unix(&dir).unwrap()).unwrap();
        for &size in &[1usize, 5000, 1 << 20] {
            let data = payload(size, 9);
            let s = UnixStream::connect(&dir).unwrap();
            s.set_read_timeout(Some(common::socket_timeout())).unwrap();
            assert!(
                echo_through(s, &data) == data,
                "{dispatch:?} unix echo of {size}"
            );
        }
        lp.shutdown(Duration::from_secs(5)).unwrap();
        let _ = std::fs::remove_file(&dir);
    }
    leaks.assert_clean();
}

#[test]
fn half_close_still_gets_the_echo() {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(Dispatch::Inline, 1);
    for size in [10usize, 3 << 20] {
        let data = payload(size, 3);
        let mut s = tcp(&addr);
        let mut w = s.try_clone().unwrap();
        let d2 = data.clone();
        let t = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        s.read_to_end(&mut back)
            .expect("read until the server closes");
        t.join().unwrap();
        assert!(
            back == data,
            "half-close echo of {size} bytes: got {}",
            back.len()
        );
    }
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn dialed_connection_blocking_reads() {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(Dispatch::Inline, 1);
    let conn = dial_tcp(addr.as_tcp().unwrap(), Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5)));
    for size in [1usize, 10_000, 2 << 20] {
        let data = payload(size, 1);
        let c2 = conn.clone();
        let d2 = data.clone();
        let t = std::thread::spawn(move || {
            for chunk in d2.chunks(100_000) {
                c2.writer().write_binary(chunk);
                c2.flush().unwrap();
            }
        });
        let mut r = conn.reader();
        let got = r.read_binary(size).unwrap();
        drop(r);
        t.join().unwrap();
        assert!(got == data, "dialed echo of {size}");
    }
    conn.writer().write_binary(b"line one\nline two\n");
    conn.flush().unwrap();
    assert_eq!(conn.reader().until(b'\n').unwrap(), b"line one\n");
    assert_eq!(conn.reader().until(b'\n').unwrap(), b"line two\n");
    assert!(conn.is_active());
    lp.shutdown(Duration::from_secs(5)).unwrap();
    // The server closed: the dialed side notices without reading.
    assert!(ferropoll_transport::testing::wait_until(
        Duration::from_secs(2),
        || !conn.is_active()
    ));
    let err = conn.reader().next(1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    drop(conn);
    drop(lp);
    leaks.assert_clean();
}
