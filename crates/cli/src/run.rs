//! `rustmq-etl run`: JSON Lines messages through the configured pipelines with
//! real modules; delivered messages and dead letters out as JSON Lines, in
//! input order; a summary on standard error.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{Disposition, ProcessOptions, Processed};

use crate::summary::Summary;
use crate::{load_plan, report, start};

/// Messages sent to the engine at a time.
const BATCH: usize = 256;

pub(crate) struct Args {
    pub config: PathBuf,
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub dead_letter: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    pub trace: bool,
}

/// Where modules are when `--modules` is not given: `./modules`, then the
/// repository's `fixtures/modules`.
pub(crate) fn default_modules() -> PathBuf {
    ["modules", "fixtures/modules"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("modules"))
}

fn writer(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        None => Box::new(io::stdout().lock()),
        Some(p) if p == Path::new("-") => Box::new(io::stdout().lock()),
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
    })
}

/// A message's trace as one JSON line, for `--trace`.
fn trace_line(line: usize, processed: &Processed) -> String {
    #[derive(serde::Serialize)]
    struct TraceLine<'a> {
        line: usize,
        result: &'static str,
        config_version: u64,
        trace: Vec<report::TraceEntryJson<'a>>,
    }
    serde_json::to_string(&TraceLine {
        line,
        result: processed.disposition.as_str(),
        config_version: processed.config_version,
        trace: report::trace_json(processed),
    })
    .expect("a trace serialises")
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some((config, _, _)) = load_plan(&args.config) else {
        return Ok(ExitCode::FAILURE);
    };
    let modules = args.modules.clone().unwrap_or_else(default_modules);
    let Some(etl) = start(&config, &modules)? else {
        return Ok(ExitCode::FAILURE);
    };
    let (reader, size): (Box<dyn Read>, Option<u64>) = if args.input == Path::new("-") {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = io::stderr().is_terminal().then(|| {
        let bar = match size {
            Some(size) => indicatif::ProgressBar::new(size),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut output = BufWriter::new(writer(args.output.as_deref())?);
    let mut dead_letters = match &args.dead_letter {
        Some(path) => Some(BufWriter::new(writer(Some(path))?)),
        None => None,
    };
    let mut reader = BufReader::new(reader);
    let mut summary = Summary::default();
    let (mut input, mut bad, mut line_number) = (0u64, 0u64, 0usize);
    let mut line = String::new();
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut lines: Vec<usize> = Vec::with_capacity(BATCH);
    // A line on stderr, above the progress bar if there is one.
    let say = |text: &str| match &progress {
        Some(bar) => bar.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    };
    let flush = |batch: &mut Vec<Message>,
                 lines: &mut Vec<usize>,
                 summary: &mut Summary,
                 output: &mut BufWriter<Box<dyn Write>>,
                 dead_letters: &mut Option<BufWriter<Box<dyn Write>>>|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let results = etl
            .process_batch_blocking(std::mem::take(batch), ProcessOptions { trace: true })
            .context("the engine stopped")?;
        for (processed, &at) in results.iter().zip(lines.iter()) {
            summary.add(processed);
            if args.trace {
                say(&trace_line(at, processed));
            }
            match &processed.disposition {
                Disposition::Delivered(m) => writeln!(output, "{}", m.to_json_line())?,
                Disposition::DeadLettered(m) => match dead_letters {
                    Some(out) => writeln!(out, "{}", m.to_json_line())?,
                    None => writeln!(output, "{}", m.to_json_line())?,
                },
                Disposition::Dropped => {}
            }
        }
        lines.clear();
        Ok(())
    };
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", args.input.display()))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if let Some(bar) = &progress {
            bar.inc(read as u64);
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match Message::from_json_line(text) {
            Ok(message) => {
                input += 1;
                batch.push(message);
                lines.push(line_number);
            }
            Err(e) => {
                bad += 1;
                say(&format!("{}:{line_number}: {e}", args.input.display()));
            }
        }
        if batch.len() == BATCH {
            flush(
                &mut batch,
                &mut lines,
                &mut summary,
                &mut output,
                &mut dead_letters,
            )?;
        }
    }
    flush(
        &mut batch,
        &mut lines,
        &mut summary,
        &mut output,
        &mut dead_letters,
    )?;
    output.flush()?;
    if let Some(out) = &mut dead_letters {
        out.flush()?;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    summary.print(&mut io::stderr().lock(), input, bad)?;
    // Dead letters are a result; only bad input fails the run.
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
