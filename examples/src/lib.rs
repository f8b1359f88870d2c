//! Shared pieces of the example binaries.
#![deny(unsafe_code)]
pub mod codec;
pub mod echo;
pub mod http;
pub mod pb;
pub mod resp;
pub mod rpc_load;
pub mod udp_load;

/// The tokio runtime of a `--threads N` load generator or baseline server:
/// the current-thread runtime for 1 (tokio's fastest setup on one core),
/// else the multi-thread runtime with N workers; timers and I/O enabled.
pub fn tokio_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Runs a future to completion on this thread, parking between polls: all
/// a ferropoll `CallFuture` needs (it is woken from the client's loop
/// thread), to show it works outside any async runtime.
///
/// ```
/// let answer = ferropoll_examples::block_on(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
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
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake before this park makes it return at once.
        std::thread::park();
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (`warn`, `info,ferropoll_rpc=debug`,
/// ...: a default level and per-target levels); errors only when it is unset.
/// A `RUST_LOG` that does not parse is reported and ignored.
pub fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("RUST_LOG={spec:?} ignored: {e}");
            Targets::new().with_default(LevelFilter::ERROR)
        }),
        Err(_) => Targets::new().with_default(LevelFilter::ERROR),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}
