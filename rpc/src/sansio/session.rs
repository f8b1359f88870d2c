//! The client side of one connection, sans-IO.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferropoll_linkbuffer::LinkBuffer;
use prost::Message;

use crate::call::{CallFuture, CallTable, Payload};
use crate::client::{CallOptions, ClientOptions};
use crate::codec::{self, EncodeBody, Limits, MessageType, ProtocolError, RequestHead};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::{self, Outbox, Side, StreamMap, StreamShared};

/// The client side of one connection, sans-IO: starts calls by encoding
/// their requests into a buffer, completes them from the bytes read back.
///
/// The glue owns the connection: it writes what
/// [`start_call`](ClientSession::start_call) encoded, feeds what it reads to
/// [`handle_input`](ClientSession::handle_input), calls
/// [`expire`](ClientSession::expire) from a timer while
/// [`next_deadline`](ClientSession::next_deadline) is `Some`, and calls
/// [`close`](ClientSession::close) when the connection is lost. Every method
/// takes `&self`: callers on any thread start calls while the loop thread
/// completes them.
///
/// ```
/// use std::time::Instant;
/// use ferropoll_rpc::{CallOptions, ClientOptions, LinkBuffer, PeerAddr, ServerEngine};
/// use ferropoll_rpc::sansio::{ClientSession, ServerConn};
///
/// let session = ClientSession::new(&ClientOptions::default());
/// let mut wire = LinkBuffer::new();
/// let call = session.start_call::<(), ()>(&mut wire, "nope.Nope", "Call", &(), &CallOptions::DEFAULT);
/// wire.flush();
///
/// // the "server" side of the wire
/// let (engine, conn) = (ServerEngine::new(), ServerConn::new(PeerAddr::unknown()));
/// let mut back = LinkBuffer::new();
/// engine.process(&conn, &mut wire, &mut back, &mut Vec::new(), Instant::now()).unwrap();
/// back.flush();
///
/// assert_eq!(session.handle_input(&mut back).unwrap(), 1);
/// assert_eq!(call.wait().unwrap_err().code(), ferropoll_rpc::Code::Unimplemented);
/// ```
#[derive(Debug)]
pub struct ClientSession {
    table: Arc<CallTable>,
    streams: Arc<StreamMap>,
    limits: Limits,
    default_timeout: Option<Duration>,
}

impl ClientSession {
    /// A session with `options`' limits and default timeout.
    pub fn new(options: &ClientOptions) -> ClientSession {
        ClientSession {
            table: Arc::new(CallTable::new(options.limits.max_in_flight)),
            streams: Arc::default(),
            limits: options.limits,
            default_timeout: options.default_timeout,
        }
    }

    /// The call table.
    pub fn table(&self) -> &Arc<CallTable> {
        &self.table
    }

    /// Registers a call and encodes its request into `out` (unflushed). On
    /// failure (too many calls in flight, a request over the frame limit, a
    /// closed session) nothing is written and the returned future is
    /// already failed.
    pub fn start_call<Req: EncodeBody + ?Sized, Resp: Message + Default>(
        &self,
        out: &mut LinkBuffer,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> CallFuture<Resp> {
        let timeout = options.timeout.or(self.default_timeout);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let call = match self.table.start::<Resp>(deadline) {
            Ok(call) => call,
            Err(status) => return CallFuture::failed(status),
        };
        let head = RequestHead {
            seq: call.seq(),
            service,
            method,
            timeout,
            metadata: &options.metadata,
            oneway: false,
        };
        match codec::encode_request(out, &self.limits, &head, req) {
            Ok(_) => call,
            Err(e) => {
                call.discard(); // removes the table entry; nothing was sent
                CallFuture::failed(request_error(e))
            }
        }
    }

    /// Opens a streaming call: encodes its opening REQUEST into `out`
    /// (unflushed) — followed, for a server-streaming call, by its one
    /// request `first` and the half-close — and registers the stream. Its
    /// later frames (messages, window updates, the half-close, a cancel)
    /// go through `outbox`.
    ///
    /// # Errors
    ///
    /// The session is closed; [`Limits::max_streams`] streams are open
    /// (RESOURCE_EXHAUSTED); the request breaks the limits. Nothing is
    /// written then.
    pub(crate) fn start_stream<Req: EncodeBody + ?Sized>(
        &self,
        out: &mut LinkBuffer,
        outbox: Arc<dyn Outbox>,
        service: &str,
        method: &str,
        first: Option<&Req>,
        options: &CallOptions,
    ) -> Result<Arc<StreamShared>, Status> {
        let open = self.streams.lock().len();
        if open >= self.limits.max_streams {
            return Err(Status::resource_exhausted(format!(
                "{open} streams open on this connection (limit {})",
                self.limits.max_streams
            )));
        }
        let seq = self.table.allocate_seq()?;
        let timeout = options.timeout.or(self.default_timeout);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let head = RequestHead {
            seq,
            service,
            method,
            timeout,
            metadata: &options.metadata,
            oneway: false,
        };
        let mut frames = LinkBuffer::new();
        codec::encode_stream_open(&mut frames, &self.limits, &head).map_err(request_error)?;
        if let Some(req) = first {
            codec::encode_message(&mut frames, &self.limits, seq, req).map_err(request_error)?;
            codec::encode_half_close(&mut frames, seq);
        }
        let shared = StreamShared::new(
            seq,
            Side::Client,
            deadline,
            self.limits,
            outbox,
            &self.streams,
            &mut frames,
        );
        if let Some(req) = first {
            shared.sent_ahead(req.body_len());
        }
        out.append(frames);
        Ok(shared)
    }

    /// Streaming calls open.
    pub fn open_streams(&self) -> usize {
        self.streams.lock().len()
    }

    /// Encodes a ONEWAY request into `out` (unflushed); no answer will come.
    ///
    /// # Errors
    ///
    /// The session is closed, or the request breaks the limits.
    pub fn send_oneway<Req: EncodeBody + ?Sized>(
        &self,
        out: &mut LinkBuffer,
        service: &str,
        method: &str,
        req: &Req,
        options: &CallOptions,
    ) -> Result<(), Status> {
        let seq = self.table.allocate_seq()?;
        let head = RequestHead {
            seq,
            service,
            method,
            timeout: options.timeout.or(self.default_timeout),
            metadata: &options.metadata,
            oneway: true,
        };
        codec::encode_request(out, &self.limits, &head, req)
            .map(drop)
            .map_err(request_error)
    }

    /// Encodes a PING into `out` (unflushed); the future resolves when the
    /// PONG arrives (or with DEADLINE_EXCEEDED after `timeout`).
    pub fn start_ping(&self, out: &mut LinkBuffer, timeout: Option<Duration>) -> CallFuture<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.table.start::<()>(deadline) {
            Ok(call) => {
                codec::encode_ping(out, call.seq());
                call
            }
            Err(status) => CallFuture::failed(status),
        }
    }

