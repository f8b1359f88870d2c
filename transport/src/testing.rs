//! Test helpers: descriptor counting, leak checks, bounded waiting.
//!
//! Not part of the stable API (hidden from the docs); used by this crate's
//! integration tests and by the RPC and example tests.

use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    // The directory handle used to list /proc/self/fd is itself one entry.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
/// The poll interval starts at 100 µs and grows to 10 ms.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return cond();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the process-wide test lock: tests holding it do not run at the same
/// time, so descriptor and buffer counts are not disturbed by each other.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock()
}

/// Records open descriptors and outstanding mcache buffers; `assert_clean`
/// waits (bounded) for both to come back to that baseline. Holds the
/// [`serial`] lock for its life.
pub struct LeakCheck {
    fds: usize,
    outstanding: u64,
    _serial: MutexGuard<'static, ()>,
}

impl LeakCheck {
    /// Takes the test lock and records the baseline. The default dialer is
    /// started first so that its descriptors count as baseline.
    #[allow(clippy::new_without_default)]
    pub fn new() -> LeakCheck {
        let serial = serial();
        let _ = crate::default_dialer();
        LeakCheck {
            fds: open_fds(),
            outstanding: ferropoll_mcache::stats().outstanding,
            _serial: serial,
        }
    }

    /// Waits up to 5 s for descriptors and buffers to return to the baseline.
    ///
    /// # Panics
    ///
    /// If they do not, with both counts.
    pub fn assert_clean(&self) {
        self.assert_clean_within(Duration::from_secs(5));
    }

    /// As [`assert_clean`](Self::assert_clean) with a chosen bound.
    pub fn assert_clean_within(&self, timeout: Duration) {
        let clean = wait_until(timeout, || {
            open_fds() <= self.fds && ferropoll_mcache::stats().outstanding <= self.outstanding
        });
        assert!(
            clean,
            "leak: open fds {} (baseline {}), mcache outstanding {} (baseline {})",
            open_fds(),
            self.fds,
            ferropoll_mcache::stats().outstanding,
            self.outstanding
        );
    }
}
