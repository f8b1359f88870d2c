//! The RPC example binaries end to end: `rpc-server` on a Unix socket (no
//! port to race for), `rpc-client` commands against it, a short
//! `rpc-bench`, and the `demo`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ferropoll_transport::testing::wait_until;

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_server(name: &str) -> (Server, String) {
    let dir = std::env::temp_dir().join(format!("ferropoll-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rpc.sock");
    let addr = format!("unix:{}", sock.display());
    let child = Command::new(env!("CARGO_BIN_EXE_rpc-server"))
        .args(["--addr", &addr, "--loops", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, dir };
    assert!(
        wait_until(Duration::from_secs(10), || Path::new(&sock).exists()),
        "rpc-server did not start"
    );
    (server, addr)
}

fn client(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpc-client"))
        .args(["--addr", addr])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn rpc_client_commands_against_rpc_server() {
    let (_server, addr) = start_server("cli");
    // The socket exists before the server accepts: retry the first call.
    assert!(wait_until(Duration::from_secs(10), || client(
        &addr,
        &["echo", "hi"]
    )
    .status
    .success()));
    let out = client(&addr, &["echo", "hello world"]);
    assert_eq!(stdout(&out), "hello world\n");

    assert_eq!(stdout(&client(&addr, &["put", "b", "2"])), "created\n");
    assert_eq!(stdout(&client(&addr, &["put", "a", "1"])), "created\n");
    assert_eq!(stdout(&client(&addr, &["put", "a", "11"])), "replaced\n");
    let exists = client(&addr, &["put", "a", "x", "--if-absent"]);
    assert!(!exists.status.success());
    assert!(String::from_utf8_lossy(&exists.stderr).contains("ALREADY_EXISTS"));
    assert_eq!(stdout(&client(&addr, &["get", "a"])), "11\n");
    assert_eq!(stdout(&client(&addr, &["list"])), "a = 11\nb = 2\n");

    let missing = client(&addr, &["get", "zz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOT_FOUND"));

    assert_eq!(stdout(&client(&addr, &["delete", "a"])), "11\n");
    assert_eq!(stdout(&client(&addr, &["list"])), "b = 2\n");

    // Nobody listening: a clear UNAVAILABLE, exit status 1.
    let dead = client("unix:/nonexistent/ferropoll.sock", &["get", "a"]);
    assert_eq!(dead.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("UNAVAILABLE"));
}

#[test]
fn rpc_bench_ends_with_a_key_value_line() {
    let (_server, addr) = start_server("bench");
    assert!(wait_until(Duration::from_secs(10), || client(
        &addr,
        &["echo", "hi"]
    )
    .status
    .success()));
    let out = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args(["--addr", &addr, "--concurrency", "8", "--size", "300"])
        .args(["--secs", "0.5", "--warmup", "0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let get = |k: &str| {
        last.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {last:?}"))
            .to_owned()
    };
    assert!(get("qps").parse::<f64>().unwrap() > 0.0, "{last}");
    assert_eq!(get("errors"), "0", "{last}");
    for k in ["p50_us", "p99_us", "p999_us", "total"] {
        get(k).parse::<u64>().unwrap();
    }
}

#[test]
fn the_demo_shows_every_kind_of_call_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo")).output().unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "-> OK \"hello, ferropoll\"",
        "NOT_FOUND",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "calls/s",
        "shut down gracefully",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}
