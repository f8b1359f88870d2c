//! The client's sans-IO call table: sequence ids, pending calls, and their
//! completion by whoever reads the responses (the connection's loop thread).
//!
//! A call is a slot shared by the table and the caller's [`CallFuture`]. The
//! reader completes it ([`CallTable::complete`]) by removing it from the
//! table and storing the outcome; the caller waits on it either blocking
//! ([`CallFuture::wait`]: a condition variable with the call's deadline) or
//! asynchronously (`CallFuture` is a `Future` that stores its `Waker`, so
//! it works under any executor). Whoever removes the slot from the table
//! decides the outcome, so a response racing a timeout or a cancellation
//! is resolved exactly once.
//!
//! The number of calls in flight is bounded; a call over the bound fails at
//! once with RESOURCE_EXHAUSTED (no hidden queue: the caller decides whether
//! to wait and retry).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::{Condvar, Mutex};
use prost::Message;

use crate::hash::SeqMap;
use crate::intercept::CallGuard;
use crate::metadata::Metadata;
use crate::status::Status;

/// The outcome stored in a slot: the response payload or a status.
pub(crate) type Outcome = Result<Payload, Status>;

/// A response's payload and the metadata of its header.
pub(crate) struct Payload {
    pub(crate) body: LinkBuffer,
    pub(crate) metadata: Metadata,
}

impl Payload {
    /// The response message and the metadata.
    pub(crate) fn decode<T: Message + Default>(self) -> Result<(T, Metadata), Status> {
        let msg = T::decode(self.body)
            .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))?;
        Ok((msg, self.metadata))
    }
}

impl From<LinkBuffer> for Payload {
    fn from(body: LinkBuffer) -> Payload {
        Payload {
            body,
            metadata: Metadata::new(),
        }
    }
}

enum SlotState {
    Waiting(Option<Waker>),
    /// `counted`: completed while a future waited on it, and counted in
    /// [`CallTable::ready`] until the future takes the outcome.
    Done(Outcome, bool),
    Taken,
}

struct Slot {
    seq: u64,
    deadline: Option<Instant>,
    state: Mutex<SlotState>,
    ready: Condvar,
}

