//! The chart tool on a CSV as the comparison scripts write it: every chart
//! is drawn as a real PNG, and malformed input is refused with its line.

use std::path::PathBuf;

use ferropoll_charts::{COLUMNS, Error, Table, draw_dir};

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferropoll-charts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn csv(rows: &[&str]) -> String {
    let mut s = String::from("# rpc-compare: test data  2026-12-03T00:00:00Z  2 cpus\n");
    s.push_str(&COLUMNS.join(","));
    s.push('\n');
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// Two contenders, two workloads, three concurrencies, two rounds each.
fn rpc_rows() -> Vec<String> {
    let mut rows = Vec::new();
    for (size, scale) in [("128B", 1.0), ("4096B", 0.6)] {
        for conc in [1, 50, 500] {
            for (name, speed) in [("ferropoll", 2.0), ("tonic", 1.0)] {
                for round in 1..=2 {
                    let qps = 10_000.0 * speed * scale * (conc as f64).ln_1p() + round as f64;
                    rows.push(format!(
                        "rpc,{size},concurrency,{conc},{name},{round},{qps:.0},calls/s,{},{},{},{:.2},0",
                        100 * conc / 10 + 20,
                        200 * conc / 10 + 40,
                        300 * conc / 10 + 60,
                        20.0 / speed
                    ));
                }
            }
        }
    }
    rows
}

fn is_png(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    // A drawn 900×520 chart is tens of KiB; a blank one compresses to little.
    bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000
}

#[test]
fn draws_throughput_latency_and_cpu_charts() {
    let dir = TempDir::new("draw");
    let rows = rpc_rows();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    std::fs::write(dir.0.join("rpc-compare.csv"), csv(&rows)).unwrap();
    let done = draw_dir(&dir.0).unwrap();
    assert_eq!(done.len(), 1);
    let names: Vec<String> = done[0]
        .1
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "rpc-compare-throughput.png",
            "rpc-compare-cpu.png",
            "rpc-compare-latency.png"
        ]
    );
    for f in &done[0].1.files {
        assert!(is_png(f), "{} is not a drawn PNG", f.display());
    }
}

#[test]
fn a_script_without_latency_gets_no_latency_chart() {
    let dir = TempDir::new("nolat");
    let text = csv(&[
        "resp,get,pipeline,1,ferropoll,1,150000,req/s,,,,3.1,",
        "resp,get,pipeline,1,redis,1,120000,req/s,,,,4.0,",
        "resp,get,pipeline,16,ferropoll,1,900000,req/s,,,,0.9,",
        "resp,get,pipeline,16,redis,1,700000,req/s,,,,1.2,",
    ]);
    std::fs::write(dir.0.join("resp-compare.csv"), text).unwrap();
    let done = draw_dir(&dir.0).unwrap();
    let files = &done[0].1.files;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| is_png(f)));
}

#[test]
fn medians_are_per_workload_x_and_contender() {
    let rows = rpc_rows();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let table = Table::parse(&csv(&rows)).unwrap();
    assert_eq!(
        table.comment,
        "rpc-compare: test data  2026-12-03T00:00:00Z  2 cpus"
    );
    let points = table.medians();
    assert_eq!(points.len(), 2 * 3 * 2);
    let p = &points[0];
    assert_eq!(
        (p.workload.as_str(), p.x, p.contender.as_str()),
        ("128B", 1.0, "ferropoll")
    );
    // Rounds 1 and 2 differ by one call/s: the median is between them.
    let base = 10_000.0 * 2.0 * 2f64.ln();
    assert!((p.throughput.unwrap() - (base + 1.5)).abs() < 1.0, "{p:?}");
}

#[test]
fn malformed_input_is_refused_with_its_line() {
    let bad_header = "a,b,c\n";
    assert!(matches!(Table::parse(bad_header), Err(Error::Format(1, _))));
    let short = csv(&["rpc,128B,concurrency,50,ferropoll"]);
    assert!(matches!(Table::parse(&short), Err(Error::Format(3, _))));
    let not_a_number = csv(&["rpc,128B,concurrency,50,ferropoll,1,fast,calls/s,1,2,3,4,0"]);
    match Table::parse(&not_a_number) {
        Err(Error::Format(3, what)) => assert!(what.contains("throughput"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Table::parse("# only a comment\n"),
        Err(Error::Format(0, _))
    ));
    let empty_dir = TempDir::new("empty");
    assert!(draw_dir(&empty_dir.0).unwrap().is_empty());
}
