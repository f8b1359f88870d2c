//! The server side of an HTTP/2 connection as a sans-IO state machine:
//! bytes in ([`ServerH2::recv`]), events out, frames written into an output
//! buffer by the calls that answer streams. It owns the connection's rules
//! — the preface, SETTINGS and their ACK, header blocks split over
//! CONTINUATION frames and decoded with HPACK, stream states, flow control
//! of the connection and of each stream in both directions, PING, GOAWAY,
//! RST_STREAM — and nothing of gRPC.
//!
//! Limits that keep a hostile peer's cost bounded: a header block may
//! not grow past [`Config::max_header_block`] compressed nor decode to
//! more than [`Config::max_header_list`]; streams beyond
//! [`Config::max_concurrent_streams`] are refused; the peer may not send
//! more DATA than the windows we granted; a frame over the maximum frame
//! size ends the connection.

use std::collections::VecDeque;

use bytes::Bytes;
use ferropoll_linkbuffer::LinkBuffer;
use httlib_hpack::Decoder;
use loona_hpack::Encoder;

use crate::hash::StreamIdMap;

use super::frame::{
    self, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, HEAD_LEN, Head, MAX_WINDOW, PREFACE, Reason, flag,
    kind, setting,
};

/// Streams a peer may reset beyond twice the number it let finish.
pub(crate) const RESET_ALLOWANCE: u64 = 1000;

/// The local settings of a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we announce; streams beyond it are
    /// refused (RST_STREAM REFUSED_STREAM).
    pub(crate) max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE we announce: what a peer may send on a
    /// stream before we re-credit it.
    pub(crate) stream_window: u32,
    /// The connection's receive window (raised from 65,535 at the start).
    pub(crate) conn_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we announce (decoded size, RFC 9113
    /// §6.5.2: names + values + 32 per field).
    pub(crate) max_header_list: u32,
    /// The largest compressed header block (HEADERS + CONTINUATIONs) we
    /// assemble before giving up on the connection.
    pub(crate) max_header_block: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 1000,
            stream_window: 1 << 20,
            conn_window: 8 << 20,
            max_header_list: 16 << 10,
            max_header_block: 64 << 10,
        }
    }
}

/// What the peer did, for the layer above.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new stream's request headers (pseudo-headers first, as sent).
    Request {
        stream: u32,
        fields: Vec<(Bytes, Bytes)>,
        end_stream: bool,
    },
    /// DATA of an open stream (a view of the input, padding removed). The
    /// layer above calls [`ServerH2::release`] once it consumed it.
    Data {
        stream: u32,
        data: LinkBuffer,
        end_stream: bool,
    },
    /// Trailers closed the peer's side of the stream (their fields are
    /// dropped: gRPC clients send none).
    EndStream { stream: u32 },
    /// The peer reset the stream, or we did (a stream error).
    Reset { stream: u32, reason: Reason },
    /// A header block was too large for [`Config::max_header_list`]: the
    /// stream was reset, the layer above may answer it otherwise.
    HeadersTooLarge { stream: u32 },
}

impl Event {
    /// The stream the event is about.
    pub(crate) fn stream(&self) -> u32 {
        match self {
            Event::Request { stream, .. }
            | Event::Data { stream, .. }
            | Event::EndStream { stream }
            | Event::Reset { stream, .. }
            | Event::HeadersTooLarge { stream } => *stream,
        }
    }
}

/// A connection error (RFC 9113 §5.4.1): a GOAWAY with `reason` has been
/// written; the connection must be closed once the output is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnError {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP/2 {:?}: {}", self.reason, self.message)
    }
}

enum Pending {
    Data {
        data: LinkBuffer,
        end_stream: bool,
    },
    Trailers(Vec<(Vec<u8>, Vec<u8>)>),
    /// Trailers of one field (gRPC's `grpc-status: 0`), without allocating.
    Trailer(&'static [u8], &'static [u8]),
}