impl Slot {
    /// Stores the outcome and wakes the waiter (both kinds). A future's
    /// completion is counted in `ready` until it takes the outcome.
    fn finish(&self, outcome: Outcome, ready: &AtomicUsize) {
        let waker = {
            let mut state = self.state.lock();
            match std::mem::replace(&mut *state, SlotState::Done(outcome, false)) {
                SlotState::Waiting(Some(waker)) => {
                    ready.fetch_add(1, Ordering::SeqCst);
                    if let SlotState::Done(_, counted) = &mut *state {
                        *counted = true;
                    }
                    Some(waker)
                }
                SlotState::Waiting(None) => None,
                // Completed twice cannot happen (only the remover completes);
                // keep the first outcome if it ever did.
                previous => {
                    *state = previous;
                    None
                }
            }
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct TableState {
    next_seq: u64,
    pending: SeqMap<Arc<Slot>>,
    /// No pending deadline is earlier than this (a lower bound; `None` = no deadline).
    earliest: Option<Instant>,
    closed: Option<Status>,
}

/// The calls in flight on one client connection.
///
/// ```
/// use std::sync::Arc;
/// use ferropoll_rpc::{LinkBuffer, Status};
/// use ferropoll_rpc::sansio::CallTable;
///
/// let table = Arc::new(CallTable::new(16));
/// let call = table.start::<()>(None).unwrap();
/// let seq = call.seq();
/// // ... the request goes out; later the reader finds its response:
/// assert!(table.complete(seq, Ok(LinkBuffer::new())));
/// assert_eq!(call.wait(), Ok(()));
///
/// let lost = table.start::<()>(None).unwrap();
/// table.close(Status::unavailable("connection lost"));
/// assert_eq!(lost.wait().unwrap_err().code(), ferropoll_rpc::Code::Unavailable);
/// ```
pub struct CallTable {
    state: Mutex<TableState>,
    max_in_flight: usize,
    /// Futures woken with their outcome and not yet polled to take it, and
    /// stream messages delivered to a waiting task not yet taken (shared
    /// with the connection's streams).
    ready: Arc<AtomicUsize>,
    /// Told the sequence id of each call abandoned by its caller (see
    /// [`CallTable::on_cancel`]).
    cancel: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

impl fmt::Debug for CallTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("CallTable")
            .field("in_flight", &s.pending.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("closed", &s.closed)
            .finish()
    }
}

impl CallTable {
    /// A table admitting at most `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> CallTable {
        CallTable {
            state: Mutex::new(TableState {
                next_seq: 1,
                pending: SeqMap::default(),
                earliest: None,
                closed: None,
            }),
            max_in_flight,
            ready: Arc::new(AtomicUsize::new(0)),
            cancel: std::sync::OnceLock::new(),
        }
    }

    /// Sets what is told the sequence id of every call whose
    /// [`CallFuture`] is dropped before its outcome arrived — the glue
    /// sends the server a CANCEL for it, so that the server can stop a
    /// handler nobody waits for (see "Cancellation" in `PROTOCOL.md`). Not
    /// called for calls that ended otherwise (answered, expired, failed
    /// with the connection). Only the first hook set is kept.
    ///
    /// It may run on any thread that drops a future, so it must not block
    /// on anything the dropping code might hold: stage the frame and
    /// return.
    pub fn on_cancel(&self, hook: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.cancel.set(Box::new(hook));
    }

    /// Calls completed for a waiting future that has not taken its outcome
    /// yet: tasks woken and about to run. While there are some, a new async
    /// call leaves its request staged for the last of them to send
    /// ([`CallFuture::with_flush`]).
    pub(crate) fn ready(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// The counter of [`ready`](Self::ready), for the connection's streams.
    pub(crate) fn ready_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.ready)
    }

    /// A counted outcome was taken; returns whether it was the last one.
    fn taken(&self) -> bool {
        self.ready.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Registers a call that must complete by `deadline`, giving it the next
    /// sequence id. The response payload will be decoded as `T`.
    ///
    /// # Errors
    ///
    /// RESOURCE_EXHAUSTED when `max_in_flight` calls are pending; the
    /// close status (e.g. UNAVAILABLE) once the table is closed.
    pub fn start<T: Message + Default>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<CallFuture<T>, Status> {
        let mut s = self.state.lock();
        if let Some(status) = &s.closed {
            return Err(status.clone());
        }
        if s.pending.len() >= self.max_in_flight {
            return Err(Status::resource_exhausted(format!(
                "{} calls in flight on this connection (limit {})",
                s.pending.len(),
                self.max_in_flight
            )));
        }
        let seq = s.next_seq;
        // u64 ids do not wrap in practice; skip 0 (reserved) if they ever do.
        s.next_seq = s.next_seq.checked_add(1).unwrap_or(1);
        let slot = Arc::new(Slot {
            seq,
            deadline,
            state: Mutex::new(SlotState::Waiting(None)),
            ready: Condvar::new(),
        });
        s.pending.insert(seq, Arc::clone(&slot));
        if let Some(d) = deadline {
            s.earliest = Some(s.earliest.map_or(d, |e| e.min(d)));
        }
        Ok(CallFuture {
            inner: Inner::Pending {
                table: Arc::clone(self),
                slot,
            },
            flush: None,
            observer: None,
            _response: PhantomData,
        })
    }

    /// A sequence id for a frame that expects no answer (ONEWAY).
    pub(crate) fn allocate_seq(&self) -> Result<u64, Status> {
        let mut s = self.state.lock();
        if let Some(status) = &s.closed {
            return Err(status.clone());
        }
        let seq = s.next_seq;
        s.next_seq = s.next_seq.checked_add(1).unwrap_or(1);
        Ok(seq)
    }

    /// Completes call `seq` with a response payload or a status. Returns
    /// `false` if no such call is pending (it timed out or was cancelled:
    /// the response is dropped).
    pub fn complete(&self, seq: u64, outcome: Result<LinkBuffer, Status>) -> bool {
        self.complete_with(seq, outcome.map(Payload::from))
    }

    /// As [`complete`](Self::complete), with the response's metadata.
    pub(crate) fn complete_with(&self, seq: u64, outcome: Outcome) -> bool {
        let slot = self.state.lock().pending.remove(&seq);
        match slot {
            Some(slot) => {
                slot.finish(outcome, &self.ready);
                true
            }
            None => false,
        }
    }

    /// Removes call `seq` and completes it with `status`, if still pending.
    fn abandon(&self, seq: u64, status: Option<Status>) -> bool {
        let slot = self.state.lock().pending.remove(&seq);
        match (slot, status) {
            (Some(slot), Some(status)) => {
                slot.finish(Err(status), &self.ready);
                true
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Completes every call whose deadline is at or before `now` with
    /// DEADLINE_EXCEEDED; returns how many. Cheap when nothing is due (one
    /// comparison), so the glue may call it on every loop tick; it needs to
    /// for futures, which have no timer of their own (a blocking
    /// [`CallFuture::wait`] times out by itself).
    pub fn expire(&self, now: Instant) -> usize {
        let expired: Vec<Arc<Slot>> = {
            let mut s = self.state.lock();
            match s.earliest {
                Some(e) if e <= now => {}
                _ => return 0,
            }
            let due: Vec<u64> = s
                .pending
                .values()
                .filter(|slot| slot.deadline.is_some_and(|d| d <= now))
                .map(|slot| slot.seq)
                .collect();
            let expired = due.iter().filter_map(|seq| s.pending.remove(seq)).collect();
            s.earliest = s.pending.values().filter_map(|slot| slot.deadline).min();
            expired
        };
        for slot in &expired {
            slot.finish(Err(deadline_status()), &self.ready);
        }
        expired.len()
    }

    /// The earliest deadline of a pending call (a lower bound: it may
    /// belong to a call already completed), for the glue's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.state.lock().earliest
    }

    /// Fails every pending call with `status` (typically UNAVAILABLE:
    /// connection lost) and makes every later [`start`](CallTable::start)
    /// fail with it too.
    pub fn close(&self, status: Status) {
        let pending: Vec<Arc<Slot>> = {
            let mut s = self.state.lock();
            if s.closed.is_none() {
                s.closed = Some(status.clone());
            }
            s.earliest = None;
            s.pending.drain().map(|(_, slot)| slot).collect()
        };
        for slot in pending {
            slot.finish(Err(status.clone()), &self.ready);
        }
    }

    /// Whether [`close`](CallTable::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Calls pending.
    pub fn len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Whether no call is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn deadline_status() -> Status {
    Status::deadline_exceeded("no response before the deadline")
}

/// A future of a call's raw outcome, driven by something else than one
/// call table: a cluster call, which may try several instances.
pub(crate) type BoxedOutcome = Pin<Box<dyn Future<Output = Outcome> + Send + Sync>>;

enum Inner {
    Pending {
        table: Arc<CallTable>,
        slot: Arc<Slot>,
    },
    Failed(Status),
    /// A cluster call: the future yields the payload; `deadline` is the
    /// whole call's.
    Boxed {
        outcome: BoxedOutcome,
        deadline: Option<Instant>,
    },
    Finished,
}

/// The pending result of a call: a `Future` usable under any executor
/// (tokio, `futures::executor::block_on`, ...) and a blocking
/// [`wait`](CallFuture::wait). Resolves to the response decoded as `T`, or
/// a [`Status`]: the server's, or DEADLINE_EXCEEDED, UNAVAILABLE (connection
/// lost), INTERNAL (the response does not decode).
///
/// Dropping it before completion cancels the call: its table entry is
/// removed, a late response is dropped, and a network client sends the
/// server a CANCEL (an async handler still waiting is dropped there; see
/// "Cancellation" in `PROTOCOL.md`).
#[must_use = "a call is cancelled when its CallFuture is dropped"]
pub struct CallFuture<T> {
    inner: Inner,
    /// Sends the request, if that was left to the future (see
    /// [`CallFuture::with_flush`]).
    flush: Option<DeferredFlush>,
    /// The client's interceptors of this call: ended with its outcome, or
    /// CANCELLED if it is dropped first.
    observer: Option<Box<CallGuard>>,
    _response: PhantomData<fn() -> T>,
}

/// Something that sends what callers staged for a connection.
pub(crate) trait Flush: Send + Sync {
    /// Sends what is staged.
    fn flush(&self);
    /// A request stays staged for the last woken future to send; make sure
    /// it goes out soon even if that future is never polled.
    fn deferred(&self);
}

struct DeferredFlush {
    /// Weak: a pending future must not keep its connection open after the
    /// client is gone.
    flusher: Weak<dyn Flush>,
}

impl<T> fmt::Debug for CallFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CallFuture");
        match &self.inner {
            Inner::Pending { slot, .. } => d.field("seq", &slot.seq),
            Inner::Failed(s) => d.field("failed", s),
            Inner::Boxed { deadline, .. } => d.field("cluster_call_deadline", deadline),
            Inner::Finished => d.field("finished", &true),
        };
        d.finish()
    }
}

impl<T: Message + Default> CallFuture<T> {
    /// A future already failed with `status`.
    pub fn failed(status: Status) -> CallFuture<T> {
        CallFuture {
            inner: Inner::Failed(status),
            flush: None,
            observer: None,
            _response: PhantomData,
        }
    }

    /// Sends the request staged for this call through `flusher`, or leaves
    /// it staged so that calls started by tasks woken together share one
    /// write.
    ///
    /// The request is sent now unless other futures of the same connection
    /// were woken with their outcome and have not taken it yet
    /// ([`CallTable::ready`]): those tasks are about to run and, typically,
    /// to start calls too, so the request stays staged and the last of them
    /// to take its outcome (or to be dropped) sends everything staged in
    /// one `sendmsg`; `flusher.deferred()` bounds the wait if they never
    /// run.
    pub(crate) fn with_flush(mut self, flusher: Arc<dyn Flush>) -> CallFuture<T> {
        match &self.inner {
            Inner::Pending { table, .. } if table.ready() > 0 => flusher.deferred(),
            _ => flusher.flush(),
        }
        if matches!(self.inner, Inner::Pending { .. }) {
            self.flush = Some(DeferredFlush {
                flusher: Arc::downgrade(&flusher),
            });
        }
        self
    }

    /// A counted outcome was taken: the last one sends what is staged.
    fn took_counted(&self, table: &CallTable) {
        if table.taken()
            && let Some(f) = self.flush.as_ref().and_then(|f| f.flusher.upgrade())
        {
            f.flush();
        }
    }

    /// A future completed by `outcome` (a cluster call), whose whole
    /// deadline is `deadline`.
    pub(crate) fn boxed(outcome: BoxedOutcome, deadline: Option<Instant>) -> CallFuture<T> {
        CallFuture {
            inner: Inner::Boxed { outcome, deadline },
            flush: None,
            observer: None,
            _response: PhantomData,
        }
    }

    /// Removes a call whose request was never sent, without telling the
    /// server (the future is spent).
    pub(crate) fn discard(mut self) {
        if let Inner::Pending { table, slot } = std::mem::replace(&mut self.inner, Inner::Finished)
        {
            table.abandon(slot.seq, None);
        }
    }

    /// The call's sequence id (0 for a call that failed before it started,
    /// and for a cluster call, which may be sent on several connections).
    pub fn seq(&self) -> u64 {
        match &self.inner {
            Inner::Pending { slot, .. } => slot.seq,
            _ => 0,
        }
    }

    /// The status of a call that failed before it started (nothing was sent).
    pub(crate) fn failure(&self) -> Option<&Status> {
        match &self.inner {
            Inner::Failed(status) => Some(status),
            _ => None,
        }
    }

    /// The call's deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.inner {
            Inner::Pending { slot, .. } => slot.deadline,
            Inner::Boxed { deadline, .. } => *deadline,
            _ => None,
        }
    }

    fn decode(outcome: Outcome) -> Result<T, Status> {
        Self::decode_with(outcome).map(|(msg, _)| msg)
    }

    fn decode_with(outcome: Outcome) -> Result<(T, Metadata), Status> {
        outcome?.decode()
    }

    /// The same call, its response decoded as `U` (the type is only the
    /// decoder's: a backend starts calls as `CallFuture<()>`).
    pub(crate) fn cast<U>(mut self) -> CallFuture<U> {
        CallFuture {
            inner: std::mem::replace(&mut self.inner, Inner::Finished),
            flush: self.flush.take(),
            observer: self.observer.take(),
            _response: PhantomData,
        }
    }

    /// Blocks the calling thread until the call completes or its deadline
    /// passes (then DEADLINE_EXCEEDED).
    pub fn wait(mut self) -> Result<T, Status> {
        let observer = self.observer.take().map(|o| *o);
        let result = Self::decode(self.wait_outcome());
        observe(observer, &result);
        result
    }

    /// As [`wait`](CallFuture::wait), with the metadata of the OK response
    /// (what the handler set with
    /// [`Context::set_response_metadata`](crate::Context::set_response_metadata)).
    pub fn wait_with_metadata(mut self) -> Result<(T, Metadata), Status> {
        let observer = self.observer.take().map(|o| *o);
        let result = Self::decode_with(self.wait_outcome());
        observe(observer, &result);
        result
    }

    /// Ends `observer` with this call's outcome.
    pub(crate) fn observed(mut self, observer: Option<CallGuard>) -> CallFuture<T> {
        self.observer = observer.map(Box::new);
        self
    }

    /// This future, resolving to the response and the metadata of the OK
    /// response.
    pub fn with_metadata(self) -> WithMetadata<T> {
        WithMetadata { call: self }
    }

    /// As [`wait`](CallFuture::wait), without decoding the payload.
    pub(crate) fn wait_outcome(mut self) -> Outcome {
        let (table, slot) = match std::mem::replace(&mut self.inner, Inner::Finished) {
            Inner::Pending { table, slot } => (table, slot),
            Inner::Failed(status) => return Err(status),
            Inner::Boxed { outcome, .. } => return block_on(outcome),
            Inner::Finished => return Err(Status::internal("call already finished")),
        };
        let mut state = slot.state.lock();
        loop {
            if let SlotState::Done(..) = &*state {
                let SlotState::Done(outcome, counted) =
                    std::mem::replace(&mut *state, SlotState::Taken)
                else {
                    unreachable!("matched Done just above")
                };
                drop(state);
                if counted {
                    self.took_counted(&table);
                }
                return outcome;
            }
            match slot.deadline {
                None => slot.ready.wait(&mut state),
                Some(deadline) => {
                    if Instant::now() >= deadline {
                        drop(state);
                        // Ours if we remove it; otherwise the reader holds it
                        // and stores its outcome right now: wait for that.
                        if table.abandon(slot.seq, None) {
                            return Err(deadline_status());
                        }
                        state = slot.state.lock();
                        continue;
                    }
                    let _ = slot.ready.wait_until(&mut state, deadline);
                }
            }
        }
    }
}

/// The future of [`CallFuture::with_metadata`].
#[must_use = "a call is cancelled when its future is dropped"]
#[derive(Debug)]
pub struct WithMetadata<T> {
    call: CallFuture<T>,
}

impl<T: Message + Default> Future for WithMetadata<T> {
    type Output = Result<(T, Metadata), Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.call.poll_outcome(cx))
            .and_then(|o| CallFuture::<T>::decode_with(Ok(o)));
        observe(self.call.observer.take().map(|o| *o), &result);
        Poll::Ready(result)
    }
}

