//! `rustmq-etl test-module`: one module on messages, showing for each what it
//! changed or how it failed — the module author's inner loop.
//!
//! The module runs in the same sandbox as in a pipeline (the pool's
//! `LocalPool`, on this thread), with the settings a pipeline's
//! `instance_config` would give it: `--module-config` is its `custom_config`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use rustmq_etl_core::{CallRequest, ModuleSettings, ModuleSpec, Outcome};
use rustmq_etl_pool::{CompileLimits, CompileSettings, LoadedModule, LocalPool};
use serde::Serialize;

use crate::diff::{describe, diff, Change};
use crate::plural;

pub(crate) struct Args {
    pub module: PathBuf,
    pub input: PathBuf,
    pub module_config: Option<String>,
    pub timeout_ms: Option<u64>,
    pub memory_limit_bytes: Option<usize>,
    pub json: bool,
}

/// One message's result, as `--json` writes it.
#[derive(Serialize)]
struct ResultJson<'a> {
    line: usize,
    /// `changed`, `unchanged`, `dropped` or `failed`.
    result: &'static str,
    time_us: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    changes: &'a [Change],
    /// The message as the module left it (changed or unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    kind: &'a str,
    message: &'a str,
}

#[derive(Default)]
struct Counts {
    changed: usize,
    unchanged: usize,
    dropped: usize,
    failed: usize,
    bad_lines: usize,
}

