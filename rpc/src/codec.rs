//! The frame codec (see `rpc/PROTOCOL.md`): a 12-byte prefix, a protobuf
//! header, a protobuf payload — encoded into and decoded from a
//! [`LinkBuffer`], with no I/O.
//!
//! Decoding is zero-copy where it matters: the payload of a decoded
//! [`Frame`] is a [`LinkBuffer::slice`] of the input (it shares the input's
//! nodes), and the header's `service` and `method` are [`Bytes`] views taken
//! with `copy_to_bytes`. Every limit is checked from the 12-byte prefix
//! before any of the frame is buffered, so a peer announcing a 4 GiB frame
//! costs nothing but the error.
//!
//! Encoding computes every length first (`encoded_len`), then writes the
//! prefix and header in one `write_binary` and the payload straight into one
//! `malloc`ed slice of the buffer of exactly its length — each message is
//! encoded once, with no intermediate `Vec`. Encoders write unflushed bytes: call
//! [`LinkBuffer::flush`] (or the connection's flush) to publish them.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use ferropoll_linkbuffer::LinkBuffer;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::metadata::{Metadata, MetadataEntry};
use crate::status::{Code, Status};

/// The two magic bytes that open every frame.
pub const MAGIC: [u8; 2] = [0xFE, 0x50];
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed prefix: magic 2, version 1, flags 1, body length 4, header length 4.
pub const PREFIX_LEN: usize = 12;

/// Size limits of a connection; every one has a default (see `PROTOCOL.md`).
///
/// ```
/// let limits = ferropoll_rpc::Limits { max_body_len: 1 << 20, ..Default::default() };
/// assert_eq!(limits.max_header_len, 64 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header + payload of a frame, in bytes. Default 16 MiB.
    pub max_body_len: u32,
    /// Largest header, in bytes. Default 64 KiB.
    pub max_header_len: u32,
    /// Most metadata entries in one header. Default 64.
    pub max_metadata_entries: usize,
    /// Most calls in flight on one connection: on a client, calls awaiting
    /// their response; on a server, pool-dispatched calls queued or running.
    /// Default 1024.
    pub max_in_flight: usize,
    /// Most streaming calls open at once on one connection; a stream
    /// opened beyond it is answered RESOURCE_EXHAUSTED. Default 128.
    pub max_streams: usize,
    /// The receive window of each stream, in bytes: how much of the peer's
    /// messages may wait unconsumed (see `PROTOCOL.md`, "Flow control").
    /// At least 64 KiB (the initial window); default 64 KiB.
    pub stream_window: u32,
}

impl Limits {
    /// The defaults, as a constant.
    pub const DEFAULT: Limits = Limits {
        max_body_len: 16 << 20,
        max_header_len: 64 << 10,
        max_metadata_entries: 64,
        max_in_flight: 1024,
        max_streams: 128,
        stream_window: crate::stream::INITIAL_WINDOW,
    };
}

