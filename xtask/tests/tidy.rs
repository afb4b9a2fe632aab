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

/// The workspace crates (`rustmq-etl…`) a manifest's `section` names
/// (`dependencies`, `build-dependencies` or `dev-dependencies`,
/// target-specific ones included; a renamed one by its package), and
/// whether any of them is wasmer.
fn workspace_dependencies(manifest: &Path, section: &str) -> (Vec<String>, bool) {
    let text = fs::read_to_string(manifest).unwrap();
    let document: toml_edit::DocumentMut = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut tables: Vec<&dyn toml_edit::TableLike> = Vec::new();
    if let Some(table) = document.get(section).and_then(|t| t.as_table_like()) {
        tables.push(table);
    }
    if let Some(targets) = document.get("target").and_then(|t| t.as_table_like()) {
        for (_, target) in targets.iter() {
            if let Some(table) = target.get(section).and_then(|t| t.as_table_like()) {
                tables.push(table);
            }
        }
    }
    // A dependency renamed (`core = { package = "rustmq-etl-core" }`) is
    // the package it names.
    let names: Vec<String> = tables
        .iter()
        .flat_map(|table| table.iter())
        .map(|(key, item)| {
            item.as_table_like()
                .and_then(|t| t.get("package"))
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_owned()
        })
        .collect();
    let wasmer = names.iter().any(|name| name.starts_with("wasmer"));
    let mut ours: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with("rustmq-etl"))
        .collect();
    ours.sort();
    (ours, wasmer)
}

/// The code map's dependency rules (docs/architecture.md, "Dependency
/// direction"), checked on the manifests so that the map cannot drift from
/// the code: each crate depends on exactly the workspace crates its arrow
/// names (no more, and none of them missing), the orchestrator's
/// dev-dependencies are the ones the map names and no other crate has any,
/// only the pool reaches wasmer, and a guest module depends on the SDK or
/// on nothing of ours.
#[test]
fn crates_depend_exactly_as_the_code_map_says() {
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("..");
    let ours = |names: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| format!("rustmq-etl-{n}")).collect();
        names.sort();
        names
    };
    // (crate directory, dependencies, dev-dependencies)
    let rules: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        ("core", ours(&[]), ours(&[])),
        ("abi", ours(&[]), ours(&[])),
        ("filter", ours(&[]), ours(&[])),
        ("condition", ours(&["core"]), ours(&[])),
        ("config", ours(&["core", "filter", "condition"]), ours(&[])),
        (
            "orchestrator",
            ours(&["config", "filter", "condition", "core"]),
            ours(&["testkit", "pool"]),
        ),
        ("pool", ours(&["core", "abi"]), ours(&[])),
        ("sdk", ours(&["abi"]), ours(&[])),
        ("testkit", ours(&["core"]), ours(&[])),
        (
            "cli",
            ours(&["orchestrator", "pool", "config", "core"]),
            ours(&[]),
        ),
    ];
    let mut checked = 0;
    for entry in fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // The fuzz targets may use every crate (a workspace of their own);
        // the guest modules are checked below.
        if !manifest.is_file() || ["modules", "fuzz"].contains(&name.as_str()) {
            continue;
        }
        let (_, normal, dev) = rules
            .iter()
            .find(|(crate_dir, _, _)| *crate_dir == name)
            .unwrap_or_else(|| panic!("crates/{name} is not in the code map's rules: add it here and to docs/architecture.md"));
        let (mut dependencies, wasmer) = workspace_dependencies(&manifest, "dependencies");
        // What builds the crate counts as what it depends on.
        let (build, build_wasmer) = workspace_dependencies(&manifest, "build-dependencies");
        dependencies.extend(build);
        dependencies.sort();
        dependencies.dedup();
        let wasmer = wasmer || build_wasmer;
        assert_eq!(
            &dependencies, normal,
            "crates/{name}'s dependencies on the workspace's crates are not the code map's"
        );
        let (dev_dependencies, dev_wasmer) = workspace_dependencies(&manifest, "dev-dependencies");
        assert_eq!(
            &dev_dependencies, dev,
            "crates/{name}'s dev-dependencies on the workspace's crates are not the code map's"
        );
        if wasmer {
            assert_eq!(name, "pool", "only the pool may depend on wasmer");
        }
        // A test may name wasmer only where the pool's own tests do.
        if dev_wasmer {
            assert_eq!(name, "pool", "only the pool's tests may depend on wasmer");
        }
        checked += 1;
    }
    assert_eq!(checked, rules.len());

    // The guest modules: the SDK, or the ABI written by hand (nothing).
    let mut modules = 0;
    for entry in fs::read_dir(root.join("crates/modules")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let (dependencies, wasmer) = workspace_dependencies(&manifest, "dependencies");
        assert!(
            dependencies.is_empty() || dependencies == ours(&["sdk"]),
            "{} depends on {dependencies:?}: a guest module depends on the SDK or on nothing of ours",
            manifest.display()
        );
        assert!(!wasmer, "{} depends on wasmer", manifest.display());
        modules += 1;
    }
    assert!(modules > 10, "only {modules} guest modules found");
}
