//! An HTTP/1.1 server on ferropoll-transport: the library behind the
//! `http-server` binary and its tests.
//!
//! Routes: `GET /plaintext` (TechEmpower's "Hello, World!" with `Server`,
//! `Date`, `Content-Type` and `Content-Length`), `GET /json`,
//! `GET /static/<name>` (files loaded once at start from a directory, or two
//! built-in files), and `POST /echo` (the request body back). `HEAD` works
//! wherever `GET` does; another method on a known route gets 405, an
//! unknown path 404.
//!
//! Requests are parsed with `httparse` straight from the connection's input
//! node (copied once only when a head spans nodes). Every complete request
//! of a read batch is answered in order into the output buffer, then one
//! flush sends them all (pipelining); a batch stops early once the unsent
//! responses pass the transport's output high-water mark, and goes on when
//! the client has read them. Keep-alive is the HTTP/1.1 default;
//! `Connection: close` (or HTTP/1.0 without `keep-alive`) closes after the
//! response. Bodies are framed by `Content-Length` (with
//! `Expect: 100-continue` honoured); `Transfer-Encoding` gets 501. A
//! malformed request gets 400, a head above [`Builder::max_head`] or a body
//! above [`Builder::max_body`] 413; those close the connection.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let server = ferropoll_examples::http::start("127.0.0.1:0", 1)?;
//! let mut client = std::net::TcpStream::connect(server.local_addr())?;
//! client.write_all(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! let mut response = String::new();
//! client.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.ends_with(r#"{"message":"Hello, World!"}"#));
//! # Ok::<(), std::io::Error>(())
//! ```

mod date;

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use ferropoll_linkbuffer::LinkBuffer;
use ferropoll_transport::{Connection, EventLoop, Handler, Listener, Stats};

/// Most header fields per request (more gets 431).
const MAX_HEADERS: usize = 32;

/// Starts an HTTP server on `addr` with `loops` event-loop threads, the
/// built-in static files and the default limits.
///
/// # Errors
///
/// Binding or starting the loops failed.
pub fn start(addr: impl ToSocketAddrs, loops: usize) -> io::Result<HttpServer> {
    Builder::new().loops(loops).start(addr)
}

/// Configures an [`HttpServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    loops: usize,
    static_dir: Option<PathBuf>,
    max_head: usize,
    max_body: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: one loop per core, built-in static files, heads up to
    /// 8 KiB, bodies up to 1 MiB.
    pub fn new() -> Builder {
        Builder {
            loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            static_dir: None,
            max_head: 8 << 10,
            max_body: 1 << 20,
        }
    }
    /// Event-loop threads (at least 1).
    pub fn loops(&mut self, n: usize) -> &mut Self {
        self.loops = n.max(1);
        self
    }
    /// Serve `/static/<name>` from the regular files directly in `dir`
    /// (read once at start: at most 256 files of at most 8 MiB each).
    pub fn static_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.static_dir = Some(dir.into());
        self
    }
    /// Largest request head (request line and headers), in bytes.
    pub fn max_head(&mut self, n: usize) -> &mut Self {
        self.max_head = n.max(64);
        self
    }
    /// Largest request body, in bytes.
    pub fn max_body(&mut self, n: usize) -> &mut Self {
        self.max_body = n;
        self
    }

    /// Loads the static files, binds `addr` and starts serving.
    ///
    /// # Errors
    ///
    /// The static directory could not be read, or binding or starting the
    /// loops failed.
    pub fn start(&self, addr: impl ToSocketAddrs) -> io::Result<HttpServer> {
        let files = match &self.static_dir {
            Some(dir) => load_dir(dir)?,
            None => builtin_files(),
        };
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let handler = HttpHandler {
            files: Arc::new(files),
            max_head: self.max_head,
            max_body: self.max_body,
        };
        let lp = EventLoop::builder()
            .name("http")
            .num_loops(self.loops)
            .build(handler)?;
        lp.listen(Listener::from(listener))?;
        Ok(HttpServer { lp, addr: local })
    }
}

