//! The codegen helper against the shipped `.proto` files and broken inputs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferropoll-proto-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn generates_kv_and_echo() {
    let out = scratch_dir("gen");
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(&[dir.join("kv.proto"), dir.join("echo.proto")], &[&dir])
        .unwrap();
    // prettyplease reflows the code: compare without whitespace.
    let squash = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .replace(",)", ")")
            .replace(",>", ">")
    };
    let kv = squash(&std::fs::read_to_string(out.join("kv.rs")).unwrap());
    for needle in [
        "pub trait Kv: ::core::marker::Send + ::core::marker::Sync + 'static",
        "fn get(&self, ctx: &::ferropoll_rpc::Context, req: GetRequest) -> ::core::result::Result<GetResponse, ::ferropoll_rpc::Status>;",
        "pub struct KvServer<T>",
        "impl<T: Kv> ::ferropoll_rpc::Service for KvServer<T>",
        "\"kv.Kv\"",
        "&[\"Get\", \"Put\", \"Delete\", \"List\"]",
        "pub struct KvClient",
        "pub fn get_with(&self, req: &GetRequest, options: &::ferropoll_rpc::CallOptions)",
        "pub fn list_async(&self, req: &ListRequest) -> ::ferropoll_rpc::CallFuture<ListResponse>",
        "pub fn delete_async_with(",
        // bytes fields are zero-copy Bytes
        "pub value: ::prost::bytes::Bytes",
    ] {
        assert!(
            kv.contains(&squash(needle)),
            "kv.rs lacks {needle:?}:\n{kv}"
        );
    }
    let echo = std::fs::read_to_string(out.join("echo.rs")).unwrap();
    assert!(
        echo.contains("pub payload: ::prost::bytes::Bytes"),
        "{echo}"
    );
    assert!(echo.contains("pub struct EchoClient"), "{echo}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn custom_rpc_path_and_server_only() {
    let out = scratch_dir("path");
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .rpc_path("crate::rt")
        .build_client(false)
        .compile(&[dir.join("echo.proto")], &[&dir])
        .unwrap();
    let echo = std::fs::read_to_string(out.join("echo.rs")).unwrap();
    assert!(echo.contains("impl<T: Echo> crate::rt::Service for EchoServer<T>"));
    assert!(!echo.contains("EchoClient"));
    assert!(!echo.contains("ferropoll_rpc"));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn header_schema_parses() {
    let out = scratch_dir("header");
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile(&[dir.join("ferropoll/rpc.proto")], &[&dir])
        .unwrap();
    let rpc = std::fs::read_to_string(out.join("ferropoll.rpc.rs")).unwrap();
    assert!(rpc.contains("pub struct Header"), "{rpc}");
    assert!(rpc.contains("pub enum MessageType"), "{rpc}");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn streaming_rpcs_get_streaming_methods() {
    let src = scratch_dir("stream");
    std::fs::write(
        src.join("s.proto"),
        "syntax = \"proto3\"; package s; message M {} service S { \
         rpc Get(M) returns (M); rpc Watch(M) returns (stream M); \
         rpc Upload(stream M) returns (M); rpc Chat(stream M) returns (stream M); }",
    )
    .unwrap();
    ferropoll_proto::Builder::new()
        .out_dir(&src)
        .emit_rerun_if_changed(false)
        .compile(&[src.join("s.proto")], &[&src])
        .unwrap();
    let code = std::fs::read_to_string(src.join("s.rs")).unwrap();
    for expected in [
        "fn watch(&self, ctx: &::ferropoll_rpc::Context, req: M, responses: ::ferropoll_rpc::SendSink<M>) -> ::core::result::Result<(), ::ferropoll_rpc::Status>;",
        "fn upload(&self, ctx: &::ferropoll_rpc::Context, requests: ::ferropoll_rpc::RecvStream<M>) -> ::core::result::Result<M, ::ferropoll_rpc::Status>;",
        "fn chat(&self, ctx: &::ferropoll_rpc::Context, requests: ::ferropoll_rpc::RecvStream<M>, responses: ::ferropoll_rpc::SendSink<M>) -> ::core::result::Result<(), ::ferropoll_rpc::Status>;",
        "1 => ::ferropoll_rpc::MethodKind::ServerStreaming,",
        "2 => ::ferropoll_rpc::MethodKind::ClientStreaming,",
        "3 => ::ferropoll_rpc::MethodKind::Bidi,",
        "pub fn watch(&self, req: &M) -> ::core::result::Result<::ferropoll_rpc::RecvStream<M>, ::ferropoll_rpc::Status>",
        "pub fn chat_with(&self, options: &::ferropoll_rpc::CallOptions)",
    ] {
        assert!(code.contains(expected), "missing {expected:?} in\n{code}");
    }
    std::fs::remove_dir_all(src).unwrap();
}

#[test]
fn syntax_error_is_reported() {
    let src = scratch_dir("syntax");
    std::fs::write(src.join("bad.proto"), "syntax = \"proto3\"; message {").unwrap();
    let err = ferropoll_proto::Builder::new()
        .out_dir(&src)
        .emit_rerun_if_changed(false)
        .compile(&[src.join("bad.proto")], &[&src])
        .unwrap_err();
    assert!(matches!(err, ferropoll_proto::Error::Parse(_)), "{err:?}");
    assert!(err.to_string().starts_with("cannot compile .proto files"));
    std::fs::remove_dir_all(src).unwrap();
}

#[test]
fn missing_file_is_reported() {
    let dir = ferropoll_proto::protos_dir();
    let err = ferropoll_proto::Builder::new()
        .emit_rerun_if_changed(false)
        .compile(&[dir.join("nope.proto")], &[&dir])
        .unwrap_err();
    assert!(matches!(err, ferropoll_proto::Error::Parse(_)), "{err:?}");
}
