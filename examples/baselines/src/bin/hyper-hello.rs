//! The HTTP baseline: a hyper 1.x server on tokio with the same
//! `/plaintext` and `/json` routes as `http-server` (hyper adds `Date` and
//! `Content-Length`; pipelined responses are flushed together).
//!
//! With `--threads 1` it runs tokio's current-thread runtime (the fastest
//! tokio setup on one core); with more, the multi-thread runtime.
//!
//! ```text
//! hyper-hello [--addr 127.0.0.1:8081] [--threads 1]
//! ```
use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// hyper hello server.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body): (StatusCode, &'static str, &'static [u8]) =
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/plaintext") => (StatusCode::OK, "text/plain", b"Hello, World!"),
            (&Method::GET, "/json") => (
                StatusCode::OK,
                "application/json",
                br#"{"message":"Hello, World!"}"#,
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", b"Not Found"),
        };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static("hyper"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(resp)
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let rt = ferropoll_examples::tokio_runtime(args.threads)?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&args.addr).await?;
        eprintln!(
            "hyper-hello: listening on http://{} ({} threads)",
            listener.local_addr()?,
            args.threads
        );
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(sock), service_fn(route))
                    .await;
            });
        }
    })
}
