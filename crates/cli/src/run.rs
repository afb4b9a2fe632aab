//! `rustmq-etl run`: JSON Lines messages through the configured pipelines with
//! real modules; delivered messages and dead letters out as JSON Lines, in
//! input order; a summary on standard error.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

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
    pub start_line: usize,
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
    let size = if args.input == Path::new("-") {
        None
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        file.metadata().ok().map(|m| m.len())
    };
    let stop = stop_on_signals()?;
    let lines_in = read_lines(&args.input)?;
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
    let mut summary = Summary::default();
    let (mut input, mut bad) = (0u64, 0u64);
    // The last line read; once the batch is flushed, every line up to it was
    // processed and written (or reported bad, or blank).
    let mut consumed = args.start_line.saturating_sub(1);
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
    let mut stopped_by = None;
    loop {
        let signal = stop.load(Ordering::Relaxed);
        if signal != 0 {
            stopped_by = Some(signal);
            break;
        }
        let (line_number, read, line) = match lines_in.recv_timeout(IDLE) {
            Ok(item) => item,
            // Input is slow: what was read so far goes out now.
            Err(mpsc::RecvTimeoutError::Timeout) => {
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
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let line = line.with_context(|| format!("reading {}", args.input.display()))?;
        if let Some(bar) = &progress {
            bar.inc(read as u64);
        }
        let text = line.trim();
        if line_number < args.start_line {
            continue;
        }
        consumed = line_number;
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
    // What was read is processed: everything up to here is answered.
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
    if let Some(signal) = stopped_by {
        let name = if signal == SIGINT as usize {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        eprintln!(
            "stopped by {name}: every line up to line {consumed} of {} was processed and its result written; \
             to go on, run again with --start-line {}",
            args.input.display(),
            consumed + 1
        );
        return Ok(ExitCode::from(128 + signal as u8));
    }
    // Dead letters are a result; only bad input fails the run.
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How long input may be silent before the messages read so far are run.
const IDLE: Duration = Duration::from_millis(100);

/// A flag set to the number of SIGTERM or SIGINT when one arrives: `run`
/// finishes what it read, writes it, and says where to resume.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let stop = Arc::new(AtomicUsize::new(0));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_usize(signal, stop.clone(), signal as usize)
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

/// The input's lines, read on a thread of their own (so that a signal is
/// noticed while standing input is silent): (line number, bytes, line).
fn read_lines(path: &Path) -> anyhow::Result<mpsc::Receiver<(usize, usize, io::Result<String>)>> {
    let reader: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let (lines, receiver) = mpsc::sync_channel(4 * BATCH);
    std::thread::Builder::new()
        .name("rustmq-etl-input".into())
        .spawn(move || {
            let mut reader = BufReader::new(reader);
            for number in 1.. {
                let mut line = String::new();
                let item = match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(read) => (number, read, Ok(line)),
                    Err(e) => (number, 0, Err(e)),
                };
                let failed = item.2.is_err();
                if lines.send(item).is_err() || failed {
                    break;
                }
            }
        })
        .context("cannot start the input thread")?;
    Ok(receiver)
}
