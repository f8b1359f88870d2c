//! Generates the example services (echo and kv, included by `src/pb.rs`) from
//! the `.proto` files shipped with `ferropoll-proto`; no system `protoc` is
//! needed. (tonic's echo, the baseline, is generated in `baselines/`.)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new()
        .compile(&[dir.join("echo.proto"), dir.join("kv.proto")], &[&dir])?;
    Ok(())
}
