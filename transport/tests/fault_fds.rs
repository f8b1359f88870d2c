//! Descriptor pressure: ten thousand connections held open and served, and
//! `EMFILE` at accept (backs off, does not spin, recovers).
//!
//! Both need more (or fewer) descriptors than the other tests, so the
//! other side of each runs in a child process — this test binary started
//! again with `FERROPOLL_FDS_CHILD` naming the role — talking over its
//! stdin and stdout. The child's test function does nothing without it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ferropoll_transport::testing::{LeakCheck, open_fds, wait_until};
use ferropoll_transport::{Connection, EventLoop, Listener, handler_fn};

const ROLE: &str = "FERROPOLL_FDS_CHILD";

fn under_valgrind() -> bool {
    std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some()
}

/// Connections of the many-connections test (fewer under valgrind).
fn many() -> usize {
    if under_valgrind() { 1_000 } else { 10_000 }
}

/// Line protocol: answers each `\n`-terminated line with `ok\n`.
fn line_round(conn: &Connection) -> std::io::Result<()> {
    let mut r = conn.reader();
    r.until(b'\n')?;
    drop(r);
    let mut w = conn.writer();
    w.write_binary(b"ok\n");
    w.flush()
}

fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = soft.min(lim.rlim_max);
    // SAFETY: `lim` is a valid rlimit within the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    lim.rlim_cur
}

/// CPU time (user + system) of this process.
fn cpu_time() -> Duration {
    // SAFETY: `ru` is a valid out-pointer; all-zero is a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct ChildProc {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl ChildProc {
    fn start(role: &str, test: &str, env: &[(&str, String)]) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().unwrap());
        ChildProc {
            child,
            input,
            output,
        }
    }

    /// The next line the child printed that starts with `tag`, without it.
    /// A child that dies first fails the test (end of its output).
    fn expect(&mut self, tag: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.output.read_line(&mut line).unwrap();
            assert!(n > 0, "child exited before printing {tag}");
            // libtest may print `test name ... ` before it on the same line.
            if let Some(i) = line.find(tag) {
                return line[i + tag.len()..].trim().to_string();
            }
        }
    }

    fn say(&mut self, line: &str) {
        let input = self.input.as_mut().unwrap();
        writeln!(input, "{line}").unwrap();
        input.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.input.take());
        let mut rest = String::new();
        let _ = self.output.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {rest}");
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // A failing parent must not leave the child waiting on its stdin.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child side: blocks until the parent writes a line (or closes stdin).
fn wait_parent() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_string()
}

#[test]
fn ten_thousand_connections_are_held_open_and_served() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let n = many();
    let leaks = LeakCheck::new();
    let limit = set_nofile(n as u64 + 1000);
    assert!(limit >= n as u64 + 200, "descriptor hard limit {limit}");
    let lp = EventLoop::builder()
        .num_loops(2)
        .build(handler_fn(line_round))
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = addr.as_tcp().unwrap();
    let mut child = ChildProc::start(
        "clients",
        "child_clients",
        &[("FDS_ADDR", addr.to_string()), ("FDS_N", n.to_string())],
    );
    let served: usize = child.expect("SERVED").parse().unwrap();
    assert_eq!(served, n);
    // All of them are open at once, on the server too.
    assert!(wait_until(Duration::from_secs(10), || lp.stats().open == n));
    assert_eq!(lp.stats().rejected, 0);
    // A second round on every connection, still all open.
    child.say("again");
    let served: usize = child.expect("SERVED").parse().unwrap();
    assert_eq!(served, n);
    assert_eq!(lp.stats().open, n);
    child.say("exit");
    child.finish();
    assert!(wait_until(Duration::from_secs(20), || lp.stats().open == 0));
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean_within(Duration::from_secs(20));
}

