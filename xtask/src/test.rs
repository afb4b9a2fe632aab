//! `cargo xtask test`.

use crate::{cargo, modules};

pub(crate) fn run(extra: &[String]) -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "fmt",
        "--all",
        "--manifest-path",
        "crates/modules/Cargo.toml",
        "--",
        "--check",
    ])?;
    // The committed modules must be what their sources build to. Without the
    // wasm32 target the committed files are used as they are.
    if modules::target_installed() {
        modules::run(&["--check".to_owned()])?;
    } else {
        eprintln!(
            "note: the {} target is not installed: not checking that fixtures/modules is fresh",
            modules::TARGET
        );
    }
    // `--all-features`: the SDK's `json` (the workspace's one feature) and
    // its tests, which compare `json::Object` with a serde_json reference;
    // without it they were neither linted nor run.
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut test = vec!["test", "--workspace", "--all-features"];
    test.extend(extra.iter().map(String::as_str));
    cargo(&test)
}
