//! Length-field framing over [`LinkBuffer`]: the reusable decoder and
//! encoder for protocols whose frames carry their own length.
//!
//! The model is Netty's `LengthFieldBasedFrameDecoder` (which gnet's v1
//! `LengthFieldBasedFrameCodec` follows): a frame is
//!
//! ```text
//! | prefix (offset bytes) | length field (width bytes) | rest ... |
//! ```
//!
//! and its total length is `offset + width + value + adjustment`, where
//! `value` is the length field read as an unsigned big- or little-endian
//! integer of 1, 2, 4 or 8 bytes. With the default adjustment of 0 the
//! field counts the bytes after it; a field that counts the whole frame
//! takes `adjustment = -(offset + width)`. The decoder hands out each frame
//! minus its first `strip` bytes (by default the prefix and the length
//! field, i.e. the body) as a zero-copy [`LinkBuffer::slice`] of the input:
//! the frame's nodes are shared, not copied, and outlive the input's
//! `release`.
//!
//! Bad input never panics or buffers without bound: a length that makes
//! the frame shorter than its header or longer than `max_frame` is an
//! error as soon as the header is there, before any of the body is
//! buffered. The caller closes the connection then.
//!
//! ```
//! use ferropoll_linkbuffer::LinkBuffer;
//! use ferropoll_transport::codec::LengthFieldCodec;
//!
//! let codec = LengthFieldCodec::builder().width(2).build()?; // u16 BE, body only
//! let mut wire = LinkBuffer::new();
//! codec.encode(b"hello", &mut wire)?;
//! codec.encode(b"world", &mut wire)?;
//! wire.flush();
//! let mut frame = codec.decode(&mut wire)?.unwrap();
//! assert_eq!(frame.read_binary(5).unwrap(), b"hello");
//! let mut frame = codec.decode(&mut wire)?.unwrap();
//! assert_eq!(frame.read_binary(5).unwrap(), b"world");
//! assert!(codec.decode(&mut wire)?.is_none()); // needs more input
//! # Ok::<(), ferropoll_transport::codec::CodecError>(())
//! ```

use std::fmt;
use std::io;

use bytes::BufMut;
use ferropoll_linkbuffer::LinkBuffer;

use crate::conn::Reader;

