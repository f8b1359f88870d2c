//! A model of `LinkBuffer` over `VecDeque<u8>` and an interpreter of
//! operation sequences that checks the real buffer against it after every
//! step. Shared by the proptest (`tests/model.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/ops.rs`, which includes this file by path), so it
//! depends only on `ferropoll_linkbuffer` and `bytes`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes};
use ferropoll_linkbuffer::{Error, LinkBuffer};

/// One step. Sizes are raw numbers; the interpreter maps read sizes onto the
/// current length (mostly in range, sometimes just past it) and bounds write
/// sizes by the harness's `max_len`.
#[derive(Debug, Clone)]
pub enum Op {
    /// `write_binary` of `len` bytes.
    Write { len: usize },
    /// `write_bytes` of `len` bytes (linked when large).
    WriteBytes { len: usize },
    /// `malloc(len)`, fill, then `malloc_ack(ack % (len + 1))` if `ack` is set.
    Malloc { len: usize, ack: Option<usize> },
    /// `malloc_ack(n)` with `n` anywhere around `malloc_len()`.
    MallocAck { n: usize },
    /// `BufMut::put_slice`.
    PutSlice { len: usize },
    /// `BufMut::put_u16`.
    PutU16 { v: u16 },
    /// `BufMut::chunk_mut`, write `n` bytes of it, `advance_mut`.
    ChunkMut { n: usize },
    /// `book(min)`, write `n` bytes of it, `book_ack`.
    Book { min: usize, n: usize },
    /// Append another buffer holding `readable` flushed bytes (of which
    /// `skip` were read) and `unflushed` more.
    Append {
        readable: usize,
        skip: usize,
        unflushed: usize,
    },
    /// Append a slice of this buffer's first `n` bytes to itself.
    AppendSlice { n: usize },
    /// Append the kept slice `idx` to this buffer.
    AppendKept { idx: usize },
    /// `flush`.
    Flush,
    /// `peek(n)`.
    Peek { n: usize },
    /// `next(n)`.
    Next { n: usize },
    /// `skip(n)`.
    Skip { n: usize },
    /// `until(delim)`.
    Until { delim: u8 },
    /// `read_byte`.
    ReadByte,
    /// `read_binary(n)`.
    ReadBinary { n: usize },
    /// `read_string(n)`.
    ReadString { n: usize },
    /// `slice(n)`, kept alive as a view.
    Slice { n: usize },
    /// `next_bytes(n)`, kept alive as a view.
    NextBytes { n: usize },
    /// `Buf::copy_to_bytes(n)` (only when in range), kept alive.
    CopyToBytes { n: usize },
    /// `Buf::advance(n)` (only when in range).
    Advance { n: usize },
    /// `Buf::get_u32` (only when in range).
    GetU32,
    /// `readable_vectored` into `max` slots.
    Vectored { max: usize },
    /// `release`.
    Release,
    /// Drop the oldest kept view (checking it first).
    DropView,
    /// Read `n` bytes from kept slice `idx`.
    ReadKept { idx: usize, n: usize },
    /// Write `len` bytes into kept slice `idx` and flush it.
    WriteKept { idx: usize, len: usize },
}

/// The buffer under test, its model, and the views kept alive.
pub struct Harness {
    buf: LinkBuffer,
    readable: VecDeque<u8>,
    unflushed: Vec<u8>,
    /// `Bytes` views and what they must keep showing.
    views: VecDeque<(Bytes, Vec<u8>)>,
    /// `slice`s and their own models.
    slices: Vec<(LinkBuffer, VecDeque<u8>)>,
    max_len: usize,
    counter: u64,
}

impl Harness {
    /// A harness whose writes are at most `max_len` bytes.
    pub fn new(max_len: usize) -> Harness {
        Harness {
            buf: LinkBuffer::new(),
            readable: VecDeque::new(),
            unflushed: Vec::new(),
            views: VecDeque::new(),
            slices: Vec::new(),
            max_len: max_len.max(1),
            counter: 0,
        }
    }

