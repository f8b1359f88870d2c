//! Replays the `ops` fuzz target's checked-in corpus (`fuzz/corpus/ops`) and
//! crash reproducers (`fuzz/regressions/ops`, when any) through the same
//! check the fuzz target runs (`fuzz/fuzz_targets/ops_input.rs`), as an
//! ordinary test. Under valgrind every 16th input is replayed.

#[path = "common/model.rs"]
mod model;
#[path = "../fuzz/fuzz_targets/ops_input.rs"]
mod ops_input;

#[test]
fn ops_fuzz_corpus_and_regressions_replay_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let step = if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        16
    } else {
        1
    };
    let mut n = 0;
    for dir in ["corpus/ops", "regressions/ops"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue; // no reproducers checked in
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().step_by(step) {
            let data = std::fs::read(f).unwrap();
            let run = std::panic::catch_unwind(|| ops_input::run(&data));
            assert!(run.is_ok(), "{} fails the fuzz check", f.display());
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} inputs replayed");
}