/// A running HTTP server. Dropping it stops the loops and closes every
/// connection.
#[derive(Debug)]
pub struct HttpServer {
    lp: EventLoop,
    addr: SocketAddr,
}

impl HttpServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// The event loop's counters.
    pub fn stats(&self) -> Stats {
        self.lp.stats()
    }
    /// Stops accepting, lets running rounds finish, closes the connections.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the loops did not stop within `deadline`.
    pub fn shutdown(self, deadline: Duration) -> io::Result<()> {
        self.lp.shutdown(deadline)
    }
}

/// A static file: its bytes and content type.
#[derive(Debug, Clone)]
struct File {
    body: Bytes,
    content_type: &'static str,
}

fn content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

fn builtin_files() -> HashMap<String, File> {
    let mut m = HashMap::new();
    m.insert(
        "index.html".to_string(),
        File {
            body: Bytes::from_static(
                b"<!doctype html>\n<title>ferropoll</title>\n<p>Hello from ferropoll.</p>\n",
            ),
            content_type: content_type("index.html"),
        },
    );
    m.insert(
        "hello.txt".to_string(),
        File {
            body: Bytes::from_static(b"Hello, World!\n"),
            content_type: content_type("hello.txt"),
        },
    );
    m
}

/// Reads the regular files directly in `dir`. Only these names are ever
/// served, so no request path can reach outside the directory.
fn load_dir(dir: &Path) -> io::Result<HashMap<String, File>> {
    const MAX_FILES: usize = 256;
    const MAX_FILE: u64 = 8 << 20;
    let mut m = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_FILE || name.starts_with('.') {
            continue;
        }
        if m.len() == MAX_FILES {
            break;
        }
        let body = Bytes::from(std::fs::read(entry.path())?);
        let content_type = content_type(&name);
        m.insert(name, File { body, content_type });
    }
    Ok(m)
}

struct HttpHandler {
    files: Arc<HashMap<String, File>>,
    max_head: usize,
    max_body: usize,
}

/// Per-connection state.
#[derive(Default)]
struct ConnState {
    /// Readable bytes needed before the pending request can be answered.
    need: usize,
    /// `100 Continue` was sent for the pending request.
    continued: bool,
}

