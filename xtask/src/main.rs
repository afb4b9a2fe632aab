//! `cargo xtask`: the project's automation, run from anywhere in the workspace.
//!
//! - `cargo xtask test`: everything a contributor runs before pushing: format
//!   check, clippy with warnings as errors, the whole test suite;
//! - `cargo xtask bench`: every benchmark, then a table of each optimised figure
//!   beside the baseline measured in the same run;
//! - `cargo xtask build-modules [--check]`: the sample WebAssembly modules, built
//!   into `fixtures/modules/` (or checked against it);
//! - `cargo xtask soak [MESSAGES]`: a million messages (or MESSAGES) through
//!   sample and hostile modules under every error strategy while the
//!   configuration is reloaded (`crates/orchestrator/examples/soak.rs`); not
//!   part of `test`;
//! - `cargo xtask fuzz [SECONDS]`: each fuzz target of `crates/fuzz` for
//!   SECONDS (default 60) on its corpus (`cargo fuzz`, nightly); not part of
//!   `test`;
//! - `cargo xtask load [SECONDS]`: `rustmq-etl serve` under `wrk` with reloads
//!   and module swaps in the middle (`xtask/src/load.rs`).
//!
//! Please add no dependencies: this crate must build in seconds on a fresh clone.

mod bench;
mod load;
mod modules;
mod test;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("build-modules") => modules::run(&args[1..]),
        Some("load") => load::run(&args[1..]),
        Some("fuzz") => fuzz(args.get(1).map(String::as_str).unwrap_or("60")),
        Some("soak") => {
            let mut run = vec![
                "run",
                "--release",
                "-p",
                "rustmq-etl-orchestrator",
                "--example",
                "soak",
                "--",
            ];
            run.extend(args[1..].iter().map(String::as_str));
            cargo(&run)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|bench|build-modules|soak|fuzz|load> [args]\n");
            eprintln!(
                "  test   fmt check, clippy -D warnings, cargo test --workspace --all-features"
            );
            eprintln!("  bench  cargo bench --workspace, then each figure beside its baseline");
            eprintln!("  build-modules [--check]  build fixtures/modules/*.wasm (or check them)");
            eprintln!(
                "  soak [MESSAGES]  1,000,000 messages through hostile modules under reloads"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root. Read from cargo's environment at run time: with a
/// build directory shared between checkouts (CI's persistent
/// `CARGO_TARGET_DIR`), cargo may run a binary built from another checkout,
/// whose compile-time path is not this one.
fn root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// `cargo` (the one running xtask) with `args`, in the workspace root; prints
/// the command line first.
fn cargo_command(args: &[&str]) -> Command {
    eprintln!("$ cargo {}", args.join(" "));
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args).current_dir(root());
    command
}

/// The fuzz targets of `crates/fuzz`, in the order `xtask fuzz` runs them.
const FUZZ_TARGETS: [&str; 8] = [
    "config",
    "message_line",
    "request_body",
    "abi_decode",
    "filter",
    "condition",
    "json_object",
    "wasm_module",
];

/// Runs every fuzz target for `seconds` on its corpus under
/// `crates/fuzz/corpus/` (new inputs found are added there).
fn fuzz(seconds: &str) -> Result<(), String> {
    let seconds: u64 = seconds
        .parse()
        .map_err(|_| format!("`cargo xtask fuzz SECONDS`: {seconds:?} is not a number"))?;
    let time = format!("-max_total_time={seconds}");
    for target in FUZZ_TARGETS {
        let corpus = format!("crates/fuzz/corpus/{target}");
        std::fs::create_dir_all(root().join(&corpus))
            .map_err(|e| format!("cannot create {corpus}: {e}"))?;
        // `-s none`: no sanitizer (wasmer's JIT code runs uninstrumented
        // either way, and the one `unsafe` a target reaches in our code, the
        // SDK's `&str` from bytes its JSON pass checked, is checked instead
        // by a debug assertion: `cargo fuzz` builds with them on).
        let args = [
            "+nightly",
            "fuzz",
            "run",
            "--fuzz-dir",
            "crates/fuzz",
            "-s",
            "none",
            target,
            &corpus,
            "--",
            &time,
            "-rss_limit_mb=4096",
        ];
        eprintln!("$ cargo {}", args.join(" "));
        let status = Command::new("cargo")
            .args(args)
            .current_dir(root())
            .status();
        succeeded(&args, status)?;
    }
    Ok(())
}

/// Fails unless `cargo args` succeeded.
fn succeeded(
    args: &[&str],
    status: std::io::Result<std::process::ExitStatus>,
) -> Result<(), String> {
    let status = status.map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Runs `cargo` with `args` in the workspace root; fails if it fails.
fn cargo(args: &[&str]) -> Result<(), String> {
    succeeded(args, cargo_command(args).status())
}
