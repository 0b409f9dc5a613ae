//! Everything a person sees of a run: latency summaries from HDR histograms,
//! progress bars while it runs, aligned tables on stdout, JSON files, and a
//! description of the machine the numbers came from.
//!
//! Latencies are recorded in microseconds into an [`hdrhistogram`] with three
//! significant digits, so a percentile is exact to 0.1 % whatever the spread,
//! and the memory cost is fixed however many samples a run takes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// The highest latency a histogram holds: one hour, in microseconds. Longer
/// samples are clamped to it rather than lost.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency distribution.
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Latency {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1,
        // high >= 2 * low, sigfig <= 5), so this cannot fail at run time.
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Saturating: a sample beyond the top bucket counts as the maximum
        // instead of being dropped, which would flatter the tail.
        self.histogram.saturating_record(micros.max(1));
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles we report, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// The percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A table printed with aligned columns: the first column left-aligned (the
/// names), the others right-aligned (the numbers).
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// A row for one latency distribution under the header
    /// [`Table::LATENCY_HEADER`].
    pub fn latency_row(&mut self, name: &str, s: &LatencySummary) -> &mut Self {
        self.row(vec![
            name.to_owned(),
            s.count.to_string(),
            format!("{:.1}", s.p50_ms),
            format!("{:.1}", s.p90_ms),
            format!("{:.1}", s.p99_ms),
            format!("{:.1}", s.max_ms),
            format!("{:.1}", s.mean_ms),
        ])
    }

    /// The header matching [`Table::latency_row`].
    pub const LATENCY_HEADER: [&'static str; 7] =
        ["latency (ms)", "count", "p50", "p90", "p99", "max", "mean"];

    pub fn print(&self) {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from(" ");
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    out.push_str(&format!(" {cell:<width$}"));
                } else {
                    out.push_str(&format!("  {cell:>width$}"));
                }
            }
            out.trim_end().to_owned()
        };
        let rule = widths.iter().sum::<usize>() + 2 * columns + 1;
        println!("\n  {}", self.title);
        println!("{}", line(&self.header));
        println!("  {}", "-".repeat(rule.saturating_sub(2)));
        for row in &self.rows {
            println!("{}", line(row));
        }
    }
}

/// A progress bar on stderr, so stdout holds only the results. indicatif
/// hides it by itself when stderr is not a terminal (CI logs, pipes).
pub fn progress(length: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_prefix(prefix.to_owned());
    let template = "  {prefix:>12} [{elapsed_precise}] {bar:30.cyan/blue} {pos:>7}/{len:7} {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The machine a result was measured on: results from different machines
/// are not comparable, so every JSON file says where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc`; on a system without it the fields say "unknown".
    pub fn current() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let memory_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mb: memory_kb / 1024,
            cpu_model,
            kernel: if kernel.is_empty() {
                "unknown".into()
            } else {
                kernel
            },
        }
    }
}

/// Now, as RFC 3339 in UTC.
pub fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A standalone command's JSON file: its result with the machine and time.
#[derive(Serialize)]
pub struct Envelope<'a, T: Serialize> {
    pub timestamp: String,
    pub machine: Machine,
    #[serde(flatten)]
    pub result: &'a T,
}

/// Writes `value` as pretty JSON, creating the directory if needed.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut json = serde_json::to_string_pretty(value)?;
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A rate that reads well in a table.
pub fn per_second(value: f64) -> String {
    format!("{value:.1}/s")
}