/// What to send.
enum Body {
    Static(&'static [u8]),
    Shared(Bytes),
    /// The request's own body (`POST /echo`), `len` bytes after the head.
    Echo(usize),
    Text(&'static str),
}

/// One parsed request head, owned (no borrow of the input).
struct Head {
    /// Bytes of the head.
    len: usize,
    /// Body length (Content-Length).
    body: usize,
    keep_alive: bool,
    expect_continue: bool,
    head_only: bool,
    status: &'static str,
    content_type: Option<&'static str>,
    payload: Body,
    extra: &'static str,
    /// Close after answering (errors the stream cannot recover from).
    fatal: bool,
    /// The whole response but the date, for the hot routes: (everything up
    /// to `Date: `, everything after the date).
    canned: Option<(&'static [u8], &'static [u8])>,
}

/// Outcome of parsing at the start of the input.
enum Parsed {
    Request(Head),
    /// The head is not complete.
    Partial,
}

const PLAINTEXT: &[u8] = b"Hello, World!";
const JSON: &[u8] = br#"{"message":"Hello, World!"}"#;

/// The keep-alive `GET /plaintext` and `GET /json` responses around their
/// date: one copy each instead of a dozen small ones. A test checks they
/// equal what `write_response` builds field by field.
const PLAINTEXT_CANNED: (&[u8], &[u8]) = (
    b"HTTP/1.1 200 OK\r\nServer: ferropoll\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nDate: ",
    b"\r\n\r\nHello, World!",
);
const JSON_CANNED: (&[u8], &[u8]) = (
    b"HTTP/1.1 200 OK\r\nServer: ferropoll\r\nContent-Type: application/json\r\nContent-Length: 27\r\nDate: ",
    b"\r\n\r\n{\"message\":\"Hello, World!\"}",
);

impl HttpHandler {
    /// Parses one request head from `buf` (the contiguous start of input).
    fn parse(&self, buf: &[u8]) -> Parsed {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(httparse::Error::TooManyHeaders) => {
                return Parsed::Request(error_head(0, "431 Request Header Fields Too Large"));
            }
            Err(_) => return Parsed::Request(error_head(0, "400 Bad Request")),
        };
        if len > self.max_head {
            return Parsed::Request(error_head(len, "413 Payload Too Large"));
        }
        let http11 = req.version == Some(1);
        let mut keep_alive = http11;
        let mut body: Option<usize> = None;
        let mut expect_continue = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let v = trim(h.value);
                let n = match parse_usize(v) {
                    Some(n) if body.is_none_or(|b| b == n) => n,
                    _ => return Parsed::Request(error_head(len, "400 Bad Request")),
                };
                body = Some(n);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Parsed::Request(error_head(len, "501 Not Implemented"));
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        let body = body.unwrap_or(0);
        if body > self.max_body {
            return Parsed::Request(error_head(len, "413 Payload Too Large"));
        }
        let method = req.method.unwrap_or("");
        let target = req.path.unwrap_or("/");
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let (get, head_only) = match method {
            "GET" => (true, false),
            "HEAD" => (true, true),
            _ => (false, false),
        };
        let mut h = Head {
            len,
            body,
            keep_alive,
            expect_continue,
            head_only,
            status: "200 OK",
            content_type: None,
            payload: Body::Static(b""),
            extra: "",
            fatal: false,
            canned: None,
        };
        let not_allowed = |h: &mut Head, allow: &'static str| {
            h.status = "405 Method Not Allowed";
            h.content_type = Some("text/plain");
            h.payload = Body::Static(b"Method Not Allowed");
            h.extra = allow;
        };
        match path {
            "/plaintext" | "/json" if !get => not_allowed(&mut h, "Allow: GET, HEAD\r\n"),
            "/plaintext" => {
                h.content_type = Some("text/plain");
                h.payload = Body::Static(PLAINTEXT);
                h.canned = (keep_alive && !head_only).then_some(PLAINTEXT_CANNED);
            }
            "/json" => {
                h.content_type = Some("application/json");
                h.payload = Body::Static(JSON);
                h.canned = (keep_alive && !head_only).then_some(JSON_CANNED);
            }
            "/echo" if method != "POST" => not_allowed(&mut h, "Allow: POST\r\n"),
            "/echo" => {
                h.content_type = Some("application/octet-stream");
                h.payload = Body::Echo(body);
            }
            _ => match path
                .strip_prefix("/static/")
                .and_then(|n| self.files.get(n))
            {
                Some(_) if !get => not_allowed(&mut h, "Allow: GET, HEAD\r\n"),
                Some(f) => {
                    h.content_type = Some(f.content_type);
                    h.payload = Body::Shared(f.body.clone());
                }
                None => {
                    h.status = "404 Not Found";
                    h.content_type = Some("text/plain");
                    h.payload = Body::Text("Not Found");
                }
            },
        }
        Parsed::Request(h)
    }
}

