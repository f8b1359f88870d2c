//! Async handlers on the connection's own loop thread.
//!
//! An async handler's future is polled first inline, the moment its request
//! is decoded, like a synchronous inline handler; a future that is ready at
//! once costs no thread hop and no wake-up. A future that returns `Pending`
//! becomes a [`Task`] of its connection's [`Scheduler`]: its waker puts it
//! on the connection's ready list and, unless the loop is about to look at
//! that list anyway, asks the loop (through the connection's
//! [`Outbox::run_on_loop`]) to run it. The loop runs every ready task of
//! the connection in one go, with what they send collected and written with
//! one flush: a read batch that wakes fifty streams' handlers costs one
//! `sendmsg`, not fifty.
//!
//! Nothing here knows a runtime: the waker is ours, the loop is the
//! transport's. A future that needs a runtime's context (tokio's timers and
//! sockets do) must run on that runtime — spawn it there and await its
//! join handle, which any executor can await (see the crate docs).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use ferropoll_linkbuffer::LinkBuffer;
use parking_lot::Mutex;
use prost::Message;

use crate::codec::{self, Limits};
use crate::status::Status;
use crate::stream::Outbox;

/// A boxed future that can move between threads: what an async handler
/// returns through [`Service::call_async`](crate::Service::call_async).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Writes a response frame for call `seq` into the buffer.
type Encode = Box<dyn FnOnce(&mut LinkBuffer, &Limits, u64) + Send>;

/// The answer of an async unary handler, ready to encode: its response
/// message or its error status.
pub struct AsyncReply {
    encode: Encode,
    code: crate::status::Code,
}

impl fmt::Debug for AsyncReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncReply")
    }
}

impl AsyncReply {
    /// Answers with `result`: the message (RESOURCE_EXHAUSTED if it is over
    /// the frame limit) or the status.
    pub fn from_result<M: Message + Send + 'static>(result: Result<M, Status>) -> AsyncReply {
        AsyncReply::respond(result, crate::Metadata::new())
    }

    /// As [`from_result`](Self::from_result), with `metadata` on an OK
    /// response (generated code passes what the handler set with
    /// [`Context::set_response_metadata`](crate::Context::set_response_metadata));
    /// an error carries its status's metadata instead.
    pub fn respond<M: Message + Send + 'static>(
        result: Result<M, Status>,
        metadata: crate::Metadata,
    ) -> AsyncReply {
        match result {
            Ok(msg) => AsyncReply {
                code: crate::status::Code::Ok,
                encode: Box::new(move |out, limits, seq| {
                    if let Err(e) =
                        codec::encode_response_with_metadata(out, limits, seq, &msg, &metadata)
                    {
                        let status = Status::resource_exhausted(format!("response not sent: {e}"));
                        codec::encode_status(out, limits, seq, &status);
                    }
                }),
            },
            Err(status) => AsyncReply::error(status),
        }
    }

    /// Answers with an error status.
    pub fn error(status: Status) -> AsyncReply {
        AsyncReply {
            code: status.code(),
            encode: Box::new(move |out, limits, seq| {
                codec::encode_status(out, limits, seq, &status);
            }),
        }
    }

    /// Decodes a request for an async handler: `Err` is the
    /// INVALID_ARGUMENT answer to send when it does not decode.
    ///
    /// # Errors
    ///
    /// The request does not decode as `Req`.
    pub fn decode<Req: Message + Default>(
        ctx: &crate::Context,
        request: LinkBuffer,
    ) -> Result<Req, AsyncReply> {
        Req::decode(request).map_err(|e| {
            AsyncReply::error(Status::invalid_argument(format!(
                "cannot decode the request of {}/{}: {e}",
                ctx.service(),
                ctx.method()
            )))
        })
    }

    /// The answer's status code.
    pub(crate) fn code(&self) -> crate::status::Code {
        self.code
    }

    pub(crate) fn write(self, out: &mut LinkBuffer, limits: &Limits, seq: u64) {
        (self.encode)(out, limits, seq);
    }
}

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// One pending async handler.
pub(crate) struct Task {
    state: AtomicU8,
    future: Mutex<Option<BoxFuture<()>>>,
    scheduler: Arc<Scheduler>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return, // scheduled already, notified already, or done
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == SCHEDULED => return self.scheduler.push(Arc::clone(self)),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }
}

impl Task {
    /// Drops the task's future (its handler is cancelled: it stops at the
    /// await it was at) and never polls it again.
    pub(crate) fn cancel(&self) {
        self.state.store(DONE, Ordering::Release);
        // A task being polled right now (this may run inside its poll,
        // when a send fails and closes the connection) drops its future
        // itself when the poll returns. Dropped outside the lock: dropping
        // may wake other tasks.
        let fut = self.future.try_lock().and_then(|mut f| f.take());
        drop(fut);
    }

