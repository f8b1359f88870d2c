//! The RPC example binaries end to end: `rpc-server` on a Unix socket (no
//! port to race for), `rpc-client` commands against it, a short
//! `rpc-bench`, and the `demo`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferropoll_transport::testing::wait_until;

mod common;

use common::{RpcServer, rpc_server};

fn start_server(name: &str) -> (RpcServer, String) {
    rpc_server(name, &[])
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

/// Runs `rpc-bench` with `args` against `addr`; the key=value pairs of its
/// last line.
fn bench(addr: &str, args: &[&str]) -> std::collections::HashMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args(["--addr", addr])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default().to_owned();
    last.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn rpc_bench_streams_against_sync_and_async_handlers() {
    for handlers in ["sync", "async"] {
        let (_server, addr) = rpc_server(&format!("stream-{handlers}"), &["--handlers", handlers]);
        assert!(wait_until(Duration::from_secs(10), || client(
            &addr,
            &["echo", "hi"]
        )
        .status
        .success()));
        let kv = bench(
            &addr,
            &[
                "--stream",
                "--concurrency",
                "8",
                "--secs",
                "0.5",
                "--warmup",
                "0.1",
            ],
        );
        assert_eq!(kv["errors"], "0", "{handlers}: {kv:?}");
        assert_eq!(kv["mode"], "stream", "{kv:?}");
        assert!(
            kv["qps"].parse::<f64>().unwrap() > 0.0,
            "{handlers}: {kv:?}"
        );
    }
}

#[test]
fn async_handlers_awaiting_a_tokio_timer() {
    let (_server, addr) = rpc_server(
        "tokio-delay",
        &["--handlers", "async", "--tokio-delay-ms", "40"],
    );
    assert!(wait_until(Duration::from_secs(10), || client(
        &addr,
        &["echo", "hi"]
    )
    .status
    .success()));
    // Every answer waits 40 ms on the tokio timer; 16 calls wait at once.
    for mode in [&[][..], &["--stream"][..]] {
        let mut args = vec!["--concurrency", "16", "--secs", "0.5", "--warmup", "0.1"];
        args.extend_from_slice(mode);
        let kv = bench(&addr, &args);
        assert_eq!(kv["errors"], "0", "{kv:?}");
        let p50: u64 = kv["p50_us"].parse().unwrap();
        assert!(p50 >= 40_000, "answers did not wait for the timer: {kv:?}");
        // and they waited concurrently: about 16 per 40 ms, not one
        let qps: f64 = kv["qps"].parse().unwrap();
        assert!(qps > 100.0, "the waits were not concurrent: {kv:?}");
    }
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

/// `rpc-server --metrics-addr`: curl scrapes the counts of the calls made.
#[test]
fn rpc_server_serves_metrics_that_curl_scrapes() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("ferropoll-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("unix:{}", dir.join("rpc.sock").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpc-server"))
        .args([
            "--addr",
            &addr,
            "--loops",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--trace", "--method-limit", "100"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // The first line names the metrics address.
    let url = lines
        .next()
        .expect("rpc-server printed nothing")
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a metrics URL")
        .to_owned();
    // Keep reading its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let server = RpcServer { child, dir };
    assert!(wait_until(Duration::from_secs(10), || client(
        &addr,
        &["echo", "hi"]
    )
    .status
    .success()));
    for _ in 0..4 {
        assert!(client(&addr, &["echo", "x"]).status.success());
    }
    assert_eq!(client(&addr, &["get", "missing"]).status.code(), Some(1));

    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", &url])
        .output()
        .expect("curl must be installed (.ci/test installs it)");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |sample: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample))
            .map(|v| v.trim().parse().unwrap())
    };
    let echo = r#"side="server",service="echo.Echo",method="Echo""#;
    assert_eq!(
        value(&format!("ferropoll_rpc_calls_total{{{echo},code=\"OK\"}} ")),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(
            r#"ferropoll_rpc_calls_total{side="server",service="kv.Kv",method="Get",code="NOT_FOUND"} "#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&format!("ferropoll_rpc_in_flight{{{echo}}} ")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&format!("ferropoll_rpc_duration_seconds_count{{{echo}}} ")),
        Some(5.0),
        "{text}"
    );
    // Other paths are not found.
    let other = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url.replace("/metrics", "/x"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");
    drop(server);
}