struct Stream {
    send_window: i64,
    recv_window: i64,
    /// Bytes consumed and not yet given back through WINDOW_UPDATE.
    recv_unacked: u32,
    /// The peer ended its side (END_STREAM). Our side is open while the
    /// stream is in the map: ending it removes the stream.
    remote_closed: bool,
    /// Output waiting for window (DATA, then the trailers behind it).
    queue: VecDeque<Pending>,
    /// DATA bytes in `queue`.
    queued: usize,
}

enum Phase {
    /// Waiting for the 24 preface bytes.
    Preface,
    /// Waiting for the peer's first frame, which must be SETTINGS.
    FirstSettings,
    Open,
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

/// The server side of one HTTP/2 connection.
pub(crate) struct ServerH2 {
    cfg: Config,
    phase: Phase,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// A table-size update owed to the peer's decoder at the start of our
    /// next header block (the peer lowered SETTINGS_HEADER_TABLE_SIZE).
    table_size_update: Option<usize>,
    peer_max_frame: u32,
    peer_initial_window: i64,
    conn_send_window: i64,
    conn_recv_window: i64,
    conn_recv_unacked: u32,
    streams: StreamIdMap<Stream>,
    /// DATA bytes queued on all streams, waiting for the peer's windows.
    queued_total: usize,
    /// Streams the peer reset while open, and streams we ended: a peer
    /// that resets far more than it lets finish (rapid reset,
    /// CVE-2023-44487) is sent GOAWAY.
    peer_resets: u64,
    completed: u64,
    /// Highest stream id the peer opened.
    last_stream: u32,
    block: Option<Block>,
    /// The peer sent GOAWAY: no new streams from it.
    peer_going_away: bool,
    /// We sent GOAWAY: streams after `last_stream` are refused.
    going_away: bool,
}

impl ServerH2 {
    /// A connection that has read nothing yet; `out` receives our
    /// SETTINGS and the connection window update (the server preface).
    pub(crate) fn new(cfg: Config, out: &mut LinkBuffer) -> ServerH2 {
        frame::write_settings(
            out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, cfg.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, cfg.max_header_list),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        let conn_window = i64::from(cfg.conn_window).clamp(DEFAULT_WINDOW, MAX_WINDOW);
        if conn_window > DEFAULT_WINDOW {
            frame::write_window_update(out, 0, (conn_window - DEFAULT_WINDOW) as u32);
        }
        let decoder = Decoder::with_dynamic_size(4096);
        ServerH2 {
            cfg,
            phase: Phase::Preface,
            decoder,
            encoder: Encoder::new(),
            table_size_update: None,
            peer_max_frame: DEFAULT_MAX_FRAME,
            peer_initial_window: DEFAULT_WINDOW,
            conn_send_window: DEFAULT_WINDOW,
            conn_recv_window: conn_window,
            conn_recv_unacked: 0,
            streams: StreamIdMap::default(),
            queued_total: 0,
            peer_resets: 0,
            completed: 0,
            last_stream: 0,
            block: None,
            peer_going_away: false,
            going_away: false,
        }
    }