/// Child: opens `FDS_N` connections to `FDS_ADDR`, sends a line on each,
/// reads every answer, prints `SERVED <count>`; again on "again".
#[test]
fn child_clients() {
    if std::env::var(ROLE).as_deref() != Ok("clients") {
        return;
    }
    let addr: SocketAddr = std::env::var("FDS_ADDR").unwrap().parse().unwrap();
    let n: usize = std::env::var("FDS_N").unwrap().parse().unwrap();
    set_nofile(n as u64 + 1000);
    let mut conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    loop {
        for c in &mut conns {
            c.write_all(b"ping\n").unwrap();
        }
        let mut served = 0;
        let mut ok = [0u8; 3];
        for c in &mut conns {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.read_exact(&mut ok).unwrap();
            if &ok == b"ok\n" {
                served += 1;
            }
        }
        println!("SERVED {served}");
        if wait_parent() != "again" {
            break;
        }
    }
}

#[test]
fn emfile_backs_off_without_spinning_and_recovers() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    const CLIENTS: usize = 64;
    let _serial = ferropoll_transport::testing::serial();
    let mut child = ChildProc::start("emfile", "child_emfile_server", &[]);
    let addr: SocketAddr = child.expect("ADDR ").parse().unwrap();
    let headroom: usize = child.expect("HEADROOM ").parse().unwrap();
    assert!(headroom < CLIENTS);
    // More clients than the server has descriptors for: the kernel
    // completes the handshakes (backlog), the server hits EMFILE.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for c in &mut clients {
        c.write_all(b"ping\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    child.say("saturated?");
    let pauses: u64 = child.expect("PAUSES_PER_S").parse().unwrap();
    let cpu_ms: u64 = child.expect("CPU_MS_PER_S").parse().unwrap();
    // Accepting pauses 100 ms after each EMFILE: about ten attempts a
    // second (fewer on a busy machine, never many more). A loop that
    // retried at once would count thousands, or none if it did not pause.
    assert!(
        (1..=20).contains(&pauses),
        "{pauses} accept pauses in a second at EMFILE"
    );
    // And nothing else spins meanwhile: a busy loop would burn about a
    // core (the bound leaves room for a loaded or instrumented machine).
    assert!(
        cpu_ms < 600,
        "server burned {cpu_ms} ms of CPU per second at EMFILE"
    );
    // The first connections were served. Each client reads its answer and
    // hangs up: the server closes its side, gets the descriptor back, and
    // accepts the next one from the backlog.
    let served_first: usize = child.expect("ACCEPTED").parse().unwrap();
    assert!(served_first < CLIENTS);
    let mut ok = [0u8; 3];
    for mut c in clients.drain(..) {
        c.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok\n");
    }
    child.say("done");
    let total: usize = child.expect("TOTAL").parse().unwrap();
    assert_eq!(total, CLIENTS);
    child.finish();
}

/// Child: an echo server with the descriptor limit a little above what it
/// has open. Reports its CPU use while accepts fail with EMFILE.
#[test]
fn child_emfile_server() {
    if std::env::var(ROLE).as_deref() != Ok("emfile") {
        return;
    }
    let lp = EventLoop::builder()
        .num_loops(1)
        .build(handler_fn(line_round))
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    // Room for a handful of connections, and a few spare descriptors the
    // runtime may need (stdio is already open).
    let headroom = 16;
    set_nofile((open_fds() + headroom) as u64 + 8);
    println!("ADDR {}", addr.as_tcp().unwrap());
    println!("HEADROOM {headroom}");
    assert_eq!(wait_parent(), "saturated?");
    // Wait for accepts to stall at the limit, then measure a second of CPU.
    let mut last = u64::MAX;
    assert!(wait_until(Duration::from_secs(10), || {
        let now = lp.stats().accepted;
        let settled = now == last && now > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    }));
    let accepted = lp.stats().accepted;
    let (t0, c0, p0) = (Instant::now(), cpu_time(), lp.stats().accept_pauses);
    std::thread::sleep(Duration::from_secs(1));
    let (dt, dc) = (t0.elapsed(), cpu_time() - c0);
    let pauses = lp.stats().accept_pauses - p0;
    println!(
        "PAUSES_PER_S {}",
        (pauses as f64 / dt.as_secs_f64()).round() as u64
    );
    println!(
        "CPU_MS_PER_S {}",
        (dc.as_secs_f64() * 1000.0 / dt.as_secs_f64()) as u64
    );
    println!("ACCEPTED {accepted}");
    assert_eq!(wait_parent(), "done");
    println!("TOTAL {}", lp.stats().accepted);
    lp.shutdown(Duration::from_secs(2)).unwrap();
}
