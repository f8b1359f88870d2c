//! gRPC over HTTP/2 on the server side (grpc/grpc `doc/PROTOCOL-HTTP2.md`),
//! mapped onto the native engine: each gRPC call becomes a native call of
//! its own sequence id, run by [`ServerEngine`] as a native request would
//! be — the same services, dispatch (inline, pool, async), interceptors,
//! deadlines and limits — and its native answer is turned into the gRPC
//! response: HEADERS (`:status 200`, `content-type`, the response
//! metadata), one length-prefixed message in DATA, and trailers with
//! `grpc-status` and the percent-encoded `grpc-message`; errors as a
//! Trailers-Only response.
//!
//! Metadata: request headers other than pseudo-headers, `content-type`,
//! `te` and the reserved `grpc-*` ones become the call's [`Metadata`];
//! `-bin` values stay in their base64 form.
//!
//! Streaming methods (client, server and bidirectional) open a native
//! stream at the request's HEADERS. Flow control is carried through end to
//! end: a request message is handed to the handler only within the native
//! stream's credit, and while messages wait for it no HTTP/2 credit goes
//! back to the client (so it stops within its stream window, 1 MiB by
//! default); once none waits, what arrived is credited back, a partial
//! message too (a message may be larger than the window, up to the message
//! size limit). A response message's native credit is given
//! back once the HTTP/2 output queued on its stream is under
//! [`QUEUED_LIMIT`]. So a slow reader on either side stops the writer on
//! the other, and what the server buffers per stream stays bounded.
//!
//! Compression: request messages may be gzip-compressed
//! (`grpc-encoding: gzip`; inflated within the message size limit);
//! responses go uncompressed, and their headers say
//! `grpc-accept-encoding: identity,gzip`. Other encodings are refused
//! (UNIMPLEMENTED).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_linkbuffer::LinkBuffer;

use crate::codec::{self, Frame, Header, Limits, MessageType};
use crate::h2::conn::{Config, ConnError, Event, ServerH2};
use crate::h2::frame::Reason;
use crate::hash::{SeqMap, StreamIdMap};
use crate::metadata::MetadataEntry;
use crate::server::{DeferredCall, Progress, ServerConn, ServerEngine};
use crate::status::{Code, Status};
use crate::stream::{INITIAL_WINDOW, MESSAGE_OVERHEAD, MethodKind, StreamMap, StreamShared};

/// Bytes of response DATA a stream may have queued for the client's
/// HTTP/2 window before its handler stops getting send credit back.
pub(crate) const QUEUED_LIMIT: usize = 256 << 10;

/// Bytes of response DATA all streams of a connection may have queued
/// for the client's HTTP/2 windows: a client that asks for more and never
/// opens its windows is sent GOAWAY (ENHANCE_YOUR_CALM) and closed.
pub(crate) const CONN_QUEUED_LIMIT: usize = 32 << 20;

/// Request bytes the calls of one connection may hold before they reach
/// their handlers (incomplete messages, and messages waiting for a
/// streaming handler's credit): past it the client is sent GOAWAY
/// (ENHANCE_YOUR_CALM) and closed. Each message is also bounded by
/// `Limits::max_body_len`.
pub(crate) const CONN_BUFFERED_LIMIT: usize = 64 << 20;

/// A message's cost against a native stream window.
fn cost(len: usize) -> i64 {
    len as i64 + i64::from(MESSAGE_OVERHEAD)
}

/// Whether the first bytes of a connection are the HTTP/2 client preface
/// (`None`: too few bytes to tell).
pub(crate) fn is_h2_preface(first: &[u8]) -> Option<bool> {
    let preface = crate::h2::frame::PREFACE;
    let n = first.len().min(4);
    if n == 0 {
        return None;
    }
    if first[..n] != preface[..n] {
        return Some(false);
    }
    if n < 4 { None } else { Some(true) }
}