impl Limits {
    /// Checks that the limits can work: non-zero frame, header and
    /// in-flight sizes, a stream window of at least the initial 64 KiB.
    /// Builders call it and refuse bad limits instead of adjusting them.
    ///
    /// ```
    /// use ferropoll_rpc::Limits;
    /// assert!(Limits::DEFAULT.validate().is_ok());
    /// let tiny = Limits { stream_window: 1024, ..Limits::DEFAULT };
    /// assert!(tiny.validate().unwrap_err().contains("stream_window"));
    /// ```
    ///
    /// # Errors
    ///
    /// A sentence naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        let min_frame = 64;
        if self.max_body_len < min_frame {
            return Err(format!(
                "max_body_len {} is below {min_frame} bytes",
                self.max_body_len
            ));
        }
        if self.max_header_len == 0 || self.max_header_len > self.max_body_len {
            return Err(format!(
                "max_header_len {} must be in 1..=max_body_len ({})",
                self.max_header_len, self.max_body_len
            ));
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must not be 0".to_owned());
        }
        if self.stream_window < crate::stream::INITIAL_WINDOW {
            return Err(format!(
                "stream_window {} is below the initial window ({} bytes)",
                self.stream_window,
                crate::stream::INITIAL_WINDOW
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What a frame is (field 2 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// Invalid on the wire.
    Unspecified = 0,
    /// A call, answered by a [`MessageType::Response`].
    Request = 1,
    /// The answer to a request.
    Response = 2,
    /// A call without answer.
    Oneway = 3,
    /// A liveness probe, answered by a [`MessageType::Pong`].
    Ping = 4,
    /// The answer to a ping.
    Pong = 5,
    /// A connection-level error; the sender closes after it.
    Error = 6,
    /// One message of a streaming call, either direction.
    Message = 7,
    /// The client sends no more messages on this stream (half-close).
    HalfClose = 8,
    /// The client abandons the call; the server stops its handler.
    Cancel = 9,
    /// Flow-control credit for a stream: the receiver may send `window`
    /// more bytes of messages.
    Window = 10,
}

/// The decoded header of a frame (`ferropoll.rpc.Header` in
/// `proto/protos/ferropoll/rpc.proto`). `service` and `method` are UTF-8 on
/// the wire; they are kept as bytes, zero-copy, and only compared.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Sequence id.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// [`MessageType`] as its wire number; see [`Header::message_type`].
    #[prost(enumeration = "MessageType", tag = "2")]
    pub kind: i32,
    /// `package.Service` of a request.
    #[prost(bytes = "bytes", tag = "3")]
    pub service: Bytes,
    /// Method name of a request.
    #[prost(bytes = "bytes", tag = "4")]
    pub method: Bytes,
    /// Status code of a response or error; 0 = OK.
    #[prost(uint32, tag = "5")]
    pub status_code: u32,
    /// Status message.
    #[prost(string, tag = "6")]
    pub status_message: String,
    /// Time budget of a request in µs; 0 = no deadline.
    #[prost(uint64, tag = "7")]
    pub timeout_us: u64,
    /// Metadata entries in wire order.
    #[prost(message, repeated, tag = "8")]
    pub metadata: Vec<MetadataEntry>,
    /// A REQUEST that opens a streaming call (its messages follow in
    /// MESSAGE frames; it carries no payload itself).
    #[prost(bool, tag = "9")]
    pub stream: bool,
    /// Bytes of credit granted by a WINDOW frame.
    #[prost(uint32, tag = "10")]
    pub window: u32,
}

impl Header {
    /// The message type, or `None` for a number this version does not know.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::try_from(self.kind).ok()
    }

    /// The status carried by a response or error header.
    pub fn status(&self) -> Status {
        Status::from_parts(
            Code::from_u32(self.status_code),
            self.status_message.clone(),
            Metadata::from_entries(self.metadata.clone()),
        )
    }
}

/// One decoded frame: its header and its payload, a zero-copy view of the
/// input buffer's bytes (it keeps their nodes alive; drop it to let them go).
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The payload bytes (the method's protobuf message).
    pub payload: LinkBuffer,
}

impl Frame {
    /// The message type, or `None` for a type this version does not know.
    pub fn message_type(&self) -> Option<MessageType> {
        self.header.message_type()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A violation of the framing: the connection it arrived on must be closed
/// (after sending [`ProtocolError::status`] in an ERROR frame, best effort).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first bytes are not [`MAGIC`] (only the bytes received are compared).
    BadMagic {
        /// The bytes found (0 where not received yet).
        found: [u8; 2],
    },
    /// A version this crate does not speak.
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A flag bit is set; version 1 defines none.
    UnknownFlags {
        /// The flags byte found.
        flags: u8,
    },
    /// The body (header + payload) is over [`Limits::max_body_len`].
    FrameTooLarge {
        /// Body length announced or needed.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The header is over [`Limits::max_header_len`].
    HeaderTooLarge {
        /// Header length announced or needed.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The prefix announces a header longer than the whole body.
    HeaderExceedsBody {
        /// Header length.
        header_len: u32,
        /// Body length.
        body_len: u32,
    },
    /// The header is not valid protobuf.
    BadHeader(prost::DecodeError),
    /// The header has no message type (field 2 is 0).
    MissingMessageType,
    /// The header has more than [`Limits::max_metadata_entries`] entries.
    TooMuchMetadata {
        /// Entries found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The peer sent an ERROR frame: it is closing the connection.
    PeerError(Status),
    /// The peer pinged more often than the server's
    /// [`PingPolicy`](crate::PingPolicy) allows.
    TooManyPings {
        /// Strikes in a row (pings too close together, no request between).
        strikes: u32,
    },
    /// A stream message beyond the credit this side granted.
    FlowControl {
        /// The stream.
        seq: u64,
    },
    /// A WINDOW frame that takes the credit past 2³¹ − 1.
    WindowOverflow {
        /// The stream.
        seq: u64,
    },
    /// A stream frame that its stream's state does not allow (a message
    /// after the half-close, a second half-close).
    StreamState {
        /// The stream.
        seq: u64,
        /// What arrived.
        what: &'static str,
    },
    /// The buffer refused an operation its length allowed (a bug in the buffer).
    Buffer(ferropoll_linkbuffer::Error),
}

impl ProtocolError {
    /// The status to send in the ERROR frame that announces the close.
    pub fn status(&self) -> Status {
        let code = match self {
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::HeaderTooLarge { .. }
            | ProtocolError::TooManyPings { .. }
            | ProtocolError::FlowControl { .. } => Code::ResourceExhausted,
            ProtocolError::UnsupportedVersion { .. } => Code::Unimplemented,
            ProtocolError::PeerError(s) => return s.clone(),
            ProtocolError::Buffer(_) => Code::Internal,
            _ => Code::InvalidArgument,
        };
        Status::new(code, self.to_string())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic { found } => write!(
                f,
                "bad magic {:02X} {:02X} (expected {:02X} {:02X})",
                found[0], found[1], MAGIC[0], MAGIC[1]
            ),
            ProtocolError::UnsupportedVersion { version } => write!(
                f,
                "unsupported protocol version {version} (this side speaks {VERSION})"
            ),
            ProtocolError::UnknownFlags { flags } => {
                write!(f, "unknown frame flags {flags:#04x}")
            }
            ProtocolError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            ProtocolError::HeaderTooLarge { len, max } => {
                write!(f, "header of {len} bytes exceeds the limit of {max}")
            }
            ProtocolError::HeaderExceedsBody {
                header_len,
                body_len,
            } => write!(
                f,
                "header length {header_len} exceeds the body length {body_len}"
            ),
            ProtocolError::BadHeader(e) => write!(f, "undecodable header: {e}"),
            ProtocolError::MissingMessageType => f.write_str("header without message type"),
            ProtocolError::TooMuchMetadata { count, max } => {
                write!(f, "{count} metadata entries exceed the limit of {max}")
            }
            ProtocolError::PeerError(s) => write!(f, "peer closed the connection: {s}"),
            ProtocolError::TooManyPings { strikes } => write!(
                f,
                "too many pings ({strikes} in a row closer together than the server allows)"
            ),
            ProtocolError::FlowControl { seq } => {
                write!(f, "stream {seq}: a message beyond the flow-control window")
            }
            ProtocolError::WindowOverflow { seq } => {
                write!(f, "stream {seq}: window update overflows the credit")
            }
            ProtocolError::StreamState { seq, what } => write!(f, "stream {seq}: {what}"),
            ProtocolError::Buffer(e) => write!(f, "buffer error: {e:?}"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::BadHeader(e) => Some(e),
            ProtocolError::PeerError(s) => Some(s),
            _ => None,
        }
    }
}

impl From<ferropoll_linkbuffer::Error> for ProtocolError {
    fn from(e: ferropoll_linkbuffer::Error) -> Self {
        ProtocolError::Buffer(e)
    }
}

/// Checks the first `prefix.len() ≤ 12` bytes of a frame; with all 12,
/// returns `(body_len, header_len)`.
fn check_prefix(prefix: &[u8], limits: &Limits) -> Result<Option<(u32, u32)>, ProtocolError> {
    let magic_seen = prefix.len().min(2);
    if prefix[..magic_seen] != MAGIC[..magic_seen] {
        let mut found = [0; 2];
        found[..magic_seen].copy_from_slice(&prefix[..magic_seen]);
        return Err(ProtocolError::BadMagic { found });
    }
    match prefix.get(2) {
        Some(&version) if version != VERSION => {
            return Err(ProtocolError::UnsupportedVersion { version });
        }
        _ => {}
    }
    match prefix.get(3) {
        Some(&flags) if flags != 0 => return Err(ProtocolError::UnknownFlags { flags }),
        _ => {}
    }
    let Some(lengths) = prefix.get(4..PREFIX_LEN) else {
        return Ok(None);
    };
    let body_len = u32::from_be_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
    let header_len = u32::from_be_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
    if body_len > limits.max_body_len {
        return Err(ProtocolError::FrameTooLarge {
            len: body_len.into(),
            max: limits.max_body_len,
        });
    }
    if header_len > body_len {
        return Err(ProtocolError::HeaderExceedsBody {
            header_len,
            body_len,
        });
    }
    if header_len > limits.max_header_len {
        return Err(ProtocolError::HeaderTooLarge {
            len: header_len.into(),
            max: limits.max_header_len,
        });
    }
    Ok(Some((body_len, header_len)))
}

/// Takes one whole frame from the front of `buf`.
///
/// * `Ok(None)`: the frame is not complete yet; nothing was consumed.
/// * `Ok(Some(frame))`: the frame was consumed; its payload shares `buf`'s
///   nodes (call [`LinkBuffer::release`] on `buf` when done with a batch).
/// * `Err(_)`: a protocol violation; the connection must be closed. Limits
///   are checked as soon as the prefix (or the part of it received) is there.
///
/// ```
/// use ferropoll_rpc::codec::{self, MessageType};
/// use ferropoll_rpc::{LinkBuffer, Limits};
///
/// let limits = Limits::default();
/// let mut buf = LinkBuffer::new();
/// codec::encode_ping(&mut buf, 1);
/// buf.flush();
/// let frame = codec::decode(&mut buf, &limits).unwrap().expect("one whole frame");
/// assert_eq!(frame.message_type(), Some(MessageType::Ping));
/// assert_eq!(codec::decode(&mut buf, &limits).unwrap().map(|f| f.header.seq), None);
/// ```
pub fn decode(buf: &mut LinkBuffer, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let available = buf.len();
    if available == 0 {
        return Ok(None);
    }
    let seen = available.min(PREFIX_LEN);
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[..seen].copy_from_slice(buf.peek(seen)?);
    let Some((body_len, header_len)) = check_prefix(&prefix[..seen], limits)? else {
        return Ok(None);
    };
    if available - PREFIX_LEN < body_len as usize {
        return Ok(None);
    }
    buf.skip(PREFIX_LEN)?;
    let header_bytes = buf.next_bytes(header_len as usize)?;
    // Count the metadata entries before decoding: a 64 KiB header of empty
    // entries would otherwise allocate ~1.5 MB of strings before the check.
    if let Some(count) = count_metadata(&header_bytes)
        && count > limits.max_metadata_entries
    {
        return Err(ProtocolError::TooMuchMetadata {
            count,
            max: limits.max_metadata_entries,
        });
    }
    let header = Header::decode(header_bytes).map_err(ProtocolError::BadHeader)?;
    if header.kind == MessageType::Unspecified as i32 {
        return Err(ProtocolError::MissingMessageType);
    }
    if header.metadata.len() > limits.max_metadata_entries {
        return Err(ProtocolError::TooMuchMetadata {
            count: header.metadata.len(),
            max: limits.max_metadata_entries,
        });
    }
    let payload = buf.slice((body_len - header_len) as usize)?;
    Ok(Some(Frame { header, payload }))
}

/// Counts the top-level field-8 (metadata) entries of an encoded header by
/// walking its keys, without decoding anything. `None` if the bytes are not
/// well-formed protobuf (the decoder then reports why).
fn count_metadata(mut b: &[u8]) -> Option<usize> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn skip(b: &mut &[u8], n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        *b = b.get(n..)?;
        Some(())
    }
    let mut count = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => skip(&mut b, 8)?,
            2 => {
                let len = varint(&mut b)?;
                skip(&mut b, len)?;
                if key >> 3 == 8 {
                    count += 1;
                }
            }
            5 => skip(&mut b, 4)?,
            _ => return None,
        }
    }
    Some(count)
}

/// The size of the frame at the front of `buf` (prefix included), once its
/// whole prefix has arrived and passes `limits`; `None` otherwise. The glue
/// uses it to tell the transport how many bytes a partial frame needs.
///
/// ```
/// use ferropoll_rpc::{LinkBuffer, Limits, codec};
/// let mut buf = LinkBuffer::new();
/// codec::encode_ping(&mut buf, 1);
/// buf.flush();
/// assert_eq!(codec::frame_len(&mut buf, &Limits::default()), Some(buf.len()));
/// ```
pub fn frame_len(buf: &mut LinkBuffer, limits: &Limits) -> Option<usize> {
    if buf.len() < PREFIX_LEN {
        return None;
    }
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(buf.peek(PREFIX_LEN).ok()?);
    match check_prefix(&prefix, limits) {
        Ok(Some((body_len, _))) => Some(PREFIX_LEN + body_len as usize),
        _ => None,
    }
}

/// A header to encode, borrowing everything (no allocation to build it).
#[derive(Clone, Copy)]
struct HeaderRef<'a> {
    seq: u64,
    kind: MessageType,
    service: &'a str,
    method: &'a str,
    status_code: u32,
    status_message: &'a str,
    timeout_us: u64,
    metadata: &'a [MetadataEntry],
    stream: bool,
    window: u32,
}

impl<'a> HeaderRef<'a> {
    fn new(seq: u64, kind: MessageType) -> Self {
        HeaderRef {
            seq,
            kind,
            service: "",
            method: "",
            status_code: 0,
            status_message: "",
            timeout_us: 0,
            metadata: &[],
            stream: false,
            window: 0,
        }
    }

    fn encoded_len(&self) -> usize {
        fn varint(tag: u32, v: u64) -> usize {
            if v == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(v)
            }
        }
        fn bytes(tag: u32, len: usize) -> usize {
            if len == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(len as u64) + len
            }
        }
        varint(1, self.seq)
            + varint(2, self.kind as i32 as u64)
            + bytes(3, self.service.len())
            + bytes(4, self.method.len())
            + varint(5, self.status_code.into())
            + bytes(6, self.status_message.len())
            + varint(7, self.timeout_us)
            + self
                .metadata
                .iter()
                .map(|e| prost::encoding::message::encoded_len(8, e))
                .sum::<usize>()
            + varint(9, self.stream.into())
            + varint(10, self.window.into())
    }

