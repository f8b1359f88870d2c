//! RESP2 request parsing, sans I/O.
//!
//! Two parsers share one grammar (Redis's `processMultibulkBuffer` and
//! `processInlineBuffer`):
//!
//! * [`parse_fast`] reads one whole command from a contiguous slice — the
//!   first node of the connection's input — and returns the argument ranges
//!   inside it. The command runs on borrowed bytes and is consumed with one
//!   `skip`: no copy, no reference count, no allocation. This is the path of
//!   nearly every request.
//! * [`Partial::step`] is the incremental fallback, used when the command is
//!   not complete in the first node (a large value, a command cut by a read
//!   or a node boundary). As Redis does with its `querybuf`, it consumes
//!   each element as soon as it is complete — argument values are taken with
//!   `next_bytes`, a zero-copy view when they lie in one node — so a large
//!   value is never re-scanned or re-copied while it arrives.
//!
//! Both enforce [`Limits`]; no length read from the wire is used to
//! allocate before the bytes are there.

use std::fmt;
use std::io::IoSlice;

use bytes::Bytes;
use ferropoll_linkbuffer::LinkBuffer;

/// Bounds on what a client may send; exceeding one is a protocol error
/// (error reply, then the connection is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (default 512 MiB, Redis's `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most arguments of one multibulk command (default 1,048,576, as Redis).
    /// Inline commands are bounded by `max_inline_len` instead.
    pub max_multibulk_len: usize,
    /// Longest inline command line (default 64 KiB, Redis's
    /// `PROTO_INLINE_MAX_SIZE`).
    pub max_inline_len: usize,
    /// Most bytes of one command, all arguments together (default 1 GiB,
    /// Redis's `client-query-buffer-limit`).
    pub max_command_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 << 20,
            max_multibulk_len: 1 << 20,
            max_inline_len: 64 << 10,
            max_command_bytes: 1 << 30,
        }
    }
}

/// Longest `*<count>` / `$<len>` header line, CRLF included: 20 digits, a
/// sign, the type byte and CRLF fit with room to spare.
const MAX_HEADER_LINE: usize = 32;

/// Why a request could not be parsed. The reply is `-ERR Protocol error: …`
/// and the connection closes, as Redis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<count>` is not a number or above [`Limits::max_multibulk_len`].
    InvalidMultibulkLength,
    /// `$<len>` is not a number, negative or above [`Limits::max_bulk_len`].
    InvalidBulkLength,
    /// An argument of a multibulk command does not start with `$`.
    ExpectedDollar(u8),
    /// A header line or bulk string is not followed by CRLF.
    ExpectedCrlf,
    /// An inline command line longer than [`Limits::max_inline_len`].
    TooBigInline,
    /// One command larger than [`Limits::max_command_bytes`].
    TooBigCommand,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedDollar(b) if b.is_ascii_graphic() => {
                write!(f, "expected '$', got '{}'", *b as char)
            }
            ProtocolError::ExpectedDollar(b) => write!(f, "expected '$', got byte {b:#04x}"),
            ProtocolError::ExpectedCrlf => f.write_str("expected CRLF"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigCommand => f.write_str("too big command"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Result of [`parse_fast`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fast {
    /// A command of this many bytes; its arguments are in `args`.
    Command(usize),
    /// This many bytes hold no command (an empty line, `*0`): skip them.
    Empty(usize),
    /// The slice ends inside the command.
    Incomplete,
    /// Malformed input.
    Error(ProtocolError),
}

/// Parses `*<n>\r\n` / `$<n>\r\n` at `buf[start..]` (after the type byte):
/// `Ok(None)` if the line is not complete yet, else the number and the
/// offset after the CRLF. `err` is returned for a malformed number. One
/// pass: the digits are accumulated while the line end is looked for.
#[inline]
fn header(
    buf: &[u8],
    start: usize,
    err: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let mut i = start;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let digits = i;
    let mut v: i64 = 0;
    loop {
        let Some(&c) = buf.get(i) else {
            return Ok(None);
        };
        if i - start >= MAX_HEADER_LINE {
            return Err(err); // leading zeros without end
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            if c == b'\r' && i > digits {
                break;
            }
            return Err(err);
        }
        // At most 19 digits, as `parse_i64` (the incremental parser) takes:
        // without this, 20+ leading zeros would pass here and fail there.
        // 19 digits fit an i64; `checked_*` catches the rest.
        if i - digits >= 19 {
            return Err(err);
        }
        v = v.checked_mul(10).ok_or(err)?;
        v = if neg {
            v.checked_sub(d as i64)
        } else {
            v.checked_add(d as i64)
        }
        .ok_or(err)?;
        i += 1;
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((v, i + 2))),
        Some(_) => Err(ProtocolError::ExpectedCrlf),
    }
}

/// A decimal integer with an optional leading `-`, no other characters,
/// no overflow (Redis's `string2ll`, minus its leniencies).
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d as i64)?
        } else {
            v.checked_add(d as i64)?
        };
    }
    Some(v)
}

