//! Charts of the comparison scripts' results (`examples/bench/*-compare.sh`).
//!
//! Each script writes one CSV per run (`docs/bench/<script>.csv` by
//! default): a `#` comment line (script, settings, date, machine), a header
//! naming [`COLUMNS`], then one row per contender and round. This crate reads
//! them, takes the median over rounds of each (workload, x, contender), and
//! draws three PNG charts per file:
//!
//! - `<name>-throughput.png`: throughput against the swept parameter
//!   (concurrency, connections, pipeline depth), one line per contender and
//!   workload;
//! - `<name>-latency.png`: p50 / p99 / p99.9 per contender at each point, on
//!   a log scale (when the script measured latency);
//! - `<name>-cpu.png`: server CPU µs per operation against the parameter.
//!
//! ```
//! let csv = "# rpc-compare: demo\n\
//!            bench,workload,x_name,x,contender,round,throughput,throughput_unit,p50_us,p99_us,p999_us,cpu_us_per_op,errors\n\
//!            rpc,128B,concurrency,50,ferropoll,1,90000,calls/s,400,700,900,9.5,0\n\
//!            rpc,128B,concurrency,50,ferropoll,2,95000,calls/s,380,650,880,9.1,0\n\
//!            rpc,128B,concurrency,50,ferropoll,3,80000,calls/s,420,720,950,9.9,0\n";
//! let table = ferropoll_charts::Table::parse(csv)?;
//! let points = table.medians();
//! assert_eq!(points.len(), 1);
//! assert_eq!(points[0].throughput, Some(90000.0)); // the median of three rounds
//! assert_eq!(points[0].p99_us, Some(700.0));
//! # Ok::<(), ferropoll_charts::Error>(())
//! ```
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

/// The CSV columns, in order, as `examples/bench/lib.sh` writes them.
pub const COLUMNS: [&str; 13] = [
    "bench",
    "workload",
    "x_name",
    "x",
    "contender",
    "round",
    "throughput",
    "throughput_unit",
    "p50_us",
    "p99_us",
    "p999_us",
    "cpu_us_per_op",
    "errors",
];

/// What went wrong reading a CSV or drawing a chart.
#[derive(Debug)]
pub enum Error {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// A line does not fit the format (line number from 1, what is wrong).
    Format(usize, String),
    /// Drawing failed (the backend's message).
    Draw(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Format(line, what) => write!(f, "line {line}: {what}"),
            Error::Draw(what) => write!(f, "drawing: {what}"),
        }
    }
}

impl std::error::Error for Error {}

fn draw_err<E: std::error::Error>(e: E) -> Error {
    Error::Draw(e.to_string())
}

/// One row: a contender's result in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Which comparison (`rpc`, `echo`, `http`, ...).
    pub bench: String,
    /// The workload within it (`128B`, `plaintext`, a redis command ...).
    pub workload: String,
    /// What `x` is (`concurrency`, `connections`, `pipeline depth` ...).
    pub x_name: String,
    /// The swept parameter.
    pub x: f64,
    /// Who ran (`ferropoll`, `tonic`, ...).
    pub contender: String,
    /// Operations per second.
    pub throughput: Option<f64>,
    /// Unit of `throughput` (`calls/s`, ...).
    pub throughput_unit: String,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile latency, µs.
    pub p999_us: Option<f64>,
    /// Server CPU per operation, µs.
    pub cpu_us_per_op: Option<f64>,
}

/// The rows of one CSV file and its comment line.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// The `#` line's text (script, settings, date, machine).
    pub comment: String,
    /// The rows, in file order.
    pub rows: Vec<Row>,
}

