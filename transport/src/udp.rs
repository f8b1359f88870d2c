//! UDP sockets served by the event loops, in batches.
//!
//! A UDP socket is registered on one loop ([`EventLoop::listen_udp`],
//! [`EventLoop::bind_udp`], [`EventLoop::dial_udp`]). When it is readable
//! the loop receives up to [`Builder::udp_batch`] datagrams with one
//! `recvmmsg` into a loop-owned batch buffer and calls
//! [`UdpHandler::on_datagram`] for each with a borrowed `&[u8]` — no copy,
//! no allocation. Replies queued on the [`UdpOut`] during the batch go out
//! together with `sendmmsg` when the batch is done. So a busy socket costs
//! two syscalls per batch instead of two per datagram (evio and gnet make
//! one `recvfrom` and one `sendto` per datagram).
//!
//! A datagram longer than a batch slot ([`Builder::udp_max_datagram`],
//! 64 KiB by default, which no UDP datagram exceeds) is never handed out as
//! if whole: the kernel reports its real length (`MSG_TRUNC`) and the
//! handler's [`on_truncated`](UdpHandler::on_truncated) gets the prefix and
//! that length; it is counted in [`Stats::datagrams_truncated`].
//!
//! Sends never block the loop: a reply that finds the socket buffer full is
//! dropped and counted ([`Stats::datagrams_send_failed`]) — UDP's usual
//! contract, and the bound that keeps a flood from growing memory.
//!
//! [`EventLoop::listen_udp`]: crate::EventLoop::listen_udp
//! [`EventLoop::bind_udp`]: crate::EventLoop::bind_udp
//! [`EventLoop::dial_udp`]: crate::EventLoop::dial_udp
//! [`Builder::udp_batch`]: crate::Builder::udp_batch
//! [`Builder::udp_max_datagram`]: crate::Builder::udp_max_datagram
//! [`Stats::datagrams_truncated`]: crate::Stats::datagrams_truncated
//! [`Stats::datagrams_send_failed`]: crate::Stats::datagrams_send_failed

use std::fmt;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reactor::{Counters, LoopShared, Task};
use crate::sys;

/// What a loop does with the datagrams of a UDP socket.
///
/// Both callbacks run on the socket's loop thread, one datagram at a time,
/// and must not block. Replies queued on `out` are sent with one
/// `sendmmsg` after the batch. A panic is caught, counted in
/// [`Stats::handler_panics`](crate::Stats::handler_panics) and drops only
/// that datagram.
///
/// # Example
///
/// ```
/// use std::net::{SocketAddr, UdpSocket};
/// use std::time::Duration;
/// use ferropoll_transport::{EventLoop, UdpHandler, UdpOut, handler_fn};
///
/// struct Echo;
/// impl UdpHandler for Echo {
///     fn on_datagram(&self, data: &[u8], peer: SocketAddr, out: &mut UdpOut<'_>) {
///         out.send_to(data, peer);
///     }
/// }
///
/// let lp = EventLoop::builder().num_loops(1).build(handler_fn(|_| Ok(())))?;
/// let server = lp.listen_udp(UdpSocket::bind("127.0.0.1:0")?, Echo)?;
///
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.set_read_timeout(Some(Duration::from_secs(5)))?;
/// client.send_to(b"ping", server.local_addr())?;
/// let mut buf = [0u8; 16];
/// let (n, _) = client.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait UdpHandler: Send + Sync + 'static {
    /// A whole datagram (possibly empty) from `peer`. `data` borrows the
    /// loop's batch buffer: copy what must outlive the call.
    fn on_datagram(&self, data: &[u8], peer: SocketAddr, out: &mut UdpOut<'_>);

    /// A datagram of `len` bytes that did not fit a batch slot: `prefix` is
    /// its first [`udp_max_datagram`](crate::Builder::udp_max_datagram)
    /// bytes, the rest is lost. Counted in
    /// [`Stats::datagrams_truncated`](crate::Stats::datagrams_truncated)
    /// whatever this does; the default does nothing more.
    fn on_truncated(&self, prefix: &[u8], len: usize, peer: SocketAddr, out: &mut UdpOut<'_>) {
        let _ = (prefix, len, peer, out);
    }
}

/// A [`UdpHandler`] made of one closure; see [`udp_handler_fn`].
#[derive(Debug, Clone)]
pub struct UdpFnHandler<F> {
    on_datagram: F,
}

