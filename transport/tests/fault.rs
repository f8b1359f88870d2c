//! Faults and slow peers: the output high-water mark against peers that do
//! not read, resets and half-closes mid-request, slow-loris connections.
//!
//! Every test waits on conditions with a bound (no sleep-and-hope) and ends
//! with the shared leak check.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{
    Connection, Dispatch, EventLoop, Handler, Listener, OutputFull, handler_fn,
};
use parking_lot::Mutex;

fn under_valgrind() -> bool {
    std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some()
}

/// Size of one response of the amplifying server.
const RESP: usize = 64 << 10;
/// Output high-water mark of the slow-reader servers.
const MARK: usize = 256 << 10;

/// What the amplifying handler saw.
#[derive(Default)]
struct Seen {
    /// Largest unsent output observed after a flush.
    max_unsent: AtomicUsize,
    /// Requests answered.
    answered: AtomicUsize,
    /// Errors returned by flush, by kind.
    errors: Mutex<Vec<io::ErrorKind>>,
}

/// Each 1-byte request `b` is answered with `RESP` bytes of `b`: a tiny
/// request, a large answer — the shape that lets a peer which does not read
/// grow a server's output. Answers requests until `Writer::is_full`.
fn amplifier(seen: Arc<Seen>) -> impl Handler<State = ()> {
    handler_fn(move |conn: &Connection| {
        let mut r = conn.reader();
        let mut w = conn.writer();
        while !r.is_empty() && !w.is_full() {
            let b = r.read_byte()?;
            let space = w.malloc(RESP);
            space.fill(b);
            seen.answered.fetch_add(1, Ordering::Relaxed);
        }
        drop(r);
        let res = w.flush();
        seen.max_unsent.fetch_max(w.len(), Ordering::Relaxed);
        if let Err(e) = &res {
            seen.errors.lock().push(e.kind());
        }
        res
    })
}

fn amp_server(
    dispatch: Dispatch,
    policy: OutputFull,
    write_timeout: Option<Duration>,
) -> (EventLoop, std::net::SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let lp = EventLoop::builder()
        .num_loops(1)
        .dispatch(dispatch)
        .output_high_water(MARK)
        .output_full(policy)
        .write_timeout(write_timeout)
        .build(amplifier(seen.clone()))
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = addr.as_tcp().unwrap();
    (lp, addr, seen)
}

