//! The tonic baseline server of `tonic-bench`: a unary `echo.Echo`
//! over gRPC (HTTP/2), on a tokio runtime with `--threads` worker threads.
//!
//! ```text
//! tonic-echo --addr 127.0.0.1:9300 --threads 1
//! ```
use clap::Parser;
use ferropoll_baselines::{TonicEcho, echo::echo_server::EchoServer};

/// tonic unary echo server.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9300")]
    addr: std::net::SocketAddr,
    /// Tokio worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = ferropoll_examples::tokio_runtime(args.threads)?;
    eprintln!(
        "tonic-echo: echo.Echo on {} ({} threads)",
        args.addr, args.threads
    );
    rt.block_on(async {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(EchoServer::new(TonicEcho))
            .serve(args.addr)
            .await
    })?;
    Ok(())
}
