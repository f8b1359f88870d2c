//! gRPC interop: Python `grpcio` (the C-core implementation, from PyPI) and
//! Node `@grpc/grpc-js` (pure JavaScript, from npm) call `rpc-server` over
//! HTTP/2 cleartext on the port that also speaks the native protocol. The
//! Python is `$FERROPOLL_PYTHON` (a venv with `grpcio` and `grpcio-tools`),
//! the Node modules are in `$FERROPOLL_NODE_PATH` (`@grpc/grpc-js` and
//! `@grpc/proto-loader`); `bash .ci/test` makes both. Without them the tests
//! fail and say how to get them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferropoll_transport::testing::wait_until;

mod common;

use common::rpc_server;

fn python() -> String {
    let python = std::env::var("FERROPOLL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "FERROPOLL_PYTHON is not set: point it at a Python with grpcio and grpcio-tools \
             (`python3 -m venv v && v/bin/pip install grpcio grpcio-tools grpcio-health-checking`; `bash .ci/test` does this)"
        )
    });
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import grpc, grpc_tools and grpc_health (grpcio-health-checking)"
    );
    python
}

fn node_path() -> String {
    let path = std::env::var("FERROPOLL_NODE_PATH").unwrap_or_else(|_| {
        panic!(
            "FERROPOLL_NODE_PATH is not set: point it at a node_modules with @grpc/grpc-js and \
             @grpc/proto-loader (`npm install @grpc/grpc-js @grpc/proto-loader`; `bash .ci/test` does this)"
        )
    });
    assert!(
        Path::new(&path).join("@grpc/grpc-js").exists(),
        "{path} holds no @grpc/grpc-js"
    );
    path
}

/// Runs one case of `tests/grpc/client.js` (grpc-js) against a server
/// started with `extra` flags.
fn grpc_js_case(case: &str, extra: &[&str]) {
    let node_path = node_path();
    let name = format!("js-{case}{}", extra.join(""));
    let (_server, addr) = rpc_server(&name, extra);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["120", "node"])
        .arg(here.join("tests/grpc/client.js"))
        .arg(&addr)
        .arg(here.join("../proto/protos"))
        .arg(case)
        .env("NODE_PATH", &node_path)
        .output()
        .expect("node not found (Debian package nodejs; `bash .ci/test` installs it)");
    assert!(
        out.status.success(),
        "grpc-js case {case} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{case}: ok")));
}

#[test]
fn grpc_js_unary_and_concurrent() {
    grpc_js_case("unary", &[]);
}

#[test]
fn grpc_js_status_code_and_message() {
    grpc_js_case("status", &["--kv-pool"]);
}

#[test]
fn grpc_js_bidi_stream_async_handlers() {
    grpc_js_case("bidi_stream", &["--handlers", "async"]);
}

#[test]
fn grpc_js_bidi_stream_sync_handlers() {
    grpc_js_case("bidi_stream", &[]);
}

#[test]
fn grpc_js_cancel_after_first_response() {
    grpc_js_case("cancel_stream", &[]);
}

/// Runs one case of `tests/grpc/client.py` against a server started with
/// `extra` flags.
fn grpcio_case(case: &str, extra: &[&str]) {
    let python = python();
    // Cases run more than once (with other flags) get servers of their own.
    let name = format!("{case}{}", extra.join(""));
    let (_server, addr) = rpc_server(&name, extra);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protos = here.join("../proto/protos");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&python)
        .arg(here.join("tests/grpc/client.py"))
        .arg(&addr)
        .arg(&protos)
        .arg(case)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grpcio case {case} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{case}: ok")));
}

#[test]
fn grpcio_unary() {
    grpcio_case("unary", &[]);
}

#[test]
fn grpcio_unary_async_handlers() {
    grpcio_case("unary", &["--handlers", "async"]);
}

#[test]
fn grpcio_large_unary_beyond_the_flow_control_windows() {
    grpcio_case("large_unary", &[]);
}

#[test]
fn grpcio_concurrent_unary_on_one_connection() {
    grpcio_case("concurrent_unary", &[]);
}

#[test]
fn grpcio_status_code_and_message_pool_handlers() {
    grpcio_case("status_and_message", &["--kv-pool"]);
}

#[test]
fn grpcio_status_code_and_message_inline_handlers() {
    grpcio_case("status_and_message", &[]);
}

#[test]
fn grpcio_unimplemented_method_and_service() {
    grpcio_case("unimplemented", &[]);
}

#[test]
fn grpcio_deadline_on_a_sleeping_server() {
    grpcio_case(
        "deadline",
        &["--handlers", "async", "--tokio-delay-ms", "300"],
    );
}

#[test]
fn grpcio_bidi_stream_sync_handlers() {
    grpcio_case("bidi_stream", &[]);
}

#[test]
fn grpcio_bidi_stream_async_handlers() {
    grpcio_case("bidi_stream", &["--handlers", "async"]);
}

#[test]
fn grpcio_cancel_after_first_response() {
    grpcio_case("cancel_stream", &[]);
}

#[test]
fn grpcio_cancel_after_first_response_async_handlers() {
    grpcio_case("cancel_stream", &["--handlers", "async"]);
}

#[test]
fn grpcio_health_check_and_watch() {
    grpcio_case("health", &[]);
}

#[test]
fn grpcio_client_compressed_unary_and_stream() {
    grpcio_case("compressed", &[]);
}

/// The native client and a gRPC client on the same port, one after the other.
#[test]
fn native_and_grpc_clients_share_one_port() {
    let python = python();
    let (_server, addr) = rpc_server("shared", &[]);
    let native = || {
        Command::new(env!("CARGO_BIN_EXE_rpc-client"))
            .args(["--addr", &addr, "echo", "native"])
            .output()
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(10), || native()
        .status
        .success()));
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let grpc = Command::new("timeout")
        .arg("120")
        .arg(&python)
        .arg(here.join("tests/grpc/client.py"))
        .arg(&addr)
        .arg(here.join("../proto/protos"))
        .arg("unary")
        .output()
        .unwrap();
    assert!(
        grpc.status.success(),
        "{}",
        String::from_utf8_lossy(&grpc.stderr)
    );
    let again = native();
    assert_eq!(String::from_utf8_lossy(&again.stdout), "native\n");
}
