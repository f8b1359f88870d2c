//! Streaming calls (see "Streams" in `rpc/PROTOCOL.md`): the state one
//! stream shares between the connection's reader — which delivers its
//! messages, its flow-control credit and its end — and the handler or
//! caller that consumes and produces messages, on any thread.
//!
//! Flow control is a credit window in bytes per stream and direction: a
//! message costs its payload length plus [`MESSAGE_OVERHEAD`]; a sender
//! sends while its credit is positive (so a message larger than the window
//! still goes, alone), and the receiver grants credit back with WINDOW
//! frames as its application *consumes* messages. So the bytes a stream
//! buffers on the receiving side stay under the window plus one message,
//! however slow the consumer, and a fast writer waits in
//! [`SendSink::send`] instead of growing anyone's memory.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::{Condvar, Mutex, MutexGuard};
use prost::Message;

use crate::codec::{self, Limits, ProtocolError};
use crate::hash::SeqMap;
use crate::intercept::CallGuard;
use crate::status::{Code, Status};
use crate::task;

/// The credit each side of a new stream starts with, in bytes, in each
/// direction. A receiver with a larger window grants the difference at once.
pub const INITIAL_WINDOW: u32 = 64 * 1024;

/// What a message costs against the window beyond its payload bytes (so
/// that a flood of empty messages is bounded too).
pub const MESSAGE_OVERHEAD: u32 = 32;

/// Largest credit a sender may hold; a WINDOW frame beyond it is a
/// protocol violation.
const MAX_CREDIT: i64 = (1 << 31) - 1;

fn cost(payload_len: usize) -> i64 {
    i64::try_from(payload_len).unwrap_or(MAX_CREDIT) + i64::from(MESSAGE_OVERHEAD)
}

/// How a method exchanges messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    #[default]
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream each way.
    Bidi,
}

impl MethodKind {
    /// Whether the method is called as a stream on the wire.
    pub fn is_streaming(self) -> bool {
        self != MethodKind::Unary
    }
}

/// Where the frames of a connection's streams go, from whichever thread
/// produces them: the connection's writer on a server (see
/// [`ServerConn::with_outbox`](crate::sansio::ServerConn::with_outbox)), the
/// staging buffer of a client connection. [`Server`](crate::Server) and
/// [`Client`](crate::Client) bring their own; implement it to drive a
/// [`ServerEngine`](crate::ServerEngine) with streams over another
/// transport.
pub trait Outbox: Send + Sync {
    /// Appends whole frames to the connection's output and sends them.
    /// Frames from one stream arrive in order; the implementation must
    /// keep each call's frames together.
    fn send(&self, frames: LinkBuffer);

    /// Sends now what [`send`](Outbox::send) left staged because tasks
    /// woken with messages were about to run (see [`defers`](Outbox::defers)).
    /// Default: nothing (`send` sends at once).
    fn flush_staged(&self) {}

    /// The counter of tasks woken with a message (or a call's outcome) and
    /// not yet polled on this connection, if `send` leaves frames staged
    /// while it is not 0 (the client: calls started by tasks woken together
    /// share a write; the last task to take its message sends them). The
    /// default: none.
    fn defers(&self) -> Option<Arc<std::sync::atomic::AtomicUsize>> {
        None
    }

    /// For an outbox whose frames are collected per round of its
    /// connection's loop (a server connection, where async handlers run):
    /// the connection's id, unique among the live ones. Default `None`.
    fn batch_key(&self) -> Option<u64> {
        None
    }

    /// Runs `f` soon on the thread that polls this connection's async
    /// handlers (the connection's loop thread). Returns `false` if it
    /// cannot (the connection is gone; the default): the handlers waiting
    /// are then dropped.
    fn run_on_loop(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        drop(f);
        false
    }

    /// Runs `f` at `at` as [`run_on_loop`](Outbox::run_on_loop) would (an
    /// async streaming handler's deadline); returns what cancels it, or
    /// `None` if it cannot (the default).
    fn run_at(&self, at: Instant, f: Box<dyn FnOnce() + Send>) -> Option<Box<dyn FnOnce() + Send>> {
        let _ = at;
        drop(f);
        None
    }
}

/// Which end of the call this stream state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// The streams open on one connection, by sequence id.
pub(crate) type StreamMap = Mutex<SeqMap<Arc<StreamShared>>>;

