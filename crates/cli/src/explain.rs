//! `rustmq-etl explain`: selection for every message of a JSON Lines file.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
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
    let reader = crate::input::open(input)?;
    let mut out = BufWriter::new(crate::Stdout::lock());
    let mut scratch = plan.create_scratch();
    let mut bad_lines = 0usize;
    for line in crate::input::numbered_lines(reader) {
        let (number, _, line) = line.with_context(|| format!("cannot read {}", input.display()))?;
        // (A blank line is none.)
        let Some(parsed) = line
            .and_then(|line| crate::input::parse_line(&line))
            .transpose()
        else {
            continue;
        };
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
                say!("{}:{number}: {error}", input.display());
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
        say!(
            "{}: {bad_lines} bad line{} (reported above and on stdout)",
            input.display(),
            crate::plural(bad_lines)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
