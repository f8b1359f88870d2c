//! Socket calls: accept, read, sendmsg, options, non-blocking connect.

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::syscall;
use crate::addr::Addr;

/// Most iovecs passed to one `sendmsg`.
pub(crate) const MAX_IOVECS: usize = 64;

/// Reads from a connected socket: `recv(2)` with `MSG_DONTWAIT`;
/// `Interrupted` is retried. `recv` rather than `read`: on a socket the
/// kernel's `read` path goes through the VFS (`vfs_read`, the file-position
/// lock lookup) before reaching the same socket code, which showed as ~4 %
/// of an HTTP server's samples.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // `buf` is valid for `buf.len()` writable bytes.
        match syscall!(recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT
        )) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `sendmsg(2)` of several slices with `MSG_NOSIGNAL | MSG_DONTWAIT` (a closed
/// peer gives `EPIPE`, never `SIGPIPE`).
///
/// One slice goes through `send(2)`, which spares the kernel the import of a
/// `msghdr` and an iovec array (the common case: a small response).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [one] = bufs {
        return send(fd, one);
    }
    let n = bufs.len().min(MAX_IOVECS);
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the kernel
    // only reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = n as _;
    loop {
        // `msg` points at `n` live iovecs describing readable memory.
        match syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)) {
            Ok(sent) => return Ok(sent as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `send(2)` of one slice with `MSG_NOSIGNAL | MSG_DONTWAIT`.
fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // `buf` is valid for `buf.len()` readable bytes.
        match syscall!(send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT
        )) {
            Ok(sent) => return Ok(sent as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, returning the peer's address.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, Addr)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let conn = loop {
        // `storage` and `len` are valid for writes of a sockaddr_storage.
        match syscall!(accept4(
            fd,
            storage.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        )) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: accept4 returned a new descriptor that nobody else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    // SAFETY: the storage was zero-initialised and accept4 filled `len` bytes of it.
    let storage = unsafe { storage.assume_init() };
    Ok((conn, sockaddr_to_addr(&storage, len)))
}

pub(super) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    // `value` is a live `T` of the size passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const T).cast(),
        mem::size_of::<T>() as libc::socklen_t
    ))?;
    Ok(())
}

/// `TCP_NODELAY` on.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int)
}

/// `SO_KEEPALIVE` with the idle time and probe interval `idle`.
pub(crate) fn set_keepalive(fd: RawFd, idle: Duration) -> io::Result<()> {
    let secs = idle.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs)
}

/// `TCP_USER_TIMEOUT`: the kernel closes the connection (`ETIMEDOUT`) when
/// sent data stays unacknowledged for `d` (rounded up to a millisecond).
pub(crate) fn set_user_timeout(fd: RawFd, d: Duration) -> io::Result<()> {
    let ms = d.as_millis().clamp(1, i32::MAX as u128) as libc::c_uint;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// `listen(2)` again on a listening socket: Linux then updates its backlog.
pub(crate) fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // No pointer arguments.
    syscall!(listen(fd, backlog))?;
    Ok(())
}

/// The pending socket error (`SO_ERROR`), if any.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // `err` and `len` are valid for writes of a c_int and a socklen_t.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut err as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// The socket's local address.
pub(crate) fn local_addr(fd: RawFd) -> io::Result<Addr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // `storage` and `len` are valid for writes of a sockaddr_storage.
    syscall!(getsockname(fd, storage.as_mut_ptr().cast(), &mut len))?;
    // SAFETY: zero-initialised, and getsockname filled `len` bytes.
    let storage = unsafe { storage.assume_init() };
    Ok(sockaddr_to_addr(&storage, len))
}

pub(super) fn sockaddr_to_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Addr {
    let len = len as usize;
    match s.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // is smaller than sockaddr_storage and has weaker alignment.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Addr::Tcp(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Addr::Tcp(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        libc::AF_UNIX => {
            // SAFETY: as above, for sockaddr_un.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            let base = mem::offset_of!(libc::sockaddr_un, sun_path);
            let n = len.saturating_sub(base).min(a.sun_path.len());
            let raw: Vec<u8> = a.sun_path[..n].iter().map(|&c| c as u8).collect();
            // Unnamed (n == 0) and abstract (leading NUL) sockets have no path.
            if raw.first().is_none_or(|&b| b == 0) {
                Addr::Unix(None)
            } else {
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                let path = std::ffi::OsStr::from_bytes(&raw[..end]);
                Addr::Unix(Some(PathBuf::from(path)))
            }
        }
        _ => Addr::Unix(None),
    }
}

fn new_socket(domain: libc::c_int, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // No pointer arguments.
    let fd = syscall!(socket(domain, ty, 0))?;
    // SAFETY: a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until `fd` is writable (or has an error) or `deadline` passes.
fn wait_writable(fd: RawFd, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // `pfd` is one live pollfd.
        match syscall!(poll(&mut pfd, 1, ms)) {
            Ok(0) => continue, // re-checks the deadline
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Non-blocking TCP connect with a timeout; returns a non-blocking socket
/// with `TCP_NODELAY` on.
pub(crate) fn connect_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<OwnedFd> {
    let deadline = Instant::now() + timeout;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let sock = new_socket(domain, true)?;
    let (storage, len) = socket_addr_to_raw(addr);
    // `storage` holds a sockaddr of `len` bytes.
    match syscall!(connect(
        sock.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    )) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            wait_writable(sock.as_raw_fd(), deadline)?;
            if let Some(e) = take_error(sock.as_raw_fd())? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    set_nodelay(sock.as_raw_fd())?;
    Ok(sock)
}

/// Unix-socket connect with a timeout; returns a non-blocking socket.
///
/// A Unix connect never returns `EINPROGRESS`: it either completes or, when
/// the listener's backlog is full, waits for room. The wait is bounded with
/// `SO_SNDTIMEO`, which the kernel applies to a blocking Unix connect.
pub(crate) fn connect_unix(path: &Path, timeout: Duration) -> io::Result<OwnedFd> {
    let sock = new_socket(libc::AF_UNIX, false)?;
    let t = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDTIMEO, tv)?;
    // SAFETY: an all-zero sockaddr_un is valid (family set below).
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= sun.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path empty or too long",
        ));
    }
    for (dst, &b) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    let len = (mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1) as libc::socklen_t;
    loop {
        // `sun` is a live sockaddr_un of at least `len` bytes.
        match syscall!(connect(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len
        )) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            Err(e) => return Err(e),
        }
    }
    set_nonblocking(sock.as_raw_fd())?;
    Ok(sock)
}

/// Sets `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // `on` is a live c_int, as FIONBIO expects.
    syscall!(ioctl(fd, libc::FIONBIO, &mut on))?;
    Ok(())
}

pub(super) fn socket_addr_to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and as aligned as sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and as aligned as sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A non-blocking socket bound to `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT` on, so that one socket per loop can bind the same address
/// and the kernel spreads new connections (or datagrams) over them by a
/// hash of the 4-tuple. A stream socket is also put in listening state.
pub(crate) fn bind_reuseport(addr: SocketAddr, stream: bool, backlog: i32) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // No pointer arguments.
    let fd = syscall!(socket(
        domain,
        ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0
    ))?;
    // SAFETY: a new descriptor that nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        1 as libc::c_int,
    )?;
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_REUSEPORT,
        1 as libc::c_int,
    )?;
    let (storage, len) = socket_addr_to_raw(addr);
    // `storage` holds a sockaddr of `len` bytes.
    syscall!(bind(
        sock.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    if stream {
        listen(sock.as_raw_fd(), backlog)?;
    }
    Ok(sock)
}