/// Says on standard error (with the lines that were written) how many log
/// lines `module` wrote past the limit since its count read `before`, in
/// the `what` (its start or a call) at `place`.
fn dropped_log_lines(module: &LoadedModule, before: u64, place: &str, what: &str) {
    let dropped = module.stats().log_lines_dropped - before;
    if dropped > 0 {
        say!(
            "{place}: {dropped} more log line{} not shown: a {what} logs at most {} lines",
            crate::plural(dropped as usize),
            rustmq_etl_pool::MAX_LOG_LINES_PER_CALL
        );
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("cannot read the module {}", args.module.display()))?;
    let id = args
        .module
        .file_stem()
        .map_or_else(|| "module".to_owned(), |s| s.to_string_lossy().into_owned());
    let mut settings = ModuleSettings::default();
    let configured = args.module_config.is_some();
    if let Some(config) = args.module_config {
        let custom_config =
            rustmq_etl_config::ModuleInstanceConfig::custom_config_from_json(&config)
                .with_context(|| {
                    format!(
                        "--module-config is not a custom_config (JSON, each key once in an \
                         object): {config}"
                    )
                })?;
        // The text a pipeline's module receives for this value (compact,
        // keys sorted, numbers as the engine writes them): the same here.
        settings.custom_config = rustmq_etl_config::ModuleInstanceConfig {
            custom_config,
            ..Default::default()
        }
        .to_settings()
        .custom_config;
    }
    // The limits a pipeline's instance_config allows (docs/configuration.md).
    // (Their ranges are checked by the command line's parser.)
    if let Some(ms) = args.timeout_ms {
        settings.execution_timeout_ms = ms;
    }
    if let Some(bytes) = args.memory_limit_bytes {
        settings.memory_limit_bytes = bytes;
    }
    let compile = CompileSettings {
        limits: CompileLimits::default(),
        bulk_bytes_per_ms: rustmq_etl_pool::bulk_bytes_per_ms()
            .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e}"))?,
        cache: None,
    };
    let spec = ModuleSpec::new(&id).with_settings(settings);
    let module = LoadedModule::compile(&spec, &wasm, &compile)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.module.display()))?;
    let mut pool = LocalPool::new();
    let warmed = pool.warm(&module, 1);
    // Its start's log lines past the limit, if any (shown before its error).
    dropped_log_lines(&module, 0, &args.module.display().to_string(), "start");
    if let Err(e) = warmed {
        // Its init rejected its custom_config (not a trap or a timeout).
        let hint = match (
            e.message().contains("rejected its custom_config"),
            configured,
        ) {
            (true, true) => " (its init function gets --module-config as its custom_config)",
            (true, false) => {
                " (its init function got null: give its custom_config with --module-config)"
            }
            (false, _) => "",
        };
        anyhow::bail!(
            "{}: the module does not start: {}: {}{hint}",
            args.module.display(),
            e.kind().as_str(),
            e.message(),
        );
    }

    let reader = crate::input::open(&args.input)?;
    let mut out = std::io::BufWriter::new(crate::Stdout::lock());
    let mut counts = Counts::default();
    for line in crate::input::numbered_lines(reader) {
        let (number, _, line) =
            line.with_context(|| format!("reading {}", args.input.display()))?;
        let message = match line.and_then(|line| crate::input::parse_line(&line)) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(e) => {
                counts.bad_lines += 1;
                out.flush()?;
                say!("{}:{number}: {e}", args.input.display());
                continue;
            }
        };
        let dropped_before = module.stats().log_lines_dropped;
        let report = loop {
            match pool.call(&module, CallRequest::new(&message)) {
                Ok(report) => break report,
                // Instance creations are throttled after failures: wait.
                Err(busy) => {
                    std::thread::sleep(busy.until.saturating_duration_since(Instant::now()))
                }
            }
        };
        let time_us = report.ran.as_micros() as u64;
        let (result, changes, after) = match &report.result {
            Ok(Outcome::Dropped) => ("dropped", vec![], None),
            Ok(Outcome::Unchanged) => ("unchanged", vec![], Some(message.clone())),
            Ok(Outcome::Edited(edits)) => {
                let mut after = message.clone();
                after.apply(edits.iter().cloned());
                let changes = diff(&message, &after);
                let result = if changes.is_empty() {
                    "unchanged"
                } else {
                    "changed"
                };
                (result, changes, Some(after))
            }
            Err(_) => ("failed", vec![], None),
        };
        match result {
            "changed" => counts.changed += 1,
            "unchanged" => counts.unchanged += 1,
            "dropped" => counts.dropped += 1,
            _ => counts.failed += 1,
        }
        let error = report.result.as_ref().err();
        if args.json {
            let json = ResultJson {
                line: number,
                result,
                time_us,
                changes: &changes,
                message: after.as_ref().map(crate::report::message_json),
                error: error.map(|e| ErrorJson {
                    kind: e.kind().as_str(),
                    message: e.message(),
                }),
            };
            writeln!(out, "{}", serde_json::to_string(&json)?)?;
        } else {
            match error {
                Some(e) => writeln!(
                    out,
                    "{}:{number}: failed ({time_us} µs): {}: {}",
                    args.input.display(),
                    e.kind().as_str(),
                    e.message()
                )?,
                None => writeln!(
                    out,
                    "{}:{number}: {result} ({time_us} µs)",
                    args.input.display()
                )?,
            }
            for change in &changes {
                writeln!(out, "    {}", describe(change))?;
            }
        }
        // Out now: the next call's log lines (on standard error) come after
        // this message's result, not before all of them.
        out.flush()?;
        dropped_log_lines(
            &module,
            dropped_before,
            &format!("{}:{number}", args.input.display()),
            "call",
        );
    }
    out.flush()?;
    let total = counts.changed + counts.unchanged + counts.dropped + counts.failed;
    say!(
        "{}: {total} message{}: {} changed, {} unchanged, {} dropped, {} failed{}",
        id,
        plural(total),
        counts.changed,
        counts.unchanged,
        counts.dropped,
        counts.failed,
        if counts.bad_lines > 0 {
            format!(
                "; {} bad input line{}",
                counts.bad_lines,
                plural(counts.bad_lines)
            )
        } else {
            String::new()
        }
    );
    Ok(if counts.failed == 0 && counts.bad_lines == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
