//! Replays the RESP fuzz target's checked-in corpus (`fuzz/corpus/resp`) and
//! crash reproducers (`fuzz/regressions/resp`) through the same check the
//! fuzz target runs (`fuzz/fuzz_targets/resp_input.rs`), as an ordinary test.

#[allow(dead_code)]
#[path = "../src/resp/parse.rs"]
mod parse;
#[path = "../fuzz/fuzz_targets/resp_input.rs"]
mod resp_input;

#[test]
fn resp_fuzz_corpus_and_regressions_replay_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus/resp", "regressions/resp"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let run = std::panic::catch_unwind(|| resp_input::run(&data));
            assert!(run.is_ok(), "{} fails the fuzz check", f.display());
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} inputs found");
}
