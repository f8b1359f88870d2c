//! A line echo client on ferropoll's dialer: sends each line of stdin (or
//! `--message`) and prints what comes back.
//!
//! ```text
//! echo-client [--addr 127.0.0.1:9000] [--message TEXT] [--timeout-ms 2000]
//! ```
use std::io::{self, BufRead, Write};
use std::time::Duration;

use clap::Parser;

/// Line echo client.
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Send this one line instead of reading stdin.
    #[arg(long)]
    message: Option<String>,
    /// Connect and read timeout.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_millis(args.timeout_ms);
    let conn = match args.addr.strip_prefix("unix:") {
        Some(path) => ferropoll_transport::dial_unix(path, timeout)?,
        None => ferropoll_transport::dial_tcp(&args.addr, timeout)?,
    };
    conn.set_read_timeout(Some(timeout));
    let lines: Box<dyn Iterator<Item = io::Result<String>>> = match args.message {
        Some(m) => Box::new(std::iter::once(Ok(m))),
        None => Box::new(io::stdin().lock().lines()),
    };
    let mut out = io::stdout().lock();
    for line in lines {
        let mut line = line?;
        line.push('\n');
        conn.writer().write_binary(line.as_bytes());
        conn.flush()?;
        let mut r = conn.reader();
        let back = r.until(b'\n')?;
        out.write_all(back)?;
        out.flush()?;
    }
    conn.close();
    Ok(())
}
