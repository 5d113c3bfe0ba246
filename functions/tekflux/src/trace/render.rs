//! `--output text`: the trace as people read it.

use super::*;

/// The human-readable report.
pub(super) fn render_text(trace: &Trace) -> String {
    let mut out = String::new();
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{}: {}, {}",
        trace.query,
        count(trace.runs.len(), "run"),
        count(trace.releases.len(), "release")
    );
    for run in &trace.runs {
        let _ = writeln!(out);
        let place = match run.in_cluster {
            Some(true) => "",
            Some(false) => "  (pruned from the cluster; from its manifest)",
            None => "  (from its manifest; the cluster was not read)",
        };
        let reason = run
            .reason
            .as_deref()
            .filter(|reason| !reason.eq_ignore_ascii_case(&run.outcome))
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {}/{}  {}{reason}{place}",
            run.kind, run.namespace, run.name, run.outcome
        );
        let mut facts = Vec::new();
        for (label, value) in [
            ("rule", &run.rule),
            ("repo", &run.repo),
            ("ref", &run.git_ref),
            ("sha", &run.sha),
            ("delivery", &run.delivery_id),
        ] {
            if let Some(value) = value {
                facts.push(format!("{label} {value}"));
            }
        }
        for (name, value) in &run.paths {
            facts.push(format!("paths.{name} {value}"));
        }
        if !facts.is_empty() {
            let _ = writeln!(out, "  {}", facts.join("  "));
        }
        if let Some(message) = &run.message
            && run.outcome == "failed"
        {
            let _ = writeln!(out, "  message: {message}");
        }
        let mut times = Vec::new();
        if let Some(start) = &run.start_time {
            times.push(format!("started {start}"));
        }
        if let Some(end) = &run.completion_time {
            let took = took(run.start_time.as_deref(), end)
                .map(|took| format!(" ({took})"))
                .unwrap_or_default();
            times.push(format!("finished {end}{took}"));
        }
        if !times.is_empty() {
            let _ = writeln!(out, "  {}", times.join("  "));
        }
        if !run.tasks.is_empty() {
            let tasks: Vec<String> = run
                .tasks
                .iter()
                .map(|task| {
                    let name = task.pipeline_task.as_deref().unwrap_or(&task.name);
                    match &task.reason {
                        Some(reason) if task.outcome != "succeeded" => {
                            format!("{name} {} ({reason})", task.outcome)
                        }
                        _ => format!("{name} {}", task.outcome),
                    }
                })
                .collect();
            let _ = writeln!(out, "  tasks: {}", tasks.join(", "));
        }
        for (name, value) in &run.results {
            let _ = writeln!(out, "  result {name} = {value}");
        }
        match &run.archive {
            None => {
                let _ = writeln!(out, "  archive: none found");
            }
            Some(archive) => {
                let _ = writeln!(
                    out,
                    "  archive: {} (archived {})",
                    archive.manifest, archive.archived_at
                );
                for workspace in &archive.workspaces {
                    let _ = writeln!(
                        out,
                        "    workspace {}  {}  {}  sha256 {}",
                        workspace.workspace,
                        workspace.url,
                        size(workspace.bytes),
                        workspace.sha256
                    );
                }
                for skipped in &archive.skipped_workspaces {
                    let _ = writeln!(
                        out,
                        "    workspace {} not archived: {}",
                        skipped["workspace"].as_str().unwrap_or("?"),
                        skipped["reason"].as_str().unwrap_or("?")
                    );
                }
                for log in &archive.logs {
                    let step = log
                        .step
                        .as_deref()
                        .map(|step| format!("{}/{step}", log.task_run))
                        .unwrap_or_else(|| log.task_run.clone());
                    match (&log.url, &log.missing) {
                        (Some(url), _) => {
                            let _ = writeln!(
                                out,
                                "    log {step}  {url}  {}{}",
                                log.bytes.map(size).unwrap_or_default(),
                                if log.truncated { "  (truncated)" } else { "" }
                            );
                        }
                        (None, missing) => {
                            let _ = writeln!(
                                out,
                                "    log {step} missing: {}",
                                missing.as_deref().unwrap_or("not collected")
                            );
                        }
                    }
                }
                for failure in &archive.cleanup_failures {
                    let _ = writeln!(
                        out,
                        "    not freed on the claim: {} ({})",
                        failure["dir"].as_str().unwrap_or("?"),
                        failure["error"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
    if !trace.releases.is_empty() {
        let _ = writeln!(out, "\nReleases");
        for release in &trace.releases {
            let _ = writeln!(
                out,
                "  HelmRelease {}/{} ({})  version {}",
                release.namespace,
                release.name,
                release.api_version,
                release.version.as_deref().unwrap_or("?")
            );
            let mut facts = Vec::new();
            if let Some(run) = &release.run {
                facts.push(format!("from run {run}"));
            }
            if let Some(sha) = &release.sha {
                facts.push(format!("sha {sha}"));
            }
            if let Some(time) = &release.time {
                facts.push(format!("at {time}"));
            }
            if let Some(event) = &release.event {
                facts.push(format!("event {event}"));
            }
            if let Some(ready) = &release.ready {
                facts.push(format!("Ready {ready}"));
            }
            if !facts.is_empty() {
                let _ = writeln!(out, "    {}", facts.join("  "));
            }
        }
    }
    let _ = writeln!(out);
    let source = |what: &str, value: &Option<String>| match value {
        Some(value) => format!("{what}: {value}"),
        None => format!("{what}: not read"),
    };
    let _ = writeln!(out, "{}", source("cluster", &trace.sources.cluster));
    let _ = writeln!(out, "{}", source("bucket", &trace.sources.bucket));
    for missing in &trace.missing {
        let _ = writeln!(out, "missing: {missing}");
    }
    out
}

/// `1m 12s` between two RFC 3339 times.
pub(super) fn took(start: Option<&str>, end: &str) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start?).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    let seconds = (end - start).num_seconds();
    (seconds >= 0).then(|| match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60),
    })
}

pub(super) fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let bytes_f = bytes as f64;
    if bytes_f < KIB {
        format!("{bytes} B")
    } else if bytes_f < KIB * KIB {
        format!("{:.1} KiB", bytes_f / KIB)
    } else if bytes_f < KIB * KIB * KIB {
        format!("{:.1} MiB", bytes_f / (KIB * KIB))
    } else {
        format!("{:.1} GiB", bytes_f / (KIB * KIB * KIB))
    }
}