    /// Whether `stream` is open on our side (we may still send on it).
    pub(crate) fn can_send(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Decodes every whole frame of `input`, writing what the protocol
    /// answers by itself (SETTINGS ACK, PING ACK, WINDOW_UPDATE, resets)
    /// into `out` and what the layer above must handle into `events`.
    ///
    /// # Errors
    ///
    /// A connection error: its GOAWAY is in `out`; flush and close.
    pub(crate) fn recv(
        &mut self,
        input: &mut LinkBuffer,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        let result = self.recv_inner(input, out, events);
        if let Err(e) = &result {
            frame::write_goaway(out, self.last_stream, e.reason, &e.message);
            self.going_away = true;
        }
        result
    }

    fn recv_inner(
        &mut self,
        input: &mut LinkBuffer,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        if matches!(self.phase, Phase::Preface) {
            let n = input.len().min(PREFACE.len());
            let got = input
                .peek(n)
                .map_err(|_| conn_err(Reason::InternalError, "input"))?;
            if got != &PREFACE[..n] {
                return Err(conn_err(Reason::ProtocolError, "bad connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            let _ = input.skip(PREFACE.len());
            self.phase = Phase::FirstSettings;
        }
        loop {
            if input.len() < HEAD_LEN {
                return Ok(());
            }
            let head = Head::parse(
                input
                    .peek(HEAD_LEN)
                    .map_err(|_| conn_err(Reason::InternalError, "input"))?,
            );
            if head.len > DEFAULT_MAX_FRAME {
                return Err(conn_err(
                    Reason::FrameSizeError,
                    format!("a frame of {} bytes (limit {DEFAULT_MAX_FRAME})", head.len),
                ));
            }
            let total = HEAD_LEN + head.len as usize;
            if input.len() < total {
                return Ok(());
            }
            let _ = input.skip(HEAD_LEN);
            let payload = input
                .slice(head.len as usize)
                .map_err(|_| conn_err(Reason::InternalError, "input"))?;
            if matches!(self.phase, Phase::FirstSettings) {
                if head.kind != kind::SETTINGS || head.has(flag::ACK) {
                    return Err(conn_err(
                        Reason::ProtocolError,
                        "the first frame after the preface must be SETTINGS",
                    ));
                }
                self.phase = Phase::Open;
            }
            if let Some(block) = &self.block
                && (head.kind != kind::CONTINUATION || head.stream != block.stream)
            {
                return Err(conn_err(
                    Reason::ProtocolError,
                    "a header block interrupted by another frame",
                ));
            }
            self.frame(head, payload, out, events)?;
        }
    }

    fn frame(
        &mut self,
        head: Head,
        mut payload: LinkBuffer,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        match head.kind {
            kind::DATA => self.on_data(head, payload, out, events),
            kind::HEADERS => {
                if head.stream == 0 {
                    return Err(conn_err(Reason::ProtocolError, "HEADERS on stream 0"));
                }
                let mut bytes = read_all(&mut payload);
                let mut start = 0;
                let mut end = bytes.len();
                if head.has(flag::PADDED) {
                    let pad = *bytes
                        .first()
                        .ok_or_else(|| conn_err(Reason::FrameSizeError, "HEADERS padding"))?
                        as usize;
                    start = 1;
                    if pad > end - start {
                        return Err(conn_err(Reason::ProtocolError, "HEADERS padding too long"));
                    }
                    end -= pad;
                }
                if head.has(flag::PRIORITY) {
                    if end - start < 5 {
                        return Err(conn_err(Reason::FrameSizeError, "HEADERS priority"));
                    }
                    let dep = u32::from_be_bytes([
                        bytes[start],
                        bytes[start + 1],
                        bytes[start + 2],
                        bytes[start + 3],
                    ]) & 0x7fff_ffff;
                    if dep == head.stream {
                        return Err(conn_err(
                            Reason::ProtocolError,
                            "a stream depends on itself",
                        ));
                    }
                    start += 5;
                }
                bytes.truncate(end);
                bytes.drain(..start);
                self.block = Some(Block {
                    stream: head.stream,
                    end_stream: head.has(flag::END_STREAM),
                    bytes,
                });
                if head.has(flag::END_HEADERS) {
                    self.end_block(out, events)
                } else {
                    self.check_block_size()
                }
            }
            kind::CONTINUATION => {
                let Some(block) = &mut self.block else {
                    return Err(conn_err(
                        Reason::ProtocolError,
                        "CONTINUATION without HEADERS",
                    ));
                };
                block.bytes.extend_from_slice(&read_all(&mut payload));
                if head.has(flag::END_HEADERS) {
                    self.end_block(out, events)
                } else {
                    self.check_block_size()
                }
            }
            kind::PRIORITY => {
                if head.stream == 0 {
                    return Err(conn_err(Reason::ProtocolError, "PRIORITY on stream 0"));
                }
                if head.len != 5 {
                    // A stream error (§6.3).
                    frame::write_rst(out, head.stream, Reason::FrameSizeError);
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if head.stream == 0 {
                    return Err(conn_err(Reason::ProtocolError, "RST_STREAM on stream 0"));
                }
                if head.len != 4 {
                    return Err(conn_err(Reason::FrameSizeError, "RST_STREAM length"));
                }
                if head.stream > self.last_stream {
                    return Err(conn_err(
                        Reason::ProtocolError,
                        "RST_STREAM of an idle stream",
                    ));
                }
                let code = read_u32(&mut payload);
                if self.remove_stream(head.stream).is_some() {
                    events.push(Event::Reset {
                        stream: head.stream,
                        reason: Reason::from_code(code),
                    });
                    self.peer_resets += 1;
                    if self.peer_resets > RESET_ALLOWANCE + 2 * self.completed {
                        return Err(conn_err(
                            Reason::EnhanceYourCalm,
                            format!(
                                "{} streams reset, {} completed",
                                self.peer_resets, self.completed
                            ),
                        ));
                    }
                }
                Ok(())
            }
            kind::SETTINGS => {
                if head.stream != 0 {
                    return Err(conn_err(Reason::ProtocolError, "SETTINGS on a stream"));
                }
                if head.has(flag::ACK) {
                    if head.len != 0 {
                        return Err(conn_err(
                            Reason::FrameSizeError,
                            "SETTINGS ACK with a payload",
                        ));
                    }
                    return Ok(());
                }
                if !head.len.is_multiple_of(6) {
                    return Err(conn_err(Reason::FrameSizeError, "SETTINGS length"));
                }
                let bytes = read_all(&mut payload);
                for p in bytes.chunks_exact(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    self.apply_setting(id, value, out)?;
                }
                frame::write_settings_ack(out);
                Ok(())
            }
            kind::PUSH_PROMISE => Err(conn_err(
                Reason::ProtocolError,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => {
                if head.stream != 0 {
                    return Err(conn_err(Reason::ProtocolError, "PING on a stream"));
                }
                if head.len != 8 {
                    return Err(conn_err(Reason::FrameSizeError, "PING length"));
                }
                if !head.has(flag::ACK) {
                    let mut data = [0u8; 8];
                    data.copy_from_slice(&read_all(&mut payload));
                    frame::write_ping(out, true, data);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if head.stream != 0 {
                    return Err(conn_err(Reason::ProtocolError, "GOAWAY on a stream"));
                }
                if head.len < 8 {
                    return Err(conn_err(Reason::FrameSizeError, "GOAWAY length"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => {
                if head.len != 4 {
                    return Err(conn_err(Reason::FrameSizeError, "WINDOW_UPDATE length"));
                }
                let inc = i64::from(read_u32(&mut payload) & 0x7fff_ffff);
                if head.stream == 0 {
                    if inc == 0 {
                        return Err(conn_err(Reason::ProtocolError, "a window increment of 0"));
                    }
                    self.conn_send_window += inc;
                    if self.conn_send_window > MAX_WINDOW {
                        return Err(conn_err(
                            Reason::FlowControlError,
                            "connection window overflow",
                        ));
                    }
                    let ids: Vec<u32> = self
                        .streams
                        .iter()
                        .filter(|(_, s)| !s.queue.is_empty())
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.pump(id, out);
                    }
                    return Ok(());
                }
                if head.stream > self.last_stream {
                    return Err(conn_err(
                        Reason::ProtocolError,
                        "WINDOW_UPDATE of an idle stream",
                    ));
                }
                let Some(s) = self.streams.get_mut(&head.stream) else {
                    return Ok(()); // closed: ignored (§6.9)
                };
                if inc == 0 {
                    self.reset(head.stream, Reason::ProtocolError, out, events);
                    return Ok(());
                }
                s.send_window += inc;
                if s.send_window > MAX_WINDOW {
                    self.reset(head.stream, Reason::FlowControlError, out, events);
                    return Ok(());
                }
                self.pump(head.stream, out);
                Ok(())
            }
            // Unknown frame types are ignored (§4.1).
            _ => Ok(()),
        }
    }

    fn apply_setting(
        &mut self,
        id: u16,
        value: u32,
        _out: &mut LinkBuffer,
    ) -> Result<(), ConnError> {
        match id {
            setting::HEADER_TABLE_SIZE => {
                let size = (value as usize).min(4096);
                if size < 4096 || self.table_size_update.is_some() {
                    self.encoder.set_max_table_size(size);
                    self.table_size_update = Some(size);
                }
            }
            setting::ENABLE_PUSH if value > 1 => {
                return Err(conn_err(Reason::ProtocolError, "ENABLE_PUSH above 1"));
            }
            // MAX_CONCURRENT_STREAMS limits streams we open: a server opens none.
            setting::INITIAL_WINDOW_SIZE => {
                let value = i64::from(value);
                if value > MAX_WINDOW {
                    return Err(conn_err(
                        Reason::FlowControlError,
                        "INITIAL_WINDOW_SIZE above 2^31-1",
                    ));
                }
                let delta = value - self.peer_initial_window;
                self.peer_initial_window = value;
                for s in self.streams.values_mut() {
                    s.send_window += delta;
                    if s.send_window > MAX_WINDOW {
                        return Err(conn_err(
                            Reason::FlowControlError,
                            "a stream window overflowed",
                        ));
                    }
                }
            }
            setting::MAX_FRAME_SIZE => {
                if !(DEFAULT_MAX_FRAME..=(1 << 24) - 1).contains(&value) {
                    return Err(conn_err(
                        Reason::ProtocolError,
                        "MAX_FRAME_SIZE out of range",
                    ));
                }
                self.peer_max_frame = value;
            }
            // MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored.
            _ => {}
        }
        Ok(())
    }

    fn check_block_size(&self) -> Result<(), ConnError> {
        match &self.block {
            Some(b) if b.bytes.len() > self.cfg.max_header_block => Err(conn_err(
                Reason::EnhanceYourCalm,
                format!("a header block of over {} bytes", self.cfg.max_header_block),
            )),
            _ => Ok(()),
        }
    }

    fn end_block(
        &mut self,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        self.check_block_size()?;
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        // Decoded even when the stream is refused: the HPACK state is the
        // connection's. Past the list limit the fields are dropped; a block
        // that keeps expanding far beyond it (an HPACK bomb: tiny indexed
        // references to a large table entry) ends the connection.
        let limit = self.cfg.max_header_list as usize;
        let mut size = 0usize;
        let mut fields = Vec::new();
        let mut bytes = block.bytes;
        let mut one = Vec::with_capacity(1);
        while !bytes.is_empty() {
            // httlib-hpack indexes past the end of a block that stops
            // inside a field (found by the `h2` fuzz target) instead of
            // returning an error: its panic is caught and taken for the
            // COMPRESSION_ERROR it is. The decoder's table is then in an
            // unknown state, which does not matter: the connection ends.
            let decoder = &mut self.decoder;
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decoder.decode_exact(&mut bytes, &mut one)
            }));
            match decoded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(conn_err(Reason::CompressionError, format!("HPACK: {e:?}")));
                }
                Err(_) => {
                    return Err(conn_err(
                        Reason::CompressionError,
                        "HPACK: a truncated field",
                    ));
                }
            }
            for (name, value, _) in one.drain(..) {
                size += name.len() + value.len() + 32;
                if size <= limit {
                    fields.push((Bytes::from(name), Bytes::from(value)));
                } else if size > limit.saturating_mul(16) {
                    return Err(conn_err(
                        Reason::EnhanceYourCalm,
                        format!("a header block decoding to over {} bytes", limit * 16),
                    ));
                }
            }
        }
        let id = block.stream;
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers: the block must end the stream.
            if s.remote_closed {
                self.reset(id, Reason::StreamClosed, out, events);
                return Ok(());
            }
            if !block.end_stream {
                self.reset(id, Reason::ProtocolError, out, events);
                return Ok(());
            }
            s.remote_closed = true;
            events.push(Event::EndStream { stream: id });
            return Ok(());
        }
        if id % 2 == 0 {
            return Err(conn_err(
                Reason::ProtocolError,
                "a client opened an even stream id",
            ));
        }
        if id <= self.last_stream {
            return Err(conn_err(
                Reason::StreamClosed,
                format!("HEADERS on closed stream {id}"),
            ));
        }
        self.last_stream = id;
        if self.going_away || self.peer_going_away {
            frame::write_rst(out, id, Reason::RefusedStream);
            return Ok(());
        }
        if self.streams.len() >= self.cfg.max_concurrent_streams as usize {
            frame::write_rst(out, id, Reason::RefusedStream);
            return Ok(());
        }
        self.streams.insert(
            id,
            Stream {
                send_window: self.peer_initial_window,
                recv_window: i64::from(self.cfg.stream_window),
                recv_unacked: 0,
                remote_closed: block.end_stream,
                queue: VecDeque::new(),
                queued: 0,
            },
        );
        if size > limit {
            events.push(Event::HeadersTooLarge { stream: id });
            return Ok(());
        }
        events.push(Event::Request {
            stream: id,
            fields,
            end_stream: block.end_stream,
        });
        Ok(())
    }

    fn on_data(
        &mut self,
        head: Head,
        mut payload: LinkBuffer,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_err(Reason::ProtocolError, "DATA on stream 0"));
        }
        let flow = i64::from(head.len);
        self.conn_recv_window -= flow;
        if self.conn_recv_window < 0 {
            return Err(conn_err(
                Reason::FlowControlError,
                "DATA beyond the connection window",
            ));
        }
        // The connection window is given back at once: each stream's own
        // window bounds what waits for the layer above.
        self.credit_conn(head.len, out);
        if head.has(flag::PADDED) {
            let pad = payload
                .read_byte()
                .map_err(|_| conn_err(Reason::FrameSizeError, "DATA padding"))?
                as usize;
            if pad > payload.len() {
                return Err(conn_err(Reason::ProtocolError, "DATA padding too long"));
            }
            let keep = payload.len() - pad;
            payload = payload
                .slice(keep)
                .map_err(|_| conn_err(Reason::InternalError, "input"))?;
        }
        let id = head.stream;
        if id > self.last_stream {
            return Err(conn_err(Reason::ProtocolError, "DATA on an idle stream"));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            // Closed: DATA may still be on its way after our END_STREAM or
            // RST_STREAM; ignored (its connection window was given back).
            return Ok(());
        };
        if s.remote_closed {
            self.reset(id, Reason::StreamClosed, out, events);
            return Ok(());
        }
        s.recv_window -= flow;
        if s.recv_window < 0 {
            self.reset(id, Reason::FlowControlError, out, events);
            return Ok(());
        }
        // Padding counts against the window but is never consumed above.
        let padding = head.len as usize - payload.len();
        s.recv_unacked += padding as u32;
        let end_stream = head.has(flag::END_STREAM);
        if end_stream {
            s.remote_closed = true;
        }
        events.push(Event::Data {
            stream: id,
            data: payload,
            end_stream,
        });
        Ok(())
    }

    fn credit_conn(&mut self, n: u32, out: &mut LinkBuffer) {
        self.conn_recv_unacked += n;
        if self.conn_recv_unacked >= self.cfg.conn_window / 2 {
            frame::write_window_update(out, 0, self.conn_recv_unacked);
            self.conn_recv_window += i64::from(self.conn_recv_unacked);
            self.conn_recv_unacked = 0;
        }
    }

    /// The layer above consumed `n` bytes of `stream`'s DATA: the peer may
    /// send that much more (a WINDOW_UPDATE once half the window is used).
    pub(crate) fn release(&mut self, stream: u32, n: usize, out: &mut LinkBuffer) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.remote_closed {
            return;
        }
        s.recv_unacked += n as u32;
        if s.recv_unacked >= self.cfg.stream_window / 2 {
            frame::write_window_update(out, stream, s.recv_unacked);
            s.recv_window += i64::from(s.recv_unacked);
            s.recv_unacked = 0;
        }
    }

    /// Resets `stream` (a stream error or a cancellation from above).
    pub(crate) fn reset(
        &mut self,
        stream: u32,
        reason: Reason,
        out: &mut LinkBuffer,
        events: &mut Vec<Event>,
    ) {
        frame::write_rst(out, stream, reason);
        if self.remove_stream(stream).is_some() {
            events.push(Event::Reset { stream, reason });
        }
    }

    fn encode_block(&mut self, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::with_capacity(64);
        if let Some(size) = self.table_size_update.take() {
            // Dynamic table size update (RFC 7541 §6.3): 001xxxxx.
            let mut prefix = loona_hpack::encoder::encode_integer(size, 5);
            prefix[0] |= 0x20;
            block.extend_from_slice(&prefix);
        }
        // Cannot fail: writing into a Vec.
        let _ = self
            .encoder
            .encode_into(fields.iter().map(|&(n, v)| (n, v)), &mut block);
        block
    }

    /// Sends response headers on `stream` (END_STREAM with `end_stream`:
    /// a trailers-only response). Ignored if the stream is closed on our side.
    pub(crate) fn send_headers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
        out: &mut LinkBuffer,
    ) {
        if !self.can_send(stream) {
            return;
        }
        let block = self.encode_block(fields);
        frame::write_headers(
            out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame as usize,
        );
        if end_stream {
            self.close_local(stream, out);
        }
    }

    /// Queues `data` on `stream` and sends what the windows allow.
    #[cfg(test)]
    pub(crate) fn send_data(
        &mut self,
        stream: u32,
        data: LinkBuffer,
        end_stream: bool,
        out: &mut LinkBuffer,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.queued += data.len();
        self.queued_total += data.len();
        s.queue.push_back(Pending::Data { data, end_stream });
        self.pump(stream, out);
    }

    /// Sends `fields` as trailers ending `stream`, after its queued DATA.
    pub(crate) fn send_trailers(
        &mut self,
        stream: u32,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        out: &mut LinkBuffer,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.queue.push_back(Pending::Trailers(fields));
        self.pump(stream, out);
    }

    /// Sends a one-field trailer ending `stream`, after its queued DATA.
    pub(crate) fn send_trailer(
        &mut self,
        stream: u32,
        name: &'static [u8],
        value: &'static [u8],
        out: &mut LinkBuffer,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.queue.is_empty() {
            let block = self.encode_block(&[(name, value)]);
            frame::write_headers(out, stream, &block, true, self.peer_max_frame as usize);
            self.close_local(stream, out);
            return;
        }
        s.queue.push_back(Pending::Trailer(name, value));
        self.pump(stream, out);
    }

    /// Sends one gRPC message on `stream`: its 5-byte prefix (uncompressed,
    /// length) and `payload`, linked, not copied. In one DATA frame when
    /// the windows and the frame size allow and nothing waits before it.
    pub(crate) fn send_message(&mut self, stream: u32, payload: LinkBuffer, out: &mut LinkBuffer) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let len = payload.len() + 5;
        let fits = len as i64 <= s.send_window.min(self.conn_send_window)
            && len <= self.peer_max_frame as usize;
        if s.queue.is_empty() && fits {
            s.send_window -= len as i64;
            self.conn_send_window -= len as i64;
            frame::write_head(out, len, kind::DATA, 0, stream);
            let prefix = out.malloc(5);
            prefix[0] = 0;
            prefix[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
            out.append(payload);
            return;
        }
        let mut data = LinkBuffer::new();
        let prefix = data.malloc(5);
        prefix[0] = 0;
        prefix[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        data.append(payload);
        data.flush();
        s.queued += data.len();
        self.queued_total += data.len();
        s.queue.push_back(Pending::Data {
            data,
            end_stream: false,
        });
        self.pump(stream, out);
    }

    /// Bytes of DATA queued on `stream` waiting for window.
    pub(crate) fn queued(&self, stream: u32) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.queued)
    }