    fn encode(&self, buf: &mut impl BufMut) {
        fn varint(tag: u32, v: u64, buf: &mut impl BufMut) {
            if v != 0 {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(v, buf);
            }
        }
        fn bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
            if !b.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(b.len() as u64, buf);
                buf.put_slice(b);
            }
        }
        varint(1, self.seq, buf);
        varint(2, self.kind as i32 as u64, buf);
        bytes(3, self.service.as_bytes(), buf);
        bytes(4, self.method.as_bytes(), buf);
        varint(5, self.status_code.into(), buf);
        bytes(6, self.status_message.as_bytes(), buf);
        varint(7, self.timeout_us, buf);
        for entry in self.metadata {
            prost::encoding::message::encode(8, entry, buf);
        }
        varint(9, self.stream.into(), buf);
        varint(10, self.window.into(), buf);
    }
}

/// Headers up to this size (with the prefix) are assembled on the stack and
/// written with one `write_binary`.
const STACK_HEADER: usize = 256;

/// Writes prefix + header for a body of `header_len + payload_len` bytes.
fn write_head(
    out: &mut LinkBuffer,
    limits: &Limits,
    header: &HeaderRef<'_>,
    payload_len: usize,
) -> Result<usize, ProtocolError> {
    let header_len = header.encoded_len();
    if header_len > limits.max_header_len as usize {
        return Err(ProtocolError::HeaderTooLarge {
            len: header_len as u64,
            max: limits.max_header_len,
        });
    }
    let body_len = header_len + payload_len;
    if body_len > limits.max_body_len as usize {
        return Err(ProtocolError::FrameTooLarge {
            len: body_len as u64,
            max: limits.max_body_len,
        });
    }
    // Both fit in u32: the limits are u32.
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[..2].copy_from_slice(&MAGIC);
    prefix[2] = VERSION;
    prefix[4..8].copy_from_slice(&(body_len as u32).to_be_bytes());
    prefix[8..12].copy_from_slice(&(header_len as u32).to_be_bytes());
    if PREFIX_LEN + header_len <= STACK_HEADER {
        let mut stack = [0u8; STACK_HEADER];
        stack[..PREFIX_LEN].copy_from_slice(&prefix);
        let mut rest = &mut stack[PREFIX_LEN..];
        header.encode(&mut rest);
        out.write_binary(&stack[..PREFIX_LEN + header_len]);
    } else {
        out.write_binary(&prefix);
        header.encode(out);
    }
    Ok(PREFIX_LEN + body_len)
}