    /// Decodes every whole frame of `input` and completes the calls they
    /// answer; returns the number of frames. Responses to calls no longer
    /// pending (timed out, cancelled) are dropped.
    ///
    /// # Errors
    ///
    /// A protocol violation, or an ERROR frame from the server: every
    /// pending call has been failed with UNAVAILABLE and the glue must close
    /// the connection.
    pub fn handle_input(&self, input: &mut LinkBuffer) -> Result<usize, ProtocolError> {
        let mut frames = 0;
        loop {
            let frame = match codec::decode(input, &self.limits) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(frames),
                Err(e) => {
                    self.close(Status::unavailable(format!("connection closed: {e}")));
                    return Err(e);
                }
            };
            frames += 1;
            let kind = frame.message_type();
            let (header, payload) = (frame.header, frame.payload);
            match kind {
                Some(kind @ (MessageType::Message | MessageType::Window)) => {
                    let stream = self.streams.lock().get(&header.seq).cloned();
                    let Some(stream) = stream else {
                        tracing::debug!(
                            seq = header.seq,
                            ?kind,
                            "skipping a frame of a stream not open"
                        );
                        continue;
                    };
                    let result = if kind == MessageType::Message {
                        stream.deliver(payload)
                    } else {
                        stream.grant(header.window)
                    };
                    if let Err(e) = result {
                        self.close(Status::unavailable(format!("connection closed: {e}")));
                        return Err(e);
                    }
                }
                Some(MessageType::Response) => {
                    let stream = self.streams.lock().get(&header.seq).cloned();
                    if let Some(stream) = stream {
                        let status = Status::from_parts(
                            Code::from_u32(header.status_code),
                            header.status_message,
                            Metadata::from_entries(header.metadata),
                        );
                        if let Err(e) = stream.remote_end(status) {
                            self.close(Status::unavailable(format!("connection closed: {e}")));
                            return Err(e);
                        }
                        continue;
                    }
                    let metadata = Metadata::from_entries(header.metadata);
                    let outcome = if header.status_code == Code::Ok.as_u32() {
                        Ok(Payload {
                            body: payload,
                            metadata,
                        })
                    } else {
                        Err(Status::from_parts(
                            Code::from_u32(header.status_code),
                            header.status_message,
                            metadata,
                        ))
                    };
                    self.table.complete_with(header.seq, outcome);
                }
                Some(MessageType::Pong) => {
                    self.table.complete(header.seq, Ok(payload));
                }
                Some(MessageType::Error) => {
                    let status = header.status();
                    self.close(Status::unavailable(format!(
                        "the server closed the connection: {status}"
                    )));
                    return Err(ProtocolError::PeerError(status));
                }
                other => {
                    tracing::debug!(kind = ?other, seq = header.seq, "client skips a frame");
                }
            }
        }
    }

    /// Fails calls whose deadline passed with DEADLINE_EXCEEDED; see
    /// [`CallTable::expire`].
    /// Streams whose deadline passed end with DEADLINE_EXCEEDED (and a
    /// CANCEL to the server) too.
    pub fn expire(&self, now: Instant) -> usize {
        stream::expire_all(&self.streams, now);
        self.table.expire(now)
    }

    /// When [`expire`](ClientSession::expire) should next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        let streams = self
            .streams
            .lock()
            .values()
            .filter_map(|s| s.deadline())
            .min();
        match (self.table.next_deadline(), streams) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails every pending and later call with `status` (connection
    /// lost); open streams end with it.
    pub fn close(&self, status: Status) {
        self.table.close(status.clone());
        stream::abort_all(&self.streams, &status);
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.table.is_closed()
    }

    /// Calls awaiting their response.
    pub fn in_flight(&self) -> usize {
        self.table.len()
    }
}

fn request_error(e: ProtocolError) -> Status {
    match e {
        ProtocolError::FrameTooLarge { .. } | ProtocolError::HeaderTooLarge { .. } => {
            Status::resource_exhausted(format!("request not sent: {e}"))
        }
        _ => Status::invalid_argument(format!("request not sent: {e}")),
    }
}
