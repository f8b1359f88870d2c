//! The client side: dial TCP or Unix sockets, served by client loops.
//!
//! A dialed connection is a full [`Connection`] registered with a loop like
//! an accepted one, so `is_active()` turns false when the server goes away
//! and the socket is closed then (its unread input stays readable through
//! the handle). Without a handler its reads block; with one (dial through an
//! [`EventLoop`] built with a handler) input goes to `on_request`.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::conn::Connection;
use crate::event_loop::{Builder, EventLoop};

/// Dials connections read with blocking reads, served by its own loops.
///
/// ```no_run
/// use std::time::Duration;
/// use ferropoll_transport::Dialer;
///
/// let dialer = Dialer::new()?;
/// let conn = dialer.dial_tcp("127.0.0.1:9000", Duration::from_secs(1))?;
/// conn.writer().write_binary(b"ping\n");
/// conn.flush()?;
/// let line = conn.reader().until(b'\n')?.to_vec();
/// # let _ = line;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Dialer {
    lp: EventLoop,
}

impl Dialer {
    /// A dialer with one client loop.
    pub fn new() -> io::Result<Dialer> {
        Dialer::with_builder(EventLoop::builder().name("ferropoll-dialer").num_loops(1))
    }

    /// A dialer whose loops follow `builder` (loops, balance, timeouts,
    /// high-water mark, keepalive); its dispatch and pool are not used. For
    /// callbacks, dial with [`EventLoop::dial_tcp`] on a loop built with a
    /// handler instead.
    pub fn with_builder(builder: &Builder) -> io::Result<Dialer> {
        Ok(Dialer {
            lp: builder.build_blocking()?,
        })
    }

    /// Connects over TCP with a connect timeout.
    pub fn dial_tcp(&self, addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Connection> {
        self.lp.dial_tcp(addr, timeout)
    }

    /// Connects to a Unix domain socket with a connect timeout.
    pub fn dial_unix(&self, path: impl AsRef<Path>, timeout: Duration) -> io::Result<Connection> {
        self.lp.dial_unix(path, timeout)
    }

    /// The client loops (stats, shutdown).
    pub fn event_loop(&self) -> &EventLoop {
        &self.lp
    }
}

/// The process-wide dialer of [`dial_tcp`] and [`dial_unix`] (one loop,
/// started on first use and kept for the life of the process).
pub fn default_dialer() -> io::Result<&'static Dialer> {
    static DEFAULT: OnceLock<Dialer> = OnceLock::new();
    if let Some(d) = DEFAULT.get() {
        return Ok(d);
    }
    let d = Dialer::new()?;
    Ok(DEFAULT.get_or_init(|| d))
}

/// Connects over TCP with the default dialer (blocking reads).
pub fn dial_tcp(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Connection> {
    default_dialer()?.dial_tcp(addr, timeout)
}

/// Connects to a Unix domain socket with the default dialer (blocking reads).
pub fn dial_unix(path: impl AsRef<Path>, timeout: Duration) -> io::Result<Connection> {
    default_dialer()?.dial_unix(path, timeout)
}
