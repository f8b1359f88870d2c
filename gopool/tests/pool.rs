//! Behaviour of `Pool` through its public API, on real threads.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ferropoll_gopool::{Builder, Pool};

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds; fails the test after [`DEADLINE`].
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A gate tasks block on until the test opens it (with a deadline, so a
/// bug cannot hang the suite).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    fn wait(&self) {
        let start = Instant::now();
        let mut open = self.open.lock().unwrap();
        while !*open {
            let left = DEADLINE
                .checked_sub(start.elapsed())
                .expect("gate never opened");
            open = self.cv.wait_timeout(open, left).unwrap().0;
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[test]
fn every_task_runs_exactly_once() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250_000;
    const TOTAL: usize = THREADS * PER_THREAD;
    let pool = Pool::builder().name("once").max_workers(8).build().unwrap();
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let runs = Arc::new(AtomicUsize::new(0));
    let repeats = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, seen, runs, repeats) =
                (pool.clone(), seen.clone(), runs.clone(), repeats.clone());
            thread::spawn(move || {
                for i in t * PER_THREAD..(t + 1) * PER_THREAD {
                    let (seen, runs, repeats) = (seen.clone(), runs.clone(), repeats.clone());
                    pool.go(move || {
                        let bit = 1u64 << (i % 64);
                        if seen[i / 64].fetch_or(bit, SeqCst) & bit != 0 {
                            repeats.fetch_add(1, SeqCst);
                        }
                        runs.fetch_add(1, SeqCst);
                    });
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    // No shutdown to flush: the pool alone must get through the queue.
    wait_until("every task ran", || runs.load(SeqCst) == TOTAL);
    assert_eq!(repeats.load(SeqCst), 0, "a task ran twice");
    for (w, word) in seen.iter().enumerate() {
        let expect = if (w + 1) * 64 <= TOTAL {
            u64::MAX
        } else {
            (1u64 << (TOTAL % 64)) - 1
        };
        assert_eq!(
            word.load(SeqCst),
            expect,
            "tasks {}..{} did not all run",
            w * 64,
            w * 64 + 64
        );
    }
    assert!(pool.worker_count() <= 8);
    pool.shutdown();
    assert_eq!(runs.load(SeqCst), TOTAL);
    assert_eq!(pool.queued(), 0);
}

#[test]
fn panics_reach_the_handler_and_the_worker_goes_on() {
    let caught = Arc::new(Mutex::new(Vec::<String>::new()));
    let pool = {
        let caught = caught.clone();
        Pool::builder()
            .name("panicky")
            .max_workers(1)
            .panic_handler(move |payload| {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                caught.lock().unwrap().push(msg);
            })
            .build()
            .unwrap()
    };
    let ok = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        pool.go(move || panic!("task {i} failed"));
        let ok = ok.clone();
        pool.go(move || {
            ok.fetch_add(1, SeqCst);
        });
    }
    wait_until("the good tasks ran", || ok.load(SeqCst) == 10);
    wait_until("the handler saw every panic", || {
        caught.lock().unwrap().len() == 10
    });
    let mut msgs = caught.lock().unwrap().clone();
    msgs.sort();
    let mut expect: Vec<String> = (0..10).map(|i| format!("task {i} failed")).collect();
    expect.sort();
    assert_eq!(msgs, expect);
    // One worker at most, and it survived every panic.
    assert_eq!(pool.worker_count(), 1);
    let (tx, rx) = mpsc::channel();
    pool.go(move || tx.send(()).unwrap());
    rx.recv_timeout(DEADLINE)
        .expect("the pool stopped working after panics");
    pool.shutdown();
}

#[test]
fn a_panicking_panic_handler_does_not_kill_the_worker() {
    let pool = Pool::builder()
        .max_workers(1)
        .panic_handler(|_| panic!("handler fails too"))
        .build()
        .unwrap();
    pool.go(|| panic!("task fails"));
    let (tx, rx) = mpsc::channel();
    pool.go(move || tx.send(()).unwrap());
    rx.recv_timeout(DEADLINE)
        .expect("the worker died with its panic handler");
    pool.shutdown();
}

#[test]
fn idle_workers_retire() {
    const N: usize = 4;
    let pool = Pool::builder()
        .name("retire")
        .max_workers(N)
        .max_idle(Duration::from_millis(100))
        .build()
        .unwrap();
    let gate = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..N {
        let (gate, started) = (gate.clone(), started.clone());
        pool.go(move || {
            started.fetch_add(1, SeqCst);
            gate.wait();
        });
    }
    wait_until("all workers run a task", || started.load(SeqCst) == N);
    assert_eq!(pool.worker_count(), N);
    gate.open();
    wait_until("every worker retired", || pool.worker_count() == 0);
    assert_eq!(pool.idle_count(), 0);
    // A retired pool starts workers again on demand.
    let (tx, rx) = mpsc::channel();
    pool.go(move || tx.send(()).unwrap());
    rx.recv_timeout(DEADLINE).unwrap();
    pool.shutdown();
}

#[test]
fn max_workers_is_honoured() {
    const MAX: usize = 3;
    const TASKS: usize = 20;
    let pool = Pool::builder().max_workers(MAX).build().unwrap();
    let gate = Gate::new();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..TASKS {
        let (gate, running, peak, finished) = (
            gate.clone(),
            running.clone(),
            peak.clone(),
            finished.clone(),
        );
        pool.go(move || {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            gate.wait();
            running.fetch_sub(1, SeqCst);
            finished.fetch_add(1, SeqCst);
        });
    }
    wait_until("MAX tasks run at once", || running.load(SeqCst) == MAX);
    assert_eq!(pool.worker_count(), MAX);
    assert_eq!(pool.queued(), TASKS - MAX);
    gate.open();
    wait_until("every task finished", || finished.load(SeqCst) == TASKS);
    assert_eq!(peak.load(SeqCst), MAX);
    assert!(pool.worker_count() <= MAX);
    pool.shutdown();
}

#[test]
fn a_burst_wakes_parked_workers_without_spawning() {
    const N: usize = 4;
    let pool = Pool::builder()
        .max_workers(16)
        .max_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Start N workers, then let them all park.
    let gate = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..N {
        let (gate, started) = (gate.clone(), started.clone());
        pool.go(move || {
            started.fetch_add(1, SeqCst);
            gate.wait();
        });
    }
    wait_until("N workers started", || started.load(SeqCst) == N);
    gate.open();
    wait_until("N workers parked", || pool.idle_count() == N);
    // N tasks that only finish when all N run at once: each wake-up must
    // reach a parked worker, and none may start a new thread.
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (tx, rx) = mpsc::channel();
    for _ in 0..N {
        let (arrived, tx) = (arrived.clone(), tx.clone());
        pool.go(move || {
            let (count, cv) = &*arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let start = Instant::now();
            while *n < N && start.elapsed() < DEADLINE {
                n = cv.wait_timeout(n, DEADLINE).unwrap().0;
            }
            tx.send(*n == N).unwrap();
        });
    }
    for _ in 0..N {
        assert!(
            rx.recv_timeout(DEADLINE * 2).unwrap(),
            "the burst did not reach N workers at once"
        );
    }
    assert_eq!(
        pool.worker_count(),
        N,
        "a thread was started while workers were parked"
    );
    pool.shutdown();
}

#[test]
fn one_task_at_a_time_needs_no_thread_per_task() {
    let pool = Pool::builder().max_workers(64).build().unwrap();
    for i in 0..1000 {
        let (tx, rx) = mpsc::channel();
        pool.go(move || tx.send(i).unwrap());
        assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), i);
    }
    // A thread per task would mean ~1000. A new worker starts only when a
    // task finds every worker neither parked nor searching: here that is a
    // worker still returning from the previous task, so two suffice unless
    // the scheduler preempts workers there (the machine may be loaded).
    assert!(
        pool.worker_count() <= 16,
        "workers: {}",
        pool.worker_count()
    );
    pool.shutdown();
}

