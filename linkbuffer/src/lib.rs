//! The nocopy streaming buffer (API contract; implementation pending, see the
//! linkbuffer issue).
#![deny(unsafe_code)]

use std::io::IoSlice;

use bytes::Bytes;

/// Errors of the read side.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Asked for more bytes than are readable.
    Insufficient {
        /// Bytes asked for.
        requested: usize,
        /// Bytes readable.
        available: usize,
    },
    /// `until` found no delimiter in the readable bytes.
    DelimiterNotFound,
    /// `read_string` found bytes that are not UTF-8.
    InvalidUtf8,
    /// `malloc_ack(n)` with `n` above `malloc_len()`.
    AckTooLarge {
        /// Bytes acknowledged.
        requested: usize,
        /// Bytes malloc'd since the last flush.
        available: usize,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// A queue of reference-counted nodes.
#[derive(Default)]
pub struct LinkBuffer {
    _todo: (),
}

#[allow(missing_docs, unused_variables)]
impl LinkBuffer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn peek(&mut self, n: usize) -> Result<&[u8]> {
        todo!()
    }
    pub fn next(&mut self, n: usize) -> Result<&[u8]> {
        todo!()
    }
    pub fn skip(&mut self, n: usize) -> Result<()> {
        todo!()
    }
    pub fn until(&mut self, delim: u8) -> Result<&[u8]> {
        todo!()
    }
    pub fn read_byte(&mut self) -> Result<u8> {
        todo!()
    }
    pub fn read_binary(&mut self, n: usize) -> Result<Vec<u8>> {
        todo!()
    }
    pub fn read_string(&mut self, n: usize) -> Result<String> {
        todo!()
    }
    pub fn release(&mut self) {
        todo!()
    }
    pub fn slice(&mut self, n: usize) -> Result<LinkBuffer> {
        todo!()
    }
    pub fn next_bytes(&mut self, n: usize) -> Result<Bytes> {
        todo!()
    }
    pub fn readable_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        todo!()
    }
    pub fn malloc(&mut self, n: usize) -> &mut [u8] {
        todo!()
    }
    pub fn malloc_len(&self) -> usize {
        todo!()
    }
    pub fn malloc_ack(&mut self, n: usize) -> Result<()> {
        todo!()
    }
    pub fn write_binary(&mut self, src: &[u8]) {
        todo!()
    }
    pub fn write_bytes(&mut self, b: Bytes) {
        todo!()
    }
    pub fn append(&mut self, other: LinkBuffer) {
        todo!()
    }
    pub fn flush(&mut self) {
        todo!()
    }
    pub fn unflushed_len(&self) -> usize {
        todo!()
    }
    pub fn book(&mut self, min: usize) -> &mut [u8] {
        todo!()
    }
    pub fn book_ack(&mut self, n: usize) {
        todo!()
    }
}
