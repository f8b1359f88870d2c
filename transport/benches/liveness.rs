//! How soon a server-side `Connection` turns inactive after its peer closes
//! (FIN) or resets (RST), without anybody reading — the speed claim behind
//! `tests/lifecycle.rs`'s `peer_close_and_reset_turn_inactive_without_reading`,
//! which only checks that it happens.
//!
//! Contenders, in the same run, alternating round by round:
//!
//! - `ferropoll/inline`, `ferropoll/pool`: an `EventLoop` (one loop) whose
//!   handler never reads; the bench thread closes the client and spins on
//!   [`Connection::is_active`] until it turns false.
//! - `baseline`: the least a server can do — a thread blocked in `read(2)`
//!   on the accepted socket, woken by the kernel when the FIN or RST lands.
//!
//! For RST the server first sends two bytes the client never reads, so the
//! client's close resets. Each round waits 1 ms before the close so that
//! both sides sit idle in the kernel (`epoll_wait` / `read`) when it comes.
//! Prints p50 and p99 per contender and the ratio to the baseline, then one
//! `key=value` line.
//!
//! `cargo bench -p ferropoll-transport --bench liveness` (env
//! `LIVENESS_ROUNDS`, default 300).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ferropoll_transport::{Connection, Dispatch, EventLoop, Handler, Listener};
use parking_lot::Mutex;

/// Hands each connection to the bench thread; never reads.
struct Hold {
    conns: Mutex<mpsc::Sender<Connection>>,
    greet: bool,
}

impl Handler for Hold {
    type State = ();
    fn on_connect(&self, conn: &Connection) {
        if self.greet {
            conn.writer().write_binary(b"hi");
            let _ = conn.flush();
        }
        let _ = self.conns.lock().send(conn.clone());
    }
    fn on_request(&self, _: &mut (), _: &Connection) -> io::Result<()> {
        Ok(())
    }
}

/// Connects, sends a few bytes, and for `reset` waits until the server's
/// greeting sits unread in the client's receive buffer.
fn client(addr: std::net::SocketAddr, reset: bool) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(b"unread").expect("write");
    if reset {
        c.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut b = [0u8; 2];
        while !matches!(c.peek(&mut b), Ok(2)) {
            assert!(start.elapsed() < Duration::from_secs(5), "no greeting");
            thread::yield_now();
        }
    }
    c
}

struct Ferropoll {
    lp: EventLoop,
    addr: std::net::SocketAddr,
    conns: mpsc::Receiver<Connection>,
    reset: bool,
}

impl Ferropoll {
    fn new(dispatch: Dispatch, reset: bool) -> Ferropoll {
        let (tx, rx) = mpsc::channel();
        let lp = EventLoop::builder()
            .num_loops(1)
            .dispatch(dispatch)
            .build(Hold {
                conns: Mutex::new(tx),
                greet: reset,
            })
            .expect("event loop");
        let addr = lp
            .listen(Listener::bind_tcp("127.0.0.1:0").expect("bind"))
            .expect("listen")
            .as_tcp()
            .expect("a TCP address");
        Ferropoll {
            lp,
            addr,
            conns: rx,
            reset,
        }
    }

    fn round(&self) -> Duration {
        let c = client(self.addr, self.reset);
        let conn = self
            .conns
            .recv_timeout(Duration::from_secs(5))
            .expect("accepted");
        assert!(conn.is_active());
        thread::sleep(Duration::from_millis(1));
        let t0 = Instant::now();
        drop(c);
        while conn.is_active() {
            assert!(t0.elapsed() < Duration::from_secs(5), "still active");
            thread::yield_now(); // the loop thread may share this CPU
        }
        t0.elapsed()
    }
}

/// A thread blocked in `read(2)` on each accepted socket.
struct Baseline {
    listener: TcpListener,
    reset: bool,
}

impl Baseline {
    fn round(&self) -> Duration {
        let addr = self.listener.local_addr().unwrap();
        let connect = thread::spawn(move || TcpStream::connect(addr).expect("connect"));
        let (mut server, _) = self.listener.accept().expect("accept");
        let mut c = connect.join().unwrap();
        c.write_all(b"unread").unwrap();
        let mut got = [0u8; 6];
        server.read_exact(&mut got).unwrap();
        if self.reset {
            server.write_all(b"hi").unwrap();
            let mut b = [0u8; 2];
            c.set_nonblocking(true).unwrap();
            while !matches!(c.peek(&mut b), Ok(2)) {
                thread::yield_now();
            }
        }
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut b = [0u8; 16];
            // Returns 0 on FIN, ECONNRESET on RST.
            let _ = server.read(&mut b);
            tx.send(Instant::now()).unwrap();
        });
        thread::sleep(Duration::from_millis(1)); // the reader is in read(2)
        let t0 = Instant::now();
        drop(c);
        let woke = rx.recv_timeout(Duration::from_secs(5)).expect("woken");
        reader.join().unwrap();
        woke.saturating_duration_since(t0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let rounds: usize = std::env::var("LIVENESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let mut summary = Vec::new();
    for (kind, reset) in [("fin", false), ("rst", true)] {
        let inline = Ferropoll::new(Dispatch::Inline, reset);
        let pool = Ferropoll::new(Dispatch::Pool, reset);
        let base = Baseline {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind"),
            reset,
        };
        let mut times: [Vec<Duration>; 3] = Default::default();
        for _ in 0..rounds {
            times[0].push(base.round());
            times[1].push(inline.round());
            times[2].push(pool.round());
        }
        for t in &mut times {
            t.sort();
        }
        let base_p50 = percentile(&times[0], 0.5).as_secs_f64();
        println!("{kind}: time until the server side knows ({rounds} rounds)");
        println!(
            "  {:<18} {:>9} {:>9} {:>12}",
            "contender", "p50_us", "p99_us", "p50/baseline"
        );
        for (name, t) in ["baseline (read)", "ferropoll/inline", "ferropoll/pool"]
            .iter()
            .zip(&times)
        {
            let p50 = percentile(t, 0.5).as_secs_f64();
            let p99 = percentile(t, 0.99).as_secs_f64();
            println!(
                "  {:<18} {:>9.1} {:>9.1} {:>12.2}",
                name,
                p50 * 1e6,
                p99 * 1e6,
                p50 / base_p50
            );
        }
        summary.push(format!(
            "{kind}_baseline_p50_us={:.1} {kind}_inline_p50_us={:.1} {kind}_inline_p99_us={:.1} \
             {kind}_pool_p50_us={:.1} {kind}_pool_p99_us={:.1}",
            base_p50 * 1e6,
            percentile(&times[1], 0.5).as_secs_f64() * 1e6,
            percentile(&times[1], 0.99).as_secs_f64() * 1e6,
            percentile(&times[2], 0.5).as_secs_f64() * 1e6,
            percentile(&times[2], 0.99).as_secs_f64() * 1e6,
        ));
        inline
            .lp
            .shutdown(Duration::from_secs(2))
            .expect("shutdown");
        pool.lp.shutdown(Duration::from_secs(2)).expect("shutdown");
    }
    println!("{} rounds={rounds}", summary.join(" "));
}