thread_local! {
    /// Set by a task; its destructor runs when the worker thread exits.
    static KEEPALIVE: std::cell::RefCell<Option<Arc<()>>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn shutdown_runs_what_is_queued_and_joins_the_workers() {
    let pool = Pool::builder()
        .name("drain")
        .max_workers(2)
        .max_idle(Duration::from_secs(3600))
        .build()
        .unwrap();
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let token = Arc::new(());
    for _ in 0..2 {
        let (gate, token) = (gate.clone(), token.clone());
        pool.go(move || {
            KEEPALIVE.with(|k| *k.borrow_mut() = Some(token));
            gate.wait();
        });
    }
    for _ in 0..100 {
        let ran = ran.clone();
        pool.go(move || {
            ran.fetch_add(1, SeqCst);
        });
    }
    assert!(pool.queued() > 0);
    let shutting = {
        let pool = pool.clone();
        thread::spawn(move || pool.shutdown())
    };
    wait_until("the pool refuses tasks", || pool.is_shutdown());
    gate.open();
    shutting.join().unwrap();
    assert_eq!(
        ran.load(SeqCst),
        100,
        "shutdown returned before the queue ran"
    );
    assert_eq!(pool.worker_count(), 0);
    assert_eq!(pool.queued(), 0);
    // The workers' thread-locals are gone: their threads were joined.
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "a worker thread was not joined"
    );
    pool.shutdown(); // idempotent
}

