//! `cargo xtask test`.

use crate::cargo;

pub(crate) fn run(extra: &[String]) -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut test = vec!["test", "--workspace"];
    test.extend(extra.iter().map(String::as_str));
    cargo(&test)
}