struct State {
    inbox: VecDeque<LinkBuffer>,
    /// Cost of the messages in `inbox`, and its peak.
    buffered: i64,
    peak: i64,
    /// The peer's credit as this side sees it: initial + granted − received.
    peer_credit: i64,
    /// Consumed cost not granted back yet.
    consumed: i64,
    /// This side's credit to send.
    credit: i64,
    /// The peer ended its direction: a server's half-close (OK), or a
    /// client's final status.
    remote_end: Option<Status>,
    /// This side ended its direction (half-close or final status sent).
    local_end: bool,
    /// Over in both directions: cancelled, connection lost, deadline passed.
    aborted: Option<Status>,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
    /// Messages in `inbox` delivered to a waiting task, counted in the
    /// connection's `ready` until taken.
    counted: usize,
    /// A server's metadata for its final OK status.
    trailers: crate::metadata::Metadata,
}

/// One stream's shared state.
pub(crate) struct StreamShared {
    seq: u64,
    side: Side,
    deadline: Option<Instant>,
    limits: Limits,
    /// This side's receive window (≥ [`INITIAL_WINDOW`]).
    window: u32,
    out: Arc<dyn Outbox>,
    /// The map this stream is registered in, to leave it when it ends.
    map: Weak<StreamMap>,
    /// See [`Outbox::defers`].
    ready: Option<Arc<std::sync::atomic::AtomicUsize>>,
    state: Mutex<State>,
    cv: Condvar,
}

impl fmt::Debug for StreamShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("seq", &self.seq)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

/// A caller's two halves of the stream `shared`, typed (the types are
/// only the encoder's and the decoder's: a backend opens streams untyped).
pub(crate) fn caller_halves<Req: Message, Resp: Message + Default>(
    shared: Arc<StreamShared>,
) -> (SendSink<Req>, RecvStream<Resp>) {
    (SendSink::new(Arc::clone(&shared)), RecvStream::new(shared))
}

