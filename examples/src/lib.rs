//! Shared pieces of the example binaries.
#![deny(unsafe_code)]
pub mod codec;
pub mod echo;
pub mod http;
pub mod pb;
pub mod resp;
pub mod rpc_load;
pub mod udp_load;

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
