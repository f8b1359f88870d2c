//! Helpers shared by the example programs' integration tests (each test
//! binary uses a subset). Fd and mcache leak checks come from
//! `ferropoll_transport::testing`.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Read timeout of test sockets: a server that stops answering fails the
/// test instead of hanging it.
pub const T: Duration = Duration::from_secs(10);

/// A blocking loopback client socket with `TCP_NODELAY` and a read timeout
/// of [`T`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Asserts the server closes `s` (EOF or reset) within the read timeout,
/// sending nothing more.
pub fn expect_eof(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// Whether `bin` is on the `PATH`.
pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command line running `bin` under `timeout 60`; fails the test with
/// the Debian package to install when `bin` is missing (`bash .ci/test`
/// installs every tool the tests use).
pub fn tool(bin: &str, package: &str) -> Command {
    assert!(
        have(bin),
        "`{bin}` not found: install Debian package {package} (`bash .ci/test` installs it)"
    );
    let mut c = Command::new("timeout");
    c.args(["60", bin]);
    c
}

/// A free loopback port (bound, then released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `rpc-server` on a Unix socket in a directory of its own
/// (no port to race for); killed, and the directory removed, on drop.
pub struct RpcServer {
    pub child: std::process::Child,
    /// Removed on drop.
    pub dir: std::path::PathBuf,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `rpc-server --loops 1` with `extra` flags on a socket named
/// after `name` (unique within a test binary); returns it and its address
/// (`unix:/path`, as `rpc-client` and gRPC clients take it) once the
/// socket exists. The server may not accept yet: retry the first call.
pub fn rpc_server(name: &str, extra: &[&str]) -> (RpcServer, String) {
    let dir = std::env::temp_dir().join(format!("ferropoll-rpc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rpc.sock");
    let addr = format!("unix:{}", sock.display());
    let child = Command::new(env!("CARGO_BIN_EXE_rpc-server"))
        .args(["--addr", &addr, "--loops", "1"])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = RpcServer { child, dir };
    assert!(
        ferropoll_transport::testing::wait_until(Duration::from_secs(10), || sock.exists()),
        "rpc-server did not start"
    );
    (server, addr)
}
