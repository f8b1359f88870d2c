//! resp-server over real loopback sockets: raw RESP bytes, `redis-cli` and
//! `redis-benchmark` (Debian package `redis-tools`; `bash .ci/test`
//! installs it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferropoll_examples::resp::{self, Builder, Limits, RespServer};
use ferropoll_transport::testing::{LeakCheck, wait_until};

mod common;
use common::{T, connect, expect_eof, tool};

fn server() -> RespServer {
    resp::start("127.0.0.1:0", 2).expect("start resp-server")
}

/// Reads exactly `want.len()` bytes and compares them.
fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("reading {:?}: {e}", String::from_utf8_lossy(want)));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "reply differs"
    );
}

fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = tool("redis-cli", "redis-tools")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn raw_commands_multibulk_and_inline() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n")
        .unwrap();
    expect(&mut s, b"+OK\r\n");
    s.write_all(b"GET k\r\n").unwrap();
    expect(&mut s, b"$5\r\nhello\r\n");
    s.write_all(b"  incr   n \r\nINCRBY n 41\n\r\nDECR n\r\n")
        .unwrap();
    expect(&mut s, b":1\r\n:42\r\n:41\r\n");
    s.write_all(b"ECHO hi\r\nPING\r\n*2\r\n$4\r\nPING\r\n$0\r\n\r\n")
        .unwrap();
    expect(&mut s, b"$2\r\nhi\r\n+PONG\r\n$0\r\n\r\n");
    s.write_all(b"NOSUCH x\r\nPING\r\n").unwrap();
    expect(
        &mut s,
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n+PONG\r\n",
    );
    s.write_all(b"GET\r\n").unwrap();
    expect(
        &mut s,
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    s.write_all(b"QUIT\r\n").unwrap();
    expect(&mut s, b"+OK\r\n");
    expect_eof(&mut s);
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn pipelined_batch_is_answered_in_order() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        batch.extend_from_slice(
            format!("*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\nRPUSH l {i}\r\n").as_bytes(),
        );
        want.extend_from_slice(format!(":{}\r\n:{}\r\n", i + 1, i + 1).as_bytes());
    }
    batch.extend_from_slice(b"LRANGE l 497 -1\r\n");
    want.extend_from_slice(b"*3\r\n$3\r\n497\r\n$3\r\n498\r\n$3\r\n499\r\n");
    s.write_all(&batch).unwrap();
    expect(&mut s, &want);
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn commands_split_at_every_byte_boundary() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    let cmd: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nGET key\r\n";
    let reply: &[u8] = b"+OK\r\n$5\r\nvalue\r\n";
    for cut in 1..cmd.len() {
        s.write_all(&cmd[..cut]).unwrap();
        s.flush().unwrap();
        s.write_all(&cmd[cut..]).unwrap();
        expect(&mut s, reply);
    }
    // One byte per write.
    for b in cmd {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    expect(&mut s, reply);
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn large_values_round_trip() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    // 6 MiB: larger than the transport's 4 MiB input high-water mark, so
    // the handler must raise it while the value arrives.
    for len in [5_000usize, 300_000, 6 << 20] {
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut cmd = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${len}\r\n").into_bytes();
        cmd.extend_from_slice(&value);
        cmd.extend_from_slice(b"\r\nGET big\r\nSTRLEN big\r\n");
        s.write_all(&cmd).unwrap();
        let mut want = format!("+OK\r\n${len}\r\n").into_bytes();
        want.extend_from_slice(&value);
        want.extend_from_slice(format!("\r\n:{len}\r\n").as_bytes());
        expect(&mut s, &want);
    }
    s.write_all(b"DEL big\r\n").unwrap();
    expect(&mut s, b":1\r\n");
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn malformed_input_gets_an_error_and_a_close() {
    let leaks = LeakCheck::new();
    let srv = server();
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\n$x\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*z\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$3\r\nabcde",
            b"-ERR Protocol error: expected CRLF\r\n",
        ),
        // Declared sizes beyond the limits: refused before any allocation.
        (
            b"*99999999\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$99999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$9223372036854775808\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"PING\r\n*1\r\n$-1\r\n",
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut s = connect(srv.local_addr());
        s.write_all(input).unwrap();
        expect(&mut s, want);
        expect_eof(&mut s);
    }
    // An inline line that never ends is cut at 64 KiB.
    let mut long = connect(srv.local_addr());
    let _ = long.write_all(&vec![b'a'; 70 << 10]);
    expect(
        &mut long,
        b"-ERR Protocol error: too big inline request\r\n",
    );
    expect_eof(&mut long);
    drop(long);
    // The server is still fine.
    let mut s = connect(srv.local_addr());
    s.write_all(b"PING\r\n").unwrap();
    expect(&mut s, b"+PONG\r\n");
    drop(s);
    assert_eq!(srv.stats().handler_panics, 0);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn declared_length_is_not_preallocated() {
    let leaks = LeakCheck::new();
    let mut b = Builder::new();
    b.loops(1).limits(Limits {
        max_bulk_len: 1 << 20,
        max_command_bytes: 3 << 20,
        ..Limits::default()
    });
    let srv = b.start("127.0.0.1:0").unwrap();
    // 512 MiB announced (the default limit would take it), 3 bytes sent:
    // the server waits for the rest without reserving it.
    let mut s = connect(srv.local_addr());
    s.write_all(b"*1\r\n$1048576\r\nabc").unwrap();
    let mut other = connect(srv.local_addr());
    other.write_all(b"PING\r\n").unwrap();
    expect(&mut other, b"+PONG\r\n");
    // Over this server's 1 MiB limit: refused.
    other.write_all(b"*2\r\n$3\r\nGET\r\n$1048577\r\n").unwrap();
    expect(&mut other, b"-ERR Protocol error: invalid bulk length\r\n");
    expect_eof(&mut other);
    // Four 1 MiB arguments pass the bulk limit but not the 3 MiB command limit.
    let mut third = connect(srv.local_addr());
    let chunk = vec![b'x'; 1 << 20];
    let mut cmd = b"*4\r\n".to_vec();
    for _ in 0..3 {
        cmd.extend_from_slice(b"$1048576\r\n");
        cmd.extend_from_slice(&chunk);
        cmd.extend_from_slice(b"\r\n");
    }
    let _ = third.write_all(&cmd);
    expect(&mut third, b"-ERR Protocol error: too big command\r\n");
    expect_eof(&mut third);
    drop((s, other, third));
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn redis_cli_answers() {
    let leaks = LeakCheck::new();
    let srv = server();
    let a = srv.local_addr();
    assert_eq!(cli(a, &["PING"]), "PONG");
    assert_eq!(cli(a, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(a, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(a, &["APPEND", "greeting", "!"]), "12");
    assert_eq!(cli(a, &["STRLEN", "greeting"]), "12");
    assert_eq!(cli(a, &["INCR", "visits"]), "1");
    assert_eq!(cli(a, &["INCRBY", "visits", "9"]), "10");
    assert_eq!(cli(a, &["LPUSH", "q", "a", "b", "c"]), "3");
    assert_eq!(cli(a, &["RPUSH", "q", "z"]), "4");
    assert_eq!(cli(a, &["LRANGE", "q", "0", "-1"]), "c\nb\na\nz");
    assert_eq!(cli(a, &["LPOP", "q"]), "c");
    assert_eq!(cli(a, &["RPOP", "q"]), "z");
    assert_eq!(cli(a, &["MSET", "x", "1", "y", "2"]), "OK");
    assert_eq!(cli(a, &["MGET", "x", "y", "nope"]), "1\n2\n");
    assert_eq!(cli(a, &["EXISTS", "x", "y", "nope"]), "2");
    assert_eq!(cli(a, &["TTL", "x"]), "-1");
    assert_eq!(cli(a, &["EXPIRE", "x", "100"]), "1");
    assert_eq!(cli(a, &["TTL", "x"]), "100");
    assert_eq!(cli(a, &["SET", "x", "v", "NX"]), "");
    assert_eq!(cli(a, &["DEL", "x", "y"]), "2");
    assert_eq!(cli(a, &["DBSIZE"]), "3");
    assert!(cli(a, &["GET", "q"]).starts_with("WRONGTYPE"));
    assert!(cli(a, &["FROB"]).starts_with("ERR unknown command 'FROB'"));
    // Lazy expiry, observed from outside with a bounded wait.
    assert_eq!(cli(a, &["SET", "short", "v", "PX", "50"]), "OK");
    assert!(wait_until(T, || cli(a, &["EXISTS", "short"]) == "0"));
    assert_eq!(cli(a, &["FLUSHDB"]), "OK");
    assert_eq!(cli(a, &["DBSIZE"]), "0");
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn active_expiry_removes_untouched_keys() {
    let leaks = LeakCheck::new();
    let mut b = Builder::new();
    b.loops(1).sweep_every(Duration::from_millis(10));
    let srv = b.start("127.0.0.1:0").unwrap();
    let mut s = connect(srv.local_addr());
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("SET k{i} v PX 20\r\n").as_bytes());
    }
    s.write_all(&batch).unwrap();
    expect(&mut s, &b"+OK\r\n".repeat(200));
    assert_eq!(srv.store().volatile_len(), 200);
    // Nobody touches the keys: only the sweeper can delete them.
    assert!(wait_until(T, || srv.store().is_empty()));
    assert_eq!(srv.store().volatile_len(), 0);
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn redis_cli_pipe_mode() {
    let leaks = LeakCheck::new();
    let srv = server();
    let a = srv.local_addr();
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$4\r\nk{i:03}\r\n$1\r\n{}\r\n", i % 10).as_bytes(),
        );
    }
    let mut child = tool("redis-cli", "redis-tools")
        .args(["-h", "127.0.0.1", "-p", &a.port().to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run redis-cli --pipe");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    assert_eq!(cli(a, &["DBSIZE"]), "1000");
    assert_eq!(cli(a, &["GET", "k123"]), "3");
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn redis_benchmark_runs_clean() {
    let leaks = LeakCheck::new();
    let srv = server();
    let a = srv.local_addr();
    let started = Instant::now();
    let run = |tests: &str, n: &str| {
        let out = tool("redis-benchmark", "redis-tools")
            .args(["-h", "127.0.0.1", "-p", &a.port().to_string()])
            .args(["-n", n, "-c", "20", "-P", "8", "-q", "--csv", "-t", tests])
            .output()
            .expect("run redis-benchmark");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = run("set,get,incr,lpush,mset,ping", "20000") + &run("lrange", "2000");
    let mut seen = Vec::new();
    for line in csv.lines().filter(|l| !l.starts_with("\"test\"")) {
        let cols: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        let rps: f64 = cols[1]
            .parse()
            .unwrap_or_else(|_| panic!("bad line {line}"));
        assert!(rps > 0.0, "{line}");
        seen.push(cols[0].to_string());
    }
    for want in [
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "MSET (10 keys)",
        "PING_INLINE",
        "PING_MBULK",
        "LRANGE_600 (first 600 elements)",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} missing from {seen:?}"
        );
    }
    // The work really happened: the counter holds every INCR.
    assert_eq!(cli(a, &["GET", "counter:__rand_int__"]), "20000");
    assert_eq!(
        cli(a, &["LLEN", "mylist"]).parse::<u64>().unwrap(),
        20000 + 2000
    );
    assert_eq!(srv.stats().handler_panics, 0);
    eprintln!("redis-benchmark run took {:?}", started.elapsed());
    drop(srv);
    leaks.assert_clean();
}