impl StreamShared {
    /// A stream `seq` registered in `map`; with a receive window
    /// ([`Limits::stream_window`]) over the initial one, the difference is
    /// granted to the peer at once (a WINDOW frame into `first`, which the
    /// caller sends with the stream's opening).
    pub(crate) fn new(
        seq: u64,
        side: Side,
        deadline: Option<Instant>,
        limits: Limits,
        out: Arc<dyn Outbox>,
        map: &Arc<StreamMap>,
        first: &mut LinkBuffer,
    ) -> Arc<StreamShared> {
        let window = limits.stream_window.max(INITIAL_WINDOW);
        if window > INITIAL_WINDOW {
            codec::encode_window(first, seq, window - INITIAL_WINDOW);
        }
        let shared = Arc::new(StreamShared {
            seq,
            side,
            deadline,
            limits,
            window,
            ready: out.defers(),
            out,
            map: Arc::downgrade(map),
            state: Mutex::new(State {
                inbox: VecDeque::new(),
                buffered: 0,
                peak: 0,
                peer_credit: i64::from(window),
                consumed: 0,
                credit: i64::from(INITIAL_WINDOW),
                remote_end: None,
                local_end: false,
                aborted: None,
                recv_waker: None,
                send_waker: None,
                counted: 0,
                trailers: crate::metadata::Metadata::new(),
            }),
            cv: Condvar::new(),
        });
        map.lock().insert(seq, Arc::clone(&shared));
        shared
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn leave_map(&self) {
        if let Some(map) = self.map.upgrade() {
            let mut map = map.lock();
            if map.get(&self.seq).is_some_and(|s| std::ptr::eq(&**s, self)) {
                map.remove(&self.seq);
            }
        }
    }

    /// Gives back `n` counted messages; the last one out sends what was
    /// left staged.
    fn uncount(&self, n: usize) {
        if n > 0
            && let Some(ready) = &self.ready
            && ready.fetch_sub(n, std::sync::atomic::Ordering::SeqCst) == n
        {
            self.out.flush_staged();
        }
    }

    fn wake(&self, mut state: MutexGuard<'_, State>) {
        let wakers = (state.recv_waker.take(), state.send_waker.take());
        drop(state);
        self.cv.notify_all();
        if let Some(w) = wakers.0 {
            w.wake();
        }
        if let Some(w) = wakers.1 {
            w.wake();
        }
    }

    // ---- called by the connection's reader ----

    /// A MESSAGE arrived.
    ///
    /// # Errors
    ///
    /// The peer sent beyond its credit, or after its end: a connection error.
    pub(crate) fn deliver(&self, payload: LinkBuffer) -> Result<(), ProtocolError> {
        let mut state = self.state.lock();
        if state.aborted.is_some() {
            return Ok(()); // cancelled here; the peer has not heard yet
        }
        if state.remote_end.is_some() {
            return Err(ProtocolError::StreamState {
                seq: self.seq,
                what: "a message after the end of the stream",
            });
        }
        if state.peer_credit <= 0 {
            return Err(ProtocolError::FlowControl { seq: self.seq });
        }
        let c = cost(payload.len());
        state.peer_credit -= c;
        state.buffered += c;
        state.peak = state.peak.max(state.buffered);
        state.inbox.push_back(payload);
        if state.recv_waker.is_some()
            && let Some(ready) = &self.ready
        {
            // A task waits for this message: what it sends next waits for
            // the other tasks woken with it (see `Outbox::defers`).
            ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            state.counted += 1;
        }
        self.wake(state);
        Ok(())
    }

    /// A WINDOW frame granted `bytes` of credit.
    ///
    /// # Errors
    ///
    /// The credit would pass 2³¹ − 1: a connection error.
    pub(crate) fn grant(&self, bytes: u32) -> Result<(), ProtocolError> {
        let mut state = self.state.lock();
        state.credit += i64::from(bytes);
        if state.credit > MAX_CREDIT {
            return Err(ProtocolError::WindowOverflow { seq: self.seq });
        }
        self.wake(state);
        Ok(())
    }

    /// The peer ended its direction: the client's half-close (server side),
    /// the server's final status (client side; the stream leaves its map).
    ///
    /// # Errors
    ///
    /// A second end: a connection error.
    pub(crate) fn remote_end(&self, status: Status) -> Result<(), ProtocolError> {
        let mut state = self.state.lock();
        if state.remote_end.is_some() {
            return Err(ProtocolError::StreamState {
                seq: self.seq,
                what: "a second end of the stream",
            });
        }
        state.remote_end = Some(status);
        if self.side == Side::Client {
            state.local_end = true;
            drop(state);
            self.leave_map();
            state = self.state.lock();
        }
        self.wake(state);
        Ok(())
    }

    /// Ends the stream in both directions with `status` (cancelled by the
    /// peer, connection lost, deadline passed); waiting sides wake with it.
    pub(crate) fn abort(&self, status: Status) {
        let mut state = self.state.lock();
        if state.aborted.is_none() && !(state.local_end && state.remote_end.is_some()) {
            state.aborted = Some(status);
            state.inbox.clear();
            state.buffered = 0;
            let counted = std::mem::take(&mut state.counted);
            self.uncount(counted);
        }
        self.wake(state);
        self.leave_map();
    }

    /// This side gives up (the caller dropped its stream, or its deadline
    /// passed): aborts, and a client tells the server with a CANCEL.
    fn cancel_local(&self, status: Status) {
        let over = {
            let state = self.state.lock();
            state.aborted.is_some() || (state.local_end && state.remote_end.is_some())
        };
        if over {
            return;
        }
        self.abort(status);
        if self.side == Side::Client {
            let mut frame = LinkBuffer::new();
            codec::encode_cancel(&mut frame, self.seq);
            self.out.send(frame);
        }
    }

    /// A server-streaming call's request went out with the opening: take
    /// its cost from the credit and mark this direction ended.
    pub(crate) fn sent_ahead(&self, len: usize) {
        let mut state = self.state.lock();
        state.credit -= cost(len);
        state.local_end = true;
    }

    /// Aborts the stream if its deadline passed; returns whether it did.
    pub(crate) fn expire(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| d <= now) {
            self.cancel_local(deadline_status(self.side));
            return true;
        }
        false
    }

    // ---- called by the consumer ----