/// One gRPC call on its way through the native engine.
struct Call {
    seq: u64,
    service: Bytes,
    method: Bytes,
    timeout_us: u64,
    metadata: Vec<MetadataEntry>,
    /// DATA received and not yet cut into messages.
    pending: LinkBuffer,
    /// The request message (a unary call has exactly one).
    request: Option<LinkBuffer>,
    /// Handed to the engine: the answer comes back under `seq`.
    started: bool,
    /// A streaming call: messages go to its native stream one by one.
    streaming: bool,
    /// Request messages waiting for the native stream's credit.
    held: VecDeque<LinkBuffer>,
    /// The native credit left for request messages.
    credit: i64,
    /// Request bytes received whose HTTP/2 credit is held back while
    /// messages wait for native credit.
    withheld: usize,
    /// The client ended its messages; the native half-close follows the
    /// held ones.
    half_closed: bool,
    /// Response HEADERS sent (else an error is a Trailers-Only response).
    headers_sent: bool,
    /// The request's messages may be gzip-compressed (`grpc-encoding: gzip`).
    gzip: bool,
    /// Native send credit owed to the handler, given back once the
    /// stream's queued output is under [`QUEUED_LIMIT`].
    owed: i64,
    /// Bytes of `held` messages.
    held_bytes: usize,
    /// Request bytes this call holds (`pending`, `held`, `request`), as
    /// counted in the connection's total.
    buffered: usize,
}

/// The gRPC state of one HTTP/2 connection.
pub(crate) struct GrpcConn {
    h2: ServerH2,
    calls: StreamIdMap<Call>,
    by_seq: SeqMap<u32>,
    next_seq: u64,
    events: Vec<Event>,
    /// The connection's native streams (its `ServerConn`'s).
    streams: Arc<StreamMap>,
    /// Streams whose calls are owed native send credit.
    owing: Vec<u32>,
    /// Request bytes all calls hold, not yet handed to the engine.
    buffered: usize,
}

impl GrpcConn {
    /// A connection whose server preface (SETTINGS) is written to `out`;
    /// `streams` are its `ServerConn`'s native streams.
    pub(crate) fn new(streams: Arc<StreamMap>, out: &mut LinkBuffer) -> GrpcConn {
        GrpcConn {
            h2: ServerH2::new(Config::default(), out),
            calls: StreamIdMap::default(),
            by_seq: SeqMap::default(),
            next_seq: 1,
            events: Vec::new(),
            streams,
            owing: Vec::new(),
            buffered: 0,
        }
    }

    /// Removes `stream`'s call, uncounting the request bytes it held.
    fn forget(&mut self, stream: u32) -> Option<Call> {
        let call = self.calls.remove(&stream)?;
        self.buffered -= call.buffered;
        Some(call)
    }

    /// Recounts the request bytes `stream`'s call holds.
    fn recount(&mut self, stream: u32) {
        if let Some(c) = self.calls.get_mut(&stream) {
            let now =
                c.pending.len() + c.held_bytes + c.request.as_ref().map_or(0, LinkBuffer::len);
            self.buffered = self.buffered - c.buffered + now;
            c.buffered = now;
        }
    }

    fn native(&self, seq: u64) -> Option<Arc<StreamShared>> {
        self.streams.lock().get(&seq).cloned()
    }

    /// Starts a graceful close once the server drains (GOAWAY NO_ERROR
    /// naming the last stream taken; calls already taken finish).
    pub(crate) fn goaway(&mut self, out: &mut LinkBuffer) {
        self.h2.goaway(Reason::NoError, "server shutting down", out);
    }

    /// Whether the output queued for the client's windows passed
    /// [`CONN_QUEUED_LIMIT`]: then a GOAWAY is in `out`, and the connection
    /// must be closed once it is flushed.
    pub(crate) fn over_queued_limit(&mut self, out: &mut LinkBuffer) -> bool {
        let queued = self.h2.queued_total();
        if queued <= CONN_QUEUED_LIMIT {
            return false;
        }
        tracing::warn!(queued, "gRPC client does not open its windows: closing");
        self.h2.abort(
            Reason::EnhanceYourCalm,
            "responses queued past the limit: the client does not read them",
            out,
        );
        true
    }

