//! `cargo xtask build-modules [--check]`: builds the sample and hostile modules of
//! `crates/modules` for `wasm32-unknown-unknown` and copies them to
//! `fixtures/modules/<name>.wasm`, where tests find them.
//!
//! The build is deterministic: the sources are copied to one fixed directory
//! (`STAGING`) and built there, because rustc's crate hashes — which order items
//! in the output — depend on the absolute path of path dependencies outside the
//! building workspace (the SDK); and source paths are remapped out of the
//! binaries. So the same toolchain gives the same bytes wherever the repository
//! is checked out. `--check` fails if a committed module differs (is stale).
//! Runs take turns on the staging directory through a lock file beside it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo_command, root, succeeded};

pub(crate) const TARGET: &str = "wasm32-unknown-unknown";

/// Where the modules are built, the same on every machine.
const STAGING: &str = "/tmp/rustmq-etl-modules-build";

/// What the modules' build needs: the workspace manifest (the SDK and the ABI
/// crate inherit fields from it), the two crates, and the modules' workspace.
const STAGED: &[&str] = &["Cargo.toml", "crates/abi", "crates/sdk", "crates/modules"];

/// Whether rustup reports the wasm32 target as installed.
pub(crate) fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false)
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    if let Some(other) = args.iter().find(|a| *a != "--check") {
        return Err(format!(
            "build-modules: unknown argument {other:?} (only --check)"
        ));
    }
    if !target_installed() {
        return Err(format!(
            "the {TARGET} target is not installed; run `rustup target add {TARGET}`"
        ));
    }
    let root = root();
    let staging = PathBuf::from(STAGING);
    // Two builds at once (two checkouts on one machine) would overwrite each
    // other's sources in the one staging directory: take turns. The lock goes
    // with the process, however it ends.
    let lock_path = PathBuf::from(format!("{STAGING}.lock"));
    let lock = fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "waiting for another build-modules run (lock {})",
            lock_path.display()
        );
        lock.lock()
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    }
    for part in STAGED {
        let to = staging.join(part);
        if to.is_dir() {
            remove_sources(&to)?;
        }
        copy(&root.join(part), &to)?;
    }
    let workspace = staging.join("crates/modules");
    let target_dir = staging.join("target");
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let flags = [
        format!("--remap-path-prefix={}=/rustmq-etl", staging.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        // The engine admits wasm SIMD; the SDK's JSON reading uses it.
        "-Ctarget-feature=+simd128".to_owned(),
    ]
    .join("\x1f");
    let args = ["build", "--release", "--locked", "--target", TARGET];
    let status = cargo_command(&args)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .status();
    succeeded(&args, status)
        .map_err(|e| format!("building the modules (in crates/modules): {e}"))?;
    let built = target_dir.join(TARGET).join("release");
    let fixtures = root.join("fixtures/modules");
    fs::create_dir_all(&fixtures).map_err(|e| format!("{}: {e}", fixtures.display()))?;
    let mut stale = Vec::new();
    // Keep the lock file the build may have updated (it is committed).
    let lock = workspace.join("Cargo.lock");
    if let Ok(bytes) = fs::read(&lock) {
        if !check {
            fs::write(root.join("crates/modules/Cargo.lock"), bytes)
                .map_err(|e| format!("Cargo.lock: {e}"))?;
        }
    }
    for name in members(&workspace)? {
        let from = built.join(format!("{}.wasm", name.replace('-', "_")));
        let to = fixtures.join(format!("{name}.wasm"));
        let bytes = fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        if check {
            if fs::read(&to).ok().as_deref() != Some(&bytes[..]) {
                stale.push(to.display().to_string());
            }
        } else {
            fs::write(&to, &bytes).map_err(|e| format!("{}: {e}", to.display()))?;
            eprintln!(
                "  {} ({} bytes)",
                to.strip_prefix(&root).unwrap_or(&to).display(),
                bytes.len()
            );
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "committed modules differ from a fresh build (run `cargo xtask build-modules` and commit):\n  {}",
            stale.join("\n  ")
        ))
    }
}

/// Copies a file or a directory tree, leaving out `target` directories.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("copying {} to {}: {e}", from.display(), to.display());
    if from.is_dir() {
        fs::create_dir_all(to).map_err(fail)?;
        for entry in fs::read_dir(from).map_err(fail)? {
            let path = entry.map_err(fail)?.path();
            let name = path.file_name().unwrap_or_default();
            if name != "target" {
                copy(&path, &to.join(name))?;
            }
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(fail)?;
        }
        fs::copy(from, to).map(drop).map_err(fail)
    }
}

/// Removes a staged source tree (sources only: no build output lives there).
fn remove_sources(dir: &Path) -> Result<(), String> {
    fs::remove_dir_all(dir).map_err(|e| format!("cleaning {}: {e}", dir.display()))
}

/// The member crates listed in `crates/modules/Cargo.toml`.
fn members(workspace: &Path) -> Result<Vec<String>, String> {
    let manifest = workspace.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let start = text
        .find("members = [")
        .ok_or("no `members = [` in crates/modules/Cargo.toml")?;
    let list = &text[start..];
    let end = list.find(']').ok_or("unterminated members list")?;
    Ok(list[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect())
}