    /// The next message, the end (`Ready(None)`), an error, or nothing yet.
    fn try_recv(
        &self,
        state: &mut MutexGuard<'_, State>,
    ) -> Poll<Option<Result<LinkBuffer, Status>>> {
        if let Some(msg) = state.inbox.pop_front() {
            if state.counted > 0 {
                state.counted -= 1;
                MutexGuard::unlocked(state, || self.uncount(1));
            }
            let c = cost(msg.len());
            state.buffered -= c;
            state.consumed += c;
            if state.consumed >= i64::from(self.window / 2) && state.remote_end.is_none() {
                let grant = state.consumed;
                state.consumed = 0;
                state.peer_credit += grant;
                let mut frame = LinkBuffer::new();
                // grant ≤ window ≤ u32::MAX
                codec::encode_window(
                    &mut frame,
                    self.seq,
                    u32::try_from(grant).unwrap_or(u32::MAX),
                );
                MutexGuard::unlocked(state, || self.out.send(frame));
            }
            return Poll::Ready(Some(Ok(msg)));
        }
        if let Some(status) = &state.aborted {
            return Poll::Ready(Some(Err(status.clone())));
        }
        match &state.remote_end {
            Some(status) if status.code() == Code::Ok => return Poll::Ready(None),
            Some(status) => return Poll::Ready(Some(Err(status.clone()))),
            None => {}
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            MutexGuard::unlocked(state, || self.cancel_local(deadline_status(self.side)));
            return self.try_recv(state);
        }
        Poll::Pending
    }

    fn recv_blocking(&self) -> Option<Result<LinkBuffer, Status>> {
        let mut state = self.state.lock();
        loop {
            if let Poll::Ready(r) = self.try_recv(&mut state) {
                return r;
            }
            match self.deadline {
                Some(d) => {
                    let _ = self.cv.wait_until(&mut state, d);
                }
                None => self.cv.wait(&mut state),
            }
        }
    }

    fn poll_recv(&self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<LinkBuffer, Status>>> {
        let mut state = self.state.lock();
        let ready = self.try_recv(&mut state);
        if ready.is_pending() {
            match &state.recv_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.recv_waker = Some(cx.waker().clone()),
            }
        }
        ready
    }

    // ---- called by the producer ----

