//! What the benchmarks report about the machine and their processes, from `/proc`, what the
//! machine lets a test do, and the median that tames its noise over repeated runs.

/// Load average and the number of `rustc` processes, to say how busy the machine was while a
/// benchmark ran (timing on shared machines is noisy).
pub fn machine_load() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let rustc = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    std::fs::read_to_string(entry.path().join("comm"))
                        .is_ok_and(|comm| comm.trim() == "rustc")
                })
                .count()
        })
        .unwrap_or(0);
    format!(
        "load average {}, {rustc} rustc processes",
        loadavg.join(" ")
    )
}

/// The KiB value of `key` (`VmHWM:`, `VmRSS:`) in the text of a `/proc/<pid>/status`.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a test can run a binary as another user (`setpriv`, which needs root and the tool);
/// when not, says on stderr that `what` is skipped.
pub fn can_run_as_another_user(what: &str) -> bool {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    let has_setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok();
    if !is_root || !has_setpriv {
        eprintln!("skipped: needs root and setpriv to run {what} as another user");
    }
    is_root && has_setpriv
}

/// The median of the finite `values` (the mean of the middle two for an even count), or NaN
/// when there are none: what benchmarks report over their repeated runs.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}