/// A [`UdpHandler`] whose `on_datagram` is `f` (truncated datagrams are
/// only counted).
///
/// ```
/// use ferropoll_transport::udp_handler_fn;
///
/// let echo = udp_handler_fn(|data, peer, out| out.send_to(data, peer));
/// # let _ = echo;
/// ```
pub fn udp_handler_fn<F>(f: F) -> UdpFnHandler<F>
where
    F: Fn(&[u8], SocketAddr, &mut UdpOut<'_>) + Send + Sync + 'static,
{
    UdpFnHandler { on_datagram: f }
}

impl<F> UdpHandler for UdpFnHandler<F>
where
    F: Fn(&[u8], SocketAddr, &mut UdpOut<'_>) + Send + Sync + 'static,
{
    fn on_datagram(&self, data: &[u8], peer: SocketAddr, out: &mut UdpOut<'_>) {
        (self.on_datagram)(data, peer, out)
    }
}

/// Replies queued during a batch, sent with `sendmmsg`.
#[derive(Default)]
pub(crate) struct SendQueue {
    arena: Vec<u8>,
    items: Vec<(usize, usize, Option<SocketAddr>)>,
    /// Send order (reused): items grouped by destination, stable.
    order: Vec<u32>,
}

/// The queue is flushed early once it holds this many payload bytes.
const QUEUE_BYTES: usize = 256 << 10;

/// Replies of at most this size to one destination go out as one UDP GSO
/// message (`UDP_SEGMENT`): below every common path MTU, so the kernel
/// never refuses a segment size.
const GSO_MAX_SEGMENT: usize = 1200;

/// Payload bytes of one GSO message (within one IPv4 datagram's length).
const GSO_MAX_BYTES: usize = 60_000;

/// Cleared for good when the kernel refuses `UDP_SEGMENT` (kernels before
/// 4.18, devices without checksum offload).
static GSO: AtomicBool = AtomicBool::new(true);

/// Whether a send error means the kernel or device cannot do UDP GSO.
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

impl SendQueue {
    fn is_full(&self) -> bool {
        self.items.len() >= sys::MAX_BATCH || self.arena.len() >= QUEUE_BYTES
    }

    /// Sends everything queued on `fd`; what the socket refuses is dropped
    /// and counted. Replies to the same destination are grouped (their
    /// order kept) and, when small and of equal size, sent as one UDP GSO
    /// message: one pass through the kernel's send path for several
    /// datagrams.
    pub(crate) fn flush(&mut self, fd: RawFd, counters: &Counters, gso: bool) {
        if gso && self.items.len() >= 2 && GSO.load(Ordering::Relaxed) {
            self.flush_grouped(fd, counters);
        } else {
            let arena = &self.arena;
            let msgs = self
                .items
                .iter()
                .map(|&(start, len, to)| (&arena[start..start + len], to));
            send_plain(fd, msgs, counters);
        }
        self.items.clear();
        self.arena.clear();
        if self.arena.capacity() > 4 * QUEUE_BYTES {
            self.arena = Vec::new();
        }
    }

    fn flush_grouped(&mut self, fd: RawFd, counters: &Counters) {
        let items = &self.items;
        let arena = &self.arena;
        self.order.clear();
        self.order.extend(0..items.len() as u32);
        self.order.sort_by_key(|&i| (items[i as usize].2, i));
        let order = &self.order;
        let mut pos = 0;
        while pos < order.len() {
            // One sendmmsg worth: up to MAX_BATCH slices and messages.
            let mut iovs = [IoSlice::new(&[]); sys::MAX_BATCH];
            let mut msgs = [sys::SegMsg {
                first_iov: 0,
                iov_count: 0,
                to: None,
                segment: 0,
            }; sys::MAX_BATCH];
            let (mut niov, mut nmsg) = (0, 0);
            while pos < order.len() && niov < sys::MAX_BATCH && nmsg < sys::MAX_BATCH {
                let (start, len, to) = items[order[pos] as usize];
                let first = niov;
                iovs[niov] = IoSlice::new(&arena[start..start + len]);
                niov += 1;
                pos += 1;
                let mut total = len;
                if len > 0 && len <= GSO_MAX_SEGMENT {
                    while pos < order.len()
                        && niov < sys::MAX_BATCH
                        && niov - first < sys::GSO_MAX_SEGMENTS
                    {
                        let (s2, l2, t2) = items[order[pos] as usize];
                        if t2 != to || l2 != len || total + l2 > GSO_MAX_BYTES {
                            break;
                        }
                        iovs[niov] = IoSlice::new(&arena[s2..s2 + l2]);
                        niov += 1;
                        pos += 1;
                        total += l2;
                    }
                }
                let count = niov - first;
                msgs[nmsg] = sys::SegMsg {
                    first_iov: first,
                    iov_count: count,
                    to,
                    segment: if count > 1 { len as u16 } else { 0 },
                };
                nmsg += 1;
            }
            let iovs = &iovs[..niov];
            let mut m = 0;
            while m < nmsg {
                match sys::send_segments(fd, iovs, &msgs[m..nmsg]) {
                    Ok(0) => break,
                    Ok(k) => {
                        for msg in &msgs[m..m + k] {
                            count_sent(msg, iovs, counters);
                        }
                        m += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let left: usize = msgs[m..nmsg].iter().map(|x| x.iov_count).sum();
                        let left = (left + order.len() - pos) as u64;
                        counters.dgrams_failed.fetch_add(left, Ordering::Relaxed);
                        tracing::trace!(dropped = left, "UDP send buffer full; replies dropped");
                        return;
                    }
                    Err(e) => {
                        let msg = msgs[m];
                        if msg.segment > 0 {
                            // Refused as a GSO message: send its datagrams
                            // one by one, and stop grouping if GSO is not
                            // supported at all.
                            if gso_unsupported(&e) {
                                GSO.store(false, Ordering::Relaxed);
                                tracing::debug!(error = %e, "UDP GSO unavailable; sending datagrams singly");
                            }
                            let slices = &iovs[msg.first_iov..msg.first_iov + msg.iov_count];
                            send_plain(fd, slices.iter().map(|s| (&s[..], msg.to)), counters);
                        } else {
                            counters.dgrams_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, "UDP send failed; datagram dropped");
                        }
                        m += 1;
                    }
                }
            }
        }
    }
}

/// Counts a sent message's datagrams and bytes.
fn count_sent(msg: &sys::SegMsg, iovs: &[IoSlice<'_>], counters: &Counters) {
    let bytes: usize = iovs[msg.first_iov..msg.first_iov + msg.iov_count]
        .iter()
        .map(|s| s.len())
        .sum();
    counters
        .bytes_out
        .fetch_add(bytes as u64, Ordering::Relaxed);
    counters
        .dgrams_out
        .fetch_add(msg.iov_count as u64, Ordering::Relaxed);
}

/// Sends `msgs` one datagram per message (`sendmmsg` in batches); what the
/// socket refuses is dropped and counted.
fn send_plain<'a>(
    fd: RawFd,
    msgs: impl Iterator<Item = (&'a [u8], Option<SocketAddr>)> + Clone,
    counters: &Counters,
) {
    let total = msgs.clone().count();
    let mut pos = 0;
    while pos < total {
        match sys::send_batch(fd, msgs.clone().skip(pos)) {
            Ok(0) => break,
            Ok(k) => {
                let bytes: usize = msgs.clone().skip(pos).take(k).map(|m| m.0.len()).sum();
                counters
                    .bytes_out
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                counters.dgrams_out.fetch_add(k as u64, Ordering::Relaxed);
                pos += k;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = (total - pos) as u64;
                counters.dgrams_failed.fetch_add(left, Ordering::Relaxed);
                tracing::trace!(dropped = left, "UDP send buffer full; replies dropped");
                break;
            }
            Err(e) => {
                // The first datagram failed (too large, bad address, ICMP
                // error pending): drop it, go on with the rest.
                counters.dgrams_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "UDP send failed; datagram dropped");
                pos += 1;
            }
        }
    }
}

/// Where a [`UdpHandler`] queues its replies; they are sent with one
/// `sendmmsg` after the batch of received datagrams (or earlier, when 64
/// are queued).
pub struct UdpOut<'a> {
    endpoint: &'a UdpEndpoint,
    queue: &'a mut SendQueue,
    counters: &'a Counters,
}