#[test]
fn tasks_after_shutdown_are_rejected_not_lost_silently() {
    let pool = Pool::new("closed", 2);
    pool.shutdown();
    let ran = Arc::new(AtomicBool::new(false));
    let err = {
        let ran = ran.clone();
        pool.try_go(move || ran.store(true, SeqCst)).unwrap_err()
    };
    assert!(err.is_shutdown() && !err.is_full());
    assert_eq!(err.to_string(), "task rejected: the pool is shut down");
    (err.into_task())();
    assert!(ran.load(SeqCst), "into_task must hand back the task");

    // `go` drops the task (and says so once on stderr).
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    pool.go(move || {
        let _flag = flag;
        ran2.store(true, SeqCst);
    });
    assert!(dropped.load(SeqCst) && !ran.load(SeqCst));
}

#[test]
fn a_full_queue_rejects() {
    let pool = Pool::builder()
        .max_workers(1)
        .max_queued(2)
        .build()
        .unwrap();
    let gate = Gate::new();
    let started = Arc::new(AtomicBool::new(false));
    {
        let (gate, started) = (gate.clone(), started.clone());
        pool.go(move || {
            started.store(true, SeqCst);
            gate.wait();
        });
    }
    wait_until("the worker is busy", || started.load(SeqCst));
    pool.try_go(|| {}).unwrap();
    pool.try_go(|| {}).unwrap();
    assert_eq!(pool.queued(), 2);
    let err = pool.try_go(|| {}).unwrap_err();
    assert!(err.is_full());
    gate.open();
    wait_until("the queue drained", || pool.queued() == 0);
    pool.try_go(|| {}).unwrap();
    pool.shutdown();
}

