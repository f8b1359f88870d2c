//! Bad input and slow readers against the RESP and HTTP servers,
//! table-driven: each case gets an error reply or a closed connection (as
//! it says), the server never panics, and a client connected before the
//! case is still served after it. (The exact error texts of single
//! malformed requests are in `resp.rs` and `http.rs`.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use ferropoll_examples::{http, resp};
use ferropoll_transport::testing::{LeakCheck, wait_until};

mod common;
use common::connect;

/// What the server must do with a case's bytes.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A reply starting with these bytes, then the connection closes.
    ReplyThenClose(&'static [u8]),
    /// A reply starting with these bytes; the connection stays usable.
    Reply(&'static [u8]),
    /// The connection closes (possibly after an error reply).
    Closes,
    /// After the client's half-close: nothing, or an error reply starting
    /// with these bytes, then the connection closes.
    ErrorOrClose(&'static [u8]),
}

/// Deterministic pseudo-random bytes (xorshift), printable or not.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads until `s` closes (EOF or reset) within the sockets' read timeout;
/// returns what came before.
fn read_to_close(s: &mut TcpStream, case: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{case}: the server did not close the connection: {e}"),
        }
    }
}

/// Reads at least `prefix.len()` bytes and checks they start with `prefix`.
fn read_prefix(s: &mut TcpStream, prefix: &[u8], case: &str) {
    let mut got = vec![0u8; prefix.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{case}: no reply: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(prefix),
        "{case}"
    );
}

fn run_cases(
    addr: SocketAddr,
    cases: &[(&str, Vec<u8>, Expect)],
    mut check_other: impl FnMut(&str),
) {
    for (name, bytes, expect) in cases {
        let mut s = connect(addr);
        // The server may close before it has read everything: a failed
        // write is part of the case.
        let _ = s.write_all(bytes);
        match *expect {
            Expect::ReplyThenClose(prefix) => {
                let got = read_to_close(&mut s, name);
                assert!(
                    got.starts_with(prefix),
                    "{name}: got {:?}",
                    String::from_utf8_lossy(&got[..got.len().min(80)])
                );
            }
            Expect::Reply(prefix) => read_prefix(&mut s, prefix, name),
            Expect::Closes => {
                let _ = s.shutdown(Shutdown::Write);
                read_to_close(&mut s, name);
            }
            Expect::ErrorOrClose(prefix) => {
                let _ = s.shutdown(Shutdown::Write);
                let got = read_to_close(&mut s, name);
                assert!(
                    got.is_empty() || got.starts_with(prefix),
                    "{name}: got {:?}",
                    String::from_utf8_lossy(&got[..got.len().min(80)])
                );
            }
        }
        drop(s);
        check_other(name);
    }
}

fn resp_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    const PROTO: &[u8] = b"-ERR Protocol error";
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    let mut c = vec![
        (
            "multibulk length 0",
            b"*0\r\nPING\r\n".to_vec(),
            Reply(b"+PONG\r\n"),
        ),
        (
            "bulk length 0",
            b"*1\r\n$0\r\n\r\n".to_vec(),
            Reply(b"-ERR"),
        ),
        (
            "multibulk length 2^32-1",
            b"*4294967295\r\n".to_vec(),
            ReplyThenClose(PROTO),
        ),
        (
            "bulk length 2^32-1",
            b"*1\r\n$4294967295\r\n".to_vec(),
            ReplyThenClose(PROTO),
        ),
        (
            "bulk length 2^64",
            b"*1\r\n$18446744073709551616\r\n".to_vec(),
            ReplyThenClose(PROTO),
        ),
        ("nested arrays (1,000 deep)", deep, ReplyThenClose(PROTO)),
        (
            "truncated bulk",
            b"*2\r\n$3\r\nGET\r\n$5\r\nab".to_vec(),
            Closes,
        ),
        ("truncated header", b"*2\r\n$3".to_vec(), Closes),
        (
            "a NUL inside an inline command",
            b"PI\0NG\r\nPING\r\n".to_vec(),
            Reply(b"-ERR"),
        ),
        (
            "unknown command",
            b"FLY me to the moon\r\n".to_vec(),
            Reply(b"-ERR unknown command"),
        ),
        (
            "wrong number of arguments",
            b"GET\r\nPING\r\n".to_vec(),
            Reply(b"-ERR"),
        ),
        (
            "a CR without LF after a bulk",
            b"*1\r\n$4\r\nPINGXX".to_vec(),
            ReplyThenClose(PROTO),
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Reply(b"-ERR"),
        ),
        (
            "a huge inline line",
            vec![b'x'; 100 << 10],
            ReplyThenClose(PROTO),
        ),
        (
            "RESP3 map type",
            b"%1\r\n+a\r\n+b\r\n".to_vec(),
            Reply(b"-ERR"),
        ),
    ];
    for seed in 0..12u64 {
        let mut b = random_bytes(seed, [1, 2, 7, 100, 1000, 5000][seed as usize % 6]);
        // Garbage may parse as inline commands and be answered: what is
        // asserted is that the server closes when the client hangs up.
        b.push(b'\n');
        c.push(("random bytes", b, Closes));
    }
    c
}

#[test]
fn resp_bad_input_gets_an_error_or_a_close_and_spares_other_clients() {
    let leaks = LeakCheck::new();
    let srv = resp::start("127.0.0.1:0", 2).unwrap();
    let mut other = connect(srv.local_addr());
    run_cases(srv.local_addr(), &resp_cases(), |name| {
        other.write_all(b"PING\r\n").unwrap();
        read_prefix(
            &mut other,
            b"+PONG\r\n",
            &format!("other client after {name}"),
        );
    });
    assert_eq!(srv.stats().handler_panics, 0);
    drop(other);
    drop(srv);
    leaks.assert_clean();
}

