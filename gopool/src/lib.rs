//! A pool of OS-thread workers for work that may block — slow I/O, a
//! database call, a long computation — in the style of netpoll's `gopool`.
//!
//! ```
//! use std::sync::mpsc;
//! use ferropoll_gopool::Pool;
//!
//! let pool = Pool::new("db", 16);
//! let (tx, rx) = mpsc::channel();
//! pool.go(move || tx.send("queried").unwrap());
//! assert_eq!(rx.recv().unwrap(), "queried");
//! ```
//!
//! # Design
//!
//! OS threads are not goroutines: starting one costs tens of microseconds.
//! So a worker that runs out of work does not exit; it spins for a few
//! microseconds, then parks, and retires only after
//! [`max_idle`](Builder::max_idle). A task wakes one parked worker, or
//! starts a thread when none is parked and fewer than
//! [`max_workers`](Builder::max_workers) are alive, or else waits in the
//! queue for a busy worker. It never starts a thread while a worker is idle.
//!
//! The queue is crossbeam's lock-free `SegQueue`. Who runs what is decided
//! by compare-and-swap on one state word (queued count, idle and live worker
//! counts, a "searching" flag and a "shut down" flag), so a submitter and a
//! worker about to park always see each other: no wake-up is lost. At most
//! one worker searches for work at a time; while it does, submitting costs
//! no lock and no system call. A burst wakes parked workers one at a time,
//! each handing the search on to the next — never a thundering herd. The
//! mutex of the parked-worker stack is taken only to park and to wake.
//!
//! A task that panics is caught; the payload goes to the
//! [`panic_handler`](Builder::panic_handler) (by default a line on stderr)
//! and the worker carries on.
//!
//! [`Pool::shutdown`] stops accepting tasks, runs what is queued and joins
//! the workers. After it, [`Pool::try_go`] returns the task in a
//! [`GoError`], and [`Pool::go`] drops it and reports the first such drop on
//! stderr. Dropping the last [`Pool`] handle shuts down without waiting.
//!
//! # Model checking
//!
//! The submit / park / wake / retire / shutdown protocol is checked with
//! [loom](https://docs.rs/loom). Under `--cfg loom` the crate's primitives
//! (atomics, mutex, condition variables, threads) are loom's, and the task
//! queue is a loom `Mutex<VecDeque>`; the state machine and the parking
//! code are the same as in a normal build. Run it with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p ferropoll-gopool --release --test loom
//! ```
//!
//! It is not part of the default `cargo test`.
#![deny(unsafe_code)]

mod builder;
mod error;
mod global;
mod loom;
mod pool;
mod shared;
mod state;
mod worker;

pub use builder::Builder;
pub use error::GoError;
pub use global::{default_pool, go};
pub use pool::Pool;