/// Parses one command at the start of `buf`. On [`Fast::Command`], `args`
/// holds `(offset, len)` of each argument within `buf`.
pub(crate) fn parse_fast(buf: &[u8], lim: &Limits, args: &mut Vec<(usize, usize)>) -> Fast {
    args.clear();
    match buf.first() {
        None => Fast::Incomplete,
        Some(b'*') => parse_multibulk(buf, lim, args),
        Some(_) => parse_inline(buf, lim, args),
    }
}

fn parse_multibulk(buf: &[u8], lim: &Limits, args: &mut Vec<(usize, usize)>) -> Fast {
    let (count, mut pos) = match header(buf, 1, ProtocolError::InvalidMultibulkLength) {
        Ok(Some(h)) => h,
        Ok(None) => return Fast::Incomplete,
        Err(e) => return Fast::Error(e),
    };
    if count <= 0 {
        return Fast::Empty(pos);
    }
    if count as u64 > lim.max_multibulk_len as u64 {
        return Fast::Error(ProtocolError::InvalidMultibulkLength);
    }
    for _ in 0..count {
        match buf.get(pos) {
            None => return Fast::Incomplete,
            Some(b'$') => {}
            Some(&b) => return Fast::Error(ProtocolError::ExpectedDollar(b)),
        }
        let (len, start) = match header(buf, pos + 1, ProtocolError::InvalidBulkLength) {
            Ok(Some(h)) => h,
            Ok(None) => return Fast::Incomplete,
            Err(e) => return Fast::Error(e),
        };
        if len < 0 || len as u64 > lim.max_bulk_len as u64 {
            return Fast::Error(ProtocolError::InvalidBulkLength);
        }
        let len = len as usize;
        let end = start + len;
        if end + 2 > lim.max_command_bytes {
            return Fast::Error(ProtocolError::TooBigCommand);
        }
        if end + 2 > buf.len() {
            return Fast::Incomplete;
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Fast::Error(ProtocolError::ExpectedCrlf);
        }
        args.push((start, len));
        pos = end + 2;
    }
    Fast::Command(pos)
}

fn parse_inline(buf: &[u8], lim: &Limits, args: &mut Vec<(usize, usize)>) -> Fast {
    let window = &buf[..buf.len().min(lim.max_inline_len.saturating_add(1))];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if buf.len() > lim.max_inline_len {
            Fast::Error(ProtocolError::TooBigInline)
        } else {
            Fast::Incomplete
        };
    };
    split_inline(&buf[..nl], args);
    if args.is_empty() {
        Fast::Empty(nl + 1)
    } else {
        Fast::Command(nl + 1)
    }
}

