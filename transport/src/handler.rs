//! What a server (or a dialer with callbacks) does with its connections.

use std::io;

use crate::conn::Connection;

/// Callbacks of a connection's life, in the order they run.
///
/// `on_prepare` and `on_connect` run on the connection's loop thread before it
/// is registered for readiness; `on_request` runs whenever unread input is
/// there — on the loop thread with [`Dispatch::Inline`], on a gopool worker
/// with [`Dispatch::Pool`] — and never twice at once for one connection;
/// `on_disconnect` runs exactly once, on the loop thread, after the last
/// `on_request` has returned.
///
/// # Rounds
///
/// A round is one call of `on_request`. While unread input is left and the
/// round consumed something, the next round follows at once; a round that
/// consumed nothing (an incomplete request) waits for more input instead of
/// spinning. Returning `Err` closes the connection; so does a panic, which is
/// caught, counted in [`Stats::handler_panics`](crate::Stats) and touches no
/// other connection.
///
/// # Example
///
/// ```
/// use std::io;
/// use ferropoll_transport::{Connection, Handler};
///
/// /// Echoes everything, counting bytes per connection.
/// struct Echo;
///
/// impl Handler for Echo {
///     type State = u64;
///     fn on_connect(&self, _conn: &Connection) -> u64 {
///         0
///     }
///     fn on_request(&self, total: &mut u64, conn: &Connection) -> io::Result<()> {
///         let mut r = conn.reader();
///         let n = r.len();
///         let data = r.slice(n)?;
///         drop(r);
///         *total += n as u64;
///         let mut w = conn.writer();
///         w.append(data);
///         w.flush()
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state, created by `on_connect`.
    type State: Send + 'static;

    /// Before the connection is registered: set timeouts, add close callbacks.
    fn on_prepare(&self, conn: &Connection) {
        let _ = conn;
    }

    /// The connection is open; returns its state. It may write a greeting.
    fn on_connect(&self, conn: &Connection) -> Self::State;

    /// Unread input is there: read (with [`Connection::reader`]) and answer.
    /// `Err` closes the connection, except `ErrorKind::WouldBlock` (an
    /// incomplete request read inline with `?`), which waits for more input.
    fn on_request(&self, state: &mut Self::State, conn: &Connection) -> io::Result<()>;

    /// The connection is closed (by either side, a timeout, an error or
    /// shutdown). Runs once, after the last `on_request`.
    fn on_disconnect(&self, state: &mut Self::State, conn: &Connection) {
        let _ = (state, conn);
    }
}

/// Where `on_request` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// On the loop thread that saw the data: no thread hop, the fast path.
    /// The reader never blocks (an incomplete read returns
    /// `ErrorKind::WouldBlock`, so the handler returns and waits for more),
    /// and a slow handler delays every connection of its loop.
    #[default]
    Inline,
    /// On a gopool worker (the builder's pool, else gopool's default pool).
    /// The reader's `next(n)` blocks until `n` bytes, the read timeout
    /// (`ErrorKind::TimedOut`) or close. For handlers that block.
    Pool,
}

/// A [`Handler`] made of one closure: `on_request` with no state.
///
/// ```
/// use ferropoll_transport::handler_fn;
///
/// let echo = handler_fn(|conn| {
///     let mut r = conn.reader();
///     let n = r.len();
///     let data = r.slice(n)?;
///     drop(r);
///     let mut w = conn.writer();
///     w.append(data);
///     w.flush()
/// });
/// # let _ = echo;
/// ```
pub fn handler_fn<F>(on_request: F) -> FnHandler<F>
where
    F: Fn(&Connection) -> io::Result<()> + Send + Sync + 'static,
{
    FnHandler { on_request }
}

/// The handler returned by [`handler_fn`].
#[derive(Debug, Clone)]
pub struct FnHandler<F> {
    on_request: F,
}

impl<F> Handler for FnHandler<F>
where
    F: Fn(&Connection) -> io::Result<()> + Send + Sync + 'static,
{
    type State = ();
    fn on_connect(&self, _conn: &Connection) {}
    fn on_request(&self, _state: &mut (), conn: &Connection) -> io::Result<()> {
        (self.on_request)(conn)
    }
}

/// The handler of dialed connections used with blocking reads: input waits in
/// the connection until the user reads it.
pub(crate) struct NoHandler;

impl Handler for NoHandler {
    type State = ();
    fn on_connect(&self, _conn: &Connection) {}
    fn on_request(&self, _state: &mut (), _conn: &Connection) -> io::Result<()> {
        Ok(())
    }
}
