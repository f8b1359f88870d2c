//! Loop timers and tasks scheduled onto a loop: order, deadline bounds,
//! cancellation, per-connection execution.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Connection, EventLoop, Handler, Listener, handler_fn};
use parking_lot::Mutex;

/// How late a timer may fire: generous, the machine is shared (and much
/// more under valgrind).
fn lateness_bound() -> Duration {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(80)
    }
}

fn idle_loops(n: usize) -> EventLoop {
    EventLoop::builder()
        .name("tm")
        .num_loops(n)
        .build(handler_fn(|_| Ok(())))
        .unwrap()
}

/// `ms` milliseconds, ten times longer under valgrind (where creating a
/// timer alone can take tens of milliseconds).
fn scaled(ms: u64) -> Duration {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        Duration::from_millis(10 * ms)
    } else {
        Duration::from_millis(ms)
    }
}

/// Waits (bounded) until every task queued on `loop_index` so far has run.
fn barrier(lp: &EventLoop, loop_index: usize) {
    let (tx, rx) = mpsc::channel();
    lp.schedule(loop_index, move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("loop did not run the barrier task");
}

#[test]
fn one_shot_timers_fire_in_deadline_order_within_a_bound() {
    let leaks = LeakCheck::new();
    let lp = idle_loops(2);
    let fired: Arc<Mutex<Vec<(usize, usize, Instant)>>> = Arc::default();
    // Created out of order, on both loops.
    let delays_ms = [120u64, 20, 200, 60, 10, 160, 40, 100, 80, 140];
    let mut due = Vec::new();
    // Deadlines relative to one base, so that slow creation (valgrind)
    // cannot reorder them.
    let base = Instant::now() + scaled(50);
    for (id, &d) in delays_ms.iter().enumerate() {
        let at = base + Duration::from_millis(d);
        let f = fired.clone();
        let loop_index = id % 2;
        let delay = at.saturating_duration_since(Instant::now());
        lp.after(loop_index, delay, move || {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let on = name.rsplit('-').next().unwrap().parse::<usize>().unwrap();
            f.lock().push((id, on, Instant::now()));
        })
        .unwrap();
        due.push((id, loop_index, at));
    }
    // The premise of the order check: every deadline was still ahead when
    // its timer was created (else it fires as soon as it is queued).
    assert!(
        Instant::now() < base,
        "creating the timers took longer than the margin"
    );
    assert!(
        wait_until(Duration::from_secs(10), || fired.lock().len()
            == delays_ms.len()),
        "only {} of {} timers fired",
        fired.lock().len(),
        delays_ms.len()
    );
    let fired = fired.lock().clone();
    for &(id, on, when) in &fired {
        let (_, loop_index, at) = due[id];
        assert_eq!(on, loop_index, "timer {id} ran on the wrong loop");
        assert!(when >= at, "timer {id} fired {:?} early", at - when);
        assert!(
            when - at <= lateness_bound(),
            "timer {id} fired {:?} late",
            when - at
        );
    }
    // Per loop, in deadline order (20 ms apart, so no tie).
    for l in 0..2 {
        let order: Vec<usize> = fired.iter().filter(|f| f.1 == l).map(|f| f.0).collect();
        let mut by_deadline = order.clone();
        by_deadline.sort_by_key(|&id| delays_ms[id]);
        assert_eq!(order, by_deadline, "loop {l} fired out of order");
    }
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn interval_timer_ticks_on_its_grid_and_stops_when_cancelled() {
    let lp = idle_loops(1);
    let ticks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let t = ticks.clone();
    let start = Instant::now();
    let timer = lp
        .every(0, Duration::from_millis(10), move || {
            t.lock().push(Instant::now())
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || ticks.lock().len() >= 5));
    assert!(timer.cancel(), "first cancel cancels");
    assert!(!timer.cancel(), "second cancel is a no-op");
    assert!(timer.is_cancelled());
    // A tick running on the loop during the cancel has finished after this.
    barrier(&lp, 0);
    let n = ticks.lock().len();
    // Ten periods later (a timer of the same loop), nothing more ticked.
    let (tx, rx) = mpsc::channel();
    lp.after(0, Duration::from_millis(100), move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ticks.lock().len(), n, "ticks after cancel");
    // Tick k is due at start + (k+1) × 10 ms: never early.
    for (k, &at) in ticks.lock().iter().enumerate() {
        let due = start + Duration::from_millis(10 * (k as u64 + 1));
        assert!(at >= due, "tick {k} early by {:?}", due - at);
    }
    lp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn cancelled_one_shot_never_fires_and_its_closure_is_dropped() {
    let lp = idle_loops(1);
    let fired = Arc::new(AtomicUsize::new(0));
    let guard = Arc::new(());
    let (f, g) = (fired.clone(), guard.clone());
    let timer = lp
        .after(0, scaled(100), move || {
            let _keep = &g;
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    timer.cancel();
    // The loop drops the cancelled closure (and what it holds) soon.
    assert!(wait_until(Duration::from_secs(5), || Arc::strong_count(
        &guard
    ) == 1));
    let (tx, rx) = mpsc::channel();
    lp.after(0, scaled(200), move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    lp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_panicking_interval_timer_stops_and_is_counted() {
    let lp = idle_loops(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    lp.every(0, Duration::from_millis(2), move || {
        r.fetch_add(1, Ordering::SeqCst);
        panic!("tick");
    })
    .unwrap();
    // (Generous: printing a panic's backtrace is slow under valgrind.)
    assert!(wait_until(Duration::from_secs(60), || lp
        .stats()
        .handler_panics
        == 1));
    let (tx, rx) = mpsc::channel();
    lp.after(0, Duration::from_millis(30), move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The loop still runs tasks.
    barrier(&lp, 0);
    lp.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    let lp = idle_loops(2);
    let e = lp.schedule(2, || {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = lp.after(9, Duration::ZERO, || {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = lp.every(0, Duration::ZERO, || {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    assert!(lp.schedule(0, || {}).is_err(), "schedule after shutdown");
}

/// Keeps the connections it sees; greets each after 30 ms from a
/// connection timer.
struct Greeter {
    conns: Arc<Mutex<Vec<Connection>>>,
}

impl Handler for Greeter {
    type State = ();
    fn on_connect(&self, conn: &Connection) {
        self.conns.lock().push(conn.clone());
        conn.after(Duration::from_millis(30), |c| {
            c.writer().write_binary(b"late-hello;");
            let _ = c.flush();
        });
    }
    fn on_request(&self, _: &mut (), _conn: &Connection) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn connection_timers_and_execute_run_on_the_connections_loop() {
    let leaks = LeakCheck::new();
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let lp = EventLoop::builder()
        .name("cx")
        .num_loops(2)
        .build(Greeter {
            conns: conns.clone(),
        })
        .unwrap();
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    let mut clients: Vec<_> = (0..4).map(|_| tcp(&addr)).collect();
    let start = Instant::now();
    for c in &mut clients {
        let mut b = [0u8; 11];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"late-hello;");
    }
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert!(wait_until(Duration::from_secs(5), || conns.lock().len() == 4));
    // From this thread, onto each connection's loop.
    let (tx, rx) = mpsc::channel();
    for conn in conns.lock().iter() {
        let tx = tx.clone();
        conn.execute(move |c| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            tx.send((c.loop_index(), name)).unwrap();
            c.writer().write_binary(b"pushed;");
            let _ = c.flush();
        })
        .unwrap();
    }
    for _ in 0..4 {
        let (idx, name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, format!("cx-loop-{idx}"));
    }
    for c in &mut clients {
        let mut b = [0u8; 7];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pushed;");
    }
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || lp.stats().open == 0));
    let closed = conns.lock()[0].clone();
    assert!(
        closed.execute(|_| {}).is_err(),
        "execute on a closed connection"
    );
    conns.lock().clear();
    drop(closed);
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}