    /// Whether this side may send now (`Ready(Ok)`), never again (`Err`),
    /// or must wait for credit.
    fn try_reserve(&self, state: &mut MutexGuard<'_, State>) -> Poll<Result<(), Status>> {
        if let Some(status) = &state.aborted {
            return Poll::Ready(Err(status.clone()));
        }
        if let Some(status) = &state.remote_end
            && self.side == Side::Client
        {
            return Poll::Ready(Err(if status.code() == Code::Ok {
                Status::failed_precondition("the server already ended the call")
            } else {
                status.clone()
            }));
        }
        if state.local_end {
            return Poll::Ready(Err(Status::failed_precondition(
                "the stream is closed for sending",
            )));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            MutexGuard::unlocked(state, || self.cancel_local(deadline_status(self.side)));
            return self.try_reserve(state);
        }
        if state.credit > 0 {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Sends the encoded MESSAGE `frame` of payload length `len` once there
    /// is credit, blocking.
    fn send_blocking(&self, frame: LinkBuffer, len: usize) -> Result<(), Status> {
        let mut state = self.state.lock();
        loop {
            match self.try_reserve(&mut state) {
                Poll::Ready(Ok(())) => {
                    state.credit -= cost(len);
                    drop(state);
                    self.out.send(frame);
                    return Ok(());
                }
                Poll::Ready(Err(status)) => return Err(status),
                Poll::Pending => match self.deadline {
                    Some(d) => {
                        let _ = self.cv.wait_until(&mut state, d);
                    }
                    None => self.cv.wait(&mut state),
                },
            }
        }
    }

    /// Waits for credit to send a message of payload length `len` and
    /// takes its cost.
    fn poll_reserve(&self, cx: &mut TaskContext<'_>, len: usize) -> Poll<Result<(), Status>> {
        let mut state = self.state.lock();
        match self.try_reserve(&mut state) {
            Poll::Ready(Ok(())) => {
                state.credit -= cost(len);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(status)) => Poll::Ready(Err(status)),
            Poll::Pending => {
                match &state.send_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.send_waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Gives back the cost of a message that was not sent after all.
    fn refund(&self, len: usize) {
        self.state.lock().credit += cost(len);
    }

    /// Ends this side's direction: a client's HALF_CLOSE; a server's final
    /// status (unless the stream was aborted: nobody listens). The server's
    /// stream leaves its map.
    pub(crate) fn end_local(&self, status: Option<&Status>) {
        let mut state = self.state.lock();
        if state.local_end {
            return;
        }
        state.local_end = true;
        let aborted = state.aborted.is_some();
        let trailers = std::mem::take(&mut state.trailers);
        drop(state);
        let mut frame = LinkBuffer::new();
        match self.side {
            Side::Client => {
                if !aborted {
                    codec::encode_half_close(&mut frame, self.seq);
                }
            }
            Side::Server => {
                self.leave_map();
                if !aborted {
                    let mut ok = Status::new(Code::Ok, "");
                    let status = match status {
                        Some(s) if s.code() != Code::Ok => s,
                        _ => {
                            *ok.metadata_mut() = trailers;
                            &ok
                        }
                    };
                    codec::encode_status(&mut frame, &self.limits, self.seq, status);
                }
            }
        }
        if !frame.is_empty() || frame.unflushed_len() > 0 {
            self.out.send(frame);
        }
        let state = self.state.lock();
        self.wake(state);
    }

    fn stats(&self) -> (usize, usize) {
        let state = self.state.lock();
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        (n(state.buffered), n(state.peak))
    }
}

fn deadline_status(side: Side) -> Status {
    match side {
        Side::Client => Status::deadline_exceeded("the call's deadline passed"),
        Side::Server => Status::deadline_exceeded("the call's deadline passed on the server"),
    }
}

/// Aborts every stream of `map` with `status` (the connection is gone).
pub(crate) fn abort_all(map: &StreamMap, status: &Status) {
    let streams: Vec<Arc<StreamShared>> = map.lock().drain().map(|(_, s)| s).collect();
    for s in streams {
        s.abort(status.clone());
    }
}

/// Aborts the streams of `map` whose deadline passed; returns the
/// earliest deadline still pending.
pub(crate) fn expire_all(map: &StreamMap, now: Instant) -> Option<Instant> {
    let streams: Vec<Arc<StreamShared>> = {
        let map = map.lock();
        if map.is_empty() {
            return None;
        }
        map.values()
            .filter(|s| s.deadline.is_some())
            .cloned()
            .collect()
    };
    let mut next = None;
    for s in streams {
        if !s.expire(now) {
            next = match (next, s.deadline) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
        }
    }
    next
}

/// The receiving half of a stream: the requests a server handler reads,
/// or the responses a caller reads. Messages come in order; the stream ends
/// with `None` after the last one (the client half-closed, or the server
/// ended the call with OK) or with one `Err` (the call failed, was
/// cancelled, or its deadline passed).
///
/// Blocking: [`recv`](RecvStream::recv), or iterate. Async:
/// [`message`](RecvStream::message) or [`poll_recv`](RecvStream::poll_recv)
/// under any executor.
///
/// Each message consumed gives its bytes back to the sender's window, so a
/// slow reader slows the sender down instead of buffering without bound.
/// Dropping a caller's `RecvStream` before the end cancels the call (the
/// server's handler sees CANCELLED).
pub struct RecvStream<T> {
    shared: Arc<StreamShared>,
    /// A caller's interceptors of the call: ended at the stream's end, or
    /// CANCELLED if it is dropped first.
    observer: Option<CallGuard>,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RecvStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("seq", &self.shared.seq)
            .finish()
    }
}

impl<T: Message + Default> RecvStream<T> {
    pub(crate) fn new(shared: Arc<StreamShared>) -> Self {
        RecvStream {
            shared,
            observer: None,
            _message: PhantomData,
        }
    }

    /// Ends `observer` with the stream's end.
    pub(crate) fn observed(mut self, observer: Option<CallGuard>) -> Self {
        self.observer = observer;
        self
    }

    /// Ends the observer when `r` is the stream's end.
    fn observe(&mut self, r: &Option<Result<LinkBuffer, Status>>) {
        match r {
            Some(Ok(_)) => {}
            None => {
                if let Some(observer) = self.observer.take() {
                    observer.finish_code(Code::Ok);
                }
            }
            Some(Err(status)) => {
                if let Some(observer) = self.observer.take() {
                    observer.finish(status);
                }
            }
        }
    }

    fn decode(&self, r: Option<Result<LinkBuffer, Status>>) -> Option<Result<T, Status>> {
        r.map(|r| {
            r.and_then(|payload| {
                T::decode(payload).map_err(|e| match self.shared.side {
                    Side::Server => {
                        Status::invalid_argument(format!("cannot decode a request message: {e}"))
                    }
                    Side::Client => {
                        Status::internal(format!("cannot decode a response message: {e}"))
                    }
                })
            })
        })
    }

    /// Blocks until the next message (`Some(Ok)`), the end (`None`) or a
    /// failure (`Some(Err)`; the deadline passing is one).
    pub fn recv(&mut self) -> Option<Result<T, Status>> {
        let r = self.shared.recv_blocking();
        self.observe(&r);
        self.decode(r)
    }

    /// Polls for the next message; see [`recv`](RecvStream::recv).
    pub fn poll_recv(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T, Status>>> {
        let r = std::task::ready!(self.shared.poll_recv(cx));
        self.observe(&r);
        Poll::Ready(self.decode(r))
    }

    /// The next message, as a future; see [`recv`](RecvStream::recv).
    pub fn message(&mut self) -> NextMessage<'_, T> {
        NextMessage { stream: self }
    }

    /// Exactly one message, then the end: the response of a
    /// client-streaming call, or the request of a server-streaming one.
    ///
    /// # Errors
    ///
    /// The call's failure; INTERNAL (client) or INVALID_ARGUMENT (server)
    /// if the stream ends without a message.
    pub fn single(mut self) -> Result<T, Status> {
        match self.recv() {
            Some(r) => r,
            None => Err(self.missing()),
        }
    }

    /// As [`single`](RecvStream::single), as a future.
    ///
    /// # Errors
    ///
    /// As [`single`](RecvStream::single).
    pub async fn single_async(mut self) -> Result<T, Status> {
        match self.message().await {
            Some(r) => r,
            None => Err(self.missing()),
        }
    }

    fn missing(&self) -> Status {
        match self.shared.side {
            Side::Server => Status::invalid_argument("the stream ended without a request message"),
            Side::Client => Status::internal("the call ended without a response message"),
        }
    }

    /// The call's deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.shared.deadline
    }

    /// The metadata of the call's final status (its trailers), once the
    /// caller's stream has ended — with OK (`recv` gave `None`) or with an
    /// error; `None` before the end and on a handler's request stream.
    pub fn trailers(&self) -> Option<crate::metadata::Metadata> {
        let state = self.shared.state.lock();
        match (&state.remote_end, self.shared.side) {
            (Some(status), Side::Client) => Some(status.metadata().clone()),
            _ => None,
        }
    }

    /// Bytes of messages received and not consumed yet (each counted as
    /// its payload plus [`MESSAGE_OVERHEAD`]).
    pub fn buffered(&self) -> usize {
        self.shared.stats().0
    }

    /// The most [`buffered`](RecvStream::buffered) ever was: at most the
    /// receive window plus one message.
    pub fn peak_buffered(&self) -> usize {
        self.shared.stats().1
    }
}

impl<T: Message + Default> Iterator for RecvStream<T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}

impl<T> Drop for RecvStream<T> {
    fn drop(&mut self) {
        let counted = std::mem::take(&mut self.shared.state.lock().counted);
        self.shared.uncount(counted);
        if self.shared.side == Side::Client {
            self.shared
                .cancel_local(Status::cancelled("the caller dropped the response stream"));
        }
    }
}

/// The future of [`RecvStream::message`].
#[must_use = "futures do nothing unless polled"]
pub struct NextMessage<'a, T> {
    stream: &'a mut RecvStream<T>,
}

impl<T> fmt::Debug for NextMessage<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextMessage")
            .field("seq", &self.stream.shared.seq)
            .finish()
    }
}