fn write_message<M: EncodeBody + ?Sized>(
    out: &mut LinkBuffer,
    limits: &Limits,
    header: &HeaderRef<'_>,
    msg: &M,
) -> Result<usize, ProtocolError> {
    let len = msg.body_len();
    let n = write_head(out, limits, header, len)?;
    // Into one contiguous slice of the exact length: prost writes varints a
    // byte at a time, which is much cheaper into a slice than through the
    // buffer's `BufMut`.
    msg.encode_body(out.malloc(len));
    Ok(n)
}

/// Converts a timeout to the wire's µs budget: at least 1 µs (0 would mean
/// "no deadline"), saturating at `u64::MAX`.
pub fn timeout_to_micros(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A message body the encoders can write: every prost [`Message`], and
/// `dyn EncodeBody` — so that a request can travel as a trait object
/// through code that is not generic over its type, and still be encoded by
/// its own type's code.
pub trait EncodeBody {
    /// The encoded length in bytes.
    fn body_len(&self) -> usize;
    /// Encodes the body into `dst`, whose length is exactly
    /// [`body_len`](EncodeBody::body_len).
    fn encode_body(&self, dst: &mut [u8]);
}

impl<M: Message> EncodeBody for M {
    fn body_len(&self) -> usize {
        self.encoded_len()
    }

    fn encode_body(&self, mut dst: &mut [u8]) {
        self.encode_raw(&mut dst);
        debug_assert!(dst.is_empty(), "encoded_len and encode_raw disagree");
    }
}

/// The head of a request frame.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// Sequence id (non-zero).
    pub seq: u64,
    /// `package.Service`.
    pub service: &'a str,
    /// Method name.
    pub method: &'a str,
    /// Time budget; `None` = no deadline.
    pub timeout: Option<Duration>,
    /// Metadata to send.
    pub metadata: &'a Metadata,
    /// A ONEWAY frame (no response expected) instead of a REQUEST.
    pub oneway: bool,
}

