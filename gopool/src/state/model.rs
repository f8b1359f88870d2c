//! A model-based property test of the protocol over [`State`].
//!
//! Loom checks the real code, but only with a handful of threads. This
//! replays the same protocol — the transitions of `State` plus the
//! parked-worker stack and wake tokens of `shared.rs`, each lock-held or
//! compare-and-swap section one atomic step — for up to 5 workers and 3
//! submitters, under schedules proptest picks. After the submitters finish
//! and the schedule runs out, the system is run to quiescence; then every
//! accepted task must have run (no lost wake-up), and after a shutdown
//! every worker must have exited.

use proptest::prelude::*;

use super::{Signal, State, Step};

#[derive(Clone, Debug, PartialEq)]
enum W {
    /// About to apply `next_step`.
    Free {
        searching: bool,
        may_spin: bool,
        spins_left: u8,
    },
    /// Has a signal from its last transition to carry out, then goes on as `then`.
    Signalling {
        signal: Signal,
        then: Box<W>,
    },
    /// Claimed a task: must pop and run it.
    Claimed,
    /// Counted idle, about to take the sleepers lock.
    PrePark,
    /// On the stack.
    Parked {
        notified: bool,
        may_time_out: bool,
    },
    Exited,
}

#[derive(Clone, Debug)]
enum S {
    /// Tasks still to submit.
    Ready(usize),
    /// Counted a task, must push it, then carry out `signal`.
    Counted(Signal, usize),
    /// Pushed; carries out `signal`.
    Pushed(Signal, usize),
}

struct Sim {
    state: State,
    max_workers: usize,
    max_queued: usize,
    in_queue: usize,
    stack: Vec<usize>,
    tokens: usize,
    workers: Vec<W>,
    submitters: Vec<S>,
    accepted: usize,
    ran: usize,
    /// Wakes that a shutdown still has to deliver.
    shutdown_wakes: usize,
    timeouts: bool,
    /// The steps taken, printed when an invariant breaks.
    log: Vec<String>,
}

impl Sim {
    fn wake_one(&mut self) {
        match self.stack.pop() {
            Some(w) => {
                let W::Parked { notified, .. } = &mut self.workers[w] else {
                    panic!("non-parked worker on the stack")
                };
                *notified = true;
            }
            None => self.tokens += 1,
        }
    }

    fn spawn(&mut self) {
        assert!(self.workers.len() < 64, "runaway spawning");
        self.workers.push(W::Free {
            searching: true,
            may_spin: true,
            spins_left: 2,
        });
    }

    fn signal(&mut self, signal: Signal) {
        match signal {
            Signal::None => {}
            Signal::Wake => self.wake_one(),
            Signal::Spawn => self.spawn(),
        }
    }

