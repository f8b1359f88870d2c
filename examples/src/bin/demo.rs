//! The main demo (grows with the project).
fn main() {
    let b = ferropoll_mcache::malloc(1000);
    println!(
        "mcache: asked for 1000 bytes, got a buffer of class {}",
        b.capacity()
    );
}
