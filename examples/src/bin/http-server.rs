//! An HTTP/1.1 server on ferropoll.
//!
//! ```text
//! http-server [--addr 127.0.0.1:8080] [--loops N] [--static DIR]
//! curl http://127.0.0.1:8080/plaintext      # Hello, World!
//! wrk -t1 -c256 -d10s http://127.0.0.1:8080/plaintext
//! ```
use std::io;
use std::path::PathBuf;

use clap::Parser;

/// HTTP/1.1 server on ferropoll-transport: `/plaintext`, `/json`, `/static/<name>`, `POST /echo`.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Event-loop threads (default: number of cores).
    #[arg(long)]
    loops: Option<usize>,
    /// Directory whose files `/static/<name>` serves (default: two built-in files).
    #[arg(long = "static")]
    static_dir: Option<PathBuf>,
}

fn main() -> io::Result<()> {
    ferropoll_examples::init_tracing();
    let args = Args::parse();
    let mut b = ferropoll_examples::http::Builder::new();
    if let Some(n) = args.loops {
        b.loops(n);
    }
    if let Some(dir) = args.static_dir {
        b.static_dir(dir);
    }
    let server = b.start(&args.addr)?;
    eprintln!("http-server: listening on http://{}", server.local_addr());
    loop {
        std::thread::park();
    }
}