    /// DATA bytes queued on every stream, waiting for the peer's windows.
    pub(crate) fn queued_total(&self) -> usize {
        self.queued_total
    }

    fn remove_stream(&mut self, stream: u32) -> Option<Stream> {
        let s = self.streams.remove(&stream)?;
        self.queued_total -= s.queued;
        Some(s)
    }

    fn pump(&mut self, stream: u32, out: &mut LinkBuffer) {
        loop {
            let max_frame = self.peer_max_frame as usize;
            let conn_window = self.conn_send_window;
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            let Some(front) = s.queue.front_mut() else {
                return;
            };
            match front {
                Pending::Data { data, end_stream } => {
                    let window = conn_window.min(s.send_window).max(0) as usize;
                    let len = data.len();
                    if len == 0 {
                        let end = *end_stream;
                        s.queue.pop_front();
                        if end {
                            frame::write_data(out, stream, LinkBuffer::new(), true, max_frame);
                            self.close_local(stream, out);
                            return;
                        }
                        continue;
                    }
                    if window == 0 {
                        return;
                    }
                    let n = len.min(window);
                    let (part, end) = if n == len {
                        let end = *end_stream;
                        match s.queue.pop_front() {
                            Some(Pending::Data { data, .. }) => (data, end),
                            _ => return,
                        }
                    } else {
                        match data.slice(n) {
                            Ok(part) => (part, false),
                            Err(_) => return,
                        }
                    };
                    s.send_window -= n as i64;
                    s.queued -= n;
                    self.queued_total -= n;
                    self.conn_send_window -= n as i64;
                    frame::write_data(out, stream, part, end, max_frame);
                    if end {
                        self.close_local(stream, out);
                        return;
                    }
                }
                Pending::Trailers(_) | Pending::Trailer(..) => {
                    let block = match s.queue.pop_front() {
                        Some(Pending::Trailers(fields)) => {
                            let refs: Vec<(&[u8], &[u8])> =
                                fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                            self.encode_block(&refs)
                        }
                        Some(Pending::Trailer(name, value)) => self.encode_block(&[(name, value)]),
                        _ => return,
                    };
                    frame::write_headers(out, stream, &block, true, max_frame);
                    self.close_local(stream, out);
                    return;
                }
            }
        }
    }

