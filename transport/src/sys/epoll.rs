//! epoll and eventfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::syscall;

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// A connection: readable, writable and peer hang-up, edge-triggered.
    Connection,
    /// A listener or an eventfd: readable, edge-triggered.
    Readable,
}

impl Interest {
    fn bits(self) -> u32 {
        let bits = match self {
            Interest::Connection => {
                libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET
            }
            Interest::Readable => libc::EPOLLIN | libc::EPOLLET,
        };
        bits as u32
    }
}

/// One epoll instance (`EPOLL_CLOEXEC`).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // No pointer arguments.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Adds `fd` with the registration key `token`.
    pub(crate) fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        // `ev` is a live epoll_event for the duration of the call.
        syscall!(epoll_ctl(
            self.fd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut ev
        ))?;
        Ok(())
    }

    /// Removes `fd` from the set.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        // A null event is allowed for EPOLL_CTL_DEL (since Linux 2.6.9).
        syscall!(epoll_ctl(
            self.fd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut()
        ))?;
        Ok(())
    }

    /// Waits for events; `None` waits forever. The timeout is rounded up to
    /// whole milliseconds so a timer is never woken early.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as i32
            }
        };
        events.len = 0;
        let cap = events.buf.len() as i32;
        // `buf` holds `cap` writable epoll_event slots.
        match syscall!(epoll_wait(
            self.fd.as_raw_fd(),
            events.buf.as_mut_ptr(),
            cap,
            ms
        )) {
            Ok(n) => {
                events.len = n as usize;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A reusable buffer of readiness events.
pub(crate) struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    pub(crate) fn with_capacity(n: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    /// Number of events of the last wait.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `(token, readiness)` of event `i` of the last wait.
    pub(crate) fn get(&self, i: usize) -> (u64, Ready) {
        let e = self.buf[i];
        (e.u64, Ready(e.events))
    }
}

/// Readiness bits of one event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready(u32);

impl Ready {
    pub(crate) fn readable(self) -> bool {
        self.0 & (libc::EPOLLIN | libc::EPOLLPRI) as u32 != 0
    }
    pub(crate) fn writable(self) -> bool {
        self.0 & libc::EPOLLOUT as u32 != 0
    }
    /// The peer shut down its writing side (FIN).
    pub(crate) fn read_closed(self) -> bool {
        self.0 & libc::EPOLLRDHUP as u32 != 0
    }
    /// Both directions are gone (reset, or both sides shut down) or an error is pending.
    pub(crate) fn hup_or_error(self) -> bool {
        self.0 & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }
}

/// An eventfd used to wake a loop from other threads.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // No pointer arguments.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds one to the counter, making the fd readable.
    pub(crate) fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // `one` is 8 readable bytes, the size eventfd requires.
        match syscall!(write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8)) {
            Ok(_) => Ok(()),
            // The counter is saturated: the loop is already due to wake.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Resets the counter.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // `v` is 8 writable bytes, the size eventfd requires. EAGAIN (already
        // zero) is the only expected error and needs no handling.
        let _ = syscall!(read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8));
    }
}
