//! The loop each worker thread runs.
//!
//! A worker is spawned holding the `SEARCHING` role. It takes tasks while any
//! are counted; when none are, it spins for a few microseconds if nobody else
//! is searching (a task that arrives then costs no wake-up), then counts
//! itself idle and parks. It leaves when its idle time runs out or, after a
//! shutdown, when the queue is empty.

use std::cell::Cell;

use crate::loom::{Arc, SpinBudget};
use crate::shared::{Parked, Shared, Slot};
use crate::state::Step;

// The address of the `Shared` this thread works for (0: none). loom's
// `thread_local!` takes no `const { }` initialiser, hence two spellings.
#[cfg(not(loom))]
std::thread_local! {
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
}
#[cfg(loom)]
loom::thread_local! {
    static CURRENT_POOL: Cell<usize> = Cell::new(0);
}

/// Whether the calling thread is one of `shared`'s workers.
pub(crate) fn is_worker_of(shared: &Shared) -> bool {
    CURRENT_POOL.with(|current| current.get() == shared as *const Shared as usize)
}

/// The body of worker thread `number`.
pub(crate) fn run(shared: Arc<Shared>, number: usize) {
    CURRENT_POOL.with(|current| current.set(&*shared as *const Shared as usize));
    let slot = Arc::new(Slot::new());
    let mut searching = true;
    let mut budget = SpinBudget::new();
    let mut may_spin = true;
    let retired = loop {
        let (step, signal) = shared.next_step(searching, may_spin);
        Shared::signal(&shared, signal);
        match step {
            Step::Run => {
                searching = false;
                may_spin = true;
                budget = SpinBudget::new();
                shared.run_claimed();
            }
            Step::Spin => {
                searching = true;
                may_spin = spin(&shared, &mut budget);
            }
            Step::Park => {
                // The transition released `SEARCHING` if this worker held it.
                match shared.park(&slot) {
                    Parked::Woken => {
                        searching = true;
                        may_spin = true;
                        budget = SpinBudget::new();
                    }
                    Parked::Retired => break true,
                }
            }
            Step::Exit => break false,
        }
    };
    CURRENT_POOL.with(|current| current.set(0));
    if retired {
        shared.forget_handle(number);
    }
}

/// Watches the state until a task is counted, the pool shuts down, or the
/// budget is spent; returns whether the worker may go on spinning.
fn spin(shared: &Shared, budget: &mut SpinBudget) -> bool {
    loop {
        let state = shared.state();
        if state.queued() > 0 || state.is_shutdown() {
            return true;
        }
        if !budget.spin() {
            return false;
        }
    }
}
