//! `rustmq-etl new-module NAME`: a guest crate on the SDK, with tests and
//! sample messages, that builds with one command and passes `test-module` as
//! generated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

pub(crate) struct Args {
    pub name: String,
    pub dir: Option<PathBuf>,
    pub sdk: Option<PathBuf>,
}

/// Where this binary's sources had the SDK: right for a binary built from a
/// checkout, which is how the tool is installed today (no crates.io release).
const BUILT_WITH_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// The SDK when `--sdk` is not given: the checkout this binary was built
/// from, else the checkout the current directory is in (the binary was built
/// elsewhere and copied, or its checkout moved), else the first, to be named
/// in the error.
fn default_sdk() -> PathBuf {
    find_sdk(
        Path::new(BUILT_WITH_SDK),
        std::env::current_dir().ok().as_deref(),
    )
}

fn find_sdk(built: &Path, cwd: Option<&Path>) -> PathBuf {
    if built.join("Cargo.toml").is_file() {
        return built.to_owned();
    }
    cwd.into_iter()
        .flat_map(Path::ancestors)
        .map(|dir| dir.join("crates/sdk"))
        .find(|dir| is_sdk(dir))
        .unwrap_or_else(|| built.to_owned())
}

/// Whether `dir` holds the SDK's crate: its manifest has a line `name =
/// "rustmq-etl-sdk"`, however spaced or quoted.
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| {
        text.lines().any(|line| {
            let line: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            line == "name=\"rustmq-etl-sdk\"" || line == "name='rustmq-etl-sdk'"
        })
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let parent = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let root = parent.join(&args.name);
    if root.exists() {
        anyhow::bail!(
            "{} already exists; choose another NAME or --dir (nothing was written)",
            root.display()
        );
    }
    // A given path as the user spelt it (made absolute; a symlink kept, so
    // that the crate follows it to wherever it points later); the default,
    // which holds `..`, resolved.
    let sdk = match &args.sdk {
        Some(given) => std::path::absolute(given)
            .ok()
            .filter(|p| p.join("Cargo.toml").is_file())
            .with_context(|| {
                format!(
                    "--sdk {}: no crate there (nothing was written)",
                    given.display()
                )
            })?,
        None => {
            let default = default_sdk();
            default
                .canonicalize()
                .ok()
                .filter(|p| p.join("Cargo.toml").is_file())
                .with_context(|| {
                    format!(
                        "the rustmq-etl SDK is neither at {} (where this binary was built) nor \
                         in a checkout holding the current directory: pass --sdk PATH, the \
                         crates/sdk directory of a rustmq-etl checkout (nothing was written)",
                        default.display()
                    )
                })?
        }
    };
    if let (Some(given), false) = (&args.sdk, is_sdk(&sdk)) {
        anyhow::bail!(
            "--sdk {}: the crate there is not rustmq-etl-sdk; give the crates/sdk directory of \
             a rustmq-etl checkout (nothing was written)",
            given.display()
        );
    }
    // (Cargo.toml names it as text.)
    let Some(sdk_path) = sdk.to_str() else {
        anyhow::bail!(
            "the SDK's path {} is not UTF-8, which Cargo.toml cannot name; pass --sdk a path to \
             it that is (a symlink, say), or move the checkout (nothing was written)",
            sdk.display()
        );
    };

    let files = [
        ("Cargo.toml", cargo_toml(&args.name, sdk_path)),
        ("src/lib.rs", lib_rs(&args.name)),
        ("messages.jsonl", MESSAGES.to_owned()),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let shown = shell_word(&root.display().to_string());
    // Cargo builds into CARGO_TARGET_DIR if the user's shell sets it.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), PathBuf::from);
    let wasm = target
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", args.name.replace('-', "_")));
    out!("created {shown}: Cargo.toml, src/lib.rs (the module and its tests), messages.jsonl");
    out!();
    out!("build it (needs `rustup target add wasm32-unknown-unknown` once):");
    let manifest = shell_word(&root.join("Cargo.toml").display().to_string());
    out!("    cargo build --release --target wasm32-unknown-unknown --manifest-path {manifest}");
    out!("test it natively:");
    out!("    cargo test --manifest-path {manifest}");
    out!("run it on its sample messages:");
    out!(
        "    {} test-module {} --input {}",
        this_tool(),
        shell_word(&wasm.display().to_string()),
        shell_word(&root.join("messages.jsonl").display().to_string())
    );
    // Cargo names the file after the crate with `_` for `-`; a pipeline
    // finds a module as <modules dir>/<module_id>.wasm. The directory is the
    // crate's own: a ./modules made here would change where `run` looks by
    // default (./modules, else ./fixtures/modules: a checkout's samples).
    let modules = root.join("modules");
    let modules_shown = shell_word(&modules.display().to_string());
    out!(
        "use it in a pipeline as `module_id: {0}`: the engine loads <modules dir>/{0}.wasm \
         from the directory `--modules` names, so copy it into one, e.g.:",
        args.name
    );
    out!("    mkdir -p {modules_shown}");
    out!(
        "    cp {} {}",
        shell_word(&wasm.display().to_string()),
        shell_word(
            &modules
                .join(format!("{}.wasm", args.name))
                .display()
                .to_string()
        )
    );
    out!(
        "    {} run --config YOUR_PIPELINES --modules {modules_shown} --input YOUR_MESSAGES.jsonl",
        this_tool()
    );
    Ok(ExitCode::SUCCESS)
}

/// `rustmq-etl` if that is this tool on the `PATH`, else this binary's path.
fn this_tool() -> String {
    let here = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let candidate = dir.join("rustmq-etl");
            candidate.is_file()
                && here
                    .as_ref()
                    .is_some_and(|h| candidate.canonicalize().ok().as_ref() == Some(h))
        })
    });
    match here {
        Some(path) if !on_path => shell_word(&path.display().to_string()),
        _ => "rustmq-etl".to_owned(),
    }
}

