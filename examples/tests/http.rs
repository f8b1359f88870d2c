//! http-server over real loopback sockets: raw HTTP/1.1 bytes, `curl` and
//! `wrk` (Debian packages `curl` and `wrk`; `bash .ci/test` installs them).

use std::io::{Read, Write};
use std::net::TcpStream;

use ferropoll_examples::http::{self, Builder, HttpServer};
use ferropoll_transport::testing::LeakCheck;

mod common;
use common::{connect, tool};

fn server() -> HttpServer {
    http::start("127.0.0.1:0", 2).expect("start http-server")
}

/// One response read from `s`: (status line, lowercase headers, body).
/// Framed by Content-Length, as the server always sends it.
struct Resp {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_resp(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 8192];
        let n = s.read(&mut tmp).expect("read response");
        assert!(
            n > 0,
            "EOF inside a response head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let head_only = status.starts_with("HTTP/1.1 100");
    let total = head_end + if head_only { 0 } else { len };
    while buf.len() < total {
        let mut tmp = [0u8; 65536];
        let n = s.read(&mut tmp).expect("read body");
        assert!(n > 0, "EOF inside a body");
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[head_end..total].to_vec();
    buf.drain(..total);
    Resp {
        status,
        headers,
        body,
    }
}

/// Asserts nothing follows the last response and the server closes.
fn expect_eof(s: &mut TcpStream, buf: &[u8]) {
    assert!(
        buf.is_empty(),
        "bytes after the last response: {:?}",
        String::from_utf8_lossy(buf)
    );
    common::expect_eof(s);
}

/// curl's output for `args` (status checked).
fn curl(args: &[&str]) -> String {
    let out = tool("curl", "curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_routes_and_status_codes() {
    let leaks = LeakCheck::new();
    let srv = server();
    let base = format!("http://{}", srv.local_addr());
    let out = curl(&["-i", &format!("{base}/plaintext")]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\r\nContent-Type: text/plain\r\n"), "{out}");
    assert!(out.contains("\r\nContent-Length: 13\r\n"), "{out}");
    assert!(out.contains("\r\nServer: ferropoll\r\n"), "{out}");
    let date = out
        .split("\r\nDate: ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap();
    assert!(httpdate::parse_http_date(date).is_ok(), "Date: {date}");
    assert!(out.ends_with("\r\n\r\nHello, World!"), "{out}");
    assert_eq!(
        curl(&[&format!("{base}/json")]),
        r#"{"message":"Hello, World!"}"#
    );
    assert_eq!(
        curl(&[&format!("{base}/static/hello.txt")]),
        "Hello, World!\n"
    );
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        curl(&a)
    };
    assert_eq!(code(&[&format!("{base}/nowhere")]), "404");
    assert_eq!(code(&[&format!("{base}/static/missing.txt")]), "404");
    assert_eq!(
        code(&["--path-as-is", &format!("{base}/static/../Cargo.toml")]),
        "404"
    );
    assert_eq!(code(&["-X", "POST", &format!("{base}/plaintext")]), "405");
    assert_eq!(code(&["-I", &format!("{base}/json")]), "200");
    // A body over the 1 MiB limit: curl announces it and gets 413.
    let big = std::env::temp_dir().join(format!("ferropoll-http-big-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let data = format!("@{}", big.display());
    assert_eq!(
        code(&["--data-binary", &data, &format!("{base}/echo")]),
        "413"
    );
    let _ = std::fs::remove_file(&big);
    // A body under it comes back whole.
    let body: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(
        curl(&["--data-binary", &body, &format!("{base}/echo")]),
        body
    );
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn curl_keep_alive_and_connection_close() {
    let leaks = LeakCheck::new();
    let srv = server();
    let url = format!("http://{}/plaintext", srv.local_addr());
    // Three requests in one curl run share one connection.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        &url,
        &url,
        &url,
    ]);
    assert_eq!(out, "1 0 0 ", "curl reused the connection");
    assert_eq!(srv.stats().accepted, 1);
    // With Connection: close the server says so and closes.
    let out = curl(&[
        "-H",
        "Connection: close",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        &url,
        &url,
    ]);
    assert_eq!(out, "1 1 ");
    let out = curl(&["-i", "-H", "Connection: close", &url]);
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn wrk_runs_with_no_errors() {
    let leaks = LeakCheck::new();
    let srv = server();
    let url = format!("http://{}/plaintext", srv.local_addr());
    let out = tool("wrk", "wrk")
        .args(["-t1", "-c32", "-d2s", &url])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {text}"));
    assert!(requests > 1000, "{text}");
    assert_eq!(srv.stats().handler_panics, 0);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn pipelined_requests_answered_in_order() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    let mut batch = Vec::new();
    let paths = ["/plaintext", "/json", "/nowhere", "/static/hello.txt"];
    for i in 0..64 {
        batch.extend_from_slice(
            format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", paths[i % 4]).as_bytes(),
        );
    }
    batch.extend_from_slice(
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /json HTTP/1.1\r\n\r\n",
    );
    s.write_all(&batch).unwrap();
    let mut buf = Vec::new();
    for i in 0..64 {
        let r = read_resp(&mut s, &mut buf);
        let (status, body): (&str, &[u8]) = match i % 4 {
            0 => ("HTTP/1.1 200 OK", b"Hello, World!"),
            1 => ("HTTP/1.1 200 OK", br#"{"message":"Hello, World!"}"#),
            2 => ("HTTP/1.1 404 Not Found", b"Not Found"),
            _ => ("HTTP/1.1 200 OK", b"Hello, World!\n"),
        };
        assert_eq!(
            (r.status.as_str(), &r.body[..]),
            (status, body),
            "response {i}"
        );
    }
    let r = read_resp(&mut s, &mut buf);
    assert_eq!(r.body, b"hello");
    let r = read_resp(&mut s, &mut buf);
    assert_eq!(r.header("content-type"), Some("application/json"));
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn requests_split_at_every_byte_boundary() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    let req: &[u8] = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    let mut buf = Vec::new();
    for cut in 1..req.len() {
        s.write_all(&req[..cut]).unwrap();
        s.flush().unwrap();
        s.write_all(&req[cut..]).unwrap();
        let r = read_resp(&mut s, &mut buf);
        assert_eq!(
            (r.status.as_str(), &r.body[..]),
            ("HTTP/1.1 200 OK", &b"abc"[..]),
            "cut {cut}"
        );
    }
    for b in req {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(read_resp(&mut s, &mut buf).body, b"abc");
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn bad_requests_are_answered_and_closed() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut long_header = b"GET /plaintext HTTP/1.1\r\nX-Long: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'a', 9000));
    long_header.extend_from_slice(b"\r\n\r\n");
    let mut endless_head = b"GET /plaintext HTTP/1.1\r\nX-Long: ".to_vec();
    endless_head.extend(std::iter::repeat_n(b'a', 20_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage\r\n\r\n".to_vec(), "400"),
        (
            b"GET /plaintext HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
            "400",
        ),
        (
            b"GET /plaintext HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            "400",
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "400"),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_vec(),
            "413",
        ),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "501",
        ),
        (long_header, "413"),
        (endless_head, "413"),
    ];
    for (req, code) in cases {
        let mut s = connect(srv.local_addr());
        let _ = s.write_all(&req);
        let mut buf = Vec::new();
        let r = read_resp(&mut s, &mut buf);
        assert!(
            r.status.starts_with(&format!("HTTP/1.1 {code} ")),
            "{} for {:?}",
            r.status,
            String::from_utf8_lossy(&req[..req.len().min(60)])
        );
        assert_eq!(r.header("connection"), Some("close"));
        expect_eof(&mut s, &buf);
    }
    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET /json HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_resp(&mut s, &mut buf).status, "HTTP/1.1 200 OK");
    expect_eof(&mut s, &buf);
    drop(s);
    assert_eq!(srv.stats().handler_panics, 0);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn expect_continue_then_body() {
    let leaks = LeakCheck::new();
    let srv = server();
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_resp(&mut s, &mut buf).status, "HTTP/1.1 100 Continue");
    s.write_all(b"ping").unwrap();
    let r = read_resp(&mut s, &mut buf);
    assert_eq!(
        (r.status.as_str(), &r.body[..]),
        ("HTTP/1.1 200 OK", &b"ping"[..])
    );
    drop(s);
    drop(srv);
    leaks.assert_clean();
}

#[test]
fn static_dir_is_served_without_traversal() {
    let leaks = LeakCheck::new();
    let dir = std::env::temp_dir().join(format!("ferropoll-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("page.html"), "<p>hi</p>").unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    std::fs::write(dir.join("blob.bin"), &big).unwrap();
    std::fs::write(dir.join("sub").join("secret.txt"), "no").unwrap();
    let mut b = Builder::new();
    b.loops(1).static_dir(&dir);
    let srv = b.start("127.0.0.1:0").unwrap();
    let mut s = connect(srv.local_addr());
    let mut buf = Vec::new();
    s.write_all(b"GET /static/page.html HTTP/1.1\r\n\r\nGET /static/blob.bin HTTP/1.1\r\n\r\n")
        .unwrap();
    let r = read_resp(&mut s, &mut buf);
    assert_eq!(r.body, b"<p>hi</p>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(read_resp(&mut s, &mut buf).body, big);
    for path in [
        "/static/sub/secret.txt",
        "/static/../page.html",
        "/static/%2e%2e/x",
        "/static/hello.txt",
    ] {
        s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(
            read_resp(&mut s, &mut buf).status,
            "HTTP/1.1 404 Not Found",
            "{path}"
        );
    }
    drop(s);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    leaks.assert_clean();
}