    /// Our side of `stream` ended. A peer still sending is told to stop
    /// with RST_STREAM NO_ERROR (RFC 9113 §8.1): the response is complete.
    fn close_local(&mut self, stream: u32, out: &mut LinkBuffer) {
        self.completed += 1;
        if let Some(s) = self.remove_stream(stream)
            && !s.remote_closed
        {
            frame::write_rst(out, stream, Reason::NoError);
        }
    }

    /// Ends the connection from above: a GOAWAY with `reason` (written even
    /// after a graceful one); the caller closes once it is flushed.
    pub(crate) fn abort(&mut self, reason: Reason, debug: &str, out: &mut LinkBuffer) {
        self.going_away = true;
        frame::write_goaway(out, self.last_stream, reason, debug);
    }

    /// Starts a graceful close: a GOAWAY naming the last stream taken.
    pub(crate) fn goaway(&mut self, reason: Reason, debug: &str, out: &mut LinkBuffer) {
        if !self.going_away {
            self.going_away = true;
            frame::write_goaway(out, self.last_stream, reason, debug);
        }
    }
}

fn conn_err(reason: Reason, message: impl Into<String>) -> ConnError {
    ConnError {
        reason,
        message: message.into(),
    }
}

fn read_all(payload: &mut LinkBuffer) -> Vec<u8> {
    let n = payload.len();
    payload.next(n).map(<[u8]>::to_vec).unwrap_or_default()
}

fn read_u32(payload: &mut LinkBuffer) -> u32 {
    match payload.next(4) {
        Ok(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        Err(_) => 0,
    }
}