    /// Whether the task finished (or was cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// After a poll that returned `Pending`: idle, or scheduled again if it
    /// was woken while it ran.
    fn park(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(NOTIFIED) => {
                // Woken during the poll.
                self.state.store(SCHEDULED, Ordering::Release);
                self.scheduler.push(Arc::clone(self));
            }
            Err(_) => {
                // DONE: the connection closed during the poll.
                let fut = self.future.lock().take();
                drop(fut);
            }
        }
    }

    fn run(self: &Arc<Self>) {
        if self
            .state
            .compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let waker = Waker::from(Arc::clone(self));
        let mut cx = TaskContext::from_waker(&waker);
        let mut slot = self.future.lock();
        let Some(fut) = slot.as_mut() else {
            self.state.store(DONE, Ordering::Release);
            return;
        };
        // DONE without being ready: the connection closed while this poll
        // ran (its close callback could not take the future: we hold it).
        if fut.as_mut().poll(&mut cx).is_ready() || self.state.load(Ordering::Acquire) == DONE {
            let fut = slot.take();
            self.state.store(DONE, Ordering::Release);
            drop(slot);
            drop(fut);
            return;
        }
        drop(slot);
        self.park();
    }
}

thread_local! {
    /// While a connection's loop thread runs that connection's round: the
    /// connection's id and the frames its tasks sent, written with one
    /// flush at the end of the round.
    static BATCH: RefCell<Option<(u64, LinkBuffer)>> = const { RefCell::new(None) };
}

/// Adds `frames` to the round batch of connection `conn`, if this thread
/// is running that connection's round; otherwise hands them back.
pub(crate) fn batch_send(conn: u64, frames: LinkBuffer) -> Option<LinkBuffer> {
    BATCH.with(|b| match &mut *b.borrow_mut() {
        Some((id, buf)) if *id == conn => {
            buf.append(frames);
            None
        }
        _ => Some(frames),
    })
}

/// Runs `f` on the round batch of the outbox with `key`, if this thread is
/// running that connection's round.
pub(crate) fn with_batch<R>(key: Option<u64>, f: impl FnOnce(&mut LinkBuffer) -> R) -> Option<R> {
    let key = key?;
    BATCH.with(|b| match &mut *b.borrow_mut() {
        Some((id, buf)) if *id == key => Some(f(buf)),
        _ => None,
    })
}

/// Marks the start of connection `conn`'s round on this thread: frames its
/// streams and tasks send until [`end_round`] are collected.
pub(crate) fn begin_round(conn: u64) {
    BATCH.with(|b| *b.borrow_mut() = Some((conn, LinkBuffer::new())));
}

/// Ends the round; returns the frames collected.
pub(crate) fn end_round() -> Option<LinkBuffer> {
    BATCH.with(|b| b.borrow_mut().take().map(|(_, buf)| buf))
}

/// The ready async tasks of one connection.
pub(crate) struct Scheduler {
    ready: Mutex<Vec<Arc<Task>>>,
    /// Every task not finished, to drop their futures when the connection
    /// closes (a task waiting for a timer would otherwise live on).
    live: Mutex<Vec<std::sync::Weak<Task>>>,
    outbox: Arc<dyn Outbox>,
    /// The loop is in (or about to run) this connection's round: it runs
    /// the ready list before the round ends, so a wake needs no hand-off.
    in_round: std::sync::atomic::AtomicBool,
    first_waker: Waker,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("ready", &self.ready.lock().len())
            .finish()
    }
}