    /// Reads every whole frame of `input`: protocol answers go to `out`,
    /// calls to `engine` (their native answers to `native`, or to
    /// `deferred` for pool-dispatched methods).
    ///
    /// # Errors
    ///
    /// A connection error: its GOAWAY is in `out`; flush and close.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recv(
        &mut self,
        engine: &ServerEngine,
        conn: &ServerConn,
        input: &mut LinkBuffer,
        out: &mut LinkBuffer,
        native: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        now: Instant,
    ) -> Result<(), ConnError> {
        let mut events = std::mem::take(&mut self.events);
        let result = self.h2.recv(input, out, &mut events);
        for event in events.drain(..) {
            let stream = event.stream();
            self.on_event(event, engine, conn, out, native, deferred, now);
            self.recount(stream);
        }
        self.events = events;
        if result.is_ok() && self.buffered > CONN_BUFFERED_LIMIT {
            tracing::warn!(
                buffered = self.buffered,
                "gRPC client holds too many request bytes: closing"
            );
            self.h2.abort(
                Reason::EnhanceYourCalm,
                "request bytes buffered past the limit",
                out,
            );
            return Err(ConnError {
                reason: Reason::EnhanceYourCalm,
                message: format!(
                    "{} request bytes buffered (limit {CONN_BUFFERED_LIMIT})",
                    self.buffered
                ),
            });
        }
        // WINDOW_UPDATEs may have drained queued output.
        self.pay_owed();
        result
    }

    /// Gives native send credit back to handlers whose queued output went
    /// under the limit.
    fn pay_owed(&mut self) {
        if self.owing.is_empty() {
            return;
        }
        let mut owing = std::mem::take(&mut self.owing);
        owing.retain(|&stream| {
            let Some(c) = self.calls.get_mut(&stream) else {
                return false; // ended
            };
            if self.h2.queued(stream) > QUEUED_LIMIT {
                return true; // still waiting for the client's window
            }
            let (seq, owed) = (c.seq, std::mem::take(&mut c.owed));
            if let Some(shared) = self.streams.lock().get(&seq) {
                let _ = shared.grant(u32::try_from(owed).unwrap_or(u32::MAX));
            }
            false
        });
        self.owing = owing;
    }

    /// Hands held request messages to the native stream within its credit,
    /// giving their HTTP/2 credit back; then the half-close, once all went.
    fn deliver_held(&mut self, stream: u32, out: &mut LinkBuffer) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        let Some(shared) = self.streams.lock().get(&call.seq).cloned() else {
            return;
        };
        while call.credit > 0 {
            let Some(msg) = call.held.pop_front() else {
                break;
            };
            call.credit -= cost(msg.len());
            call.held_bytes -= msg.len();
            if shared.deliver(msg).is_err() {
                break;
            }
        }
        if !call.held.is_empty() {
            return; // the client's credit stays held back
        }
        if call.half_closed {
            call.half_closed = false;
            let _ = shared.remote_end(Status::new(Code::Ok, ""));
        }
        // Nothing waits: what was received (a partial message too, within
        // the message limit) is credited back.
        let released = std::mem::take(&mut call.withheld);
        if released > 0 {
            self.h2.release(stream, released, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_event(
        &mut self,
        event: Event,
        engine: &ServerEngine,
        conn: &ServerConn,
        out: &mut LinkBuffer,
        native: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        now: Instant,
    ) {
        match event {
            Event::Request {
                stream,
                fields,
                end_stream,
            } => {
                match self.open_call(engine, &fields) {
                    Ok(call) => {
                        let streaming = call.streaming;
                        self.calls.insert(stream, call);
                        if streaming {
                            self.start(
                                stream,
                                engine,
                                conn,
                                LinkBuffer::new(),
                                native,
                                deferred,
                                now,
                            );
                            // Response HEADERS at once, as tonic's and
                            // grpc-java's servers do: a client may wait
                            // for them before it sends its first message.
                            self.ensure_headers(stream, &[], out);
                        }
                    }
                    Err(Refusal::Http(status)) => {
                        let status = status.to_string();
                        self.h2
                            .send_headers(stream, &[(b":status", status.as_bytes())], true, out);
                        return;
                    }
                    Err(Refusal::Grpc(status)) => {
                        self.trailers_only(stream, &status, out);
                        return;
                    }
                }
                if end_stream {
                    self.end_of_requests(stream, engine, conn, out, native, deferred, now);
                }
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let n = data.len();
                let max = engine.limits().max_body_len as usize;
                let Some(call) = self.calls.get_mut(&stream) else {
                    return;
                };
                if call.streaming {
                    call.withheld += n;
                    call.pending.append(data);
                    call.pending.flush();
                    loop {
                        match next_message(&mut call.pending, max, call.gzip) {
                            Ok(None) => break,
                            Ok(Some(msg)) => {
                                call.held_bytes += msg.len();
                                call.held.push_back(msg);
                            }
                            Err(status) => {
                                self.fail_stream(stream, &status, out);
                                return;
                            }
                        }
                    }
                    if end_stream {
                        if !call.pending.is_empty() {
                            self.fail_stream(
                                stream,
                                &Status::internal("the request ended inside a message"),
                                out,
                            );
                            return;
                        }
                        call.half_closed = true;
                    }
                    self.deliver_held(stream, out);
                    return;
                }
                if call.started {
                    // A unary call's request is complete: more DATA breaks
                    // the protocol (reset with the status below).
                    if n > 0 {
                        self.end_with(
                            stream,
                            &Status::internal("more than one request message for a unary method"),
                            out,
                        );
                    }
                    return;
                }
                call.pending.append(data);
                call.pending.flush();
                self.h2.release(stream, n, out);
                loop {
                    let Some(call) = self.calls.get_mut(&stream) else {
                        return;
                    };
                    match next_message(&mut call.pending, max, call.gzip) {
                        Ok(None) => break,
                        Ok(Some(msg)) => {
                            if call.request.is_some() {
                                self.end_with(
                                    stream,
                                    &Status::internal(
                                        "more than one request message for a unary method",
                                    ),
                                    out,
                                );
                                return;
                            }
                            call.request = Some(msg);
                        }
                        Err(status) => {
                            self.end_with(stream, &status, out);
                            return;
                        }
                    }
                }
                if end_stream {
                    self.end_of_requests(stream, engine, conn, out, native, deferred, now);
                }
            }
            Event::EndStream { stream } => {
                if let Some(call) = self.calls.get_mut(&stream)
                    && call.streaming
                {
                    call.half_closed = true;
                    self.deliver_held(stream, out);
                    return;
                }
                self.end_of_requests(stream, engine, conn, out, native, deferred, now);
            }
            Event::Reset { stream, reason } => {
                tracing::debug!(stream, ?reason, "gRPC stream reset");
                if let Some(call) = self.forget(stream) {
                    self.by_seq.remove(&call.seq);
                    if call.streaming {
                        if let Some(shared) = self.native(call.seq) {
                            shared.abort(Status::cancelled("the client reset the stream"));
                        }
                    } else if call.started {
                        // The engine drops a waiting async handler on CANCEL.
                        let frame = Frame {
                            header: Header {
                                seq: call.seq,
                                kind: MessageType::Cancel as i32,
                                ..Header::default()
                            },
                            payload: LinkBuffer::new(),
                        };
                        let _ = engine.stream_frame(conn, MessageType::Cancel, frame);
                    }
                }
            }
            Event::HeadersTooLarge { stream } => {
                self.trailers_only(
                    stream,
                    &Status::resource_exhausted("request headers over the header list limit"),
                    out,
                );
            }
        }
    }

    /// The client half-closed `stream`: a complete unary request starts.
    #[allow(clippy::too_many_arguments)]
    fn end_of_requests(
        &mut self,
        stream: u32,
        engine: &ServerEngine,
        conn: &ServerConn,
        out: &mut LinkBuffer,
        native: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        if call.started {
            return;
        }
        if !call.pending.is_empty() {
            self.end_with(
                stream,
                &Status::internal("the request ended inside a message"),
                out,
            );
            return;
        }
        let Some(payload) = call.request.take() else {
            self.end_with(
                stream,
                &Status::internal("a unary call without a request message"),
                out,
            );
            return;
        };
        self.start(stream, engine, conn, payload, native, deferred, now);
    }

    /// Hands the call on `stream` to the engine as a native REQUEST (a
    /// unary one with its `payload`, or one opening a stream).
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        stream: u32,
        engine: &ServerEngine,
        conn: &ServerConn,
        payload: LinkBuffer,
        native: &mut LinkBuffer,
        deferred: &mut Vec<DeferredCall>,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        call.started = true;
        let seq = call.seq;
        self.by_seq.insert(seq, stream);
        let frame = Frame {
            header: Header {
                seq,
                kind: MessageType::Request as i32,
                service: call.service.clone(),
                method: call.method.clone(),
                timeout_us: call.timeout_us,
                metadata: std::mem::take(&mut call.metadata),
                stream: call.streaming,
                ..Header::default()
            },
            payload,
        };
        let mut progress = Progress::default();
        engine.call(conn, frame, native, deferred, now, &mut progress);
    }

    /// Parses a request's headers into a call, or refuses it.
    fn open_call(
        &mut self,
        engine: &ServerEngine,
        fields: &[(Bytes, Bytes)],
    ) -> Result<Call, Refusal> {
        let mut method_ok = false;
        let mut path = None;
        let mut content_type = None;
        let mut timeout_us = 0;
        let mut gzip = false;
        let mut metadata = Vec::new();
        for (name, value) in fields {
            match &name[..] {
                b":method" => method_ok = &value[..] == b"POST",
                b":path" => path = Some(value.clone()),
                b":scheme" | b":authority" | b"te" => {}
                b"content-type" => content_type = Some(value.clone()),
                b"grpc-timeout" => {
                    timeout_us = parse_timeout(value).ok_or_else(|| {
                        Refusal::Grpc(Status::internal(format!(
                            "bad grpc-timeout {:?}",
                            String::from_utf8_lossy(value)
                        )))
                    })?;
                }
                b"grpc-encoding" => {
                    if &value[..] == b"gzip" {
                        gzip = true;
                    } else if &value[..] != b"identity" {
                        return Err(Refusal::Grpc(Status::unimplemented(format!(
                            "grpc-encoding {} is not supported (accepted: identity, gzip)",
                            String::from_utf8_lossy(value)
                        ))));
                    }
                }
                n if n.starts_with(b":") || n.starts_with(b"grpc-") => {}
                _ => {
                    if let (Ok(key), Ok(value)) =
                        (std::str::from_utf8(name), std::str::from_utf8(value))
                    {
                        metadata.push(MetadataEntry {
                            key: key.to_owned(),
                            value: value.to_owned(),
                        });
                    }
                }
            }
        }
        if !method_ok {
            return Err(Refusal::Http(405));
        }
        let ct_ok = content_type.as_deref().is_some_and(|ct| {
            ct == b"application/grpc"
                || ct.starts_with(b"application/grpc+")
                || ct.starts_with(b"application/grpc;")
        });
        if !ct_ok {
            return Err(Refusal::Http(415));
        }
        let Some(path) = path else {
            return Err(Refusal::Grpc(Status::unimplemented("no :path")));
        };
        let (service, method) = split_path(&path).ok_or_else(|| {
            Refusal::Grpc(Status::unimplemented(format!(
                "malformed :path {:?}",
                String::from_utf8_lossy(&path)
            )))
        })?;
        if metadata.len() > engine.limits().max_metadata_entries {
            return Err(Refusal::Grpc(Status::resource_exhausted(format!(
                "{} metadata entries (limit {})",
                metadata.len(),
                engine.limits().max_metadata_entries
            ))));
        }
        let kind = engine
            .method_kind(&service, &method)
            .map_err(Refusal::Grpc)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(Call {
            seq,
            service,
            method,
            timeout_us,
            metadata,
            pending: LinkBuffer::new(),
            request: None,
            started: false,
            streaming: kind != MethodKind::Unary,
            held: VecDeque::new(),
            credit: i64::from(INITIAL_WINDOW),
            withheld: 0,
            half_closed: false,
            headers_sent: false,
            gzip,
            owed: 0,
            held_bytes: 0,
            buffered: 0,
        })
    }

    /// Ends a streaming call's `stream` with `status`: its handler is
    /// cancelled; the client gets the status in trailers.
    fn fail_stream(&mut self, stream: u32, status: &Status, out: &mut LinkBuffer) {
        if let Some(call) = self.calls.get(&stream)
            && let Some(shared) = self.native(call.seq)
        {
            shared.abort(status.clone());
        }
        self.end_with(stream, status, out);
    }

    /// The final status of `stream`, whose call is forgotten: trailers after
    /// the messages, or a Trailers-Only response if no HEADERS went yet.
    fn end_with(&mut self, stream: u32, status: &Status, out: &mut LinkBuffer) {
        let Some(call) = self.forget(stream) else {
            self.trailers_only(stream, status, out);
            return;
        };
        self.by_seq.remove(&call.seq);
        if !call.headers_sent {
            self.trailers_only(stream, status, out);
            return;
        }
        self.h2.send_trailers(stream, status_fields(status), out);
    }

    /// Sends the response HEADERS of `stream` if not sent yet.
    fn ensure_headers(&mut self, stream: u32, metadata: &[MetadataEntry], out: &mut LinkBuffer) {
        let Some(call) = self.calls.get_mut(&stream) else {
            return;
        };
        if call.headers_sent {
            return;
        }
        call.headers_sent = true;
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-accept-encoding", b"identity,gzip"),
        ];
        push_metadata(&mut fields, metadata);
        self.h2.send_headers(stream, &fields, false, out);
    }

    /// A Trailers-Only response ending `stream` (one that holds no call).
    fn trailers_only(&mut self, stream: u32, status: &Status, out: &mut LinkBuffer) {
        let status = status_fields(status);
        let mut fields: Vec<(&[u8], &[u8])> =
            vec![(b":status", b"200"), (b"content-type", b"application/grpc")];
        fields.extend(status.iter().map(|(k, v)| (&k[..], &v[..])));
        self.h2.send_headers(stream, &fields, true, out);
    }

    /// Turns the engine's native answers in `native` into gRPC responses
    /// written to `out`.
    pub(crate) fn answer(
        &mut self,
        limits: &Limits,
        native: &mut LinkBuffer,
        out: &mut LinkBuffer,
    ) {
        native.flush();
        loop {
            let frame = match codec::decode(native, limits) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    // Our own encoding: cannot happen; drop the rest.
                    tracing::error!("gRPC: undecodable native answer: {e}");
                    let n = native.len();
                    let _ = native.skip(n);
                    break;
                }
            };
            let Some(&stream) = self.by_seq.get(&frame.header.seq) else {
                continue; // ended or cancelled meanwhile
            };
            if !self.h2.can_send(stream) {
                continue;
            }
            match frame.message_type() {
                Some(MessageType::Response) => self.on_final(stream, frame, out),
                Some(MessageType::Message) => {
                    self.ensure_headers(stream, &[], out);
                    let c = cost(frame.payload.len());
                    self.h2.send_message(stream, frame.payload, out);
                    if let Some(call) = self.calls.get_mut(&stream) {
                        if call.owed == 0 {
                            self.owing.push(stream);
                        }
                        call.owed += c;
                    }
                }
                Some(MessageType::Window) => {
                    if let Some(call) = self.calls.get_mut(&stream) {
                        call.credit += i64::from(frame.header.window);
                    }
                    self.deliver_held(stream, out);
                }
                _ => {}
            }
        }
        self.pay_owed();
    }

    /// A call's final native answer: a unary response, or a stream's status.
    fn on_final(&mut self, stream: u32, frame: Frame, out: &mut LinkBuffer) {
        let Frame { header, payload } = frame;
        let streaming = self.calls.get(&stream).is_some_and(|c| c.streaming);
        if header.status_code != 0 || streaming {
            let status = header.status();
            self.end_with(stream, &status, out);
            return;
        }
        self.ensure_headers(stream, &header.metadata, out);
        if let Some(call) = self.forget(stream) {
            self.by_seq.remove(&call.seq);
        }
        self.h2.send_message(stream, payload, out);
        self.h2.send_trailer(stream, b"grpc-status", b"0", out);
    }
}