/// `word` as one word for a POSIX shell: as it is when it has nothing the
/// shell would read, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A crate name cargo accepts that is also a usable file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !ok {
        anyhow::bail!(
            "{name:?} is not a module name: use lowercase letters, digits, `-` and `_`, \
             starting with a letter (at most 64 characters)"
        );
    }
    // Names cargo refuses for a package, or that shadow a crate every Rust
    // program sees.
    const RESERVED: &[&str] = &[
        "abstract",
        "as",
        "async",
        "await",
        "become",
        "box",
        "break",
        "const",
        "continue",
        "crate",
        "do",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "where",
        "while",
        "yield",
        "alloc",
        "core",
        "std",
        "proc_macro",
        "test",
    ];
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        anyhow::bail!(
            "{name:?} is a Rust keyword or a built-in crate's name: choose another module name"
        );
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    // A JSON string is a TOML basic string, but for DEL, which TOML wants
    // escaped and JSON does not.
    let sdk = serde_json::Value::from(sdk)
        .to_string()
        .replace('\u{7f}', "\\u007F");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the WebAssembly module; rlib: `cargo test` on the host.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK of the rustmq-etl checkout this crate was made from, by its full
# path on this machine: elsewhere, point it at that checkout's crates/sdk, or
# at the repository with `git = "…"`. Add `features = ["json"]` to edit one
# field of a JSON payload, or to read custom_config into a struct
# (`rustmq_etl_sdk::json`; the struct's `Deserialize` needs `serde` with its
# `derive` feature among these dependencies too).
rustmq-etl-sdk = {{ path = {sdk} }}

# A workspace of its own, wherever it was created.
[workspace]

# Small, fast modules.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
    )
}

fn lib_rs(name: &str) -> String {
    LIB_RS.replace("{{NAME}}", name)
}

