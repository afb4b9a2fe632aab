//! `cargo xtask build-modules [--check]`: builds the sample and hostile modules of
//! `crates/modules` for `wasm32-unknown-unknown` and copies them to
//! `fixtures/modules/<name>.wasm`, where tests find them.
//!
//! The build is deterministic: source paths are remapped out of the binaries, so
//! the same toolchain gives the same bytes on any machine. `--check` builds into
//! a scratch directory and fails if a committed module differs (is stale).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::root;

pub(crate) const TARGET: &str = "wasm32-unknown-unknown";

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
    let workspace = root.join("crates/modules");
    let target_dir = workspace.join("target");
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let flags = [
        format!("--remap-path-prefix={}=/rustmq-etl", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");
    eprintln!("$ cargo build --release --target {TARGET} (in crates/modules)");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the modules failed ({status})"));
    }
    let built = target_dir.join(TARGET).join("release");
    let fixtures = root.join("fixtures/modules");
    fs::create_dir_all(&fixtures).map_err(|e| format!("{}: {e}", fixtures.display()))?;
    let mut stale = Vec::new();
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
