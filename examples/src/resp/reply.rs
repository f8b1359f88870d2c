//! RESP2 replies written straight into the connection's output buffer.
//!
//! No intermediate `String`: integers are formatted with `itoa` on the
//! stack, small bulk replies are assembled in one `malloc`'d run of the
//! output node, and values of [`LINK_MIN`] bytes or more are linked into the
//! output by reference (`write_bytes`), not copied.

use bytes::Bytes;
use ferropoll_linkbuffer::{LINK_MIN, LinkBuffer};

/// `+OK`.
#[inline]
pub(crate) fn ok(w: &mut LinkBuffer) {
    w.write_binary(b"+OK\r\n");
}

/// A simple string: `+<s>` (`s` must hold no CR or LF).
#[inline]
pub(crate) fn simple(w: &mut LinkBuffer, s: &[u8]) {
    let out = w.malloc(s.len() + 3);
    out[0] = b'+';
    out[1..=s.len()].copy_from_slice(s);
    out[s.len() + 1..].copy_from_slice(b"\r\n");
}

/// An error reply: `-<parts…>`, with CR and LF replaced by spaces so that
/// client-supplied text cannot break the framing.
pub(crate) fn error(w: &mut LinkBuffer, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let out = w.malloc(len + 3);
    out[0] = b'-';
    let mut i = 1;
    for p in parts {
        for &b in *p {
            out[i] = if b == b'\r' || b == b'\n' { b' ' } else { b };
            i += 1;
        }
    }
    out[i..].copy_from_slice(b"\r\n");
}

/// A `<prefix><n>\r\n` line: integers, array and bulk headers.
#[inline]
fn number_line(w: &mut LinkBuffer, prefix: u8, n: i64) {
    let mut fmt = itoa::Buffer::new();
    let digits = fmt.format(n).as_bytes();
    let out = w.malloc(digits.len() + 3);
    out[0] = prefix;
    out[1..=digits.len()].copy_from_slice(digits);
    out[digits.len() + 1..].copy_from_slice(b"\r\n");
}

/// An integer: `:<n>`.
#[inline]
pub(crate) fn int(w: &mut LinkBuffer, n: i64) {
    number_line(w, b':', n);
}

/// An array header: `*<n>`.
#[inline]
pub(crate) fn array(w: &mut LinkBuffer, n: usize) {
    number_line(w, b'*', n as i64);
}

/// The null bulk string: `$-1`.
#[inline]
pub(crate) fn nil(w: &mut LinkBuffer) {
    w.write_binary(b"$-1\r\n");
}

/// The null array: `*-1`.
#[inline]
pub(crate) fn nil_array(w: &mut LinkBuffer) {
    w.write_binary(b"*-1\r\n");
}

/// A bulk string, copied.
#[inline]
pub(crate) fn bulk(w: &mut LinkBuffer, data: &[u8]) {
    let total = bulk_size(data.len());
    if total <= LINK_MIN {
        encode_bulk(w.malloc(total), data);
    } else {
        number_line(w, b'$', data.len() as i64);
        w.write_binary(data);
        w.write_binary(b"\r\n");
    }
}

/// A bulk string from a stored value: linked without copying when large.
#[inline]
pub(crate) fn bulk_bytes(w: &mut LinkBuffer, data: &Bytes) {
    if data.len() < LINK_MIN {
        bulk(w, data);
    } else {
        number_line(w, b'$', data.len() as i64);
        w.write_bytes(data.clone());
        w.write_binary(b"\r\n");
    }
}

/// Bytes of the bulk reply of a `len`-byte value.
#[inline]
fn bulk_size(len: usize) -> usize {
    let mut digits = 1;
    let mut n = len;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    1 + digits + 2 + len + 2
}