impl<T: Message + Default> Future for CallFuture<T> {
    type Output = Result<T, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.poll_outcome(cx)).and_then(|o| Self::decode(Ok(o)));
        observe(self.observer.take().map(|o| *o), &result);
        Poll::Ready(result)
    }
}

impl<T: Message + Default> CallFuture<T> {
    /// As `poll`, without decoding the payload.
    pub(crate) fn poll_outcome(&mut self, cx: &mut TaskContext<'_>) -> Poll<Outcome> {
        let this = self;
        let (table, slot) = match &mut this.inner {
            Inner::Pending { table, slot } => (&*table, &*slot),
            Inner::Boxed { outcome, .. } => {
                let ready = outcome.as_mut().poll(cx);
                if ready.is_ready() {
                    this.inner = Inner::Finished;
                }
                return ready;
            }
            Inner::Failed(_) => {
                let Inner::Failed(status) = std::mem::replace(&mut this.inner, Inner::Finished)
                else {
                    unreachable!("matched Failed just above")
                };
                return Poll::Ready(Err(status));
            }
            Inner::Finished => {
                return Poll::Ready(Err(Status::internal("CallFuture polled after completion")));
            }
        };
        let mut state = slot.state.lock();
        match &mut *state {
            SlotState::Done(..) => {
                let SlotState::Done(outcome, counted) =
                    std::mem::replace(&mut *state, SlotState::Taken)
                else {
                    unreachable!("matched Done just above")
                };
                drop(state);
                if counted {
                    let table = Arc::clone(table);
                    this.took_counted(&table);
                }
                this.inner = Inner::Finished;
                Poll::Ready(outcome)
            }
            SlotState::Waiting(waker) => {
                if slot.deadline.is_some_and(|d| Instant::now() >= d) {
                    drop(state);
                    if table.abandon(slot.seq, None) {
                        this.inner = Inner::Finished;
                        return Poll::Ready(Err(deadline_status()));
                    }
                    // The reader is completing it right now; it will wake us.
                    let mut state = slot.state.lock();
                    if let SlotState::Waiting(waker) = &mut *state {
                        *waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    drop(state);
                    return this.poll_outcome(cx);
                }
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            SlotState::Taken => {
                drop(state);
                this.inner = Inner::Finished;
                Poll::Ready(Err(Status::internal("CallFuture polled after completion")))
            }
        }
    }
}

/// Ends a call's interceptors with its result.
pub(crate) fn observe<R>(observer: Option<CallGuard>, result: &Result<R, Status>) {
    if let Some(observer) = observer {
        match result {
            Ok(_) => observer.finish_code(crate::status::Code::Ok),
            Err(status) => observer.finish(status),
        }
    }
}

impl<T> Drop for CallFuture<T> {
    fn drop(&mut self) {
        if let Inner::Pending { table, slot } = &self.inner {
            // Woken but never polled again: give back the count (and send
            // what waits for the last woken future).
            let counted = {
                let mut state = slot.state.lock();
                match &mut *state {
                    SlotState::Done(_, counted) => std::mem::take(counted),
                    _ => false,
                }
            };
            if counted
                && table.taken()
                && let Some(f) = self.flush.as_ref().and_then(|f| f.flusher.upgrade())
            {
                f.flush();
            }
            // Cancelled: remove the entry so that a late response is
            // dropped, and tell the server if the call was still waiting.
            if table.abandon(slot.seq, None)
                && let Some(cancel) = table.cancel.get()
            {
                cancel(slot.seq);
            }
        }
    }
}

/// Runs `fut` to completion on this thread, parking between polls (for the
/// blocking [`CallFuture::wait`] of a cluster call).
fn block_on(mut fut: BoxedOutcome) -> Outcome {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    loop {
        if let Poll::Ready(outcome) = fut.as_mut().poll(&mut cx) {
            return outcome;
        }
        std::thread::park();
    }
}