enum Refusal {
    /// An HTTP status: not a gRPC request at all.
    Http(u16),
    Grpc(Status),
}

/// Cuts the next length-prefixed message off `buf`, if whole.
fn next_message(
    buf: &mut LinkBuffer,
    max: usize,
    gzip: bool,
) -> Result<Option<LinkBuffer>, Status> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let head = buf.peek(5).map_err(|_| Status::internal("input"))?;
    let compressed = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if compressed > 1 {
        return Err(Status::internal(format!(
            "bad compressed flag {compressed}"
        )));
    }
    if compressed == 1 && !gzip {
        return Err(Status::internal(
            "a compressed message without a grpc-encoding",
        ));
    }
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "a request message of {len} bytes (limit {max})"
        )));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let _ = buf.skip(5);
    let msg = buf.slice(len).map_err(|_| Status::internal("input"))?;
    if compressed == 0 {
        return Ok(Some(msg));
    }
    gunzip(msg, max).map(Some)
}

/// Inflates a gzip message, refusing one that inflates past `max` bytes.
fn gunzip(mut msg: LinkBuffer, max: usize) -> Result<LinkBuffer, Status> {
    use std::io::Read;
    let n = msg.len();
    let bytes = msg.next(n).map_err(|_| Status::internal("input"))?;
    let mut out = Vec::new();
    let mut inflate = flate2::read::GzDecoder::new(bytes).take(max as u64 + 1);
    inflate
        .read_to_end(&mut out)
        .map_err(|e| Status::internal(format!("a gzip message that does not inflate: {e}")))?;
    if out.len() > max {
        return Err(Status::resource_exhausted(format!(
            "a request message inflating past {max} bytes"
        )));
    }
    let mut buf = LinkBuffer::new();
    buf.write_bytes(bytes::Bytes::from(out));
    buf.flush();
    Ok(buf)
}