/// Writes the bulk reply of `data` at the start of `out` (sized by
/// `bulk_size`); returns the bytes written.
#[inline]
fn encode_bulk(out: &mut [u8], data: &[u8]) -> usize {
    let mut fmt = itoa::Buffer::new();
    let digits = fmt.format(data.len()).as_bytes();
    out[0] = b'$';
    let mut i = 1 + digits.len();
    out[1..i].copy_from_slice(digits);
    out[i..i + 2].copy_from_slice(b"\r\n");
    i += 2;
    out[i..i + data.len()].copy_from_slice(data);
    i += data.len();
    out[i..i + 2].copy_from_slice(b"\r\n");
    i + 2
}

/// Bulk replies of many stored values (`LRANGE`, `LPOP` with a count):
/// runs of small values are sized first and written into one `malloc`'d
/// region of up to 16 KiB; large values are linked as by [`bulk_bytes`].
pub(crate) fn bulks<'a, I>(w: &mut LinkBuffer, items: I)
where
    I: Iterator<Item = &'a Bytes> + Clone,
{
    const RUN: usize = 16 << 10;
    let mut items = items.peekable();
    loop {
        let (mut size, mut count) = (0, 0);
        for b in items.clone() {
            let s = bulk_size(b.len());
            if b.len() >= LINK_MIN || (count > 0 && size + s > RUN) {
                break;
            }
            size += s;
            count += 1;
        }
        if count == 0 {
            match items.next() {
                Some(b) => bulk_bytes(w, b),
                None => return,
            }
            continue;
        }
        let out = w.malloc(size);
        let mut at = 0;
        for b in items.by_ref().take(count) {
            at += encode_bulk(&mut out[at..], b);
        }
    }
}

/// An integer as a bulk string (`GET` of a counter).
#[inline]
pub(crate) fn bulk_int(w: &mut LinkBuffer, n: i64) {
    let mut fmt = itoa::Buffer::new();
    bulk(w, fmt.format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(f: impl FnOnce(&mut LinkBuffer)) -> Vec<u8> {
        let mut w = LinkBuffer::new();
        f(&mut w);
        w.flush();
        let n = w.len();
        w.read_binary(n).unwrap()
    }

    #[test]
    fn encodings() {
        assert_eq!(out(ok), b"+OK\r\n");
        assert_eq!(out(|w| simple(w, b"PONG")), b"+PONG\r\n");
        assert_eq!(
            out(|w| error(w, &[b"ERR bad ", b"a\r\nb"])),
            b"-ERR bad a  b\r\n"
        );
        assert_eq!(out(|w| int(w, -42)), b":-42\r\n");
        assert_eq!(out(|w| int(w, i64::MIN)), b":-9223372036854775808\r\n");
        assert_eq!(out(|w| array(w, 3)), b"*3\r\n");
        assert_eq!(out(nil), b"$-1\r\n");
        assert_eq!(out(nil_array), b"*-1\r\n");
        assert_eq!(out(|w| bulk(w, b"")), b"$0\r\n\r\n");
        assert_eq!(out(|w| bulk(w, b"hello")), b"$5\r\nhello\r\n");
        assert_eq!(out(|w| bulk_int(w, 10)), b"$2\r\n10\r\n");
    }

    #[test]
    fn bulks_match_single_bulks() {
        let mut items: Vec<Bytes> = (0..3000).map(|i| Bytes::from(format!("v{i}"))).collect();
        items.insert(1500, Bytes::from(vec![b'x'; 9000]));
        items.push(Bytes::new());
        let one_by_one = out(|w| items.iter().for_each(|b| bulk_bytes(w, b)));
        assert_eq!(out(|w| bulks(w, items.iter())), one_by_one);
        assert_eq!(out(|w| bulks(w, items[..0].iter())), b"");
        assert_eq!(bulk_size(0), 6);
        assert_eq!(bulk_size(10), 1 + 2 + 2 + 10 + 2);
    }

    #[test]
    fn large_bulk_is_linked() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let mut want = b"$10000\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n");
        assert_eq!(out(|w| bulk_bytes(w, &big)), want);
        assert_eq!(out(|w| bulk(w, &big)), want);
    }
}