/// Shrinks the client's receive buffer so the server's output backs up fast.
fn small_rcvbuf(s: &TcpStream) {
    let n: libc::c_int = 16 << 10;
    // SAFETY: a valid socket and a `c_int` option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&n as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Waits until `value` stops changing for a few polls.
fn settles(timeout: Duration, mut value: impl FnMut() -> u64) -> bool {
    let mut last = u64::MAX;
    let mut same = 0;
    wait_until(timeout, || {
        let now = value();
        same = if now == last { same + 1 } else { 0 };
        last = now;
        std::thread::sleep(Duration::from_millis(20));
        same >= 5
    })
}

/// Sets `SO_LINGER` to 0 so that dropping `s` sends a reset.
fn reset_on_drop(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn a_peer_that_does_not_read_cannot_grow_inline_output_then_gets_everything() {
    let leaks = LeakCheck::new();
    // 64 MB of answers (6.4 MB under valgrind, ~30x slower).
    let reqs_n: usize = if under_valgrind() { 100 } else { 1000 };
    let (lp, addr, seen) = amp_server(Dispatch::Inline, OutputFull::Wait, None);
    let mut c = TcpStream::connect(addr).unwrap();
    small_rcvbuf(&c);
    let reqs: Vec<u8> = (0..reqs_n).map(|i| (i % 251) as u8).collect();
    c.write_all(&reqs).unwrap();
    // The server stops writing (and answering) once the peer stops reading.
    assert!(settles(Duration::from_secs(10), || lp.stats().bytes_out));
    let answered = seen.answered.load(Ordering::Relaxed);
    assert!(
        answered < reqs_n,
        "all {answered} answered into a full socket"
    );
    let max = seen.max_unsent.load(Ordering::Relaxed);
    assert!(
        max <= MARK + RESP,
        "unsent output reached {max} bytes (mark {MARK})"
    );
    // Reading resumes the rounds; every answer arrives, in order, intact.
    let mut buf = vec![0u8; RESP];
    for i in 0..reqs_n {
        c.read_exact(&mut buf).unwrap();
        let want = (i % 251) as u8;
        assert!(buf.iter().all(|&b| b == want), "answer {i} corrupt");
    }
    assert_eq!(seen.answered.load(Ordering::Relaxed), reqs_n);
    assert!(seen.max_unsent.load(Ordering::Relaxed) <= MARK + RESP);
    assert!(seen.errors.lock().is_empty());
    drop(c);
    lp.shutdown(Duration::from_secs(2)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn answers_to_requests_sent_before_a_half_close_survive_a_full_output() {
    let leaks = LeakCheck::new();
    const REQS: usize = 200;
    let (lp, addr, seen) = amp_server(Dispatch::Inline, OutputFull::Wait, None);
    let mut c = TcpStream::connect(addr).unwrap();
    small_rcvbuf(&c);
    c.write_all(&[7u8; REQS]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(settles(Duration::from_secs(10), || lp.stats().bytes_out));
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        REQS * RESP,
        "answered {}, server sent {}",
        seen.answered.load(Ordering::Relaxed),
        lp.stats().bytes_out
    );
    assert!(got.iter().all(|&b| b == 7));
    assert_eq!(seen.answered.load(Ordering::Relaxed), REQS);
    assert!(wait_until(Duration::from_secs(5), || lp.stats().open == 0));
    drop(c);
    lp.shutdown(Duration::from_secs(2)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn a_pool_writer_waits_for_room_then_times_out_and_closes() {
    let leaks = LeakCheck::new();
    let (lp, addr, seen) = amp_server(
        Dispatch::Pool,
        OutputFull::Wait,
        Some(Duration::from_millis(300)),
    );
    let mut c = TcpStream::connect(addr).unwrap();
    small_rcvbuf(&c);
    c.write_all(&[1u8; 200]).unwrap();
    // The writer waits while the peer does not read, then the write
    // timeout closes the connection and the flush reports it.
    assert!(wait_until(Duration::from_secs(10), || !seen
        .errors
        .lock()
        .is_empty()));
    assert_eq!(seen.errors.lock()[0], io::ErrorKind::TimedOut);
    assert!(seen.max_unsent.load(Ordering::Relaxed) <= MARK + RESP);
    assert!(wait_until(Duration::from_secs(5), || lp.stats().open == 0));
    drop(c);
    lp.shutdown(Duration::from_secs(2)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn the_fail_policy_closes_the_slow_reader_and_spares_the_others() {
    let leaks = LeakCheck::new();
    let (lp, addr, seen) = amp_server(Dispatch::Inline, OutputFull::Fail, None);
    let mut slow = TcpStream::connect(addr).unwrap();
    small_rcvbuf(&slow);
    slow.write_all(&[3u8; 200]).unwrap();
    assert!(wait_until(Duration::from_secs(10), || !seen
        .errors
        .lock()
        .is_empty()));
    assert_eq!(seen.errors.lock()[0], io::ErrorKind::QuotaExceeded);
    assert!(seen.max_unsent.load(Ordering::Relaxed) <= MARK + RESP);
    assert!(wait_until(Duration::from_secs(5), || lp.stats().open == 0));
    // A peer that reads is served normally meanwhile and after.
    let mut fast = TcpStream::connect(addr).unwrap();
    fast.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; RESP];
    for i in 0..20u8 {
        fast.write_all(&[i]).unwrap();
        fast.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == i));
    }
    // The slow reader's connection is gone: it reads what the kernel had,
    // then end of stream or a reset — never all 200 answers.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    loop {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 200 * RESP);
    drop((slow, fast));
    lp.shutdown(Duration::from_secs(2)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

/// Line protocol: answers each `\n`-terminated line with `ok\n`.
fn line_round(conn: &Connection) -> io::Result<()> {
    let mut r = conn.reader();
    r.until(b'\n')?;
    drop(r);
    let mut w = conn.writer();
    w.write_binary(b"ok\n");
    w.flush()
}

#[test]
fn resets_and_hangups_mid_request_close_only_that_connection() {
    let leaks = LeakCheck::new();
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let lp = EventLoop::builder()
            .num_loops(2)
            .dispatch(dispatch)
            .read_timeout(Some(Duration::from_secs(5)))
            .build(handler_fn(line_round))
            .unwrap();
        let addr = lp
            .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
            .unwrap();
        let addr = addr.as_tcp().unwrap();
        let mut good = TcpStream::connect(addr).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut ok = [0u8; 3];
        for round in 0..3 {
            // Reset mid-request.
            let a = TcpStream::connect(addr).unwrap();
            (&a).write_all(b"half a li").unwrap();
            reset_on_drop(&a);
            // Half-close mid-request: the server sees EOF with a partial line.
            let b = TcpStream::connect(addr).unwrap();
            (&b).write_all(b"never ends").unwrap();
            b.shutdown(Shutdown::Write).unwrap();
            // Vanish while a large answer is being written: a reset after
            // asking for a lot of output.
            let v = TcpStream::connect(addr).unwrap();
            small_rcvbuf(&v);
            (&v).write_all(&b"x\n".repeat(20_000)).unwrap();
            reset_on_drop(&v);
            assert!(wait_until(Duration::from_secs(5), || lp.stats().accepted
                > 3 * (round + 1)));
            drop((a, v));
            // The others are unharmed.
            good.write_all(b"ping\n").unwrap();
            good.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"ok\n", "round {round}");
            let mut rest = Vec::new();
            (&b).read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            drop(b);
            assert!(
                wait_until(Duration::from_secs(5), || lp.stats().open == 1),
                "{:?}",
                lp.stats()
            );
        }
        assert_eq!(lp.stats().handler_panics, 0);
        drop(good);
        lp.shutdown(Duration::from_secs(2)).unwrap();
    }
    leaks.assert_clean();
}

/// Raises the soft descriptor limit to `want` (within the hard limit);
/// returns the limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < want {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: `lim` is a valid rlimit within the hard limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    lim.rlim_cur
}

#[test]
fn slow_loris_connections_are_closed_while_normal_clients_keep_their_latency() {
    let loris_n: usize = if under_valgrind() { 100 } else { 1000 };
    let leaks = LeakCheck::new();
    let limit = raise_nofile(4 * loris_n as u64);
    assert!(
        limit >= 2 * loris_n as u64 + 100,
        "descriptor limit {limit}"
    );
    let lp = EventLoop::builder()
        .num_loops(2)
        .read_timeout(Some(Duration::from_millis(1500)))
        .idle_timeout(Some(Duration::from_secs(3)))
        .build(handler_fn(line_round))
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = addr.as_tcp().unwrap();
    let mut loris: Vec<TcpStream> = (0..loris_n)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    assert!(wait_until(Duration::from_secs(10), || lp.stats().open == loris_n));
    let mut normal = TcpStream::connect(addr).unwrap();
    normal
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One byte per second on each loris connection (a line never ends).
    let dripper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0usize;
            while !stop.load(Ordering::Acquire) {
                let tick = Instant::now();
                for s in &mut loris {
                    if s.write_all(b"a").is_ok() {
                        sent += 1;
                    }
                }
                let rest = Duration::from_secs(1).saturating_sub(tick.elapsed());
                // Paced, not waiting for a condition: this is the load.
                std::thread::sleep(rest.min(Duration::from_secs(1)));
            }
            (loris, sent)
        })
    };
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    let mut ok = [0u8; 3];
    while lp.stats().open > 1 && start.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        normal.write_all(b"ping\n").unwrap();
        normal.read_exact(&mut ok).unwrap();
        worst = worst.max(t.elapsed());
        rounds += 1;
        assert_eq!(&ok, b"ok\n");
    }
    stop.store(true, Ordering::Release);
    let (loris, sent) = dripper.join().unwrap();
    let stats = lp.stats();
    assert_eq!(stats.open, 1, "loris connections left open: {stats:?}");
    assert!(stats.timeouts >= loris_n as u64);
    assert!(sent >= loris_n, "the dripper sent {sent} bytes");
    // Loose: the latency bound of a test, not a benchmark.
    let bound = Duration::from_millis(if under_valgrind() { 3000 } else { 500 });
    assert!(
        worst < bound,
        "worst normal round trip {worst:?} over {rounds} rounds"
    );
    drop((loris, normal));
    lp.shutdown(Duration::from_secs(2)).unwrap();
    drop(lp);
    leaks.assert_clean_within(Duration::from_secs(10));
}
