//! Replays the `decode` fuzz target's checked-in corpus
//! (`fuzz/corpus/decode`) and crash reproducers (`fuzz/regressions/decode`,
//! when any) through the same check the fuzz target runs
//! (`fuzz/fuzz_targets/decode_input.rs`), as an ordinary test.

#[path = "../fuzz/fuzz_targets/decode_input.rs"]
mod decode_input;

#[test]
fn decode_fuzz_corpus_and_regressions_replay_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus/decode", "regressions/decode"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue; // no reproducers checked in
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let run = std::panic::catch_unwind(|| decode_input::run(&data));
            assert!(run.is_ok(), "{} fails the fuzz check", f.display());
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} inputs replayed");
}

/// The `h2` fuzz target's corpus (`fuzz/corpus/h2`) and reproducers
/// (`fuzz/regressions/h2`), through the same in-memory gRPC server.
#[test]
fn h2_fuzz_corpus_and_regressions_replay_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus/h2", "regressions/h2"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let run = std::panic::catch_unwind(|| ferropoll_rpc::__fuzz_grpc_server(&data));
            assert!(run.is_ok(), "{} fails the fuzz check", f.display());
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} inputs replayed");
}