impl Scheduler {
    pub(crate) fn new(outbox: Arc<dyn Outbox>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            ready: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            outbox,
            in_round: std::sync::atomic::AtomicBool::new(false),
            first_waker: Waker::from(Arc::new(FirstPoll)),
        })
    }

    fn push(self: &Arc<Self>, task: Arc<Task>) {
        let first = {
            let mut ready = self.ready.lock();
            ready.push(task);
            ready.len() == 1
        };
        if first && !self.in_round.load(Ordering::SeqCst) {
            let me = Arc::clone(self);
            let ran = self.outbox.run_on_loop(Box::new(move || me.run_round()));
            if !ran {
                // The connection is gone: its tasks are dropped (which
                // cancels their handlers).
                self.clear();
            }
        }
    }

    /// Runs the ready tasks (again, while running them makes more ready).
    pub(crate) fn run_ready(&self) {
        loop {
            let tasks = std::mem::take(&mut *self.ready.lock());
            if tasks.is_empty() {
                return;
            }
            for task in tasks {
                task.run();
            }
        }
    }

    /// A round started by a wake-up from outside the loop: runs the ready
    /// tasks with their output batched, then sends it.
    fn run_round(&self) {
        let Some(conn) = self.outbox.batch_key() else {
            self.run_ready();
            return;
        };
        self.in_round.store(true, Ordering::SeqCst);
        begin_round(conn);
        self.run_ready();
        self.in_round.store(false, Ordering::SeqCst);
        // A wake between the last run and clearing the flag found the flag
        // set: run what it queued.
        self.run_ready();
        if let Some(frames) = end_round()
            && (!frames.is_empty() || frames.unflushed_len() > 0)
        {
            self.outbox.send(frames);
        }
    }

    /// The round of a read: wakes during it are run by [`run_ready`]
    /// before it ends.
    pub(crate) fn enter_round(&self) {
        self.in_round.store(true, Ordering::SeqCst);
    }

    /// The end of a read's round.
    pub(crate) fn leave_round(&self) {
        self.run_ready();
        self.in_round.store(false, Ordering::SeqCst);
        // A wake between the last run and clearing the flag found it set.
        self.run_ready();
    }

    /// Drops every task (the connection closed): their handlers are
    /// cancelled.
    pub(crate) fn clear(&self) {
        drop(std::mem::take(&mut *self.ready.lock()));
        let live = std::mem::take(&mut *self.live.lock());
        for task in live.iter().filter_map(std::sync::Weak::upgrade) {
            task.cancel();
        }
    }

    /// The first poll of a handler's future, inline, with a waker shared
    /// by all first polls of this connection (no allocation). A future
    /// that is not ready is then [`spawn`](Self::spawn)ed and polled again
    /// at once with its own task's waker; by the `Future` contract only
    /// the waker of its latest poll may be woken, so wake-ups of the shared
    /// one are ignored.
    ///
    /// # Errors
    ///
    /// The poll panicked: the payload.
    pub(crate) fn poll_first<T>(&self, fut: &mut BoxFuture<T>) -> std::thread::Result<Poll<T>> {
        let mut cx = TaskContext::from_waker(&self.first_waker);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
    }

    /// Makes `fut` a task of this connection and polls it now; when it
    /// completes (on the loop thread, woken there), `then` gets its output.
    /// If the connection closes first, both are dropped; so are they when
    /// the returned task is [`cancel`](Task::cancel)led.
    pub(crate) fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        fut: BoxFuture<T>,
        then: impl FnOnce(T) + Send + 'static,
    ) -> Arc<Task> {
        let task = Arc::new(Task {
            state: AtomicU8::new(SCHEDULED),
            future: Mutex::new(Some(Box::pin(async move { then(fut.await) }))),
            scheduler: Arc::clone(self),
        });
        {
            let mut live = self.live.lock();
            if live.len() >= 64 && live.len().is_power_of_two() {
                live.retain(|t| t.strong_count() > 0);
            }
            live.push(Arc::downgrade(&task));
        }
        task.run();
        task
    }
}

/// The waker of first polls: wake-ups are ignored (see
/// [`Scheduler::poll_first`]).
struct FirstPoll;

impl Wake for FirstPoll {
    fn wake(self: Arc<Self>) {}
    fn wake_by_ref(self: &Arc<Self>) {}
}

/// `fut`, with a panic in any poll caught and turned into `on_panic`'s
/// output (the panic message is logged by `on_panic`'s caller).
pub(crate) fn guarded<T: 'static>(
    fut: BoxFuture<T>,
    on_panic: impl FnOnce(&str) -> T + Send + 'static,
) -> BoxFuture<T> {
    struct Guarded<T, P> {
        fut: Option<BoxFuture<T>>,
        on_panic: Option<P>,
    }
    impl<T, P: FnOnce(&str) -> T> Future for Guarded<T, P> {
        type Output = T;
        fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
            // Both fields are Unpin (a box and an option of a closure
            // behind the box of this future).
            let this = Pin::into_inner(self);
            let Some(fut) = this.fut.as_mut() else {
                return Poll::Pending;
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(p) => p,
                Err(panic) => {
                    this.fut = None;
                    let what = crate::server::panic_text(&*panic);
                    let on_panic = this.on_panic.take().expect("a panic is caught once");
                    Poll::Ready(on_panic(what))
                }
            }
        }
    }
    impl<T, P> Unpin for Guarded<T, P> {}
    Box::pin(Guarded {
        fut: Some(fut),
        on_panic: Some(on_panic),
    })
}

/// Runs `fut` to its end on this thread, parking between polls (async
/// handlers of an engine with no loop to run them, e.g. in-process).
pub(crate) fn block_on<T>(mut fut: BoxFuture<T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
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
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
