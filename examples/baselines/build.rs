//! Generates `echo.Echo` for tonic (the baseline of `rpc-bench`) from the
//! `.proto` shipped with `ferropoll-proto`, into `$OUT_DIR/tonic/`; parsed by
//! `protox`, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = ferropoll_proto::protos_dir();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("tonic");
    std::fs::create_dir_all(&out)?;
    let fds = protox::compile([dir.join("echo.proto")], [&dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .out_dir(&out)
        .compile_fds(fds)?;
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("echo.proto").display()
    );
    Ok(())
}