    /// Fresh bytes: mostly distinct values, every fourth run ASCII (so
    /// `read_string` and `until` succeed as well as fail).
    fn data(&mut self, len: usize) -> Vec<u8> {
        self.counter += 1;
        let c = self.counter;
        if c.is_multiple_of(4) {
            (0..len)
                .map(|i| b'a' + ((c as usize + i) % 26) as u8)
                .collect()
        } else {
            (0..len)
                .map(|i| (c as usize).wrapping_mul(131).wrapping_add(i * 7) as u8)
                .collect()
        }
    }

    fn write_len(&self, len: usize) -> usize {
        len % (self.max_len + 1)
    }

    /// A read size: mostly within `len()`, sometimes one past it.
    fn read_len(&self, n: usize) -> usize {
        let len = self.readable.len();
        if n % 8 == 7 {
            len + 1 + n % 3
        } else {
            n % (len + 1)
        }
    }

    fn expect_insufficient<T: std::fmt::Debug>(&self, r: Result<T, Error>, n: usize) {
        assert_eq!(
            r.unwrap_err(),
            Error::Insufficient {
                requested: n,
                available: self.readable.len()
            }
        );
    }

    fn pop_model(&mut self, n: usize) -> Vec<u8> {
        self.readable.drain(..n).collect()
    }

    fn flush_model(&mut self) {
        self.readable.extend(self.unflushed.drain(..));
    }