/// Splits an inline line (without its `\n`) on spaces, tabs and `\r`.
/// Unlike Redis, quotes are not interpreted.
fn split_inline(line: &[u8], args: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && matches!(line[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        let start = i;
        while i < line.len() && !matches!(line[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        if i > start {
            args.push((start, i - start));
        }
    }
}

/// Position of the first `byte` within the first `max` readable bytes of
/// `buf`; no copy unless the window spans more than sixteen nodes.
fn find_in(buf: &mut LinkBuffer, byte: u8, max: usize) -> Option<usize> {
    let end = max.min(buf.len());
    if end == 0 {
        return None;
    }
    {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = buf.readable_vectored(&mut iov);
        let mut off = 0;
        for s in &iov[..n] {
            let take = s.len().min(end - off);
            if let Some(i) = memchr::memchr(byte, &s[..take]) {
                return Some(off + i);
            }
            off += take;
            if off >= end {
                return None;
            }
        }
    }
    // Many tiny nodes: one bounded copy of the window.
    let window = buf.peek(end).ok()?;
    memchr::memchr(byte, window)
}

/// Result of one [`Partial::step`].
#[derive(Debug)]
pub(crate) enum Step {
    /// A complete command (its arguments, owned).
    Command(Vec<Bytes>),
    /// Bytes that held no command were consumed.
    Empty,
    /// At least this many readable bytes are needed to go on (some may have
    /// been consumed into the partial command already).
    NeedMore(usize),
    /// Malformed input.
    Error(ProtocolError),
}

/// An incomplete command, parsed element by element (the slow path).
#[derive(Debug, Default)]
pub(crate) struct Partial {
    /// Whether a multibulk header has been consumed.
    started: bool,
    /// Arguments the multibulk header announced.
    expected: usize,
    /// Length of the bulk whose `$<len>` header was consumed.
    bulk: Option<usize>,
    /// Arguments consumed so far.
    args: Vec<Bytes>,
    /// Bytes of the command consumed so far.
    bytes: usize,
}

impl Partial {
    /// Whether part of a command has been consumed.
    pub(crate) fn in_progress(&self) -> bool {
        self.started
    }

    /// Consumes as much of one command from `buf` as is there.
    pub(crate) fn step(&mut self, buf: &mut LinkBuffer, lim: &Limits) -> Step {
        match self.step_inner(buf, lim) {
            Ok(s) => s,
            Err(e) => {
                *self = Partial::default();
                Step::Error(e)
            }
        }
    }

    fn step_inner(&mut self, buf: &mut LinkBuffer, lim: &Limits) -> Result<Step, ProtocolError> {
        if !self.started {
            let Some(&first) = buf.chunk_first() else {
                return Ok(Step::NeedMore(1));
            };
            if first != b'*' {
                return self.inline(buf, lim);
            }
            let Some(count) = self.header_line(buf, ProtocolError::InvalidMultibulkLength)? else {
                return Ok(Step::NeedMore(buf.len() + 1));
            };
            if count <= 0 {
                self.bytes = 0;
                return Ok(Step::Empty);
            }
            if count as u64 > lim.max_multibulk_len as u64 {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            self.started = true;
            self.expected = count as usize;
            // Do not trust the count for the allocation: grow as arguments come.
            self.args = Vec::with_capacity(self.expected.min(16));
        }
        while self.args.len() < self.expected {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = buf.chunk_first() else {
                        return Ok(Step::NeedMore(1));
                    };
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedDollar(first));
                    }
                    let Some(len) = self.header_line(buf, ProtocolError::InvalidBulkLength)? else {
                        return Ok(Step::NeedMore(buf.len() + 1));
                    };
                    if len < 0 || len as u64 > lim.max_bulk_len as u64 {
                        return Err(ProtocolError::InvalidBulkLength);
                    }
                    let len = len as usize;
                    if self.bytes.saturating_add(len + 2) > lim.max_command_bytes {
                        return Err(ProtocolError::TooBigCommand);
                    }
                    self.bulk = Some(len);
                    len
                }
            };
            if buf.len() < len + 2 {
                return Ok(Step::NeedMore(len + 2));
            }
            let value = buf
                .next_bytes(len)
                .map_err(|_| ProtocolError::ExpectedCrlf)?;
            if buf.next(2).ok() != Some(&b"\r\n"[..]) {
                return Err(ProtocolError::ExpectedCrlf);
            }
            self.bytes += len + 2;
            self.bulk = None;
            self.args.push(value);
        }
        let args = std::mem::take(&mut self.args);
        *self = Partial::default();
        Ok(Step::Command(args))
    }

    /// Consumes a `*<n>` / `$<n>` line if it is complete.
    fn header_line(
        &mut self,
        buf: &mut LinkBuffer,
        err: ProtocolError,
    ) -> Result<Option<i64>, ProtocolError> {
        let Some(nl) = find_in(buf, b'\n', MAX_HEADER_LINE) else {
            return if buf.len() >= MAX_HEADER_LINE {
                Err(err)
            } else {
                Ok(None)
            };
        };
        let line = buf.next(nl + 1).map_err(|_| err)?;
        if nl < 2 || line[nl - 1] != b'\r' {
            return Err(ProtocolError::ExpectedCrlf);
        }
        self.bytes += nl + 1;
        parse_i64(&line[1..nl - 1]).map(Some).ok_or(err)
    }

    fn inline(&mut self, buf: &mut LinkBuffer, lim: &Limits) -> Result<Step, ProtocolError> {
        let Some(nl) = find_in(buf, b'\n', lim.max_inline_len.saturating_add(1)) else {
            return if buf.len() > lim.max_inline_len {
                Err(ProtocolError::TooBigInline)
            } else {
                Ok(Step::NeedMore(buf.len() + 1))
            };
        };
        let line = buf.next(nl + 1).map_err(|_| ProtocolError::TooBigInline)?;
        let mut ranges = Vec::new();
        split_inline(&line[..nl], &mut ranges);
        if ranges.is_empty() {
            return Ok(Step::Empty);
        }
        Ok(Step::Command(
            ranges
                .iter()
                .map(|&(o, l)| Bytes::copy_from_slice(&line[o..o + l]))
                .collect(),
        ))
    }
}