/// Encodes the REQUEST that opens a streaming call: `stream` set, no
/// payload (the messages follow as [`encode_message`] frames). Returns the
/// bytes written.
///
/// # Errors
///
/// As [`encode_request`]; nothing is written then.
pub fn encode_stream_open(
    out: &mut LinkBuffer,
    limits: &Limits,
    head: &RequestHead<'_>,
) -> Result<usize, ProtocolError> {
    if head.metadata.len() > limits.max_metadata_entries {
        return Err(ProtocolError::TooMuchMetadata {
            count: head.metadata.len(),
            max: limits.max_metadata_entries,
        });
    }
    let header = HeaderRef {
        service: head.service,
        method: head.method,
        timeout_us: head.timeout.map_or(0, timeout_to_micros),
        metadata: head.metadata.entries(),
        stream: true,
        ..HeaderRef::new(head.seq, MessageType::Request)
    };
    write_head(out, limits, &header, 0)
}

/// Encodes one MESSAGE frame of stream `seq` carrying `msg`. Returns the
/// bytes written.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] when `msg` does not fit `limits`;
/// nothing is written then.
pub fn encode_message<M: EncodeBody + ?Sized>(
    out: &mut LinkBuffer,
    limits: &Limits,
    seq: u64,
    msg: &M,
) -> Result<usize, ProtocolError> {
    write_message(out, limits, &HeaderRef::new(seq, MessageType::Message), msg)
}

