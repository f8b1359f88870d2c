//! Echo: the ferropoll handler of `echo-server` and the payload pattern that
//! `echo-bench` writes and verifies.

use std::io;

use ferropoll_transport::Connection;

/// Writes back everything readable, without copying: the received nodes are
/// linked into the output buffer and sent with one `sendmsg`.
pub fn echo(conn: &Connection) -> io::Result<()> {
    let mut r = conn.reader();
    let n = r.len();
    if n == 0 {
        return Ok(());
    }
    let data = r.slice(n)?;
    drop(r);
    let mut w = conn.writer();
    w.append(data);
    w.flush()
}

/// A pattern of `len + 256` bytes; message `k` of a connection is the window
/// starting at `(seed + k) % 256`, so every echoed byte can be checked.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len + 256)
        .map(|i| (i as u64).wrapping_mul(131).wrapping_add(seed) as u8)
        .collect()
}

/// Message `k` within `pattern`.
pub fn message(pattern: &[u8], len: usize, k: u64) -> &[u8] {
    let off = (k % 256) as usize;
    &pattern[off..off + len]
}