const LIB_RS: &str = r##"//! {{NAME}}: a rustmq-etl module.
//!
//! It tags every message with the header `x-processed-by: {{NAME}}` and drops
//! messages whose payload is empty. Replace `transform` with your own; the
//! SDK's documentation (`cargo doc -p rustmq-etl-sdk --features json --open` in a rustmq-etl
//! checkout) shows edits, configuration (`custom_config`) and the
//! `json` feature for editing one field of a JSON payload.

use rustmq_etl_sdk::{export, Message, Outcome};

fn transform(message: &Message) -> Outcome {
    if message.payload().is_empty() {
        return Outcome::Drop;
    }
    Outcome::edit().set_header("x-processed-by", "{{NAME}}").into()
}

export!(transform = transform);

#[cfg(test)]
mod tests {
    use super::*;
    use rustmq_etl_sdk::testing::{apply, run, TestMessage};

    #[test]
    fn tags_every_message() {
        let out = run(transform, &TestMessage::new("orders.created", r#"{"id":1}"#));
        assert_eq!(
            out.headers,
            vec![("x-processed-by".to_owned(), "{{NAME}}".to_owned())]
        );
        assert_eq!(out.payload, br#"{"id":1}"#);
    }

    #[test]
    fn drops_a_message_without_payload() {
        assert_eq!(apply(transform, &TestMessage::new("orders.created", "")), Ok(None));
    }
}
"##;

const MESSAGES: &str = r#"{"topic":"orders.created","key":"order-1","payload":{"id":1,"total":12.5}}
{"topic":"orders.created","headers":{"x-processed-by":"upstream"},"payload":{"id":2,"total":7}}
{"topic":"orders.cancelled","payload":""}
"#;

#[cfg(test)]
mod tests {
    use super::{cargo_toml, find_sdk};

    /// The SDK's path is written into Cargo.toml as TOML reads it back,
    /// whatever it holds: quotes, backslashes, spaces, control characters
    /// (DEL too), text beyond ASCII.
    #[test]
    fn the_sdk_s_path_reads_back_from_cargo_toml() {
        for path in [
            "/plain/crates/sdk",
            "/with space/and \"quotes\"/sdk",
            "/back\\slash\\/tab\t/newline\n/sdk",
            "/émigré/日本/sdk",
            "/#not a comment/{x = 1}/sdk",
            "/del\u{7f}/nul\u{0}/sdk",
        ] {
            let text = cargo_toml("order-tagger", path);
            let toml: toml_edit::DocumentMut = text
                .parse()
                .unwrap_or_else(|e| panic!("{path:?}: {e}\n{text}"));
            let read = toml["dependencies"]["rustmq-etl-sdk"]["path"].as_str();
            assert_eq!(read, Some(path), "{text}");
            assert_eq!(toml["package"]["name"].as_str(), Some("order-tagger"));
        }
    }

    /// A binary whose build checkout is gone finds the SDK of the checkout
    /// it is run in, from any directory inside it, and only a crate that is
    /// the SDK; outside any checkout it names where it was built.
    #[test]
    fn the_sdk_is_found_where_built_else_in_the_checkout_run_in() {
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        let sdk = checkout.join("crates/sdk");
        let deep = checkout.join("crates/cli/src");
        std::fs::create_dir_all(&sdk).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        let gone = dir.path().join("gone/crates/sdk");
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("crates/sdk")).unwrap();
        std::fs::write(
            other.join("crates/sdk/Cargo.toml"),
            "[package]\nname = \"other\"\n",
        )
        .unwrap();

        std::fs::write(
            sdk.join("Cargo.toml"),
            "[package]\nname = \"rustmq-etl-sdk\"\n",
        )
        .unwrap();
        assert_eq!(find_sdk(&gone, Some(&deep)), sdk);
        assert_eq!(find_sdk(&gone, Some(&checkout)), sdk);
        assert_eq!(find_sdk(&gone, Some(&other)), gone);
        assert_eq!(find_sdk(&gone, None), gone);
        assert_eq!(find_sdk(&sdk, Some(&other)), sdk);
    }
}