fn error_head(len: usize, status: &'static str) -> Head {
    Head {
        len,
        body: 0,
        keep_alive: false,
        expect_continue: false,
        head_only: false,
        status,
        content_type: Some("text/plain"),
        payload: Body::Static(status.as_bytes().split_at(4).1),
        extra: "",
        fatal: true,
        canned: None,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Decimal digits only (no sign, no spaces), without overflow.
fn parse_usize(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0usize, |n, &c| {
        let d = c.wrapping_sub(b'0');
        (d <= 9).then(|| n * 10 + d as usize)
    })
}

/// Writes the status line and headers, and the body unless `HEAD`.
fn write_response(w: &mut LinkBuffer, h: &Head, date: &[u8], echo: Option<LinkBuffer>) {
    if let Some((pre, post)) = h.canned {
        let out = w.malloc(pre.len() + date.len() + post.len());
        let (a, rest) = out.split_at_mut(pre.len());
        let (b, c) = rest.split_at_mut(date.len());
        a.copy_from_slice(pre);
        b.copy_from_slice(date);
        c.copy_from_slice(post);
        return;
    }
    let body_len = match &h.payload {
        Body::Static(b) => b.len(),
        Body::Shared(b) => b.len(),
        Body::Echo(n) => *n,
        Body::Text(t) => t.len(),
    };
    let mut len_buf = itoa::Buffer::new();
    let len = len_buf.format(body_len).as_bytes();
    let ctype = h.content_type.unwrap_or("text/plain");
    let conn: &[u8] = if h.keep_alive {
        b""
    } else {
        b"Connection: close\r\n"
    };
    let parts: [&[u8]; 12] = [
        b"HTTP/1.1 ",
        h.status.as_bytes(),
        b"\r\nServer: ferropoll\r\nContent-Type: ",
        ctype.as_bytes(),
        b"\r\nContent-Length: ",
        len,
        b"\r\nDate: ",
        date,
        b"\r\n",
        conn,
        h.extra.as_bytes(),
        b"\r\n",
    ];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let small_body = match &h.payload {
        Body::Static(b) if !h.head_only && b.len() <= 256 => Some(*b),
        _ => None,
    };
    // Head (and a small body) in one contiguous run of the output node.
    let out = w.malloc(total + small_body.map_or(0, |b| b.len()));
    let mut i = 0;
    for p in parts.iter().chain(small_body.as_ref()) {
        out[i..i + p.len()].copy_from_slice(p);
        i += p.len();
    }
    if h.head_only || small_body.is_some() {
        return;
    }
    match &h.payload {
        Body::Static(b) => w.write_binary(b),
        Body::Shared(b) => w.write_bytes(b.clone()),
        Body::Text(t) => w.write_binary(t.as_bytes()),
        Body::Echo(_) => {
            if let Some(b) = echo {
                w.append(b);
            }
        }
    }
}

/// How a round ended.
enum End {
    Done,
    Close,
}

impl Handler for HttpHandler {
    type State = ConnState;

    fn on_connect(&self, _conn: &Connection) -> ConnState {
        ConnState::default()
    }

    fn on_request(&self, st: &mut ConnState, conn: &Connection) -> io::Result<()> {
        let mut r = conn.reader();
        if r.len() < st.need {
            return r.wait(st.need);
        }
        st.need = 0;
        let mut w = conn.writer();
        let date = date::now();
        let end = loop {
            let avail = r.len();
            if avail == 0 {
                break End::Done;
            }
            let chunk = r.chunk();
            let parsed = if chunk.len() == avail {
                self.parse(chunk)
            } else {
                match self.parse(chunk) {
                    Parsed::Partial => {
                        // The head spans input nodes: parse a bounded copy.
                        let n = avail.min(self.max_head + 1);
                        let buf = r.peek(n)?;
                        self.parse(buf)
                    }
                    done => done,
                }
            };
            let head = match parsed {
                Parsed::Request(h) => h,
                Parsed::Partial if avail > self.max_head => {
                    let h = error_head(0, "413 Payload Too Large");
                    write_response(&mut w, &h, &date, None);
                    break End::Close;
                }
                Parsed::Partial => {
                    st.need = avail + 1;
                    break End::Done;
                }
            };
            if head.fatal {
                write_response(&mut w, &head, &date, None);
                break End::Close;
            }
            let total = head.len + head.body;
            if avail < total {
                if head.expect_continue && !st.continued {
                    w.write_binary(b"HTTP/1.1 100 Continue\r\n\r\n");
                    st.continued = true;
                }
                st.need = total;
                break End::Done;
            }
            st.continued = false;
            r.skip(head.len)?;
            let echo = match head.payload {
                Body::Echo(n) => Some(r.slice(n)?),
                _ => {
                    r.skip(head.body)?;
                    None
                }
            };
            write_response(&mut w, &head, &date, echo);
            if !head.keep_alive {
                break End::Close;
            }
            if w.is_full() {
                // Pipelined requests whose answers the peer does not read:
                // the rest waits until it does (output high-water mark).
                break End::Done;
            }
        };
        if w.unflushed_len() > 0 {
            w.flush()?;
        }
        match end {
            End::Close => conn.close(),
            End::Done if st.need > 0 => match r.wait(st.need) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            },
            End::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> HttpHandler {
        HttpHandler {
            files: Arc::new(builtin_files()),
            max_head: 8 << 10,
            max_body: 1 << 20,
        }
    }

    fn head(req: &[u8]) -> Option<(usize, usize, bool, &'static str)> {
        match handler().parse(req) {
            Parsed::Request(h) => Some((h.len, h.body, h.keep_alive, h.status)),
            Parsed::Partial => None,
        }
    }

    #[test]
    fn routes_and_framing() {
        let r = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head(r), Some((r.len(), 0, true, "200 OK")));
        for cut in 0..r.len() {
            assert!(head(&r[..cut]).is_none(), "cut {cut}");
        }
        assert!(!head(b"GET /json?x=1 HTTP/1.0\r\n\r\n").unwrap().2);
        assert!(
            head(b"GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .2
        );
        assert!(
            !head(b"GET /json HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .2
        );
        assert_eq!(
            head(b"GET /nope HTTP/1.1\r\n\r\n").unwrap().3,
            "404 Not Found"
        );
        assert_eq!(
            head(b"POST /plaintext HTTP/1.1\r\n\r\n").unwrap().3,
            "405 Method Not Allowed"
        );
        assert_eq!(
            head(b"GET /static/hello.txt HTTP/1.1\r\n\r\n").unwrap().3,
            "200 OK"
        );
        assert_eq!(
            head(b"GET /static/../Cargo.toml HTTP/1.1\r\n\r\n")
                .unwrap()
                .3,
            "404 Not Found"
        );
        let p = b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(head(p), Some((p.len() - 5, 5, true, "200 OK")));
    }

    #[test]
    fn bad_requests() {
        let s = |r: &[u8]| head(r).unwrap().3;
        assert_eq!(s(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"), "400 Bad Request");
        assert_eq!(
            s(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            "400 Bad Request"
        );
        assert_eq!(
            s(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            "400 Bad Request"
        );
        assert_eq!(
            s(b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            "413 Payload Too Large"
        );
        assert_eq!(
            s(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "501 Not Implemented"
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(s(&many), "431 Request Header Fields Too Large");
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(s(&big), "413 Payload Too Large");
    }

    #[test]
    fn canned_responses_equal_the_built_ones() {
        for req in [
            &b"GET /plaintext HTTP/1.1\r\n\r\n"[..],
            b"GET /json HTTP/1.1\r\n\r\n",
        ] {
            let Parsed::Request(mut h) = handler().parse(req) else {
                panic!("partial")
            };
            assert!(h.canned.is_some());
            let render = |h: &Head| {
                let mut w = LinkBuffer::new();
                write_response(&mut w, h, b"Thu, 01 Jan 1970 00:00:00 GMT", None);
                w.flush();
                let n = w.len();
                w.read_binary(n).unwrap()
            };
            let canned = render(&h);
            h.canned = None;
            assert_eq!(
                String::from_utf8(canned).unwrap(),
                String::from_utf8(render(&h)).unwrap()
            );
        }
    }

    #[test]
    fn response_bytes() {
        let h = match handler().parse(b"GET /plaintext HTTP/1.1\r\n\r\n") {
            Parsed::Request(h) => h,
            Parsed::Partial => panic!(),
        };
        let mut w = LinkBuffer::new();
        write_response(&mut w, &h, b"Thu, 01 Jan 1970 00:00:00 GMT", None);
        w.flush();
        let n = w.len();
        let text = String::from_utf8(w.read_binary(n).unwrap()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: ferropoll\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\
             Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nHello, World!"
        );
    }
}
