//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, the frame
//! types and flags, error codes, and the encoders of the frames a server
//! writes. Payloads are read as zero-copy views of the input
//! ([`LinkBuffer::slice`]); nothing here keeps state between frames.

use ferropoll_linkbuffer::LinkBuffer;

/// The client connection preface (§3.4), followed by a SETTINGS frame.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header.
pub(crate) const HEAD_LEN: usize = 9;

/// The smallest value of SETTINGS_MAX_FRAME_SIZE, and its default.
pub(crate) const DEFAULT_MAX_FRAME: u32 = 16_384;

/// The largest flow-control window (§6.9.1).
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

/// The initial flow-control window of a connection and of each stream.
pub(crate) const DEFAULT_WINDOW: i64 = 65_535;

/// Frame types (§6).
pub(crate) mod kind {
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const PRIORITY: u8 = 0x2;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const CONTINUATION: u8 = 0x9;
}

/// Frame flags (§6).
pub(crate) mod flag {
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const ACK: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const PADDED: u8 = 0x8;
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameters (§6.5.2).
pub(crate) mod setting {
    pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(crate) const ENABLE_PUSH: u16 = 0x2;
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Reason {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
    EnhanceYourCalm = 0xb,
}

impl Reason {
    /// The code on the wire.
    pub(crate) fn code(self) -> u32 {
        self as u32
    }