fn http_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::*;
    const ERR4: &[u8] = b"HTTP/1.1 4";
    let mut many_headers = b"GET /plaintext HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many_headers.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"\r\n");
    let mut c = vec![
        (
            "empty request line",
            b"\r\n\r\n".to_vec(),
            ErrorOrClose(ERR4),
        ),
        (
            "Content-Length 2^32-1",
            b"POST /echo HTTP/1.1\r\nContent-Length: 4294967295\r\n\r\n".to_vec(),
            ReplyThenClose(b"HTTP/1.1 413"),
        ),
        (
            "Content-Length 2^64",
            b"POST /echo HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n".to_vec(),
            ErrorOrClose(ERR4),
        ),
        (
            "two Content-Lengths",
            b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            ErrorOrClose(ERR4),
        ),
        ("100 headers", many_headers, ErrorOrClose(ERR4)),
        (
            "a NUL in the path",
            b"GET /plain\0text HTTP/1.1\r\n\r\n".to_vec(),
            ErrorOrClose(ERR4),
        ),
        (
            "HTTP/9.9",
            b"GET /plaintext HTTP/9.9\r\n\r\n".to_vec(),
            ErrorOrClose(ERR4),
        ),
        (
            "truncated body",
            b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            Closes,
        ),
        (
            "truncated head",
            b"GET /plaintext HTTP/1.1\r\nHost: x".to_vec(),
            Closes,
        ),
        (
            "path traversal",
            b"GET /static/../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(),
            Reply(b"HTTP/1.1 404"),
        ),
        (
            "RESP instead of HTTP",
            b"*1\r\n$4\r\nPING\r\n".to_vec(),
            ErrorOrClose(ERR4),
        ),
    ];
    for seed in 0..12u64 {
        let b = random_bytes(100 + seed, [1, 3, 50, 900, 4000, 20_000][seed as usize % 6]);
        c.push(("random bytes", b, Closes));
    }
    c
}

#[test]
fn http_bad_input_gets_an_error_or_a_close_and_spares_other_clients() {
    let leaks = LeakCheck::new();
    let srv = http::start("127.0.0.1:0", 2).unwrap();
    let mut other = connect(srv.local_addr());
    run_cases(srv.local_addr(), &http_cases(), |name| {
        other
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_prefix(
            &mut other,
            b"HTTP/1.1 200 OK\r\n",
            &format!("other after {name}"),
        );
        // The rest of the response: headers up to the fixed-size body.
        let mut tail = Vec::new();
        let mut b = [0u8; 1];
        while !tail.ends_with(b"Hello, World!") {
            other.read_exact(&mut b).unwrap();
            tail.push(b[0]);
        }
    });
    assert_eq!(srv.stats().handler_panics, 0);
    drop(other);
    drop(srv);
    leaks.assert_clean();
}

/// Waits until `value` stops changing for a few polls.
fn settles(mut value: impl FnMut() -> u64) -> bool {
    let mut last = u64::MAX;
    let mut same = 0;
    wait_until(Duration::from_secs(20), || {
        let now = value();
        same = if now == last { same + 1 } else { 0 };
        last = now;
        std::thread::sleep(Duration::from_millis(20));
        same >= 10
    })
}

#[test]
fn a_resp_client_that_pipelines_without_reading_stalls_only_itself() {
    const N: usize = 400;
    const VALUE: usize = 256 << 10; // 100 MB of replies in all
    let leaks = LeakCheck::new();
    let srv = resp::start("127.0.0.1:0", 1).unwrap();
    let mut admin = connect(srv.local_addr());
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${VALUE}\r\n").into_bytes();
    set.extend(std::iter::repeat_n(b'v', VALUE));
    set.extend_from_slice(b"\r\n");
    admin.write_all(&set).unwrap();
    read_prefix(&mut admin, b"+OK\r\n", "SET big");
    // Each GET of the large value is followed by an INCR: the counter says
    // how many commands the server ran for the client that does not read.
    let slow = connect(srv.local_addr());
    let mut w = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let batch = b"GET big\r\nINCR n\r\n".repeat(N);
        let _ = w.write_all(&batch);
    });
    assert!(settles(|| srv.stats().bytes_out));
    admin.write_all(b"GET n\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = admin.read(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply[..n]).to_string();
    let ran: usize = text
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(
        ran < N / 2,
        "the server ran {ran} of {N} commands for a client that reads nothing ({text:?})"
    );
    // The admin connection was served meanwhile; now the slow client
    // reads and gets every reply.
    let mut slow = slow;
    let per = format!("${VALUE}\r\n").len() + VALUE + 2;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let incr: usize = (1..=N).map(|k| format!(":{k}\r\n").len()).sum();
    let want = N * per + incr;
    while got < want {
        let k = slow.read(&mut buf).unwrap();
        assert!(k > 0, "closed after {got} bytes");
        got += k;
    }
    assert_eq!(got, want);
    writer.join().unwrap();
    admin.write_all(b"GET n\r\n").unwrap();
    let n = admin.read(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..n]).contains(&N.to_string()),
        "{:?}",
        String::from_utf8_lossy(&reply[..n])
    );
    drop((slow, admin));
    drop(srv);
    leaks.assert_clean();
}
