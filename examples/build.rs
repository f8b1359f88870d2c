//! Generates the example services (echo, kv) from the `.proto` files shipped
//! with `ferropoll-proto`; `src/pb.rs` includes them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new()
        .compile(&[dir.join("echo.proto"), dir.join("kv.proto")], &[&dir])?;
    Ok(())
}