/// Encodes a HALF_CLOSE frame (the client's end of its messages on stream
/// `seq`). Returns the bytes written.
pub fn encode_half_close(out: &mut LinkBuffer, seq: u64) -> usize {
    bare(out, &HeaderRef::new(seq, MessageType::HalfClose))
}

/// Encodes a CANCEL frame for call `seq`. Returns the bytes written.
pub fn encode_cancel(out: &mut LinkBuffer, seq: u64) -> usize {
    bare(out, &HeaderRef::new(seq, MessageType::Cancel))
}

/// Encodes a WINDOW frame granting `bytes` more of credit on stream `seq`.
/// Returns the bytes written.
pub fn encode_window(out: &mut LinkBuffer, seq: u64, bytes: u32) -> usize {
    bare(
        out,
        &HeaderRef {
            window: bytes,
            ..HeaderRef::new(seq, MessageType::Window)
        },
    )
}

/// A frame of a few header bytes and no payload (always within any limits).
fn bare(out: &mut LinkBuffer, header: &HeaderRef<'_>) -> usize {
    write_head(out, &Limits::DEFAULT, header, 0).unwrap_or(0)
}

/// Encodes a REQUEST (or ONEWAY) frame. Returns the bytes written.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] or [`ProtocolError::HeaderTooLarge`]
/// when the frame would break `limits`; nothing is written then.
pub fn encode_request<M: EncodeBody + ?Sized>(
    out: &mut LinkBuffer,
    limits: &Limits,
    head: &RequestHead<'_>,
    msg: &M,
) -> Result<usize, ProtocolError> {
    if head.metadata.len() > limits.max_metadata_entries {
        return Err(ProtocolError::TooMuchMetadata {
            count: head.metadata.len(),
            max: limits.max_metadata_entries,
        });
    }
    let header = HeaderRef {
        service: head.service,
        method: head.method,
        timeout_us: head.timeout.map_or(0, timeout_to_micros),
        metadata: head.metadata.entries(),
        ..HeaderRef::new(
            head.seq,
            if head.oneway {
                MessageType::Oneway
            } else {
                MessageType::Request
            },
        )
    };
    write_message(out, limits, &header, msg)
}