/// The median over rounds of one (workload, x, contender).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The workload.
    pub workload: String,
    /// The swept parameter.
    pub x: f64,
    /// The contender.
    pub contender: String,
    /// Median throughput.
    pub throughput: Option<f64>,
    /// Median p50, µs.
    pub p50_us: Option<f64>,
    /// Median p99, µs.
    pub p99_us: Option<f64>,
    /// Median p99.9, µs.
    pub p999_us: Option<f64>,
    /// Median server CPU per operation, µs.
    pub cpu_us_per_op: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Table {
    /// Parses a CSV as the comparison scripts write it.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] for a header other than [`COLUMNS`], a row with
    /// another number of fields, or a number that does not parse.
    pub fn parse(text: &str) -> Result<Table, Error> {
        let mut table = Table::default();
        let mut header = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                table.comment = c.trim().to_owned();
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if !header {
                if fields != COLUMNS {
                    return Err(Error::Format(
                        n,
                        format!("header is {fields:?}, expected {COLUMNS:?}"),
                    ));
                }
                header = true;
                continue;
            }
            if fields.len() != COLUMNS.len() {
                return Err(Error::Format(
                    n,
                    format!("{} fields, expected {}", fields.len(), COLUMNS.len()),
                ));
            }
            let num = |k: usize| -> Result<Option<f64>, Error> {
                match fields[k] {
                    "" | "-" | "nan" => Ok(None),
                    s => s.parse::<f64>().map(Some).map_err(|_| {
                        Error::Format(n, format!("{}: {s:?} is not a number", COLUMNS[k]))
                    }),
                }
            };
            table.rows.push(Row {
                bench: fields[0].to_owned(),
                workload: fields[1].to_owned(),
                x_name: fields[2].to_owned(),
                x: num(3)?.ok_or_else(|| Error::Format(n, "x is empty".into()))?,
                contender: fields[4].to_owned(),
                throughput: num(6)?,
                throughput_unit: fields[7].to_owned(),
                p50_us: num(8)?,
                p99_us: num(9)?,
                p999_us: num(10)?,
                cpu_us_per_op: num(11)?,
            });
        }
        if !header {
            return Err(Error::Format(0, "no header line".into()));
        }
        Ok(table)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read, else as [`Table::parse`].
    pub fn read(path: &Path) -> Result<Table, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_owned(), e))?;
        Table::parse(&text)
    }

    /// Medians over rounds, ordered by workload (first seen first), x and
    /// contender (first seen first).
    pub fn medians(&self) -> Vec<Point> {
        let workloads = first_seen(self.rows.iter().map(|r| r.workload.as_str()));
        let contenders = first_seen(self.rows.iter().map(|r| r.contender.as_str()));
        let pos = |v: &[&str], s: &str| v.iter().position(|x| *x == s).unwrap_or(usize::MAX);
        type Key = (usize, u64, usize);
        let mut groups: BTreeMap<Key, Vec<&Row>> = BTreeMap::new();
        for r in &self.rows {
            let key = (
                pos(&workloads, &r.workload),
                r.x.to_bits(),
                pos(&contenders, &r.contender),
            );
            groups.entry(key).or_default().push(r);
        }
        let mut points: Vec<Point> = groups
            .into_values()
            .map(|rows| {
                let m =
                    |f: fn(&Row) -> Option<f64>| median(rows.iter().filter_map(|r| f(r)).collect());
                Point {
                    workload: rows[0].workload.clone(),
                    x: rows[0].x,
                    contender: rows[0].contender.clone(),
                    throughput: m(|r| r.throughput),
                    p50_us: m(|r| r.p50_us),
                    p99_us: m(|r| r.p99_us),
                    p999_us: m(|r| r.p999_us),
                    cpu_us_per_op: m(|r| r.cpu_us_per_op),
                }
            })
            .collect();
        // x as bits does not sort negative or mixed values numerically.
        points.sort_by(|a, b| {
            pos(&workloads, &a.workload)
                .cmp(&pos(&workloads, &b.workload))
                .then(a.x.total_cmp(&b.x))
                .then(pos(&contenders, &a.contender).cmp(&pos(&contenders, &b.contender)))
        });
        points
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const SIZE: (u32, u32) = (900, 520);

/// A chart to draw: file name, title, y-axis name, the value plotted.
type ChartSpec = (String, String, String, fn(&Point) -> Option<f64>);

/// One line of a chart: label, contender color, workload index, points.
type Line = (String, RGBColor, usize, Vec<(f64, f64)>);

/// The distinct items, in the order first seen.
fn first_seen<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// The (workload, x) points along a category axis, first seen first.
fn categories(pts: &[&Point]) -> Vec<(String, f64)> {
    first_seen(pts.iter().map(|p| (p.workload.clone(), p.x)))
}

/// The label of category axis position `v`: "workload ×x" at a category,
/// nothing between them.
fn category_label(cats: &[(String, f64)], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() > 0.01 || i < 0.0 {
        return String::new();
    }
    cats.get(i as usize)
        .map(|(w, x)| format!("{w} ×{x}"))
        .unwrap_or_default()
}

/// A white `size` canvas on `file` with `title` and the `subtitle` line
/// (the CSV's comment) above it; returns the area left for the chart.
fn frame<'a>(
    file: &'a Path,
    size: (u32, u32),
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<BitMapBackend<'a>, Shift>, Error> {
    let root = BitMapBackend::new(file, size).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
    let (top, body) = root.split_vertically(22);
    top.draw(&Text::new(
        subtitle.to_owned(),
        (10, 4),
        ("sans-serif", 12).into_font().color(&BLACK.mix(0.6)),
    ))
    .map_err(draw_err)?;
    Ok(body)
}