    /// Applies one operation and checks the buffer against the model.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { len } => {
                let d = self.data(self.write_len(len));
                self.buf.write_binary(&d);
                self.unflushed.extend_from_slice(&d);
            }
            Op::WriteBytes { len } => {
                let d = self.data(self.write_len(len));
                self.buf.write_bytes(Bytes::from(d.clone()));
                self.unflushed.extend_from_slice(&d);
            }
            Op::Malloc { len, ack } => {
                let len = self.write_len(len);
                let d = self.data(len);
                let m = self.buf.malloc(len);
                assert_eq!(m.len(), len);
                m.copy_from_slice(&d);
                self.unflushed.extend_from_slice(&d);
                if let Some(ack) = ack {
                    let keep = self.unflushed.len() - len + ack % (len + 1);
                    self.buf.malloc_ack(keep).unwrap();
                    self.unflushed.truncate(keep);
                }
            }
            Op::MallocAck { n } => {
                let un = self.unflushed.len();
                let n = n % (un + 2);
                match self.buf.malloc_ack(n) {
                    Ok(()) => {
                        assert!(n <= un);
                        self.unflushed.truncate(n);
                    }
                    Err(e) => {
                        assert!(n > un);
                        assert_eq!(
                            e,
                            Error::AckTooLarge {
                                requested: n,
                                available: un
                            }
                        );
                    }
                }
            }
            Op::PutSlice { len } => {
                let d = self.data(self.write_len(len));
                self.buf.put_slice(&d);
                self.unflushed.extend_from_slice(&d);
            }
            Op::PutU16 { v } => {
                self.buf.put_u16(v);
                self.unflushed.extend_from_slice(&v.to_be_bytes());
            }
            Op::ChunkMut { n } => {
                let d = self.data(self.write_len(n));
                let chunk = self.buf.chunk_mut();
                assert!(chunk.len() > 0);
                let k = d.len().min(chunk.len());
                chunk[..k].copy_from_slice(&d[..k]);
                // SAFETY: the first `k` bytes of `chunk_mut` were just written.
                unsafe { self.buf.advance_mut(k) };
                self.unflushed.extend_from_slice(&d[..k]);
            }
            Op::Book { min, n } => {
                let min = self.write_len(min);
                let d = self.data(self.write_len(n));
                let space = self.buf.book(min);
                assert!(space.len() >= min);
                let k = d.len().min(space.len());
                space[..k].copy_from_slice(&d[..k]);
                self.buf.book_ack(k);
                self.unflushed.extend_from_slice(&d[..k]);
                self.flush_model();
            }
            Op::Append {
                readable,
                skip,
                unflushed,
            } => {
                let r = self.data(self.write_len(readable));
                let u = self.data(self.write_len(unflushed));
                let skip = skip % (r.len() + 1);
                let mut other = LinkBuffer::new();
                other.write_binary(&r);
                other.flush();
                other.skip(skip).unwrap();
                other.write_binary(&u);
                self.buf.append(other);
                self.unflushed.extend_from_slice(&r[skip..]);
                self.unflushed.extend_from_slice(&u);
            }
            Op::AppendSlice { n } => {
                let n = n % (self.readable.len() + 1);
                let s = self.buf.slice(n).unwrap();
                self.buf.append(s);
                let moved = self.pop_model(n);
                self.unflushed.extend_from_slice(&moved);
            }
            Op::AppendKept { idx } => {
                if !self.slices.is_empty() {
                    let (s, m) = self.slices.swap_remove(idx % self.slices.len());
                    self.buf.append(s);
                    self.unflushed.extend(m);
                }
            }
            Op::Flush => {
                self.buf.flush();
                self.flush_model();
            }
            Op::Peek { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.peek(n).map(<[u8]>::to_vec);
                    self.expect_insufficient(r, n);
                } else {
                    let want: Vec<u8> = self.readable.range(..n).copied().collect();
                    assert_eq!(self.buf.peek(n).unwrap(), &want[..]);
                }
            }
            Op::Next { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.next(n).map(<[u8]>::to_vec);
                    self.expect_insufficient(r, n);
                } else {
                    let want = self.pop_model(n);
                    assert_eq!(self.buf.next(n).unwrap(), &want[..]);
                }
            }
            Op::Skip { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.skip(n);
                    self.expect_insufficient(r, n);
                } else {
                    self.buf.skip(n).unwrap();
                    self.pop_model(n);
                }
            }
            Op::Until { delim } => match self.readable.iter().position(|&b| b == delim) {
                Some(i) => {
                    let want = self.pop_model(i + 1);
                    assert_eq!(self.buf.until(delim).unwrap(), &want[..]);
                }
                None => assert_eq!(
                    self.buf.until(delim).map(<[u8]>::to_vec),
                    Err(Error::DelimiterNotFound)
                ),
            },
            Op::ReadByte => match self.readable.pop_front() {
                Some(b) => assert_eq!(self.buf.read_byte().unwrap(), b),
                None => {
                    let r = self.buf.read_byte();
                    self.expect_insufficient(r, 1);
                }
            },
            Op::ReadBinary { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.read_binary(n);
                    self.expect_insufficient(r, n);
                } else {
                    let want = self.pop_model(n);
                    assert_eq!(self.buf.read_binary(n).unwrap(), want);
                }
            }
            Op::ReadString { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.read_string(n);
                    self.expect_insufficient(r, n);
                } else {
                    let want: Vec<u8> = self.readable.range(..n).copied().collect();
                    match String::from_utf8(want) {
                        Ok(s) => {
                            assert_eq!(self.buf.read_string(n).unwrap(), s);
                            self.pop_model(n);
                        }
                        Err(_) => {
                            assert_eq!(self.buf.read_string(n), Err(Error::InvalidUtf8));
                        }
                    }
                }
            }
            Op::Slice { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.slice(n).map(|s| s.len());
                    self.expect_insufficient(r, n);
                } else {
                    let s = self.buf.slice(n).unwrap();
                    assert_eq!((s.len(), s.unflushed_len()), (n, 0));
                    let m: VecDeque<u8> = self.pop_model(n).into();
                    self.slices.push((s, m));
                }
            }
            Op::NextBytes { n } => {
                let n = self.read_len(n);
                if n > self.readable.len() {
                    let r = self.buf.next_bytes(n);
                    self.expect_insufficient(r, n);
                } else {
                    let b = self.buf.next_bytes(n).unwrap();
                    let want = self.pop_model(n);
                    assert_eq!(&b[..], &want[..]);
                    self.views.push_back((b, want));
                }
            }
            Op::CopyToBytes { n } => {
                let n = n % (self.readable.len() + 1);
                let b = self.buf.copy_to_bytes(n);
                let want = self.pop_model(n);
                assert_eq!(&b[..], &want[..]);
                self.views.push_back((b, want));
            }
            Op::Advance { n } => {
                let n = n % (self.readable.len() + 1);
                self.buf.advance(n);
                self.pop_model(n);
            }
            Op::GetU32 => {
                if self.readable.len() >= 4 {
                    let want = self.pop_model(4);
                    let want = u32::from_be_bytes([want[0], want[1], want[2], want[3]]);
                    assert_eq!(self.buf.get_u32(), want);
                }
            }
            Op::Vectored { max } => {
                let max = max % 70;
                let mut iov = vec![IoSlice::new(&[]); max];
                let k = self.buf.readable_vectored(&mut iov);
                assert!(k <= max);
                let got: Vec<u8> = iov[..k].iter().flat_map(|s| s.iter().copied()).collect();
                let want: Vec<u8> = self.readable.range(..got.len()).copied().collect();
                assert_eq!(got, want);
                assert!(iov[..k].iter().all(|s| !s.is_empty()));
                if max > 0 && !self.readable.is_empty() {
                    assert!(k > 0);
                }
                let chunk = self.buf.chunk();
                assert_eq!(chunk.is_empty(), self.readable.is_empty());
                assert!(self.readable.range(..chunk.len()).eq(chunk.iter()));
            }
            Op::Release => {
                self.buf.release();
                if self.readable.is_empty() && self.unflushed.is_empty() {
                    assert_eq!(self.buf.node_count(), 0);
                    assert_eq!(self.buf.held_bytes(), 0);
                }
            }
            Op::DropView => {
                if let Some((b, want)) = self.views.pop_front() {
                    assert_eq!(&b[..], &want[..]);
                } else if !self.slices.is_empty() {
                    let (mut s, m) = self.slices.remove(0);
                    check_slice(&mut s, &m);
                }
            }
            Op::ReadKept { idx, n } => {
                if !self.slices.is_empty() {
                    let i = idx % self.slices.len();
                    let (s, m) = &mut self.slices[i];
                    let n = n % (m.len() + 1);
                    let want: Vec<u8> = m.drain(..n).collect();
                    assert_eq!(s.next(n).unwrap(), &want[..]);
                    s.release();
                }
            }
            Op::WriteKept { idx, len } => {
                if !self.slices.is_empty() {
                    let d = self.data(self.write_len(len));
                    let i = idx % self.slices.len();
                    let (s, m) = &mut self.slices[i];
                    s.write_binary(&d);
                    s.flush();
                    m.extend(d);
                }
            }
        }
        assert_eq!(self.buf.len(), self.readable.len());
        assert_eq!(self.buf.is_empty(), self.readable.is_empty());
        assert_eq!(self.buf.unflushed_len(), self.unflushed.len());
        assert_eq!(self.buf.malloc_len(), self.unflushed.len());
        assert_eq!(self.buf.remaining(), self.readable.len());
    }

    /// Compares every readable byte (without consuming) and every view.
    pub fn check(&mut self) {
        let n = self.readable.len();
        let want: Vec<u8> = self.readable.iter().copied().collect();
        assert_eq!(self.buf.peek(n).unwrap(), &want[..]);
        for (b, want) in &self.views {
            assert_eq!(&b[..], &want[..]);
        }
        for (s, m) in &mut self.slices {
            let want: Vec<u8> = m.iter().copied().collect();
            assert_eq!(s.peek(m.len()).unwrap(), &want[..]);
        }
    }

    /// Flushes and drains the buffer and every view, checking all of it.
    pub fn finish(mut self) {
        self.check();
        self.buf.flush();
        self.flush_model();
        let want: Vec<u8> = self.readable.drain(..).collect();
        let n = want.len();
        assert_eq!(self.buf.read_binary(n).unwrap(), want);
        self.buf.release();
        assert_eq!(self.buf.held_bytes(), 0);
        for (mut s, m) in std::mem::take(&mut self.slices) {
            check_slice(&mut s, &m);
        }
        for (b, want) in self.views.drain(..) {
            assert_eq!(&b[..], &want[..]);
        }
    }
}

fn check_slice(s: &mut LinkBuffer, m: &VecDeque<u8>) {
    let want: Vec<u8> = m.iter().copied().collect();
    assert_eq!(s.len(), want.len());
    assert_eq!(s.read_binary(want.len()).unwrap(), want);
    s.release();
    assert_eq!(s.held_bytes(), 0);
}