impl fmt::Debug for UdpOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpOut")
            .field("endpoint", self.endpoint)
            .field("queued", &self.queue.items.len())
            .finish()
    }
}

impl<'a> UdpOut<'a> {
    pub(crate) fn new(
        endpoint: &'a UdpEndpoint,
        queue: &'a mut SendQueue,
        counters: &'a Counters,
    ) -> Self {
        UdpOut {
            endpoint,
            queue,
            counters,
        }
    }

    fn push(&mut self, data: &[u8], to: Option<SocketAddr>) {
        let start = self.queue.arena.len();
        self.queue.arena.extend_from_slice(data);
        self.queue.items.push((start, data.len(), to));
        if self.queue.is_full() {
            self.flush();
        }
    }

    /// Queues `data` (copied) as a datagram to `to`.
    pub fn send_to(&mut self, data: &[u8], to: SocketAddr) {
        self.push(data, Some(to));
    }

    /// Queues `data` (copied) as a datagram to the connected peer of a
    /// dialed endpoint. On an unconnected socket the kernel refuses it
    /// (counted in [`Stats::datagrams_send_failed`](crate::Stats::datagrams_send_failed)).
    pub fn send(&mut self, data: &[u8]) {
        self.push(data, None);
    }

    /// Sends what is queued now.
    pub fn flush(&mut self) {
        let gso = self.endpoint.inner.lp.cfg.udp_gso;
        self.queue
            .flush(self.endpoint.inner.socket.as_raw_fd(), self.counters, gso);
    }

