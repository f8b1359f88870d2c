//! UDP in batches: `recvmmsg` and `sendmmsg`.
//!
//! The message headers live on the stack of each call (at most
//! [`MAX_BATCH`] of them), built over buffers the caller owns, so nothing
//! self-referential or `!Send` is kept between calls. Datagrams are received
//! with `MSG_TRUNC`, which makes the kernel report a datagram's real length
//! even when it did not fit its slot: a truncated datagram is recognised,
//! never passed on as if whole.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use super::socket::{sockaddr_to_addr, socket_addr_to_raw};
use super::syscall;
use crate::addr::Addr;

/// Most datagrams one `recvmmsg` or `sendmmsg` call handles.
pub(crate) const MAX_BATCH: usize = 64;

/// What a receive learnt about one datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    /// The datagram's real length (may exceed the slot: see `truncated`).
    pub(crate) len: usize,
    /// The datagram was longer than its slot; only the slot's bytes are there.
    pub(crate) truncated: bool,
    /// The sender (`None` for an address family other than IPv4/IPv6).
    pub(crate) peer: Option<SocketAddr>,
}

/// Buffers of batched receives: `batch` slots of `slot` bytes, one datagram
/// each, and their sender addresses. Kept by a loop and reused.
pub(crate) struct RecvBuf {
    slot: usize,
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    metas: Vec<RecvMeta>,
}

impl RecvBuf {
    /// `batch` (1..=MAX_BATCH) slots of `slot` bytes. The data is zeroed
    /// lazily by the allocator (a large `calloc` maps fresh pages), so
    /// pages never written by a datagram cost no memory.
    pub(crate) fn new(batch: usize, slot: usize) -> RecvBuf {
        let batch = batch.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        RecvBuf {
            slot,
            data: vec![0u8; batch * slot],
            // SAFETY: an all-zero sockaddr_storage is a valid value.
            addrs: vec![unsafe { mem::zeroed() }; batch],
            metas: vec![
                RecvMeta {
                    len: 0,
                    truncated: false,
                    peer: None
                };
                batch
            ],
        }
    }

    /// Datagram `i` of the last receive: its bytes (at most a slot) and meta.
    pub(crate) fn get(&self, i: usize) -> (&[u8], RecvMeta) {
        let m = self.metas[i];
        let start = i * self.slot;
        (&self.data[start..start + m.len.min(self.slot)], m)
    }