/// Encodes an OK RESPONSE frame carrying `msg`. Returns the bytes written.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] when `msg` does not fit `limits`;
/// nothing is written then (answer with [`encode_status`] instead).
pub fn encode_response<M: Message>(
    out: &mut LinkBuffer,
    limits: &Limits,
    seq: u64,
    msg: &M,
) -> Result<usize, ProtocolError> {
    write_message(
        out,
        limits,
        &HeaderRef::new(seq, MessageType::Response),
        msg,
    )
}

/// Encodes an OK RESPONSE frame carrying `msg` and the response
/// `metadata`. Returns the bytes written.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`], [`ProtocolError::HeaderTooLarge`] or
/// [`ProtocolError::TooMuchMetadata`] when it does not fit `limits`;
/// nothing is written then.
pub fn encode_response_with_metadata<M: Message>(
    out: &mut LinkBuffer,
    limits: &Limits,
    seq: u64,
    msg: &M,
    metadata: &Metadata,
) -> Result<usize, ProtocolError> {
    if metadata.len() > limits.max_metadata_entries {
        return Err(ProtocolError::TooMuchMetadata {
            count: metadata.len(),
            max: limits.max_metadata_entries,
        });
    }
    let header = HeaderRef {
        metadata: metadata.entries(),
        ..HeaderRef::new(seq, MessageType::Response)
    };
    write_message(out, limits, &header, msg)
}

