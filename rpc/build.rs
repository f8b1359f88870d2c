//! Generates the example services (echo, kv) and the header schema for this
//! crate's tests and benches, from the `.proto` files of `ferropoll-proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = ferropoll_proto::protos_dir();
    ferropoll_proto::Builder::new().compile(
        &[
            dir.join("echo.proto"),
            dir.join("kv.proto"),
            dir.join("ferropoll/rpc.proto"),
        ],
        &[&dir],
    )?;
    Ok(())
}
