//! Tidy checks over the whole source tree, run as ordinary tests.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    assert!(files.len() > 10);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` comment: {missing:#?}"
    );
}

/// The normal (not dev) dependencies a crate's `Cargo.toml` declares.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = fs::read_to_string(manifest).unwrap();
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let name = line
                .split(['=', '.'])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            names.push(name);
        }
    }
    names
}

/// The code map's dependency rules (docs/architecture.md), checked on the
/// manifests so that the map cannot drift from the code: which workspace
/// crates each crate may depend on, and that only the pool reaches wasmer.
#[test]
fn crates_depend_only_on_what_the_code_map_allows() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("..");
    let allowed: &[(&str, &[&str])] = &[
        ("core", &[]),
        ("abi", &[]),
        ("filter", &[]),
        ("condition", &["rustmq-etl-core"]),
        (
            "config",
            &[
                "rustmq-etl-core",
                "rustmq-etl-filter",
                "rustmq-etl-condition",
            ],
        ),
        (
            "orchestrator",
            &[
                "rustmq-etl-core",
                "rustmq-etl-config",
                "rustmq-etl-filter",
                "rustmq-etl-condition",
            ],
        ),
        ("pool", &["rustmq-etl-core", "rustmq-etl-abi"]),
        ("sdk", &["rustmq-etl-abi"]),
        ("testkit", &["rustmq-etl-core"]),
    ];
    let mut checked = 0;
    for entry in fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // The binary and the fuzz targets may use every crate; the guest
        // modules are a workspace of their own.
        if !manifest.is_file() || ["modules", "cli", "fuzz"].contains(&name.as_str()) {
            continue;
        }
        let rules = allowed
            .iter()
            .find(|(crate_dir, _)| *crate_dir == name)
            .unwrap_or_else(|| panic!("crates/{name} is not in the code map's rules: add it here and to docs/architecture.md"))
            .1;
        for dependency in dependencies(&manifest) {
            if dependency.starts_with("rustmq-etl") {
                assert!(
                    rules.contains(&dependency.as_str()),
                    "crates/{name} depends on {dependency}, which the code map does not allow"
                );
            }
            if dependency.starts_with("wasmer") {
                assert_eq!(name, "pool", "only the pool may depend on wasmer");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, allowed.len());
}