/// `/package.Service/Method` into its two names.
fn split_path(path: &Bytes) -> Option<(Bytes, Bytes)> {
    let rest = path.strip_prefix(b"/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    if slash == 0 || slash + 1 == rest.len() {
        return None;
    }
    Some((path.slice(1..1 + slash), path.slice(2 + slash..)))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), in µs.
fn parse_timeout(v: &[u8]) -> Option<u64> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let d = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    // 0 means "no deadline" natively: a zero timeout is already past.
    Some(codec::timeout_to_micros(d).max(1))
}

/// The fields that carry `status`: `grpc-status`, the percent-encoded
/// `grpc-message` (if any), and its sendable metadata.
fn status_fields(status: &Status) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = vec![(
        b"grpc-status".to_vec(),
        status.code().as_u32().to_string().into_bytes(),
    )];
    if !status.message().is_empty() {
        fields.push((
            b"grpc-message".to_vec(),
            percent_encode(status.message()).into_bytes(),
        ));
    }
    let mut metadata = Vec::new();
    push_metadata(&mut metadata, status.metadata().entries());
    fields.extend(metadata.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
    fields
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends the metadata entries that are valid HTTP/2 fields (lower-case
/// token names, not reserved; visible-ASCII values).
fn push_metadata<'a>(fields: &mut Vec<(&'a [u8], &'a [u8])>, entries: &'a [MetadataEntry]) {
    for e in entries {
        let key = e.key.as_bytes();
        let key_ok = !key.is_empty()
            && !key.starts_with(b"grpc-")
            && key
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        let value_ok = e
            .value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) || b == b'\t');
        if key_ok && value_ok && key != b"content-type" && key != b"te" {
            fields.push((key, e.value.as_bytes()));
        } else {
            tracing::debug!(key = %e.key, "metadata entry not sendable as an HTTP/2 field: dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_garbage() {
        assert_eq!(parse_timeout(b"1H"), Some(3_600_000_000));
        assert_eq!(parse_timeout(b"2M"), Some(120_000_000));
        assert_eq!(parse_timeout(b"3S"), Some(3_000_000));
        assert_eq!(parse_timeout(b"250m"), Some(250_000));
        assert_eq!(parse_timeout(b"7u"), Some(7));
        assert_eq!(parse_timeout(b"5000n"), Some(5));
        assert_eq!(parse_timeout(b"0m"), Some(1));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_split_into_service_and_method() {
        let p = Bytes::from_static(b"/echo.Echo/Echo");
        let (s, m) = split_path(&p).unwrap();
        assert_eq!((&s[..], &m[..]), (&b"echo.Echo"[..], &b"Echo"[..]));
        for bad in [
            &b"echo.Echo/Echo"[..],
            b"/echo.Echo",
            b"//Echo",
            b"/echo.Echo/",
        ] {
            assert!(split_path(&Bytes::from_static(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn status_messages_are_percent_encoded() {
        assert_eq!(percent_encode("plain text"), "plain text");
        assert_eq!(percent_encode("100%\n"), "100%25%0A");
        assert_eq!(percent_encode("\t\u{00e9}"), "%09%C3%A9");
    }
}

/// The gRPC server stack in memory, for the `h2` fuzz target and its
/// corpus replay: whatever the bytes after the client preface, no panic,
/// no hang, output that is whole HTTP/2 frames.
pub(crate) mod fuzz {
    use std::sync::{Arc, OnceLock};
    use std::time::Instant;

    use ferropoll_linkbuffer::LinkBuffer;
    use parking_lot::Mutex;

    use super::GrpcConn;
    use crate::context::{Context, PeerAddr};
    use crate::h2::frame::{HEAD_LEN, Head, PREFACE};
    use crate::server::{ServerConn, ServerEngine};
    use crate::service::{Reply, Service};
    use crate::stream::{MethodKind, Outbox};

    /// `fuzz.Echo`: `Echo` answers its request's bytes (or fails on an
    /// empty one), `Stream` is a bidi method (its calls are opened, then
    /// dropped with their pool work).
    struct Echo;

    impl Service for Echo {
        fn name(&self) -> &'static str {
            "fuzz.Echo"
        }
        fn methods(&self) -> &'static [&'static str] {
            &["Echo", "Stream"]
        }
        fn kind(&self, method: usize) -> MethodKind {
            if method == 1 {
                MethodKind::Bidi
            } else {
                MethodKind::Unary
            }
        }
        fn call(&self, _: usize, ctx: &Context, request: LinkBuffer, reply: Reply<'_>) {
            reply.unary(ctx, request, |_, b: bytes::Bytes| {
                if b.is_empty() {
                    Err(crate::Status::invalid_argument("empty"))
                } else {
                    Ok(b)
                }
            })
        }
    }

    #[derive(Default)]
    struct Collect(Mutex<LinkBuffer>);

    impl Outbox for Collect {
        fn send(&self, frames: LinkBuffer) {
            self.0.lock().append(frames);
        }
    }

    fn engine() -> &'static ServerEngine {
        static ENGINE: OnceLock<ServerEngine> = OnceLock::new();
        ENGINE.get_or_init(|| {
            let mut e = ServerEngine::new();
            let _ = e.register(Echo);
            e
        })
    }

    /// Runs `data` (split in two reads where its first byte says) through a
    /// fresh connection after the preface and an empty SETTINGS.
    pub(crate) fn run(data: &[u8]) {
        let engine = engine();
        let outbox = Arc::new(Collect::default());
        let conn = ServerConn::with_outbox(PeerAddr::unknown(), outbox.clone());
        let mut out = LinkBuffer::new();
        let mut g = GrpcConn::new(conn.streams(), &mut out);
        let (split, rest) = match data.split_first() {
            Some((&s, rest)) => ((s as usize * rest.len()) / 256, rest),
            None => (0, data),
        };
        let mut input = LinkBuffer::new();
        input.write_binary(PREFACE);
        input.write_binary(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut native = LinkBuffer::new();
        let mut deferred = Vec::new();
        for part in [&rest[..split], &rest[split..]] {
            input.write_binary(part);
            input.flush();
            let now = Instant::now();
            let r = g.recv(
                engine,
                &conn,
                &mut input,
                &mut out,
                &mut native,
                &mut deferred,
                now,
            );
            deferred.clear();
            let staged = std::mem::take(&mut *outbox.0.lock());
            native.append(staged);
            g.answer(engine.limits(), &mut native, &mut out);
            if r.is_err() {
                break;
            }
        }
        // What went out is whole frames.
        out.flush();
        while out.len() >= HEAD_LEN {
            let head = Head::parse(out.peek(HEAD_LEN).unwrap());
            let total = HEAD_LEN + head.len as usize;
            assert!(out.len() >= total, "a partial frame in the output");
            out.skip(total).unwrap();
        }
        assert!(out.is_empty(), "stray bytes in the output");
        crate::stream::abort_all(&conn.streams(), &crate::Status::cancelled("done"));
    }
}