impl<T: Message + Default> Future for NextMessage<'_, T> {
    type Output = Option<Result<T, Status>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.stream.poll_recv(cx)
    }
}

/// The sending half of a stream: the responses a server handler writes,
/// or the requests a caller writes. [`send`](SendSink::send) waits for
/// window (blocking), [`send_async`](SendSink::send_async) awaits it.
///
/// A caller's sink ends its requests when closed or dropped (HALF_CLOSE);
/// a handler's responses end when the handler returns (its result is the
/// call's final status).
pub struct SendSink<T> {
    shared: Arc<StreamShared>,
    _message: PhantomData<fn(&T)>,
}

impl<T> fmt::Debug for SendSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSink")
            .field("seq", &self.shared.seq)
            .finish()
    }
}

impl<T: Message> SendSink<T> {
    pub(crate) fn new(shared: Arc<StreamShared>) -> Self {
        SendSink {
            shared,
            _message: PhantomData,
        }
    }

    fn encode(&self, msg: &T) -> Result<(LinkBuffer, usize), Status> {
        let mut frame = LinkBuffer::new();
        codec::encode_message(&mut frame, &self.shared.limits, self.shared.seq, msg)
            .map_err(|e| Status::resource_exhausted(format!("message not sent: {e}")))?;
        Ok((frame, msg.encoded_len()))
    }

