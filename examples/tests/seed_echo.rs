//! The seed document's check, as written:
//!
//! ```text
//! echo-server                          # no arguments: loopback port 9000
//! echo -e "dddd" | nc 0.0.0.0 9000     # prints dddd
//! ```
//!
//! with the real `nc` (netcat-openbsd, which `.ci/test` installs) under a
//! `timeout` (nc keeps the connection open after stdin ends, so it is the
//! timeout that stops it). Fails, saying why, when port 9000 is taken or
//! `nc` is missing.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferropoll_transport::testing::wait_until;

mod common;
use common::have;

#[test]
fn echo_server_with_no_arguments_echoes_dddd_through_nc() {
    for (bin, package) in [
        ("nc", "netcat-openbsd"),
        ("timeout", "coreutils"),
        ("bash", "bash"),
    ] {
        assert!(
            have(bin),
            "`{bin}` not found: install Debian package {package} (`bash .ci/test` installs it)"
        );
    }
    // Port 9000 must be free for `echo-server` with no arguments.
    // A taken port fails the test, saying so: the check is about that port.
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:9000") {
        panic!(
            "port 9000 is not free ({e}): this test runs the seed's command, \
             `echo-server` with no arguments on port 9000; stop what holds it"
        );
    }
    let mut server = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        TcpStream::connect("127.0.0.1:9000").is_ok()
    });
    let out = up.then(|| {
        Command::new("bash")
            .args(["-c", "echo -e \"dddd\" | timeout 2 nc 0.0.0.0 9000"])
            .output()
            .unwrap()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "echo-server did not listen on port 9000");
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "dddd\n",
        "nc's stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}