/// Status messages are cut to this many bytes when a header would not fit.
const MAX_STATUS_MESSAGE: usize = 1024;

fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn write_status(
    out: &mut LinkBuffer,
    limits: &Limits,
    seq: u64,
    kind: MessageType,
    status: &Status,
) -> usize {
    let mut header = HeaderRef {
        status_code: status.code().as_u32(),
        status_message: status.message(),
        metadata: status.metadata().entries(),
        ..HeaderRef::new(seq, kind)
    };
    if status.metadata().len() > limits.max_metadata_entries {
        header.metadata = &[];
    }
    if let Ok(n) = write_head(out, limits, &header, 0) {
        return n;
    }
    // Too large for the peer's header limit: cut the message, then drop the metadata.
    header.status_message = truncated(status.message(), MAX_STATUS_MESSAGE);
    if let Ok(n) = write_head(out, limits, &header, 0) {
        return n;
    }
    header.metadata = &[];
    header.status_message = truncated(status.message(), 64);
    // A header of at most ~100 bytes fits any sane limit; if the limits are
    // smaller still, send the bare code.
    write_head(out, limits, &header, 0).unwrap_or_else(|_| {
        header.status_message = "";
        write_head(out, &Limits::DEFAULT, &header, 0).unwrap_or(0)
    })
}

/// Encodes a RESPONSE frame that fails the call `seq` with `status` (whose
/// code should not be OK). Never fails: a message or metadata too large for
/// `limits` is cut. Returns the bytes written.
pub fn encode_status(out: &mut LinkBuffer, limits: &Limits, seq: u64, status: &Status) -> usize {
    write_status(out, limits, seq, MessageType::Response, status)
}

/// Encodes a connection-level ERROR frame (`seq` 0 when no frame is to
/// blame). The sender closes the connection after it. Returns the bytes written.
pub fn encode_error(out: &mut LinkBuffer, limits: &Limits, seq: u64, status: &Status) -> usize {
    write_status(out, limits, seq, MessageType::Error, status)
}

/// Encodes a PING frame with an empty payload. Returns the bytes written.
pub fn encode_ping(out: &mut LinkBuffer, seq: u64) -> usize {
    write_head(
        out,
        &Limits::DEFAULT,
        &HeaderRef::new(seq, MessageType::Ping),
        0,
    )
    .unwrap_or(0)
}

/// Encodes a PONG frame answering ping `seq`, echoing `payload` without
/// copying it (its nodes are linked into `out`). Returns the bytes written.
///
/// # Errors
///
/// [`ProtocolError::FrameTooLarge`] if the payload does not fit `limits`
/// (impossible for a payload that arrived within the same limits).
pub fn encode_pong(
    out: &mut LinkBuffer,
    limits: &Limits,
    seq: u64,
    payload: LinkBuffer,
) -> Result<usize, ProtocolError> {
    let n = write_head(
        out,
        limits,
        &HeaderRef::new(seq, MessageType::Pong),
        payload.len(),
    )?;
    if !payload.is_empty() {
        out.append(payload);
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