    /// The socket the datagram came in on.
    pub fn endpoint(&self) -> &UdpEndpoint {
        self.endpoint
    }
}

pub(crate) struct UdpInner {
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    pub(crate) lp: Arc<LoopShared>,
    closed: AtomicBool,
    id: u64,
}

/// A UDP socket served by an event loop: a cheap `Clone + Send + Sync`
/// handle.
///
/// Datagrams go to the [`UdpHandler`] it was registered with; the handle
/// sends from any thread (one `sendto`, or `sendmmsg` for
/// [`send_many`](UdpEndpoint::send_many)). A dialed endpoint
/// ([`EventLoop::dial_udp`](crate::EventLoop::dial_udp)) is a connected
/// socket: it only receives from its peer and [`send`](UdpEndpoint::send)
/// needs no address. The socket closes when the endpoint is closed (or
/// its loop stops) and the last handle is dropped.
#[derive(Clone)]
pub struct UdpEndpoint {
    pub(crate) inner: Arc<UdpInner>,
}

impl fmt::Debug for UdpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpEndpoint")
            .field("id", &self.inner.id)
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket, lp: Arc<LoopShared>) -> io::Result<UdpEndpoint> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let peer = socket.peer_addr().ok();
        Ok(UdpEndpoint {
            inner: Arc::new(UdpInner {
                socket,
                local,
                peer,
                lp,
                closed: AtomicBool::new(false),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The peer of a dialed (connected) endpoint.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// Index of the loop serving this socket.
    pub fn loop_index(&self) -> usize {
        self.inner.lp.index
    }

    /// Whether [`close`](UdpEndpoint::close) was called (or the loop stopped).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Stops serving the socket: no datagram reaches the handler after the
    /// loop has processed this, and sends fail with `NotConnected`.
    /// Idempotent.
    pub fn close(&self) {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            self.inner.lp.send(Task::CloseUdp(self.clone()));
        }
    }

    pub(crate) fn mark_closed(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    pub(crate) fn ptr_eq(&self, other: &UdpEndpoint) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn check_open(&self) -> io::Result<()> {
        if self.is_closed() {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "UDP endpoint closed",
            ))
        } else {
            Ok(())
        }
    }

    fn count_out(&self, datagrams: usize, bytes: usize) {
        let c = &self.inner.lp.counters;
        c.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        c.dgrams_out.fetch_add(datagrams as u64, Ordering::Relaxed);
    }

    /// Sends one datagram to `to` from the calling thread (never blocks:
    /// a full socket buffer gives `WouldBlock`).
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.check_open()?;
        let n = self.inner.socket.send_to(data, to)?;
        self.count_out(1, n);
        Ok(())
    }

    /// Sends one datagram to the peer of a dialed endpoint.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        self.check_open()?;
        let n = self.inner.socket.send(data)?;
        self.count_out(1, n);
        Ok(())
    }

    /// Sends datagrams to the peer of a dialed endpoint with `sendmmsg`
    /// (64 per call); returns how many were sent — fewer than given when
    /// the socket buffer filled up.
    ///
    /// # Errors
    ///
    /// The error of the first datagram when none could be sent
    /// (`WouldBlock` when the socket buffer is full).
    pub fn send_many(&self, datagrams: &[&[u8]]) -> io::Result<usize> {
        self.send_many_inner(datagrams, None)
    }

    /// As [`send_many`](UdpEndpoint::send_many), every datagram to `to`.
    pub fn send_many_to(&self, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<usize> {
        self.send_many_inner(datagrams, Some(to))
    }

    fn send_many_inner(&self, datagrams: &[&[u8]], to: Option<SocketAddr>) -> io::Result<usize> {
        self.check_open()?;
        let fd = self.inner.socket.as_raw_fd();
        let mut sent = 0;
        while sent < datagrams.len() {
            match sys::send_batch(fd, datagrams[sent..].iter().map(|d| (*d, to))) {
                Ok(0) => break,
                Ok(k) => {
                    let bytes = datagrams[sent..sent + k].iter().map(|d| d.len()).sum();
                    self.count_out(k, bytes);
                    sent += k;
                }
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    if sent > 0 {
                        break;
                    }
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }
}

/// A UDP socket registered on a loop, with its handler.
pub(crate) struct UdpEntry {
    pub(crate) endpoint: UdpEndpoint,
    pub(crate) handler: Arc<dyn UdpHandler>,
}
