//! `rustmq-etl run`: JSON Lines messages through the configured pipelines with
//! real modules; delivered messages and dead letters out as JSON Lines, in
//! input order; a summary on standard error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{Disposition, FailureAction, ProcessOptions, Processed, TraceEvent};

use crate::{load_plan, plural, report, start};

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

/// What one module did over the run.
#[derive(Default)]
struct ModuleSummary {
    ran: u64,
    skipped: u64,
    failed: BTreeMap<&'static str, u64>,
    retried: u64,
    dead_lettered: u64,
    times: Vec<Duration>,
}

#[derive(Default)]
struct Summary {
    /// By (pipeline, module), in first-seen order.
    modules: Vec<((String, String), ModuleSummary)>,
    delivered: u64,
    dropped: u64,
    dead_lettered: u64,
}

impl Summary {
    fn module(&mut self, pipeline: &str, module: &str) -> &mut ModuleSummary {
        let at = match self
            .modules
            .iter()
            .position(|((p, m), _)| p == pipeline && m == module)
        {
            Some(at) => at,
            None => {
                self.modules.push((
                    (pipeline.to_owned(), module.to_owned()),
                    ModuleSummary::default(),
                ));
                self.modules.len() - 1
            }
        };
        &mut self.modules[at].1
    }

    fn add(&mut self, processed: &Processed) {
        match processed.disposition {
            Disposition::Delivered(_) => self.delivered += 1,
            Disposition::Dropped => self.dropped += 1,
            Disposition::DeadLettered(_) => self.dead_lettered += 1,
        }
        let Some(trace) = &processed.trace else {
            return;
        };
        for entry in &trace.entries {
            let s = self.module(&entry.pipeline, &entry.module);
            match &entry.event {
                TraceEvent::Ran { time, attempts, .. } => {
                    s.ran += 1;
                    s.retried += u64::from(attempts.saturating_sub(1));
                    s.times.push(*time);
                }
                TraceEvent::Skipped(_) => s.skipped += 1,
                TraceEvent::Failed {
                    kind,
                    attempts,
                    action,
                    ..
                } => {
                    *s.failed.entry(kind.as_str()).or_default() += 1;
                    s.retried += u64::from(attempts.saturating_sub(1));
                    if *action == FailureAction::DeadLettered {
                        s.dead_lettered += 1;
                    }
                }
            }
        }
    }

    fn print(&mut self, input: u64, bad: u64) {
        let mut err = io::stderr().lock();
        let _ = writeln!(
            err,
            "{:<28} {:<28} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}  failed by kind",
            "pipeline", "module", "ran", "skipped", "failed", "retried", "dead", "p50", "p99"
        );
        for ((pipeline, module), s) in &mut self.modules {
            s.times.sort();
            let at = |q: f64| {
                s.times
                    .get(((s.times.len() as f64 * q) as usize).min(s.times.len().saturating_sub(1)))
                    .map_or("-".to_owned(), |t| format!("{t:.1?}"))
            };
            let failed: u64 = s.failed.values().sum();
            let kinds: Vec<String> = s.failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                err,
                "{pipeline:<28} {module:<28} {:>8} {:>8} {failed:>8} {:>8} {:>10} {:>10} {:>10}  {}",
                s.ran,
                s.skipped,
                s.retried,
                s.dead_lettered,
                at(0.5),
                at(0.99),
                kinds.join(", ")
            );
        }
        let _ = writeln!(
            err,
            "{input} in = {} delivered + {} dropped + {} dead-lettered{}",
            self.delivered,
            self.dropped,
            self.dead_lettered,
            if bad > 0 {
                format!(
                    "; {bad} bad input line{} not processed",
                    plural(bad as usize)
                )
            } else {
                String::new()
            }
        );
    }
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
    summary.print(input, bad);
    // Dead letters are a result; only bad input fails the run.
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
