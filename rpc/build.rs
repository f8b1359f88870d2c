//! Generates the example services (echo, kv), the header schema and the
//! streaming test service (`tests/protos/streams.proto`) for this
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
    // A service with one method of each kind, for the streaming tests.
    ferropoll_proto::Builder::new().compile(&["tests/protos/streams.proto"], &["tests/protos"])?;
    Ok(())
}
