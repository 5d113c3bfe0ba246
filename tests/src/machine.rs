//! What the benchmarks report about the machine and their processes, from `/proc`.

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