    /// Sends `msg`, first waiting until the peer's window has room.
    ///
    /// # Errors
    ///
    /// The call is over (cancelled, failed, deadline passed, the server
    /// ended it, the connection is lost), or `msg` is over the frame limit
    /// (RESOURCE_EXHAUSTED; the stream carries on).
    pub fn send(&mut self, msg: &T) -> Result<(), Status> {
        let (frame, len) = self.encode(msg)?;
        self.shared.send_blocking(frame, len)
    }

    /// As [`send`](SendSink::send), as a future. On a server's loop
    /// thread (an async handler) the message is encoded straight into the
    /// round's output, which is written with one flush.
    pub fn send_async<'a>(&'a mut self, msg: &'a T) -> SendMessage<'a, T> {
        SendMessage {
            shared: &self.shared,
            msg,
            done: false,
        }
    }

    /// Ends the caller's requests (HALF_CLOSE); the same as dropping the
    /// sink. A handler's sink ignores it (its end is its return).
    pub fn close(self) {}

    /// Adds an entry to the metadata of the call's final status when the
    /// handler returns `Ok` (an error status carries its own metadata).
    /// On a caller's sink it does nothing: requests have their metadata at
    /// the opening ([`CallOptions::with_metadata`](crate::CallOptions::with_metadata)).
    pub fn set_trailer(&mut self, key: impl Into<String>, value: impl Into<String>) {
        if self.shared.side == Side::Server {
            self.shared.state.lock().trailers.insert(key, value);
        }
    }
}

impl<T> Drop for SendSink<T> {
    fn drop(&mut self) {
        if self.shared.side == Side::Client {
            self.shared.end_local(None);
        }
    }
}

/// The future of [`SendSink::send_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SendMessage<'a, T> {
    shared: &'a Arc<StreamShared>,
    msg: &'a T,
    done: bool,
}

impl<T> fmt::Debug for SendMessage<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendMessage")
            .field("seq", &self.shared.seq)
            .finish()
    }
}

impl<T: Message> Future for SendMessage<'_, T> {
    type Output = Result<(), Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(Status::internal("SendMessage polled after completion")));
        }
        let len = this.msg.encoded_len();
        std::task::ready!(this.shared.poll_reserve(cx, len))?;
        this.done = true;
        let shared = this.shared;
        let encode =
            |buf: &mut LinkBuffer| codec::encode_message(buf, &shared.limits, shared.seq, this.msg);
        let sent = match task::with_batch(shared.out.batch_key(), encode) {
            Some(r) => r.map(drop),
            None => {
                let mut frame = LinkBuffer::new();
                let r = encode(&mut frame);
                if r.is_ok() {
                    shared.out.send(frame);
                }
                r.map(drop)
            }
        };
        Poll::Ready(sent.map_err(|e| {
            shared.refund(len);
            Status::resource_exhausted(format!("message not sent: {e}"))
        }))
    }
}

/// The server side of one streaming call, handed to
/// [`Service::call_stream`](crate::Service::call_stream): split it into the
/// request stream and the response sink.
pub struct StreamCall {
    shared: Arc<StreamShared>,
}

impl fmt::Debug for StreamCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCall")
            .field("seq", &self.shared.seq)
            .finish()
    }
}

impl StreamCall {
    pub(crate) fn new(shared: Arc<StreamShared>) -> StreamCall {
        StreamCall { shared }
    }

    /// The requests (decoded as `Req`) and the response sink (of `Resp`).
    pub fn into_parts<Req: Message + Default, Resp: Message>(
        self,
    ) -> (RecvStream<Req>, SendSink<Resp>) {
        (
            RecvStream::new(Arc::clone(&self.shared)),
            SendSink::new(self.shared),
        )
    }
}