    /// The actions that can run now, as (actor, index).
    fn enabled(&self) -> Vec<(bool, usize)> {
        let mut out = Vec::new();
        for (i, s) in self.submitters.iter().enumerate() {
            if !matches!(s, S::Ready(0)) {
                out.push((false, i));
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            let runnable = match w {
                W::Exited => false,
                W::Claimed => self.in_queue > 0,
                W::Parked {
                    notified,
                    may_time_out,
                } => *notified || (*may_time_out && self.timeouts),
                _ => true,
            };
            if runnable {
                out.push((true, i));
            }
        }
        if self.shutdown_wakes > 0 {
            out.push((false, usize::MAX));
        }
        out
    }

    fn step_submitter(&mut self, i: usize) {
        if i == usize::MAX {
            self.shutdown_wakes -= 1;
            self.wake_one();
            return;
        }
        match self.submitters[i].clone() {
            S::Ready(0) => unreachable!(),
            S::Ready(n) => match self.state.submit(self.max_queued, self.max_workers) {
                Ok((next, signal)) => {
                    self.state = next;
                    self.accepted += 1;
                    self.submitters[i] = S::Counted(signal, n - 1);
                }
                // Full: drop it (the test counts accepted tasks only).
                Err(_) => self.submitters[i] = S::Ready(n - 1),
            },
            S::Counted(signal, n) => {
                self.in_queue += 1;
                self.submitters[i] = S::Pushed(signal, n);
            }
            S::Pushed(signal, n) => {
                self.signal(signal);
                self.submitters[i] = S::Ready(n);
            }
        }
    }

    fn step_worker(&mut self, i: usize) {
        let w = std::mem::replace(&mut self.workers[i], W::Exited);
        self.workers[i] = match w {
            W::Free {
                searching,
                may_spin,
                spins_left,
            } => {
                let (next, step, signal) =
                    self.state.next_step(searching, may_spin, self.max_workers);
                self.state = next;
                let then = match step {
                    Step::Run => W::Claimed,
                    // One spin round: give up after `spins_left` rounds.
                    Step::Spin => W::Free {
                        searching: true,
                        may_spin: spins_left > 1,
                        spins_left: spins_left.saturating_sub(1),
                    },
                    Step::Park => W::PrePark,
                    Step::Exit => W::Exited,
                };
                W::Signalling {
                    signal,
                    then: Box::new(then),
                }
            }
            W::Signalling { signal, then } => {
                self.signal(signal);
                *then
            }
            W::Claimed => {
                self.in_queue -= 1;
                self.ran += 1;
                W::Free {
                    searching: false,
                    may_spin: true,
                    spins_left: 2,
                }
            }
            W::PrePark => {
                if self.tokens > 0 {
                    self.tokens -= 1;
                    W::Free {
                        searching: true,
                        may_spin: true,
                        spins_left: 2,
                    }
                } else {
                    self.stack.push(i);
                    W::Parked {
                        notified: false,
                        may_time_out: true,
                    }
                }
            }
            W::Parked { notified: true, .. } => W::Free {
                searching: true,
                may_spin: true,
                spins_left: 2,
            },
            W::Parked {
                notified: false,
                may_time_out,
            } => {
                assert!(may_time_out && self.timeouts);
                match self.state.retire() {
                    Some(next) => {
                        self.state = next;
                        self.stack.retain(|&p| p != i);
                        W::Exited
                    }
                    None => W::Parked {
                        notified: false,
                        may_time_out: false,
                    },
                }
            }
            W::Exited => unreachable!(),
        };
    }

    /// Runs `choices` as a schedule, then the first enabled action until
    /// nothing can run. Returns false on a livelock.
    fn run(&mut self, choices: &[u16]) -> bool {
        for &c in choices {
            let enabled = self.enabled();
            if enabled.is_empty() {
                break;
            }
            self.apply(enabled[c as usize % enabled.len()]);
        }
        for _ in 0..100_000 {
            let enabled = self.enabled();
            let Some(&first) = enabled.first() else {
                return true;
            };
            self.apply(first);
        }
        false
    }

    fn apply(&mut self, (worker, i): (bool, usize)) {
        let before = if worker {
            format!("w{i} {:?}", self.workers[i])
        } else {
            format!("s{i} {:?}", self.submitters.get(i))
        };
        if worker {
            self.step_worker(i)
        } else {
            self.step_submitter(i)
        }
        self.log.push(format!(
            "{before} -> {:?} tokens={} stack={:?}",
            self.state, self.tokens, self.stack
        ));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.check())).is_err() {
            for l in &self.log {
                eprintln!("{l}");
            }
            eprintln!("workers: {:?}", self.workers);
            panic!("invariant broken");
        }
    }

    fn check(&self) {
        let s = self.state;
        // Counted by a transition whose spawn has not been carried out yet.
        let to_spawn = self
            .submitters
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    S::Counted(Signal::Spawn, _) | S::Pushed(Signal::Spawn, _)
                )
            })
            .count()
            + self
                .workers
                .iter()
                .filter(|w| {
                    matches!(
                        w,
                        W::Signalling {
                            signal: Signal::Spawn,
                            ..
                        }
                    )
                })
                .count();
        let gone = |w: &W| match w {
            W::Exited => true,
            W::Signalling { then, .. } => **then == W::Exited,
            _ => false,
        };
        let live = self.workers.iter().filter(|w| !gone(w)).count() + to_spawn;
        assert!(s.workers() <= self.max_workers, "{s:?}");
        assert!(s.idle() <= s.workers(), "{s:?}");
        assert_eq!(s.workers(), live, "live workers miscounted: {s:?}");
        let pre_park = |w: &&W| match w {
            W::PrePark => true,
            W::Signalling { then, .. } => **then == W::PrePark,
            _ => false,
        };
        let pre_parked = self.workers.iter().filter(pre_park).count();
        assert!(self.tokens <= pre_parked, "a token nobody will take");
        let searching_holders = self
            .workers
            .iter()
            .filter(|w| {
                matches!(
                    w,
                    W::Free {
                        searching: true,
                        ..
                    }
                )
            })
            .count();
        if !s.is_shutdown() {
            assert!(searching_holders <= 1, "two searchers: {s:?}");
        }
    }

    fn shut_down(&mut self) {
        let (next, wakes) = self.state.shut_down();
        self.state = next;
        self.shutdown_wakes += wakes;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_task_is_left_behind(
        max_workers in 1usize..=5,
        submitters in prop::collection::vec(1usize..=4, 1..=3),
        timeouts in any::<bool>(),
        first in prop::collection::vec(any::<u16>(), 0..200),
        second in prop::collection::vec(any::<u16>(), 0..200),
    ) {
        let mut sim = Sim {
            state: State(0),
            max_workers,
            max_queued: 1 << 20,
            in_queue: 0,
            stack: Vec::new(),
            tokens: 0,
            workers: Vec::new(),
            submitters: submitters.iter().map(|&n| S::Ready(n)).collect(),
            accepted: 0,
            ran: 0,
            shutdown_wakes: 0,
            timeouts,
            log: Vec::new(),
        };
        prop_assert!(sim.run(&first), "livelock before shutdown");
        // Quiescent: every worker parked (for good) or gone.
        prop_assert_eq!(sim.ran, sim.accepted, "a task was left queued: {:?}", sim.state);
        prop_assert_eq!(sim.state.queued(), 0);
        // More work, then a shutdown racing it.
        for s in &mut sim.submitters {
            *s = S::Ready(2);
        }
        sim.shut_down();
        prop_assert!(sim.run(&second), "livelock after shutdown");
        prop_assert_eq!(sim.ran, sim.accepted);
        prop_assert_eq!(sim.state.workers(), 0, "a worker outlived the shutdown");
        prop_assert!(sim.workers.iter().all(|w| *w == W::Exited));
    }
}