/// The legend of the series drawn so far, top left.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<(), Error>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)
}

/// Axis numbers: `450k`, `1.2M`, `35`, `0.87`.
fn fmt_num(v: &f64) -> String {
    let v = *v;
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The charts drawn for one table, by file.
#[derive(Debug, Default)]
pub struct Drawn {
    /// The PNG files written.
    pub files: Vec<PathBuf>,
}

/// Draws the charts of `table` into `dir` as `<name>-*.png`.
///
/// # Errors
///
/// [`Error::Draw`] when the backend fails (e.g. no font found), or a table
/// without rows.
pub fn draw(table: &Table, name: &str, dir: &Path) -> Result<Drawn, Error> {
    let points = table.medians();
    let Some(first) = table.rows.first() else {
        return Err(Error::Draw(format!("{name}: no rows")));
    };
    let mut drawn = Drawn::default();
    let contenders = first_seen(points.iter().map(|p| p.contender.clone()));
    let color =
        |c: &str| COLORS[contenders.iter().position(|x| x == c).unwrap_or(0) % COLORS.len()];
    let subtitle = &table.comment;

    let line_chart = |file: PathBuf,
                      title: String,
                      y_desc: String,
                      value: fn(&Point) -> Option<f64>|
     -> Result<Option<PathBuf>, Error> {
        let pts: Vec<&Point> = points.iter().filter(|p| value(p).is_some()).collect();
        if pts.is_empty() {
            return Ok(None);
        }
        let xs = pts.iter().map(|p| p.x);
        let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let y_max = pts.iter().filter_map(|p| value(p)).fold(0.0, f64::max) * 1.5; // headroom for the legend
        let body = frame(&file, SIZE, &title, subtitle)?;
        let log_x = x_min > 0.0 && x_max / x_min >= 10.0;
        // One swept value (udp, accept): ticks at it and one either side.
        let x_labels = if x_max == x_min { 3 } else { 10 };
        let mut builder = ChartBuilder::on(&body);
        builder
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let series = |chart_points: &[&Point]| {
            let mut lines: Vec<Line> = Vec::new();
            let mut workloads: Vec<&str> = Vec::new();
            for p in chart_points {
                let label = if points.iter().any(|q| q.workload != p.workload) {
                    format!("{} {}", p.contender, p.workload)
                } else {
                    p.contender.clone()
                };
                let y = value(p).unwrap_or_default();
                if !workloads.contains(&p.workload.as_str()) {
                    workloads.push(&p.workload);
                }
                let wi = workloads.iter().position(|w| *w == p.workload).unwrap_or(0);
                match lines.iter_mut().find(|l| l.0 == label) {
                    Some(l) => l.3.push((p.x, y)),
                    None => lines.push((label, color(&p.contender), wi, vec![(p.x, y)])),
                }
            }
            lines
        };
        let lines = series(&pts);
        macro_rules! plot {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(first.x_name.as_str())
                    .y_desc(y_desc.as_str())
                    .x_labels(x_labels)
                    .x_label_formatter(&fmt_num)
                    .y_label_formatter(&fmt_num)
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(draw_err)?;
                for (label, c, wi, data) in &lines {
                    // Workloads of one contender: its color, lighter and
                    // thinner for each further workload.
                    let c = c.mix(1.0 - 0.4 * (*wi % 2) as f64);
                    let width = if *wi % 2 == 0 { 3 } else { 2 };
                    chart
                        .draw_series(LineSeries::new(data.clone(), c.stroke_width(width)))
                        .map_err(draw_err)?
                        .label(label.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width))
                        });
                    chart
                        .draw_series(
                            data.iter()
                                .map(|&(x, y)| Circle::new((x, y), 4, c.filled())),
                        )
                        .map_err(draw_err)?;
                }
                draw_legend(&mut chart)?;
            }};
        }
        if log_x {
            plot!(
                builder
                    .build_cartesian_2d((x_min * 0.8..x_max * 1.25).log_scale(), 0.0..y_max)
                    .map_err(draw_err)?
            );
        } else {
            let pad = if x_max == x_min {
                1.0
            } else {
                ((x_max - x_min) * 0.08).max(0.5)
            };
            plot!(
                builder
                    .build_cartesian_2d(x_min - pad..x_max + pad, 0.0..y_max)
                    .map_err(draw_err)?
            );
        }
        body.present().map_err(draw_err)?;
        Ok(Some(file.clone()))
    };

    let unit = &first.throughput_unit;
    // Many workloads (redis commands) make a tangle of lines: bars then.
    let workloads = {
        let mut w: Vec<&str> = points.iter().map(|p| p.workload.as_str()).collect();
        w.dedup();
        w.len()
    };
    let charts: [ChartSpec; 2] = [
        (
            format!("{name}-throughput.png"),
            format!("{name}: throughput ({unit}, median of rounds)"),
            unit.clone(),
            |p| p.throughput,
        ),
        (
            format!("{name}-cpu.png"),
            format!("{name}: server CPU per operation (µs, median of rounds)"),
            "server CPU µs / op".into(),
            |p| p.cpu_us_per_op,
        ),
    ];
    for (file, title, y_desc, value) in charts {
        let file = dir.join(file);
        let done = if workloads > 4 {
            bar_chart(
                &points,
                &contenders,
                file,
                &title,
                subtitle,
                &first.x_name,
                &y_desc,
                value,
            )?
        } else {
            line_chart(file, title, y_desc, value)?
        };
        drawn.files.extend(done);
    }
    if let Some(f) = latency_chart(&points, &contenders, name, subtitle, &first.x_name, dir)? {
        drawn.files.push(f);
    }
    Ok(drawn)
}