    /// A received code, by name where known (unknown codes are treated
    /// as INTERNAL_ERROR, §7).
    pub(crate) fn from_code(code: u32) -> Reason {
        match code {
            0x0 => Reason::NoError,
            0x1 => Reason::ProtocolError,
            0x3 => Reason::FlowControlError,
            0x5 => Reason::StreamClosed,
            0x6 => Reason::FrameSizeError,
            0x7 => Reason::RefusedStream,
            0x8 => Reason::Cancel,
            0x9 => Reason::CompressionError,
            0xb => Reason::EnhanceYourCalm,
            _ => Reason::InternalError,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Payload length.
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub(crate) stream: u32,
}

impl Head {
    /// Decodes the 9 bytes of a frame header.
    pub(crate) fn parse(b: &[u8]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Writes a frame header.
pub(crate) fn write_head(out: &mut LinkBuffer, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let b = out.malloc(HEAD_LEN);
    let l = (len as u32).to_be_bytes();
    b[..3].copy_from_slice(&l[1..]);
    b[3] = kind;
    b[4] = flags;
    b[5..].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A SETTINGS frame with `params`.
pub(crate) fn write_settings(out: &mut LinkBuffer, params: &[(u16, u32)]) {
    write_head(out, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in params {
        let b = out.malloc(6);
        b[..2].copy_from_slice(&id.to_be_bytes());
        b[2..].copy_from_slice(&value.to_be_bytes());
    }
}

/// The acknowledgement of the peer's SETTINGS.
pub(crate) fn write_settings_ack(out: &mut LinkBuffer) {
    write_head(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// A PING (or its ACK) carrying `data`.
pub(crate) fn write_ping(out: &mut LinkBuffer, ack: bool, data: [u8; 8]) {
    write_head(out, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    out.malloc(8).copy_from_slice(&data);
}

/// A WINDOW_UPDATE of `increment` (1..=2^31-1) for `stream` (0: the connection).
pub(crate) fn write_window_update(out: &mut LinkBuffer, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && i64::from(increment) <= MAX_WINDOW);
    write_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.malloc(4).copy_from_slice(&increment.to_be_bytes());
}

/// An RST_STREAM of `stream` with `reason`.
pub(crate) fn write_rst(out: &mut LinkBuffer, stream: u32, reason: Reason) {
    write_head(out, 4, kind::RST_STREAM, 0, stream);
    out.malloc(4).copy_from_slice(&reason.code().to_be_bytes());
}

/// A GOAWAY naming the last stream processed, with `reason` and a debug text.
pub(crate) fn write_goaway(out: &mut LinkBuffer, last_stream: u32, reason: Reason, debug: &str) {
    let debug = &debug.as_bytes()[..debug.len().min(256)];
    write_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    let b = out.malloc(8 + debug.len());
    b[..4].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    b[4..8].copy_from_slice(&reason.code().to_be_bytes());
    b[8..].copy_from_slice(debug);
}

/// A header block split into HEADERS and CONTINUATION frames of at most
/// `max_frame` bytes each.
pub(crate) fn write_headers(
    out: &mut LinkBuffer,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let mut first = true;
    if block.is_empty() {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        write_head(out, 0, kind::HEADERS, flags, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { flag::END_HEADERS } else { 0 };
        let kind = if first {
            if end_stream {
                flags |= flag::END_STREAM;
            }
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        first = false;
        write_head(out, chunk.len(), kind, flags, stream);
        out.malloc(chunk.len()).copy_from_slice(chunk);
    }
}

/// DATA frames of at most `max_frame` bytes carrying `data` (linked, not
/// copied); END_STREAM on the last if `end_stream`. An empty `data` with
/// `end_stream` is one empty frame.
pub(crate) fn write_data(
    out: &mut LinkBuffer,
    stream: u32,
    mut data: LinkBuffer,
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    if data.is_empty() {
        if end_stream {
            write_head(out, 0, kind::DATA, flag::END_STREAM, stream);
        }
        return;
    }
    while !data.is_empty() {
        let n = data.len().min(max_frame);
        let last = n == data.len();
        let flags = if last && end_stream {
            flag::END_STREAM
        } else {
            0
        };
        write_head(out, n, kind::DATA, flags, stream);
        if last {
            out.append(data);
            return;
        }
        // Cannot fail: `n` bytes are readable.
        if let Ok(part) = data.slice(n) {
            out.append(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(mut b: LinkBuffer) -> Vec<u8> {
        b.flush();
        let n = b.len();
        b.next(n).unwrap().to_vec()
    }

    #[test]
    fn a_frame_header_round_trips() {
        let mut out = LinkBuffer::new();
        write_head(
            &mut out,
            0x01_02_03,
            kind::HEADERS,
            flag::END_HEADERS,
            0x7fff_fffe,
        );
        let b = bytes(out);
        assert_eq!(b, [1, 2, 3, 1, 4, 0x7f, 0xff, 0xff, 0xfe]);
        let h = Head::parse(&b);
        assert_eq!(
            (h.len, h.kind, h.flags, h.stream),
            (0x01_02_03, 1, 4, 0x7fff_fffe)
        );
        // The reserved bit is ignored on receipt.
        let h = Head::parse(&[0, 0, 0, 0, 0, 0x80, 0, 0, 1]);
        assert_eq!(h.stream, 1);
    }

    #[test]
    fn headers_split_into_continuations_and_data_into_frames() {
        let mut out = LinkBuffer::new();
        write_headers(&mut out, 3, &[9u8; 10], true, 4);
        let b = bytes(out);
        // HEADERS(4, END_STREAM) CONTINUATION(4) CONTINUATION(2, END_HEADERS)
        assert_eq!(
            Head::parse(&b[0..9]),
            Head {
                len: 4,
                kind: kind::HEADERS,
                flags: flag::END_STREAM,
                stream: 3
            }
        );
        assert_eq!(
            Head::parse(&b[13..22]),
            Head {
                len: 4,
                kind: kind::CONTINUATION,
                flags: 0,
                stream: 3
            }
        );
        assert_eq!(
            Head::parse(&b[26..35]),
            Head {
                len: 2,
                kind: kind::CONTINUATION,
                flags: flag::END_HEADERS,
                stream: 3
            }
        );
        assert_eq!(b.len(), 37);

        let mut data = LinkBuffer::new();
        data.write_binary(&[1u8; 10]);
        data.flush();
        let mut out = LinkBuffer::new();
        write_data(&mut out, 5, data, true, 6);
        let b = bytes(out);
        assert_eq!(
            Head::parse(&b[0..9]),
            Head {
                len: 6,
                kind: kind::DATA,
                flags: 0,
                stream: 5
            }
        );
        assert_eq!(
            Head::parse(&b[15..24]),
            Head {
                len: 4,
                kind: kind::DATA,
                flags: flag::END_STREAM,
                stream: 5
            }
        );
        assert_eq!(b.len(), 28);
    }
}
