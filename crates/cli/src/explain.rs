//! `rustmq-etl explain`: selection for every message of a JSON Lines file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rustmq_etl_core::Message;
use serde::Serialize;

use crate::load_plan;

#[derive(Serialize)]
struct Selected<'a> {
    pipeline: &'a str,
    priority: u32,
    module: &'a str,
}

#[derive(Serialize)]
struct SkippedOut<'a> {
    pipeline: &'a str,
    module: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct LineOut<'a> {
    line: usize,
    modules: Vec<Selected<'a>>,
    skipped: Vec<SkippedOut<'a>>,
}

#[derive(Serialize)]
struct LineError<'a> {
    line: usize,
    error: &'a str,
}

pub(crate) fn run(config: &Path, input: &Path, now: Option<i64>) -> anyhow::Result<ExitCode> {
    let Some((_, plan, _)) = load_plan(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let now_ms = match now {
        Some(ms) => ms,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_millis()
            .try_into()
            .context("the system clock is out of range")?,
    };
    let reader: Box<dyn Read> = if input == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).with_context(|| format!("cannot open {}", input.display()))?)
    };
    let mut reader = BufReader::new(reader);
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let mut scratch = plan.create_scratch();
    let mut bad_lines = 0usize;
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .with_context(|| format!("cannot read {}", input.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        let bytes = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| format!("the line is not UTF-8: {e}"))
            .and_then(|text| Message::from_json_line(text).map_err(|e| e.to_string()));
        match parsed {
            Ok(message) => {
                let e = plan.explain(&message, now_ms, &mut scratch);
                let line = LineOut {
                    line: number,
                    modules: e
                        .modules
                        .iter()
                        .map(|m| Selected {
                            pipeline: &m.pipeline,
                            priority: m.priority,
                            module: &m.module,
                        })
                        .collect(),
                    skipped: e
                        .skipped
                        .iter()
                        .map(|s| SkippedOut {
                            pipeline: &s.pipeline,
                            module: &s.module,
                            reason: &s.reason,
                        })
                        .collect(),
                };
                serde_json::to_writer(&mut out, &line)?;
            }
            Err(error) => {
                bad_lines += 1;
                eprintln!("error: {}:{number}: {error}", input.display());
                serde_json::to_writer(
                    &mut out,
                    &LineError {
                        line: number,
                        error: &error,
                    },
                )?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if bad_lines > 0 {
        eprintln!(
            "{}: {bad_lines} bad line{} (reported above and on stdout)",
            input.display(),
            crate::plural(bad_lines)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