/// One bar per contender at each (workload, x), side by side.
#[allow(clippy::too_many_arguments)]
fn bar_chart(
    points: &[Point],
    contenders: &[String],
    file: PathBuf,
    title: &str,
    subtitle: &str,
    x_name: &str,
    y_desc: &str,
    value: fn(&Point) -> Option<f64>,
) -> Result<Option<PathBuf>, Error> {
    let pts: Vec<&Point> = points.iter().filter(|p| value(p).is_some()).collect();
    if pts.is_empty() {
        return Ok(None);
    }
    let cats = categories(&pts);
    let n = cats.len();
    let y_max = pts.iter().filter_map(|p| value(p)).fold(0.0, f64::max) * 1.25;
    // Room for a label such as "lrange_600 ×16" under every category.
    let width = (100 * n as u32 + 120).max(SIZE.0);
    let body = frame(&file, (width, SIZE.1), title, subtitle)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|v| category_label(&cats, *v))
        .x_label_style(("sans-serif", 12))
        .x_desc(format!("workload × {x_name}"))
        .y_desc(y_desc)
        .y_label_formatter(&fmt_num)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    let w = 0.8 / contenders.len().max(1) as f64;
    for (ci, c) in contenders.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let left = -0.4 + w * ci as f64;
        chart
            .draw_series(pts.iter().filter(|p| &p.contender == c).filter_map(|p| {
                let i = cats.iter().position(|k| k.0 == p.workload && k.1 == p.x)? as f64;
                let v = value(p)?;
                Some(Rectangle::new(
                    [(i + left, 0.0), (i + left + w * 0.9, v)],
                    color.filled(),
                ))
            }))
            .map_err(draw_err)?
            .label(c.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    draw_legend(&mut chart)?;
    body.present().map_err(draw_err)?;
    Ok(Some(file.clone()))
}

