//! `ferropoll-charts [DIR]`: draws the charts of every `*.csv` in DIR
//! (default `docs/bench`, the comparison scripts' default output) as PNG
//! files beside them. Run from the workspace root:
//!
//! ```text
//! cargo run --release -p ferropoll-charts            # docs/bench/*.csv -> docs/bench/*.png
//! cargo run --release -p ferropoll-charts -- my/dir
//! ```

fn main() -> std::process::ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "docs/bench".into());
    match ferropoll_charts::draw_dir(&dir) {
        Ok(done) if done.is_empty() => {
            eprintln!("ferropoll-charts: no *.csv in {}", dir.display());
            std::process::ExitCode::FAILURE
        }
        Ok(done) => {
            for (csv, drawn) in done {
                for f in drawn.files {
                    println!("{} -> {}", csv.display(), f.display());
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferropoll-charts: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
