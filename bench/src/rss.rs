//! Resident memory of the stack's processes, read from `/proc`.
//!
//! [`Sampler`] reads `VmRSS` of every process of the stack at a fixed
//! interval and keeps each one's peak: the memory the process really held
//! under load, not what it reserved.
//!
//! Finding the processes: `e2e::Stack` keeps its children to itself, so this
//! module finds them as the children of this process (the stack spawns them
//! directly) and names each by its executable's file name (`order`,
//! `nats-server`, ...). That also follows a service that was stopped and
//! started again, which gets a new pid. A `Stack::pid(name)` accessor would
//! make the scan unnecessary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The processes of the stack, by the name the results use.
pub const PROCESSES: [&str; 7] = [
    "order",
    "payment",
    "shipping",
    "email",
    "nats-server",
    "jaeger",
    "mailpit",
];

/// A `VmRSS`-style field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The resident set size of a process now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// The highest resident set size the process ever had ("high water mark"),
/// in KiB: catches a peak between two samples.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// The parent pid, from `/proc/<pid>/stat`. The command name in that line
/// is in parentheses and may hold spaces, so fields are counted after it.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: state, then the parent pid.
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The file name of the program a process runs (`argv[0]`).
fn program(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    Path::new(argv0.as_ref())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The stack's processes now: this process's children whose program is one
/// of [`PROCESSES`], by name.
pub fn stack_pids() -> BTreeMap<String, u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_pid(pid) == Some(me))
        .filter_map(|pid| {
            let name = program(pid)?;
            PROCESSES.contains(&name.as_str()).then_some((name, pid))
        })
        .collect()
}

/// Samples the stack's memory in the background until [`Sampler::finish`].
pub struct Sampler {
    peaks: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling every `interval` the processes named in `only`, or
    /// all of the stack's if `only` is empty.
    pub fn start(interval: Duration, only: &[&str]) -> Self {
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
        let task = {
            let peaks = peaks.clone();
            tokio::spawn(async move {
                loop {
                    let sample = sample(&only);
                    {
                        let mut peaks = peaks.lock().unwrap_or_else(PoisonError::into_inner);
                        for (name, kib) in sample {
                            let peak = peaks.entry(name).or_insert(0);
                            *peak = (*peak).max(kib);
                        }
                    }
                    tokio::time::sleep(interval).await;
                }
            })
        };
        Self { peaks, task }
    }

    /// Stops sampling; returns each process's peak in MiB.
    pub fn finish(self) -> BTreeMap<String, f64> {
        self.task.abort();
        let peaks = self.peaks.lock().unwrap_or_else(PoisonError::into_inner);
        peaks
            .iter()
            .map(|(name, kib)| (name.clone(), mib(*kib)))
            .collect()
    }
}

/// One reading of every (or every named) stack process, in KiB.
fn sample(only: &[String]) -> Vec<(String, u64)> {
    stack_pids()
        .into_iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .filter_map(|(name, pid)| Some((name, rss_kib(pid)?)))
        .collect()
}

/// KiB to MiB, rounded to a tenth.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