/// p50 / p99 / p99.9 per contender at each (workload, x): one column of
/// marks per point, categories along x, log-scale µs.
fn latency_chart(
    points: &[Point],
    contenders: &[String],
    name: &str,
    subtitle: &str,
    x_name: &str,
    dir: &Path,
) -> Result<Option<PathBuf>, Error> {
    let pts: Vec<&Point> = points
        .iter()
        .filter(|p| p.p50_us.is_some() || p.p99_us.is_some())
        .collect();
    if pts.is_empty() {
        return Ok(None);
    }
    let cats = categories(&pts);
    let all = pts
        .iter()
        .flat_map(|p| [p.p50_us, p.p99_us, p.p999_us])
        .flatten()
        .filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if hi <= 0.0 {
        return Ok(None); // no positive latency to put on a log scale
    }
    let file = dir.join(format!("{name}-latency.png"));
    let title = format!("{name}: latency p50 ● p99 ▲ p99.9 ✕ (µs, log scale)");
    let body = frame(&file, SIZE, &title, subtitle)?;
    let n = cats.len();
    let mut chart = ChartBuilder::on(&body)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, (lo * 0.7..hi * 1.6).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|v| category_label(&cats, *v))
        .x_desc(format!("workload × {x_name}"))
        .y_desc("µs")
        .y_labels(12)
        .y_label_formatter(&fmt_num)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    let width = 0.7 / contenders.len().max(1) as f64;
    for (ci, c) in contenders.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let offset = -0.35 + width * (ci as f64 + 0.5);
        let mine: Vec<(f64, &Point)> = pts
            .iter()
            .filter(|p| &p.contender == c)
            .filter_map(|p| {
                cats.iter()
                    .position(|k| k.0 == p.workload && k.1 == p.x)
                    .map(|i| (i as f64 + offset, *p))
            })
            .collect();
        // The range from p50 to the highest percentile, then the marks.
        chart
            .draw_series(mine.iter().filter_map(|(x, p)| {
                let top = p.p999_us.or(p.p99_us)?;
                let bottom = p.p50_us.unwrap_or(top);
                Some(PathElement::new(
                    vec![(*x, bottom), (*x, top)],
                    color.stroke_width(2),
                ))
            }))
            .map_err(draw_err)?
            .label(c.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(
                mine.iter()
                    .filter_map(|(x, p)| p.p50_us.map(|v| Circle::new((*x, v), 5, color.filled()))),
            )
            .map_err(draw_err)?;
        chart
            .draw_series(mine.iter().filter_map(|(x, p)| {
                p.p99_us
                    .map(|v| TriangleMarker::new((*x, v), 6, color.filled()))
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(mine.iter().filter_map(|(x, p)| {
                p.p999_us
                    .map(|v| Cross::new((*x, v), 5, color.stroke_width(2)))
            }))
            .map_err(draw_err)?;
    }
    draw_legend(&mut chart)?;
    body.present().map_err(draw_err)?;
    Ok(Some(file.clone()))
}

/// Draws the charts of every `*.csv` in `dir` next to it; returns the files
/// written, by CSV.
///
/// # Errors
///
/// The first CSV that cannot be read or drawn.
pub fn draw_dir(dir: &Path) -> Result<Vec<(PathBuf, Drawn)>, Error> {
    let mut csvs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(dir.to_owned(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    csvs.sort();
    let mut out = Vec::new();
    for csv in csvs {
        let table = Table::read(&csv)?;
        let name = csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let drawn = draw(&table, &name, dir).map_err(|e| match e {
            Error::Draw(m) => Error::Draw(format!("{}: {m}", csv.display())),
            e => e,
        })?;
        out.push((csv, drawn));
    }
    Ok(out)
}