/// The first readable byte of a buffer.
trait ChunkFirst {
    fn chunk_first(&self) -> Option<&u8>;
}

impl ChunkFirst for LinkBuffer {
    fn chunk_first(&self) -> Option<&u8> {
        bytes::Buf::chunk(self).first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(buf: &[u8]) -> (Fast, Vec<Vec<u8>>) {
        let mut args = Vec::new();
        let r = parse_fast(buf, &Limits::default(), &mut args);
        let owned = args.iter().map(|&(o, l)| buf[o..o + l].to_vec()).collect();
        (r, owned)
    }

    /// Feeds `input` in pieces through the incremental parser.
    fn slow_all(pieces: &[&[u8]], lim: &Limits) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = LinkBuffer::new();
        let mut p = Partial::default();
        let mut out = Vec::new();
        for piece in pieces {
            buf.write_binary(piece);
            buf.flush();
            loop {
                match p.step(&mut buf, lim) {
                    Step::Command(a) => out.push(a.iter().map(|b| b.to_vec()).collect()),
                    Step::Empty => {}
                    Step::NeedMore(n) => {
                        assert!(n > buf.len(), "NeedMore({n}) with {} readable", buf.len());
                        break;
                    }
                    Step::Error(e) => return Err(e),
                }
            }
            buf.release();
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let (r, a) = fast(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest");
        assert_eq!(r, Fast::Command(20));
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (r, a) = fast(b"  set  a\tb \r\n");
        assert_eq!(r, Fast::Command(13));
        assert_eq!(a, vec![b"set".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(fast(b"\r\n").0, Fast::Empty(2));
        assert_eq!(fast(b"*0\r\n").0, Fast::Empty(4));
        assert_eq!(fast(b"*-1\r\n").0, Fast::Empty(5));
        let (r, a) = fast(b"*1\r\n$0\r\n\r\n");
        assert_eq!((r, a), (Fast::Command(10), vec![Vec::new()]));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..cmd.len() {
            assert_eq!(fast(&cmd[..cut]).0, Fast::Incomplete, "cut at {cut}");
        }
        assert_eq!(fast(cmd).0, Fast::Command(cmd.len()));
        for cut in 0..5 {
            assert_eq!(fast(&b"PING\r\n"[..cut]).0, Fast::Incomplete);
        }
    }

    #[test]
    fn malformed() {
        use ProtocolError::*;
        assert_eq!(fast(b"*x\r\n").0, Fast::Error(InvalidMultibulkLength));
        assert_eq!(fast(b"*2\r\n:1\r\n").0, Fast::Error(ExpectedDollar(b':')));
        assert_eq!(fast(b"*1\r\n$-1\r\n").0, Fast::Error(InvalidBulkLength));
        assert_eq!(fast(b"*1\r\n$3\r\nabcXY").0, Fast::Error(ExpectedCrlf));
        assert_eq!(fast(b"*1\r\n$3\rX").0, Fast::Error(ExpectedCrlf));
        assert_eq!(
            fast(b"*99999999999999999999\r\n").0,
            Fast::Error(InvalidMultibulkLength)
        );
        assert_eq!(fast(b"*2000000\r\n").0, Fast::Error(InvalidMultibulkLength));
        assert_eq!(
            fast(b"*1\r\n$9999999999\r\n").0,
            Fast::Error(InvalidBulkLength)
        );
        // A header that never ends is an error once it is longer than any number.
        assert_eq!(fast(&[b'*'; 40]).0, Fast::Error(InvalidMultibulkLength));
        let mut zeros = b"*".to_vec();
        zeros.extend_from_slice(&[b'0'; 40]);
        assert_eq!(fast(&zeros).0, Fast::Error(InvalidMultibulkLength));
        assert_eq!(fast(b"*\r\n").0, Fast::Error(InvalidMultibulkLength));
        assert_eq!(fast(b"*-\r\n").0, Fast::Error(InvalidMultibulkLength));
        // 19 digits (leading zeros included) at most, as the incremental
        // parser: 20 zeros are refused by both (a fuzz finding).
        assert_eq!(fast(b"*-0000000000000000000\r\n").0, Fast::Empty(23));
        assert_eq!(
            fast(b"*-00000000000000000000\r\n").0,
            Fast::Error(InvalidMultibulkLength)
        );
        assert_eq!(
            slow_all(&[b"*-00000000000000000000\r\n"], &Limits::default()),
            Err(InvalidMultibulkLength)
        );
        assert_eq!(
            fast(b"*1\r\n$00000000000000000001\r\na\r\n").0,
            Fast::Error(InvalidBulkLength)
        );
        let mut long = vec![b'a'; 70_000];
        assert_eq!(fast(&long).0, Fast::Error(TooBigInline));
        long[1000] = b'\n';
        assert_eq!(fast(&long).0, Fast::Command(1001));
    }

    #[test]
    fn parse_i64_edges() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"+1", b"1 ", b"0x1", b"1.5"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn incremental_at_every_split() {
        let input: &[u8] =
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nPING\r\n*0\r\n\r\n*1\r\n$0\r\n\r\n";
        let want = vec![
            vec![b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()],
            vec![b"PING".to_vec()],
            vec![Vec::new()],
        ];
        for cut in 0..=input.len() {
            let got = slow_all(&[&input[..cut], &input[cut..]], &Limits::default()).unwrap();
            assert_eq!(got, want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(slow_all(&bytes, &Limits::default()).unwrap(), want);
    }

    #[test]
    fn incremental_limits() {
        let lim = Limits {
            max_bulk_len: 100,
            max_multibulk_len: 4,
            max_inline_len: 10,
            max_command_bytes: 150,
        };
        use ProtocolError::*;
        assert_eq!(slow_all(&[b"*5\r\n"], &lim), Err(InvalidMultibulkLength));
        assert_eq!(slow_all(&[b"*1\r\n$101\r\n"], &lim), Err(InvalidBulkLength));
        assert_eq!(
            slow_all(&[b"*2\r\n$100\r\n", &[b'x'; 100], b"\r\n$100\r\n"], &lim),
            Err(TooBigCommand)
        );
        assert_eq!(slow_all(&[b"abcdefghijkl"], &lim), Err(TooBigInline));
        assert_eq!(slow_all(&[b"*1\r\n$2\r\nabc\r\n"], &lim), Err(ExpectedCrlf));
        assert_eq!(
            slow_all(&[b"*1\r\n+2\r\n"], &lim),
            Err(ExpectedDollar(b'+'))
        );
        assert_eq!(
            slow_all(&[b"*1\r\n", &[b'$'; 40]], &lim),
            Err(InvalidBulkLength)
        );
        assert_eq!(
            slow_all(&[b"*", &[b'1'; 40]], &lim),
            Err(InvalidMultibulkLength)
        );
    }

    #[test]
    fn incremental_large_bulk_needs_its_length() {
        let mut buf = LinkBuffer::new();
        let mut p = Partial::default();
        buf.write_binary(b"*1\r\n$1000000\r\nabc");
        buf.flush();
        match p.step(&mut buf, &Limits::default()) {
            Step::NeedMore(n) => assert_eq!(n, 1_000_002),
            other => panic!("{other:?}"),
        }
        assert!(p.in_progress());
        assert_eq!(buf.len(), 3, "headers consumed, value left in place");
    }
}
