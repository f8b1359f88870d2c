//! Every operating-system call of the transport, each behind [`syscall!`]
//! (mio's pattern: `-1` becomes `io::Error::last_os_error()`), so the rest of
//! the crate stays free of `unsafe`.
//!
//! # Edge-triggered, registered once
//!
//! A connection is added to its loop's epoll set once, with
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`, and never modified (Go's
//! runtime poller does the same). Level-triggered polling would need an
//! `epoll_ctl(MOD)` each time output becomes pending or drains (to stop a
//! writable socket waking the loop forever), i.e. one more syscall per
//! blocked flush and, for input, a wake-up per `epoll_wait` while a paused
//! connection (high-water mark) still has unread bytes in the kernel. Edge
//! triggering costs nothing when nothing changes; the price is the rule that
//! the loop must drain a socket (read until `EAGAIN` or a short read) or
//! remember to come back to it — which the event loop's ready queue does.
//!
//! A short read (fewer bytes than the space offered) means the socket was
//! empty at that moment, and any later arrival raises a new edge, so the loop
//! skips the extra `read` that would only return `EAGAIN`: one `read` per
//! readiness when the data fits. The same holds for a short `sendmsg`.
//!
//! Measured (echo, server pinned to one core, loaded shared VM, 3
//! alternating runs each; a patched build registering connections
//! level-triggered with `EPOLLIN | EPOLLRDHUP` and adding/removing
//! `EPOLLOUT` with `epoll_ctl(MOD)` around blocked writes): for ping-pong
//! echo the two are the same. `strace -c` on the server, 64 B × 100
//! connections: ET 22,206 `read` + 22,206 `sendmsg` + 356 `epoll_wait`,
//! LT 20,631 + 20,631 + 372 — one `read` and one `sendmsg` per message
//! either way, since the loop stops at a short read in both modes. Server
//! CPU per message (medians) 15.2 µs ET vs 15.5 µs LT at 64 B × 100 and
//! 15.5 vs 15.0 µs at 1 KiB × 50, inside this machine's ±20 % noise. So
//! the choice rests on the cases echo does not exercise: LT needs two
//! `epoll_ctl(MOD)` per blocked write and one per pause/resume at the
//! high-water mark (or it spins on a paused, still-readable socket); ET
//! needs none.
#![allow(unsafe_code)]

mod epoll;
mod socket;
mod udp;

pub(crate) use epoll::{Epoll, EventFd, Events, Interest, Ready};
pub(crate) use socket::*;
pub(crate) use udp::{GSO_MAX_SEGMENTS, MAX_BATCH, RecvBuf, SegMsg, send_batch, send_segments};

/// Calls a `libc` function and turns the `-1` error convention into
/// `io::Result`.
///
/// Every use must pass arguments satisfying the called function's contract
/// (valid descriptors and pointers to live, correctly sized memory); each call
/// site states why it does.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of `syscall!` upholds the contract of the called
        // libc function, as documented at each call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;