/// Byte order of the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endian {
    /// Network order, most significant byte first (the default).
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// Why a frame could not be decoded or encoded, or a codec not built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame's total length passes the codec's maximum.
    FrameTooLarge {
        /// Total length announced (or, encoding, needed).
        len: u128,
        /// The maximum frame length.
        max: usize,
    },
    /// The length field, adjusted, makes the frame shorter than its header.
    LengthTooSmall {
        /// The adjusted total frame length (may be negative).
        frame_len: i128,
        /// `offset + width`.
        header_len: usize,
    },
    /// More bytes are to be stripped than the frame holds.
    StripTooLarge {
        /// Bytes to strip.
        strip: usize,
        /// The frame's length.
        frame_len: usize,
    },
    /// Encoding: the value does not fit the length field (or is negative).
    LengthFieldOverflow {
        /// The value to store.
        value: i128,
        /// Width of the field in bytes.
        width: usize,
    },
    /// Encoding: the prefix given is not `offset` bytes long.
    PrefixLength {
        /// `offset`.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The builder's settings are inconsistent.
    InvalidConfig(&'static str),
}

impl CodecError {
    /// Whether this is [`CodecError::FrameTooLarge`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, CodecError::FrameTooLarge { .. })
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            CodecError::LengthTooSmall {
                frame_len,
                header_len,
            } => write!(
                f,
                "adjusted frame length {frame_len} is less than the {header_len}-byte header"
            ),
            CodecError::StripTooLarge { strip, frame_len } => write!(
                f,
                "cannot strip {strip} bytes from a frame of {frame_len} bytes"
            ),
            CodecError::LengthFieldOverflow { value, width } => {
                write!(f, "length {value} does not fit a {width}-byte length field")
            }
            CodecError::PrefixLength { expected, got } => write!(
                f,
                "the bytes before the length field must be {expected} long, got {got}"
            ),
            CodecError::InvalidConfig(why) => write!(f, "invalid length-field codec: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<CodecError> for io::Error {
    /// `InvalidConfig` maps to `InvalidInput`, every other error (bad
    /// frames) to `InvalidData`.
    fn from(e: CodecError) -> io::Error {
        let kind = match e {
            CodecError::InvalidConfig(_)
            | CodecError::PrefixLength { .. }
            | CodecError::LengthFieldOverflow { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Settings of a [`LengthFieldCodec`]; see [`LengthFieldCodec::builder`].
///
/// Defaults: the length field at offset 0, 4 bytes, big endian,
/// adjustment 0, strip the prefix and the length field (frames come out as
/// bodies), maximum frame 4 MiB (header included).
#[derive(Debug, Clone)]
pub struct LengthFieldCodecBuilder {
    offset: usize,
    width: usize,
    endian: Endian,
    adjustment: i64,
    strip: Option<usize>,
    max_frame: usize,
}

impl Default for LengthFieldCodecBuilder {
    fn default() -> Self {
        LengthFieldCodecBuilder {
            offset: 0,
            width: 4,
            endian: Endian::Big,
            adjustment: 0,
            strip: None,
            max_frame: 4 << 20,
        }
    }
}

impl LengthFieldCodecBuilder {
    /// Bytes before the length field (default 0).
    pub fn offset(&mut self, bytes: usize) -> &mut Self {
        self.offset = bytes;
        self
    }
    /// Width of the length field: 1, 2, 4 or 8 bytes (default 4).
    pub fn width(&mut self, bytes: usize) -> &mut Self {
        self.width = bytes;
        self
    }
    /// Byte order of the length field (default big endian).
    pub fn endian(&mut self, e: Endian) -> &mut Self {
        self.endian = e;
        self
    }
    /// Added to the field's value to get the bytes that follow the field
    /// (default 0; e.g. `-(offset + width)` when the field counts the whole
    /// frame).
    pub fn adjustment(&mut self, delta: i64) -> &mut Self {
        self.adjustment = delta;
        self
    }
    /// Bytes removed from the front of each decoded frame (default: the
    /// prefix and the length field, `offset + width`; 0 keeps whole frames).
    pub fn strip(&mut self, bytes: usize) -> &mut Self {
        self.strip = Some(bytes);
        self
    }
    /// Largest frame accepted or produced, header included (default 4 MiB).
    pub fn max_frame(&mut self, bytes: usize) -> &mut Self {
        self.max_frame = bytes;
        self
    }

    /// The codec.
    ///
    /// # Errors
    ///
    /// [`CodecError::InvalidConfig`] for a width other than 1, 2, 4 or 8,
    /// or a maximum frame shorter than the header.
    pub fn build(&self) -> Result<LengthFieldCodec, CodecError> {
        if !matches!(self.width, 1 | 2 | 4 | 8) {
            return Err(CodecError::InvalidConfig(
                "length field width must be 1, 2, 4 or 8",
            ));
        }
        let header = self
            .offset
            .checked_add(self.width)
            .ok_or(CodecError::InvalidConfig("offset too large"))?;
        if self.max_frame < header {
            return Err(CodecError::InvalidConfig(
                "maximum frame is shorter than the header",
            ));
        }
        Ok(LengthFieldCodec {
            offset: self.offset,
            width: self.width,
            endian: self.endian,
            adjustment: self.adjustment,
            strip: self.strip.unwrap_or(header),
            max_frame: self.max_frame,
        })
    }
}

/// A length-field frame decoder and encoder; see the [module docs](self).
///
/// Cheap to clone and `Send + Sync`: build one and share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthFieldCodec {
    offset: usize,
    width: usize,
    endian: Endian,
    adjustment: i64,
    strip: usize,
    max_frame: usize,
}

impl LengthFieldCodec {
    /// A builder with the defaults listed on [`LengthFieldCodecBuilder`].
    pub fn builder() -> LengthFieldCodecBuilder {
        LengthFieldCodecBuilder::default()
    }

    /// Bytes of the prefix and the length field.
    pub fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// The largest frame accepted, header included.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The total length of the frame that `header` starts, checked
    /// against the limits; `Ok(None)` when `header` is shorter than
    /// [`header_len`](Self::header_len).
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLarge`], [`CodecError::LengthTooSmall`],
    /// [`CodecError::StripTooLarge`].
    pub fn frame_len(&self, header: &[u8]) -> Result<Option<usize>, CodecError> {
        let Some(field) = header.get(self.offset..self.offset + self.width) else {
            return Ok(None);
        };
        let mut raw = [0u8; 8];
        let value = match self.endian {
            Endian::Big => {
                raw[8 - self.width..].copy_from_slice(field);
                u64::from_be_bytes(raw)
            }
            Endian::Little => {
                raw[..self.width].copy_from_slice(field);
                u64::from_le_bytes(raw)
            }
        };
        let header_len = self.header_len();
        let total = header_len as i128 + i128::from(value) + i128::from(self.adjustment);
        if total < header_len as i128 {
            return Err(CodecError::LengthTooSmall {
                frame_len: total,
                header_len,
            });
        }
        if total > self.max_frame as i128 {
            return Err(CodecError::FrameTooLarge {
                len: total as u128,
                max: self.max_frame,
            });
        }
        let total = total as usize;
        if self.strip > total {
            return Err(CodecError::StripTooLarge {
                strip: self.strip,
                frame_len: total,
            });
        }
        Ok(Some(total))
    }

    /// The next whole frame of `buf` (minus the stripped bytes) as a
    /// zero-copy view, consumed from `buf`; `Ok(None)` when `buf` does not
    /// hold a whole frame yet (nothing is consumed then).
    ///
    /// # Errors
    ///
    /// As [`frame_len`](Self::frame_len), as soon as the header is in:
    /// the stream cannot be resynchronised, close the connection.
    pub fn decode(&self, buf: &mut LinkBuffer) -> Result<Option<LinkBuffer>, CodecError> {
        let header_len = self.header_len();
        if buf.len() < header_len {
            return Ok(None);
        }
        let total = match buf.peek(header_len) {
            Ok(h) => match self.frame_len(h)? {
                Some(total) => total,
                None => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        if buf.len() < total {
            return Ok(None);
        }
        // Both cannot fail: `total >= strip` bytes are readable.
        let _ = buf.skip(self.strip);
        Ok(buf.slice(total - self.strip).ok())
    }

    /// Reads the next frame from a connection's reader: in blocking mode
    /// (pool dispatch, dialed connections) waits for it, bounded by the
    /// read timeout; inline it returns `WouldBlock` until the frame is all
    /// there, so a handler can use `?` and be called again with more input.
    ///
    /// # Errors
    ///
    /// The reader's errors (`WouldBlock`, `TimedOut`, `UnexpectedEof`, ...)
    /// and the codec's, as `InvalidData`.
    pub fn read_frame(&self, r: &mut Reader<'_>) -> io::Result<LinkBuffer> {
        let header_len = self.header_len();
        let total = self.frame_len(r.peek(header_len)?)?.unwrap_or(header_len);
        r.wait(total)?;
        match self.decode(r)? {
            Some(frame) => Ok(frame),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn check_prefix(&self, prefix: &[u8]) -> Result<(), CodecError> {
        if prefix.len() != self.offset {
            return Err(CodecError::PrefixLength {
                expected: self.offset,
                got: prefix.len(),
            });
        }
        Ok(())
    }

    /// Writes the header of a frame whose bytes after the length field
    /// number `rest`.
    fn write_header(
        &self,
        prefix: &[u8],
        rest: usize,
        out: &mut LinkBuffer,
    ) -> Result<(), CodecError> {
        self.check_prefix(prefix)?;
        let total = self.header_len() as u128 + rest as u128;
        if total > self.max_frame as u128 {
            return Err(CodecError::FrameTooLarge {
                len: total,
                max: self.max_frame,
            });
        }
        let value = rest as i128 - i128::from(self.adjustment);
        let limit = if self.width == 8 {
            u64::MAX as i128
        } else {
            (1i128 << (8 * self.width)) - 1
        };
        if value < 0 || value > limit {
            return Err(CodecError::LengthFieldOverflow {
                value,
                width: self.width,
            });
        }
        let value = value as u64;
        out.write_binary(prefix);
        let bytes = match self.endian {
            Endian::Big => value.to_be_bytes(),
            Endian::Little => value.to_le_bytes(),
        };
        match self.endian {
            Endian::Big => out.put_slice(&bytes[8 - self.width..]),
            Endian::Little => out.put_slice(&bytes[..self.width]),
        }
        Ok(())
    }

    /// Appends a frame carrying `body` (copied) to `out`, for a codec
    /// whose length field is at offset 0; `out` is not flushed. The frame
    /// decodes back to `body` with the default strip.
    ///
    /// # Errors
    ///
    /// [`CodecError::PrefixLength`] if the codec has an offset (use
    /// [`encode_with_prefix`](Self::encode_with_prefix)),
    /// [`CodecError::FrameTooLarge`], [`CodecError::LengthFieldOverflow`];
    /// nothing is written then.
    pub fn encode(&self, body: &[u8], out: &mut LinkBuffer) -> Result<(), CodecError> {
        self.encode_with_prefix(&[], body, out)
    }

    /// As [`encode`](Self::encode), with the `offset` bytes that precede
    /// the length field.
    pub fn encode_with_prefix(
        &self,
        prefix: &[u8],
        body: &[u8],
        out: &mut LinkBuffer,
    ) -> Result<(), CodecError> {
        self.write_header(prefix, body.len(), out)?;
        out.write_binary(body);
        Ok(())
    }

    /// As [`encode`](Self::encode) with a body that is linked, not copied
    /// (e.g. a frame decoded from another connection).
    pub fn encode_buf(&self, body: LinkBuffer, out: &mut LinkBuffer) -> Result<(), CodecError> {
        self.write_header(&[], body.len(), out)?;
        out.append(body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lb(bytes: &[u8]) -> LinkBuffer {
        let mut b = LinkBuffer::new();
        b.write_binary(bytes);
        b.flush();
        b
    }

    fn body(mut frame: LinkBuffer) -> Vec<u8> {
        let n = frame.len();
        frame.read_binary(n).unwrap()
    }

    #[test]
    fn every_width_and_byte_order_reads_the_known_bytes() {
        for (width, endian, header) in [
            (1, Endian::Big, vec![3u8]),
            (2, Endian::Big, vec![0, 3]),
            (2, Endian::Little, vec![3, 0]),
            (4, Endian::Big, vec![0, 0, 0, 3]),
            (4, Endian::Little, vec![3, 0, 0, 0]),
            (8, Endian::Big, vec![0, 0, 0, 0, 0, 0, 0, 3]),
            (8, Endian::Little, vec![3, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            let c = LengthFieldCodec::builder()
                .width(width)
                .endian(endian)
                .build()
                .unwrap();
            let mut wire = header.clone();
            wire.extend_from_slice(b"abc");
            let mut buf = lb(&wire);
            assert_eq!(body(c.decode(&mut buf).unwrap().unwrap()), b"abc");
            assert_eq!(buf.len(), 0);
            let mut out = LinkBuffer::new();
            c.encode(b"abc", &mut out).unwrap();
            out.flush();
            assert_eq!(
                out.read_binary(out.len()).unwrap(),
                wire,
                "{width} {endian:?}"
            );
        }
    }

    #[test]
    fn offset_adjustment_and_strip_follow_netty_semantics() {
        // 2-byte magic, u16 length counting the whole frame, keep it all.
        let c = LengthFieldCodec::builder()
            .offset(2)
            .width(2)
            .adjustment(-4)
            .strip(0)
            .build()
            .unwrap();
        let wire = [0xCA, 0xFE, 0, 7, b'x', b'y', b'z'];
        let mut buf = lb(&wire);
        assert_eq!(body(c.decode(&mut buf).unwrap().unwrap()), wire);
        let mut out = LinkBuffer::new();
        c.encode_with_prefix(&[0xCA, 0xFE], b"xyz", &mut out)
            .unwrap();
        out.flush();
        assert_eq!(out.read_binary(7).unwrap(), wire);
        assert_eq!(
            c.encode(b"xyz", &mut LinkBuffer::new()),
            Err(CodecError::PrefixLength {
                expected: 2,
                got: 0
            })
        );
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_once_whole() {
        let c = LengthFieldCodec::builder().width(2).build().unwrap();
        let mut wire = LinkBuffer::new();
        c.encode(b"hello", &mut wire).unwrap();
        c.encode(b"", &mut wire).unwrap();
        c.encode(b"world!", &mut wire).unwrap();
        wire.flush();
        let wire = wire.read_binary(wire.len()).unwrap();
        for cut in 0..=wire.len() {
            let mut buf = LinkBuffer::new();
            buf.write_binary(&wire[..cut]);
            buf.flush();
            let mut got = Vec::new();
            while let Some(f) = c.decode(&mut buf).unwrap() {
                got.push(body(f));
            }
            buf.write_binary(&wire[cut..]);
            buf.flush();
            while let Some(f) = c.decode(&mut buf).unwrap() {
                got.push(body(f));
            }
            assert_eq!(
                got,
                vec![b"hello".to_vec(), vec![], b"world!".to_vec()],
                "cut {cut}"
            );
            assert_eq!(buf.len(), 0);
        }
    }

    #[test]
    fn bad_lengths_are_errors_as_soon_as_the_header_is_in() {
        let c = LengthFieldCodec::builder()
            .width(4)
            .max_frame(1024)
            .build()
            .unwrap();
        // Announces 1 GiB: rejected with only the header buffered.
        let mut buf = lb(&[0x40, 0, 0, 0]);
        let e = c.decode(&mut buf).unwrap_err();
        assert!(e.is_too_large(), "{e}");
        assert_eq!(buf.len(), 4, "nothing consumed");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        // Exactly the maximum passes.
        let mut buf = lb(&[0, 0, 0x03, 0xFC]);
        assert!(c.decode(&mut buf).unwrap().is_none(), "waits for the body");
        // An adjustment making the frame shorter than its header.
        let c = LengthFieldCodec::builder()
            .width(1)
            .adjustment(-10)
            .build()
            .unwrap();
        assert!(matches!(
            c.decode(&mut lb(&[3])),
            Err(CodecError::LengthTooSmall { .. })
        ));
        // Stripping more than the frame.
        let c = LengthFieldCodec::builder()
            .width(1)
            .strip(5)
            .build()
            .unwrap();
        assert!(matches!(
            c.decode(&mut lb(&[1, 9])),
            Err(CodecError::StripTooLarge { .. })
        ));
        // The encoder refuses what the decoder would.
        let c = LengthFieldCodec::builder().width(1).build().unwrap();
        assert!(matches!(
            c.encode(&[0; 256], &mut LinkBuffer::new()),
            Err(CodecError::LengthFieldOverflow { .. })
        ));
        let c = LengthFieldCodec::builder().max_frame(8).build().unwrap();
        assert!(
            c.encode(&[0; 5], &mut LinkBuffer::new())
                .unwrap_err()
                .is_too_large()
        );
        assert_eq!(c.frame_len(&[0, 0]), Ok(None), "short header");
        // Bad settings.
        assert!(LengthFieldCodec::builder().width(3).build().is_err());
        assert!(LengthFieldCodec::builder().max_frame(2).build().is_err());
    }

    #[test]
    fn encode_buf_links_the_body() {
        let c = LengthFieldCodec::builder().width(2).build().unwrap();
        let mut out = LinkBuffer::new();
        c.encode_buf(lb(&[7; 5000]), &mut out).unwrap();
        out.flush();
        let f = c.decode(&mut out).unwrap().unwrap();
        assert_eq!(body(f), vec![7; 5000]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any frames, any codec shape, fed in arbitrary pieces, decode
        /// back to the bodies in order.
        #[test]
        fn round_trip_in_arbitrary_pieces(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            width in prop_oneof![Just(2usize), Just(4), Just(8)],
            little in any::<bool>(),
            offset in 0usize..4,
            cuts in proptest::collection::vec(1usize..200, 1..20),
        ) {
            let c = LengthFieldCodec::builder()
                .width(width)
                .offset(offset)
                .endian(if little { Endian::Little } else { Endian::Big })
                .build()
                .unwrap();
            let prefix = vec![0xAB; offset];
            let mut wire = LinkBuffer::new();
            for b in &bodies {
                c.encode_with_prefix(&prefix, b, &mut wire).unwrap();
            }
            wire.flush();
            let wire = wire.read_binary(wire.len()).unwrap();
            let mut buf = LinkBuffer::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while pos < wire.len() {
                let n = cuts[k % cuts.len()].min(wire.len() - pos);
                k += 1;
                buf.write_binary(&wire[pos..pos + n]);
                buf.flush();
                pos += n;
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    got.push(body(f));
                }
                buf.release();
            }
            prop_assert_eq!(got, bodies);
        }
    }
}
