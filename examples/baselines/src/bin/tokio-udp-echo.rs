//! The baseline: a plain tokio UDP echo server — one task, `recv_from`
//! then `send_to` per datagram, a 64 KiB buffer.
//!
//! ```text
//! tokio-udp-echo [--addr 127.0.0.1:9201] [--threads 1]
//! ```
use std::io;

use clap::Parser;
use tokio::net::UdpSocket;

/// Tokio UDP echo server.
#[derive(Parser, Debug)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:9201")]
    addr: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sock = UdpSocket::bind(&args.addr).await?;
        eprintln!(
            "tokio-udp-echo: listening on {} ({} threads)",
            sock.local_addr()?,
            args.threads
        );
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, peer) = sock.recv_from(&mut buf).await?;
            // A failed send (buffer full, peer gone) drops the reply, as UDP does.
            let _ = sock.send_to(&buf[..n], peer).await;
        }
    })
}