    /// One `recvmmsg(MSG_DONTWAIT | MSG_TRUNC)`: returns how many datagrams
    /// arrived (read them with `get`); `WouldBlock` when none was waiting.
    /// `Interrupted` is retried.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.metas.len();
        let slot = self.slot;
        // SAFETY: an all-zero iovec (null base, length 0) is a valid value.
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
        let base = self.data.as_mut_ptr();
        for (i, iov) in iovs.iter_mut().enumerate().take(n) {
            *iov = libc::iovec {
                // In bounds: `i * slot < n * slot == data.len()`.
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len: slot,
            };
        }
        let iov_ptr = iovs.as_mut_ptr();
        let addr_ptr = self.addrs.as_mut_ptr();
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        for (i, h) in hdrs.iter_mut().enumerate().take(n) {
            // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is valid.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_name = addr_ptr.wrapping_add(i).cast();
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov_ptr.wrapping_add(i);
            m.msg_hdr.msg_iovlen = 1;
            h.write(m);
        }
        let got = loop {
            // The first `n` headers are initialised, each naming one live
            // iovec over a distinct `slot`-byte window of `data` and one
            // sockaddr_storage of `addrs`; all outlive the call. A null
            // timeout is allowed.
            match syscall!(recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                ptr::null_mut()
            )) {
                Ok(got) => break (got as usize).min(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        for (i, h) in hdrs.iter().enumerate().take(got) {
            // SAFETY: headers `..n` were written above (and `got <= n`).
            let h = unsafe { h.assume_init_ref() };
            let namelen = h.msg_hdr.msg_namelen;
            let peer = match sockaddr_to_addr(&self.addrs[i], namelen) {
                Addr::Tcp(a) if namelen > 0 => Some(a),
                _ => None,
            };
            let len = h.msg_len as usize;
            self.metas[i] = RecvMeta {
                len,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > slot,
                peer,
            };
        }
        Ok(got)
    }
}

/// One `sendmmsg(MSG_DONTWAIT)` of up to [`MAX_BATCH`] datagrams from
/// `msgs` (payload, destination; `None` for a connected socket). Returns
/// how many were sent (at least one when `msgs` is not empty); the error of
/// the first datagram when none was (`WouldBlock`: the socket buffer is
/// full). `Interrupted` is retried.
pub(crate) fn send_batch<'a>(
    fd: RawFd,
    msgs: impl Iterator<Item = (&'a [u8], Option<SocketAddr>)>,
) -> io::Result<usize> {
    let mut addrs = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    // SAFETY: an all-zero iovec (null base, length 0) is a valid value.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut names = [0 as libc::socklen_t; MAX_BATCH];
    let mut n = 0;
    for (data, to) in msgs.take(MAX_BATCH) {
        // The kernel only reads through this pointer.
        iovs[n] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        if let Some(to) = to {
            let (raw, len) = socket_addr_to_raw(to);
            addrs[n].write(raw);
            names[n] = len;
        }
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    let iov_ptr = iovs.as_mut_ptr();
    let addr_ptr = addrs.as_mut_ptr();
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for (i, h) in hdrs.iter_mut().enumerate().take(n) {
        // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is valid.
        let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
        if names[i] > 0 {
            m.msg_hdr.msg_name = addr_ptr.wrapping_add(i).cast();
            m.msg_hdr.msg_namelen = names[i];
        }
        m.msg_hdr.msg_iov = iov_ptr.wrapping_add(i);
        m.msg_hdr.msg_iovlen = 1;
        h.write(m);
    }
    loop {
        // The first `n` headers are initialised: each names one live iovec
        // over a borrowed payload that outlives the call and, when
        // `msg_namelen > 0`, an address written above of that many bytes.
        match syscall!(sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
        )) {
            Ok(sent) => return Ok(sent as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `UDP_SEGMENT` (Linux UAPI `linux/udp.h`; not in every libc target).
const UDP_SEGMENT: libc::c_int = 103;

/// Most segments the kernel accepts in one UDP GSO send (`UDP_MAX_SEGMENTS`
/// is 64 before Linux 6.9 and 128 after).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// A `UDP_SEGMENT` control message: header, segment size, padding to
/// `CMSG_SPACE(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    seg: u16,
    _pad: [u8; 6],
}

const _: () = assert!(mem::size_of::<libc::cmsghdr>().is_multiple_of(mem::align_of::<usize>()));
const _: () = assert!(mem::offset_of!(GsoCmsg, seg) == mem::size_of::<libc::cmsghdr>());

/// One message of [`send_segments`]: `iov_count` payload slices starting at
/// `first_iov`, to `to` (`None`: the connected peer); with `segment > 0`
/// the slices are `segment`-byte datagrams sent as one UDP GSO message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegMsg {
    pub(crate) first_iov: usize,
    pub(crate) iov_count: usize,
    pub(crate) to: Option<SocketAddr>,
    pub(crate) segment: u16,
}

/// One `sendmmsg(MSG_DONTWAIT)` of `msgs` (at most [`MAX_BATCH`]) over
/// the payload slices `iovs`; returns how many messages were sent, or the
/// error of the first (`WouldBlock`: buffer full; `EIO`/`EINVAL` on a
/// GSO message: the kernel or device refused segmentation).
///
/// # Panics
///
/// If a message names slices outside `iovs` (a bug of the caller).
pub(crate) fn send_segments(
    fd: RawFd,
    iovs: &[std::io::IoSlice<'_>],
    msgs: &[SegMsg],
) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut addrs = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut names = [0 as libc::socklen_t; MAX_BATCH];
    // SAFETY: an all-zero GsoCmsg (zero lengths) is a valid value.
    let mut cmsgs: [GsoCmsg; MAX_BATCH] = unsafe { mem::zeroed() };
    for (i, m) in msgs[..n].iter().enumerate() {
        assert!(
            m.first_iov + m.iov_count <= iovs.len(),
            "message slices out of range"
        );
        if let Some(to) = m.to {
            let (raw, len) = socket_addr_to_raw(to);
            addrs[i].write(raw);
            names[i] = len;
        }
        if m.segment > 0 {
            let c = &mut cmsgs[i];
            c.hdr.cmsg_len = (mem::size_of::<libc::cmsghdr>() + mem::size_of::<u16>()) as _;
            c.hdr.cmsg_level = libc::SOL_UDP;
            c.hdr.cmsg_type = UDP_SEGMENT;
            c.seg = m.segment;
        }
    }
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the
    // kernel only reads through these pointers.
    let iov_ptr = iovs.as_ptr() as *mut libc::iovec;
    let addr_ptr = addrs.as_mut_ptr();
    let cmsg_ptr = cmsgs.as_mut_ptr();
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    for (i, h) in hdrs.iter_mut().enumerate().take(n) {
        let m = &msgs[i];
        // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is valid.
        let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        if names[i] > 0 {
            hdr.msg_hdr.msg_name = addr_ptr.wrapping_add(i).cast();
            hdr.msg_hdr.msg_namelen = names[i];
        }
        hdr.msg_hdr.msg_iov = iov_ptr.wrapping_add(m.first_iov);
        hdr.msg_hdr.msg_iovlen = m.iov_count as _;
        if m.segment > 0 {
            hdr.msg_hdr.msg_control = cmsg_ptr.wrapping_add(i).cast();
            hdr.msg_hdr.msg_controllen = mem::size_of::<GsoCmsg>() as _;
        }
        h.write(hdr);
    }
    loop {
        // The first `n` headers are initialised: each names live iovecs
        // (checked in range above) over payloads that outlive the call,
        // when `msg_namelen > 0` an address written above of that length,
        // and when set one initialised `UDP_SEGMENT` control message.
        match syscall!(sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
        )) {
            Ok(sent) => return Ok(sent as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
