//! The small internal tokio runtime the DNS resolver and the etcd client
//! run on: one thread, started by the first source that needs it, shared
//! by all of them for the life of the process. Their public API stays
//! blocking: callers wait on a std channel with a bound, never inside a
//! runtime, so it is usable from plain threads and from any executor alike.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::task::JoinHandle;

use crate::status::Status;

static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();

fn handle() -> Result<&'static Handle, Status> {
    RUNTIME
        .get_or_init(|| {
            let rt = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build the discovery runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("ferropoll-discovery".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("cannot start the discovery thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| Status::unavailable(e.clone()))
}

/// Runs `fut` in the background on the runtime.
pub(crate) fn spawn<F>(fut: F) -> Result<JoinHandle<()>, Status>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(handle()?.spawn(fut))
}

/// Runs `fut` on the runtime and waits for its result, at most `timeout`.
///
/// # Errors
///
/// DEADLINE_EXCEEDED after `timeout` (the task is aborted), UNAVAILABLE if
/// the runtime cannot start.
pub(crate) fn block_on<F, T>(fut: F, timeout: Duration) -> Result<T, Status>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    let task = handle()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Ok(out),
        Err(_) => {
            task.abort();
            Err(Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            )))
        }
    }
}