#[test]
fn the_global_pool_runs_tasks() {
    let (tx, rx) = mpsc::channel();
    for i in 0..100 {
        let tx = tx.clone();
        ferropoll_gopool::go(move || tx.send(i).unwrap());
    }
    let mut got: Vec<i32> = (0..100)
        .map(|_| rx.recv_timeout(DEADLINE).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let pool = ferropoll_gopool::default_pool();
    assert_eq!(pool.name(), "gopool");
    assert_eq!(pool.max_workers(), Builder::DEFAULT_MAX_WORKERS);
    assert!(!pool.is_shutdown());
}

#[test]
fn workers_are_named_after_the_pool() {
    let pool = Pool::new("named", 1);
    let (tx, rx) = mpsc::channel();
    pool.go(move || {
        tx.send(thread::current().name().map(str::to_owned))
            .unwrap()
    });
    let name = rx.recv_timeout(DEADLINE).unwrap().unwrap();
    assert!(name.starts_with("named-"), "thread name {name}");
    pool.shutdown();
}

#[test]
fn shutdown_from_a_task_does_not_deadlock() {
    let pool = Pool::new("selfstop", 2);
    let (tx, rx) = mpsc::channel();
    {
        let pool2 = pool.clone();
        pool.go(move || {
            pool2.shutdown();
            tx.send(pool2.is_shutdown()).unwrap();
        });
    }
    assert!(rx.recv_timeout(DEADLINE).unwrap());
    pool.shutdown();
    assert_eq!(pool.worker_count(), 0);
}

#[test]
fn dropping_the_last_handle_still_runs_queued_tasks() {
    let ran = Arc::new(AtomicUsize::new(0));
    let pool = Pool::new("dropped", 1);
    let gate = Gate::new();
    {
        let gate = gate.clone();
        pool.go(move || gate.wait());
    }
    for _ in 0..10 {
        let ran = ran.clone();
        pool.go(move || {
            ran.fetch_add(1, SeqCst);
        });
    }
    drop(pool);
    gate.open();
    wait_until("queued tasks ran after the drop", || ran.load(SeqCst) == 10);
    // Only the test's clone is left once the worker has exited and dropped its tasks.
    wait_until("the worker let go of its tasks", || {
        Arc::strong_count(&ran) == 1
    });
}

#[test]
fn the_builder_rejects_bad_settings() {
    use std::io::ErrorKind::InvalidInput;
    assert_eq!(
        Pool::builder().max_workers(0).build().unwrap_err().kind(),
        InvalidInput
    );
    assert_eq!(
        Pool::builder()
            .max_workers(Builder::MAX_WORKERS + 1)
            .build()
            .unwrap_err()
            .kind(),
        InvalidInput
    );
    assert_eq!(
        Pool::builder().max_queued(0).build().unwrap_err().kind(),
        InvalidInput
    );
    assert_eq!(
        Pool::builder()
            .max_queued(Builder::MAX_QUEUED + 1)
            .build()
            .unwrap_err()
            .kind(),
        InvalidInput
    );
    assert_eq!(
        Pool::builder().name("a\0b").build().unwrap_err().kind(),
        InvalidInput
    );
    // The convenience constructor clamps instead.
    assert_eq!(Pool::new("x", 0).max_workers(), 1);
    assert_eq!(
        Pool::new("x", usize::MAX).max_workers(),
        Builder::MAX_WORKERS
    );
    assert_eq!(Pool::new("a\0b", 1).name(), "ab");
}

#[test]
fn a_tiny_stack_size_still_works() {
    let pool = Pool::builder().stack_size(64 * 1024).build().unwrap();
    let (tx, rx) = mpsc::channel();
    pool.go(move || tx.send(1).unwrap());
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), 1);
    pool.shutdown();
}

#[test]
fn when_no_thread_can_start_the_caller_runs_the_task() {
    // A stack larger than the address space: the OS refuses every worker.
    let pool = Pool::builder()
        .name("nothreads")
        .stack_size(1 << 50)
        .build()
        .unwrap();
    let caller = thread::current().id();
    let (tx, rx) = mpsc::channel();
    pool.go(move || tx.send(thread::current().id()).unwrap());
    assert_eq!(
        rx.try_recv()
            .expect("the task did not run before go returned"),
        caller
    );
    assert_eq!(pool.worker_count(), 0);
    assert_eq!(pool.queued(), 0);
    pool.shutdown();
}
