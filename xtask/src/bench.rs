//! `cargo xtask bench`: runs the Criterion benches, then prints each optimised
//! figure beside the baseline measured in the same run.
//!
//! A bench group that has a baseline names its functions `optimised` and
//! `baseline`; the table reads their medians from `target/criterion`. Lines a
//! bench prints about measurements in alternating rounds (robust to a noisy
//! neighbour, which Criterion's one-side-after-the-other medians are not) and
//! the orchestrator's `throughput:` lines (each with its baseline or target)
//! are repeated under the table.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{cargo_command, root, succeeded};

pub(crate) fn run(extra: &[String]) -> Result<(), String> {
    let mut args = vec!["bench", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let kept = run_keeping(&args, &[ALTERNATING, THROUGHPUT])?;
    let dir = target_dir().join("criterion");
    let mut groups: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("no Criterion results in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("optimised").is_dir())
        .collect();
    groups.sort();
    println!(
        "\n{:<44} {:>14} {:>14} {:>9}",
        "group", "optimised", "baseline", "speed-up"
    );
    for group in groups {
        let name = group
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let optimised = median_ns(&group.join("optimised"));
        let baseline = median_ns(&group.join("baseline"));
        let show = |ns: Option<f64>| ns.map_or("-".to_owned(), format_ns);
        let ratio = match (optimised, baseline) {
            (Some(o), Some(b)) if o > 0.0 => format!("{:.1}x", b / o),
            _ => "-".to_owned(),
        };
        println!(
            "{name:<44} {:>14} {:>14} {ratio:>9}",
            show(optimised),
            show(baseline)
        );
    }
    let (alternating, throughput): (Vec<String>, Vec<String>) =
        kept.into_iter().partition(|l| l.contains(ALTERNATING));
    if !alternating.is_empty() {
        println!("\nMeasured in alternating rounds (both sides under the same neighbours):");
        for line in alternating {
            println!("  {line}");
        }
    }
    if !throughput.is_empty() {
        println!(
            "\nThe orchestrator's throughput and latency (each beside its baseline or target):"
        );
        for line in throughput {
            println!("  {}", line.trim_start_matches(THROUGHPUT).trim_start());
        }
    }
    Ok(())
}

/// What the benches print for a measurement made in alternating rounds.
const ALTERNATING: &str = "alternating rounds";
/// How the orchestrator's bench starts a line about throughput or latency.
const THROUGHPUT: &str = "throughput:";

/// Runs `cargo` with `args` in the workspace root, passing its output through
/// and keeping the lines that contain one of `markers`.
fn run_keeping(args: &[&str], markers: &[&str]) -> Result<Vec<String>, String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cargo_command(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let mut kept = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
            println!("{line}");
            if markers.iter().any(|m| line.contains(m)) {
                kept.push(line);
            }
        }
    }
    succeeded(args, child.wait()).map(|()| kept)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The median point estimate, in nanoseconds, from Criterion's `estimates.json`.
fn median_ns(bench: &Path) -> Option<f64> {
    let text = fs::read_to_string(bench.join("new/estimates.json")).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let estimate = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = estimate.find([',', '}'])?;
    estimate[..end].trim().parse().ok()
}

fn format_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}
