//! `bytes::Buf` and `bytes::BufMut` for [`LinkBuffer`], so `prost` (and any
//! `bytes`-based codec) decodes from and encodes into it directly.
//!
//! `unsafe` is allowed here only because `BufMut` is an `unsafe trait` with an
//! `unsafe fn advance_mut`; no unsafe operation is performed: the spare room
//! handed out is initialised node memory, and `advance_mut` checks its bound.
#![allow(unsafe_code)]

use std::io::IoSlice;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};

use crate::LinkBuffer;

/// The read side: `remaining` is [`LinkBuffer::len`] (flushed bytes only),
/// `chunk` the readable part of the first node, `chunks_vectored`
/// [`LinkBuffer::readable_vectored`], and `copy_to_bytes`
/// [`LinkBuffer::next_bytes`] — zero-copy, so `prost` decodes `bytes::Bytes`
/// fields as views into the nodes (except short fields near the end of a
/// read, copied to an arena instead; see the crate docs).
impl Buf for LinkBuffer {
    #[inline]
    fn remaining(&self) -> usize {
        self.len()
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        self.first_chunk()
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.readable_vectored(dst)
    }

    /// # Panics
    ///
    /// If `cnt > self.remaining()`, as the trait requires.
    #[inline]
    fn advance(&mut self, cnt: usize) {
        if let Err(e) = self.skip(cnt) {
            panic!("LinkBuffer::advance: {e}");
        }
    }

    /// # Panics
    ///
    /// If `len > self.remaining()`, as the trait requires.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self.next_bytes(len) {
            Ok(b) => b,
            Err(e) => panic!("LinkBuffer::copy_to_bytes: {e}"),
        }
    }
}

// SAFETY: `chunk_mut` returns the spare room of an owned node, whose bytes
// are all initialised, and `advance_mut` counts bytes only within that room
// (it panics beyond it), so `remaining_mut`/`chunk_mut`/`advance_mut` keep
// the trait's contract whatever the caller writes.
unsafe impl BufMut for LinkBuffer {
    #[inline]
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.total()
    }

    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.commit_spare(cnt);
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        UninitSlice::new(self.spare_chunk())
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        self.write_binary(src);
    }

    /// Copies `src` chunk by chunk with `write_binary` (prost writes
    /// `bytes::Bytes` fields this way).
    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.write_binary(chunk);
            src.advance(n);
        }
    }

    #[inline]
    fn put_u8(&mut self, n: u8) {
        self.write_byte(n);
    }
}
