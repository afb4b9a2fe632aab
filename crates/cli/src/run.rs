//! `rustmq-etl run`: JSON Lines messages through the configured pipelines with
//! real modules; delivered messages and dead letters out as JSON Lines, in
//! input order; a summary on standard error.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use anyhow::Context as _;
use rustmq_etl_core::Message;
use rustmq_etl_orchestrator::{Disposition, ProcessOptions, Processed};

use crate::checkpoint::{Checkpoint, CheckpointFile, FileId, Resume, Setup};
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
    /// Where the run records how far it got, and resumes from
    /// ([`Checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// Resume a checkpoint whose run ran with other pipelines, modules or
    /// options ([`Checkpoint::check_setup`]).
    pub resume_with_changes: bool,
    /// Each checkpoint record only once the outputs are on the disk, and on
    /// the disk itself before the run goes on (`--sync`).
    pub sync: bool,
    /// Each message to its end before the next starts
    /// ([`ProcessOptions::in_order`]).
    pub in_order: bool,
    /// The engine's settings from the command line.
    pub settings: crate::Settings,
}

impl Args {
    /// Whether dead letters go to standard output as the delivered messages
    /// do (`--dead-letter -` without `--output`, or with `--output -`).
    fn both_to_stdout(&self) -> bool {
        self.dead_letter.as_deref() == Some(Path::new("-"))
            && self.output.as_deref().is_none_or(|o| o == Path::new("-"))
    }
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

/// Where results go: a file or standard output (a file is appended to when
/// the run resumes an earlier one). A batch's lines are kept until it is
/// committed ([`commit`]), then written whole; after a write that fails, a
/// regular file (standard output redirected to one included) is cut back to
/// its last commit, so that no half line or half batch is left for a resumed
/// run to append to.
struct Sink {
    /// What a failed write names: "writing delivered messages to FILE".
    what: String,
    /// Where the lines go: the file, or standard output's descriptor itself
    /// (not Rust's buffered `stdout`, whose buffer would outlive a cut and be
    /// written after it as the process ends).
    out: File,
    /// The lines of the batch not yet committed.
    pending: Vec<u8>,
    /// Standard output (told apart in the stop line's advice).
    stdout: bool,
    /// A regular file's length at the last commit; none for a pipe, a
    /// terminal or a device.
    committed: Option<u64>,
    /// Whether the last commit's write began (bytes may be out past it).
    writing: bool,
    /// A regular file's identity, for a checkpoint.
    id: Option<FileId>,
}

impl Sink {
    /// Opens `path` (standard output for none or `-`), for appending to
    /// what it holds if `append`; a file is emptied only by
    /// [`Sink::start_empty`], once every sink of the run is open (a sink that
    /// fails to open then costs no earlier run's results).
    fn open(path: Option<&Path>, append: bool, what: &str) -> anyhow::Result<Sink> {
        let (out, named, stdout) = match path.filter(|p| *p != Path::new("-")) {
            Some(p) => {
                let file = File::options()
                    .write(true)
                    .create(true)
                    .append(append)
                    .truncate(false)
                    .open(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                if append && !ends_a_line(&file, p).unwrap_or(true) {
                    anyhow::bail!(
                        "{} does not end with a whole line: the run that wrote it was stopped \
                         while writing (killed, say), and its last line is a result cut short. \
                         Remove that last partial line (and, to be sure of where to resume, \
                         start again from a line whose result is whole)",
                        p.display()
                    );
                }
                (file, p.display().to_string(), false)
            }
            None => {
                use std::os::fd::AsFd as _;
                let out = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(File::from)
                    .context("cannot write to standard output")?;
                (out, "standard output".to_owned(), true)
            }
        };
        let file = out.metadata().ok().filter(|m| m.is_file());
        Ok(Sink {
            what: format!("writing {what} to {named}"),
            out,
            pending: Vec::new(),
            stdout,
            committed: file.as_ref().map(|m| m.len()),
            writing: false,
            id: file.as_ref().map(FileId::of),
        })
    }

    /// Empties a file the run does not append to (standard output, and
    /// what is not a regular file — a device, a pipe — are left as they are).
    fn start_empty(&mut self) -> anyhow::Result<()> {
        if self.stdout || self.committed.is_none() {
            return Ok(());
        }
        self.out
            .set_len(0)
            .with_context(|| format!("{}: emptying it", self.what))?;
        self.committed = Some(0);
        Ok(())
    }

    fn line(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
        self.pending.push(b'\n');
    }

    /// Whether this is standard output redirected to a regular file.
    fn stdout_to_a_file(&self) -> bool {
        self.stdout && self.committed.is_some()
    }

    /// After a write failed: cuts the file back to its length at the last
    /// commit, its position with it (a descriptor shared with standard error,
    /// `2>&1`, writes on from there); what could not be done, if anything.
    fn abandon(mut self) -> Option<String> {
        let Some(length) = self.committed else {
            return self.writing.then(|| {
                format!(
                    "{}: results after the line named above may be out already (at most a \
                     batch of 256, the last perhaps in part): they cannot be taken back",
                    self.what
                )
            });
        };
        use std::io::Seek as _;
        let now = self.out.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if now == length {
            return None;
        }
        self.out
            .set_len(length)
            .and_then(|()| self.out.seek(io::SeekFrom::Start(length)).map(drop))
            .err()
            .map(|e| {
                format!(
                    "{}: bytes past byte {length} are an incomplete result and could not be cut \
                     off ({e}): remove them before going on",
                    self.what
                )
            })
    }
}

/// Whether `file`, opened at `path` for writing, is empty or ends with a
/// newline (not a regular file: true). Read through a descriptor of its own:
/// the sink's is write-only.
fn ends_a_line(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt as _;
    let metadata = file.metadata()?;
    if !metadata.is_file() || metadata.len() == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    File::open(path)?.read_exact_at(&mut last, metadata.len() - 1)?;
    Ok(last[0] == b'\n')
}

/// The most room a sink keeps for the next batch's output between batches.
const KEEP_PENDING: usize = 1 << 20;

/// Writes every sink's pending lines — those that can be cut back first,
/// a pipe or a device last — and only then notes their lengths: a batch is committed in all of
/// them or in none (one written and another failing is cut back with it).
fn commit(sinks: [Option<&mut Sink>; 2]) -> anyhow::Result<()> {
    let mut sinks: Vec<&mut Sink> = sinks.into_iter().flatten().collect();
    // (What cannot be cut back goes last: a pipe, a device.)
    sinks.sort_by_key(|sink| sink.committed.is_none());
    for sink in &mut sinks {
        sink.writing = !sink.pending.is_empty();
        sink.out
            .write_all(&sink.pending)
            .with_context(|| sink.what.clone())?;
    }
    for sink in sinks {
        if sink.committed.is_some() {
            sink.committed = Some(
                sink.out
                    .metadata()
                    .with_context(|| format!("{}: reading its length", sink.what))?
                    .len(),
            );
        }
        sink.pending.clear();
        // A batch of large messages does not keep its room for ever.
        sink.pending.shrink_to(KEEP_PENDING);
        sink.writing = false;
    }
    Ok(())
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

/// Where a file argument of `run` leads: `-` is standard input or output
/// (`/dev/stdin`, `/dev/stdout`: a file when the shell redirected it), and
/// symbolic links are followed, dangling ones too (writing through one
/// creates its target), up to an open file's entry in `/proc/…/fd` (or
/// `/dev/fd`): its link names a pipe or a socket by no path (`pipe:[123]`),
/// and the entry itself is what `stat` reads the open file through.
fn destination(path: &Path, dash: &str) -> PathBuf {
    let mut path = if path == Path::new("-") {
        PathBuf::from(dash)
    } else {
        path.to_owned()
    };
    for _ in 0..40 {
        let open_file = path.parent().is_some_and(|dir| {
            dir == Path::new("/dev/fd") || (dir.starts_with("/proc") && dir.ends_with("fd"))
        });
        if open_file {
            break;
        }
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            Err(_) => break,
        }
    }
    path
}

/// Whether `a` and `b` lead to one regular file: the same one if both are
/// there, else the same name in the same directory. Devices, pipes and
/// terminals (`/dev/null`, a pipe to another program) are never one file
/// here: writing to them twice destroys nothing.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino()),
        (Err(_), Err(_)) => {
            let place = |p: &Path| {
                let dir = match p.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                Some((std::fs::canonicalize(dir).ok()?, p.file_name()?.to_owned()))
            };
            place(a).is_some_and(|a| Some(a) == place(b))
        }
        _ => false,
    }
}

/// Refuses an output that would destroy the input or the other output:
/// each output file is replaced as the run starts. Both outputs on standard
/// output are one stream, and allowed.
fn check_paths(args: &Args) -> anyhow::Result<()> {
    // Before any output is replaced: an input that cannot be read as lines.
    if args.input.is_dir() {
        anyhow::bail!(
            "--input {} is a directory: give a file of JSON Lines (or - for standard input)",
            args.input.display()
        );
    }
    let shown = |p: &Option<PathBuf>| p.as_deref().unwrap_or(Path::new("-")).display().to_string();
    let output = destination(
        args.output.as_deref().unwrap_or(Path::new("-")),
        "/dev/stdout",
    );
    let dead_letter = args
        .dead_letter
        .as_deref()
        .map(|p| destination(p, "/dev/stdout"));
    let input = destination(&args.input, "/dev/stdin");
    let outputs = [
        ("--output", shown(&args.output), Some(&output)),
        (
            "--dead-letter",
            shown(&args.dead_letter),
            dead_letter.as_ref(),
        ),
    ];
    for (flag, name, path) in &outputs {
        if path.is_some_and(|path| same_file(path, &input)) {
            anyhow::bail!(
                "{flag} {name} is the input file: it would be emptied before it is read; \
                 write the results to another file"
            );
        }
    }
    if let Some(checkpoint) = &args.checkpoint {
        let is_a_file = |p: &Option<PathBuf>| p.as_deref().is_some_and(|p| p != Path::new("-"));
        if !is_a_file(&args.output) || (args.dead_letter.is_some() && !is_a_file(&args.dead_letter))
        {
            anyhow::bail!(
                "--checkpoint needs --output FILE, and --dead-letter FILE if dead letters go \
                 apart: files a resumed run can cut back to the checkpoint's lengths, which \
                 standard output is not"
            );
        }
        if args.input == Path::new("-") {
            anyhow::bail!(
                "--checkpoint needs --input FILE: a resumed run skips the lines done, and \
                 standard input cannot tell whether it is sent the same stream again"
            );
        }
        if checkpoint == Path::new("-") {
            anyhow::bail!("--checkpoint - names no file: give it a file of its own");
        }
        if !std::fs::metadata(&args.input).is_ok_and(|m| m.is_file()) {
            anyhow::bail!(
                "--checkpoint needs --input to be a regular file ({} is not, or cannot be read): \
                 a resumed run checks that it reads the same file, at least as long",
                args.input.display()
            );
        }
        let at = destination(checkpoint, "/dev/stdout");
        let taken = [Some(&input), Some(&output), dead_letter.as_ref()];
        if taken.into_iter().flatten().any(|p| same_file(p, &at)) {
            anyhow::bail!(
                "--checkpoint {} is the input or an output file: give it a file of its own",
                checkpoint.display()
            );
        }
    }
    if let Some(dead_letter) = &dead_letter {
        if !args.both_to_stdout() && same_file(&output, dead_letter) {
            anyhow::bail!(
                "--output and --dead-letter are one file ({}): one would overwrite the other; \
                 give them different files, or leave out --dead-letter to write the dead \
                 letters with the delivered messages",
                shown(&args.dead_letter)
            );
        }
    }
    Ok(())
}

pub(crate) fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    check_paths(&args)?;
    // The configuration first: one with errors stops the run before anything
    // is opened, a finished checkpoint's "nothing to do" included.
    let Some((config, _, _)) = load_plan(&args.config) else {
        return Ok(ExitCode::FAILURE);
    };
    // A checkpoint left by an earlier run of this command: resumed after its
    // line, the outputs cut back to their lengths then.
    let mut checkpoint_file = None;
    // The line the run began at (a resumed one's first run's), and the
    // bytes of the input's lines up to the last one done.
    let mut began_at = args.start_line;
    let mut consumed_bytes = 0u64;
    // The checkpoint found, to resume once the engine has started (its
    // modules are part of what the run ran with).
    let mut resuming_from = None;
    if let Some(path) = &args.checkpoint {
        let (mut file, found) = CheckpointFile::open(path)?;
        if let Some(checkpoint) = found {
            let output = args.output.as_deref().expect("checked: a file");
            match checkpoint.resume(
                path,
                &args.input,
                args.start_line,
                output,
                args.dead_letter.as_deref(),
            )? {
                Resume::Finished(note) => {
                    say!("note: {note}");
                    return Ok(ExitCode::SUCCESS);
                }
                after => {
                    // A run begun with --sync goes on with it: its promise
                    // is not dropped by a resume that left it out.
                    if checkpoint.sync && !args.sync {
                        say!(
                            "note: the run began with --sync: it goes on flushing its outputs \
                             and checkpoint to the disk"
                        );
                        args.sync = true;
                    }
                    resuming_from = Some((checkpoint, after));
                }
            }
        }
        if args.sync {
            file.sync_each_record()?;
        }
        checkpoint_file = Some(file);
    }
    let modules = args.modules.clone().unwrap_or_else(default_modules);
    let settings = crate::Settings {
        // In order, the batches run on this thread.
        caller_threads: usize::from(args.in_order),
        // The module files as the engine reads them, for the checkpoint.
        modules_read: args.checkpoint.as_ref().map(|_| Default::default()),
        ..args.settings.clone()
    };
    let Some(etl) = start(&config, &modules, &settings)? else {
        return Ok(ExitCode::FAILURE);
    };
    // What the run runs with, recorded with its checkpoints.
    let setup = settings.modules_read.as_ref().map(|read| {
        let read = read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Setup::of(&config, &read, &args.settings.options)
    });
    if let (Some((checkpoint, after)), Some(setup), Some(path)) =
        (resuming_from, &setup, &args.checkpoint)
    {
        // Refused before anything is cut.
        if let Some(note) = checkpoint.check_setup(path, setup, args.resume_with_changes)? {
            say!("note: {note}");
        }
        if let Resume::After {
            line,
            input_bytes,
            notes,
            cuts,
        } = after
        {
            for note in notes.into_iter().chain(crate::checkpoint::cut(cuts)?) {
                say!("note: {note}");
            }
            // (`line` is below `usize::MAX`: a record past it is no
            // checkpoint.)
            args.start_line = line + 1;
            consumed_bytes = input_bytes;
            began_at = checkpoint.start_line;
        }
    }
    // Opened once, before the signals are taken: a named pipe opened twice
    // loses what a writer sent between the two opens, and the second may
    // wait for a writer that never comes. (A signal while the open waits for
    // a writer ends the process, nothing read.)
    let reader: Box<dyn Read + Send> = if args.input == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?,
        )
    };
    // The size, for the progress bar: a regular file's only.
    let size = if args.input == Path::new("-") {
        None
    } else {
        std::fs::metadata(&args.input)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    };
    let stop = stop_on_signals()?;
    let lines_in = read_lines(reader)?;
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
    let resuming = args.start_line > 1;
    let mut output = Sink::open(args.output.as_deref(), resuming, "delivered messages")?;
    // Dead letters to standard output as the delivered messages are: one
    // sink, whose lines keep their input order.
    let mut dead_letters = match &args.dead_letter {
        Some(path) if !args.both_to_stdout() => {
            Some(Sink::open(Some(path), resuming, "dead letters")?)
        }
        _ => None,
    };
    // A checkpoint's outputs are cut back on a resume: regular files only
    // (not a device, a pipe, a terminal).
    if let Some(path) = &args.checkpoint {
        let sinks = [Some(&output), dead_letters.as_ref()];
        if let Some(sink) = sinks.into_iter().flatten().find(|s| s.id.is_none()) {
            anyhow::bail!(
                "--checkpoint {}: {} is not to a regular file, which a resumed run could cut \
                 back to the checkpoint's length",
                path.display(),
                sink.what
            );
        }
    }
    if !resuming {
        output.start_empty()?;
        if let Some(dead_letters) = &mut dead_letters {
            dead_letters.start_empty()?;
        }
    }
    if args.sync {
        // The outputs' names, if the run made the files, outlive a crash of
        // the machine as the checkpoint's do.
        for path in [args.output.as_deref(), args.dead_letter.as_deref()]
            .into_iter()
            .flatten()
        {
            crate::checkpoint::sync_directory_of(path)?;
        }
    }
    // What the checkpoint records, from the first: a run killed before its
    // first batch is out resumes from here (the file is written to before
    // anything is processed).
    let mut reached = match setup {
        Some(setup) => Some(Progress {
            setup,
            input_file: FileId::of(
                &std::fs::metadata(&args.input)
                    .with_context(|| format!("cannot open {}", args.input.display()))?,
            ),
            began_at,
            line: args.start_line - 1,
            input_bytes: consumed_bytes,
        }),
        None => None,
    };
    // The checkpoint written last.
    let mut last_checkpoint: Option<Checkpoint> = None;
    if let (Some(file), Some(reached)) = (&mut checkpoint_file, &reached) {
        let now = checkpoint_of(&args, reached, &output, &dead_letters, false);
        record(file, &now, &output, &dead_letters, args.sync)?;
        last_checkpoint = Some(now);
    }
    let mut summary = Summary::default();
    let (mut input, mut bad) = (0u64, 0u64);
    // The last line read; once the batch is committed, every line up to it
    // was processed and written (or reported bad, or blank).
    let mut consumed = args.start_line.saturating_sub(1);
    // As of the last commit: the last line, the messages and the bad lines.
    let mut committed = (consumed, 0u64, 0u64);
    // The input's last line seen (skipped ones included), and the bytes of
    // the lines up to it.
    let mut last_line = 0;
    let mut read_bytes = 0u64;
    let mut batch: Vec<Message> = Vec::with_capacity(BATCH);
    let mut lines: Vec<usize> = Vec::with_capacity(BATCH);
    // A line on stderr, above the progress bar if there is one; says whether
    // it was written.
    let above_the_bar = |text: &str| {
        let write = || {
            use std::io::Write as _;
            writeln!(io::stderr(), "{text}").is_ok()
        };
        match &progress {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    };
    // Traces that could not be written (standard error full): the run then
    // fails at its end, as the user asked for them.
    let traces_lost = std::cell::Cell::new(0u64);
    // Runs the batch and writes its results (not yet committed).
    // In order, each batch runs on this thread, which would only wait for
    // it: nothing is handed to an engine thread and back.
    let mut here = match args.in_order {
        true => Some(
            etl.on_this_thread()
                .context("cannot run the modules on the main thread")?,
        ),
        false => None,
    };
    let mut flush = |batch: &mut Vec<Message>,
                     lines: &mut Vec<usize>,
                     output: &mut Sink,
                     dead_letters: &mut Option<Sink>|
     -> anyhow::Result<Vec<Processed>> {
        if batch.is_empty() {
            // The input went quiet: instances idle past their time go.
            if let Some(here) = &mut here {
                here.tidy();
            }
            return Ok(Vec::new());
        }
        let options = ProcessOptions::default()
            .trace(true)
            // The summary counts skipped modules; only --trace shows why.
            .skip_reasons(args.trace)
            .in_order(args.in_order);
        let batch = std::mem::take(batch);
        let results = match &mut here {
            // A failure of the host itself (a bug, which the engine's
            // threads would answer with no answer) stops the run as a
            // stopped engine does: with the stop line, the files cut back.
            Some(here) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                here.process_batch(batch, options)
            }))
            .map_err(|panic| {
                let text = crate::panic_text(&*panic);
                anyhow::anyhow!("the engine failed (a rustmq-etl bug; please report it): {text}")
            })?,
            None => etl
                .process_batch_blocking(batch, options)
                .context("the engine stopped")?,
        };
        for (processed, &at) in results.iter().zip(lines.iter()) {
            if args.trace && !above_the_bar(&trace_line(at, processed)) {
                traces_lost.set(traces_lost.get() + 1);
            }
            match &processed.disposition {
                Disposition::Delivered(m) => output.line(&m.to_json_line()),
                Disposition::DeadLettered(m) => match dead_letters {
                    Some(out) => out.line(&m.to_json_line()),
                    None => output.line(&m.to_json_line()),
                },
                Disposition::Dropped => {}
            }
        }
        lines.clear();
        Ok(results)
    };
    let mut stopped_by = None;
    let mut failed: Option<String> = None;
    // A write that failed: the results since the last commit are not out.
    let mut write_failed: Option<anyhow::Error> = None;
    // When the oldest message of the batch arrived.
    let mut batch_since: Option<Instant> = None;
    loop {
        let signal = stop.load(Ordering::Relaxed);
        if signal != 0 {
            stopped_by = Some(signal);
        }
        // Messages wait at most IDLE for their batch to fill.
        let wait = batch_since.map_or(IDLE, |since: Instant| IDLE.saturating_sub(since.elapsed()));
        // Whether to end after this turn, and whether the input went quiet.
        let (mut end, mut quiet) = (stopped_by.is_some(), false);
        let received = if end {
            None
        } else {
            match lines_in.recv_timeout(wait) {
                Ok(Ok(line)) => Some(line),
                Ok(Err(e)) => {
                    failed = Some(e.to_string());
                    end = true;
                    None
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    quiet = true;
                    None
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    end = true;
                    None
                }
            }
        };
        if let Some((line_number, read, line)) = received {
            if let Some(bar) = &progress {
                bar.inc(read as u64);
            }
            read_bytes += read as u64;
            last_line = line_number;
            if line_number >= args.start_line {
                consumed = line_number;
                consumed_bytes = read_bytes;
                match line.and_then(|line| crate::input::parse_line(&line)) {
                    Ok(Some(message)) => {
                        input += 1;
                        batch.push(message);
                        lines.push(line_number);
                        batch_since.get_or_insert_with(Instant::now);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        bad += 1;
                        above_the_bar(&format!("{}:{line_number}: {e}", args.input.display()));
                    }
                }
            }
        }
        let due = batch.len() == BATCH || batch_since.is_some_and(|since| since.elapsed() >= IDLE);
        if end || quiet || due {
            // What was read is answered and out; only then is it counted.
            let written =
                flush(&mut batch, &mut lines, &mut output, &mut dead_letters).and_then(|results| {
                    commit([Some(&mut output), dead_letters.as_mut()])?;
                    Ok(results)
                });
            match written {
                Ok(results) => {
                    // Recorded once the batch is out: a run killed before
                    // this resumes from the checkpoint before, and cuts
                    // the batch off.
                    let recorded = match (&mut checkpoint_file, &mut reached) {
                        (Some(file), Some(reached)) => {
                            (reached.line, reached.input_bytes) = (consumed, consumed_bytes);
                            let now = checkpoint_of(&args, reached, &output, &dead_letters, false);
                            // (A quiet input's empty batches change nothing.)
                            if last_checkpoint.as_ref() == Some(&now) {
                                Ok(())
                            } else {
                                record(file, &now, &output, &dead_letters, args.sync)
                                    .map(|()| last_checkpoint = Some(now))
                            }
                        }
                        _ => Ok(()),
                    };
                    match recorded {
                        Ok(()) => {
                            results.iter().for_each(|processed| summary.add(processed));
                            committed = (consumed, input, bad);
                        }
                        Err(e) => {
                            // The batch is out but not recorded (a flush
                            // or the record's write failed): it is cut off
                            // as a batch whose write failed is, and neither
                            // counted nor said done.
                            if let Some(last) = &last_checkpoint {
                                output.committed = Some(last.output.bytes);
                                if let (Some(sink), Some(recorded)) =
                                    (&mut dead_letters, &last.dead_letter)
                                {
                                    sink.committed = Some(recorded.bytes);
                                }
                            }
                            write_failed = Some(e);
                            end = true;
                        }
                    }
                }
                Err(e) => {
                    write_failed = Some(e);
                    end = true;
                }
            }
            batch_since = None;
        }
        if end {
            break;
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let (consumed, input, bad) = committed;
    let finished = write_failed.is_none() && failed.is_none() && stopped_by.is_none();
    if let (Some(file), Some(reached), true) = (&mut checkpoint_file, &reached, finished) {
        // (`reached` is as of the last commit, which is the input's end.)
        let now = checkpoint_of(&args, reached, &output, &dead_letters, true);
        if let Err(e) = record(file, &now, &output, &dead_letters, args.sync) {
            // Every result is out: a rerun would find nothing left to do
            // all the same, and say less.
            say!("warning: {e:#}");
        }
    }
    // `>` again would empty what this run wrote.
    let append_stdout =
        if output.stdout_to_a_file() || dead_letters.as_ref().is_some_and(Sink::stdout_to_a_file) {
            "; standard output is a file: append to it with >>, not >"
        } else {
            ""
        };
    // After a failed write, the files are cut back to their last commit.
    let cut = write_failed.as_ref().map(|_| {
        [Some(output), dead_letters]
            .into_iter()
            .flatten()
            .filter_map(Sink::abandon)
            .collect::<Vec<_>>()
    });
    let resume = |why: &str| {
        let input = args.input.display();
        let again = if args.input == Path::new("-") {
            format!(
                "lines read ahead after it were not processed: to go on, send the input again from \
                 its start with --start-line {0} (or from line {0} without it){append_stdout}",
                consumed + 1
            )
        } else if let Some(path) = &args.checkpoint {
            format!(
                "to go on, run the same command again (--checkpoint {} says where)",
                path.display()
            )
        } else {
            format!(
                "to go on, run again with --start-line {} (--output and --dead-letter files are \
                 then appended to{append_stdout})",
                consumed + 1
            )
        };
        if consumed == 0 {
            say!("{why}: no line of {input} was processed and its result written; {again}");
        } else {
            say!(
                "{why}: every line up to line {consumed} of {input} was processed and its result \
                 written; {again}"
            );
        }
    };
    // Traces asked for and not written: said on every way out.
    let lost = traces_lost.get();
    let say_lost = || {
        if lost > 0 {
            say!(
                "error: {lost} trace{} could not be written to standard error (the results were)",
                crate::plural(lost as usize)
            );
        }
    };
    // Standard error may be the file that is full (`> f 2>&1`): the stop
    // line goes first, into the room the cut made, and the table after it.
    if let Some(e) = write_failed {
        resume(&format!(
            "stopped: {e:#} (the results after the last line written are not counted below)"
        ));
        for problem in cut.into_iter().flatten() {
            say!("warning: {problem}");
        }
        print_summary(&mut summary, input, bad);
        say_lost();
        return Ok(ExitCode::FAILURE);
    }
    print_summary(&mut summary, input, bad);
    if let Some(problem) = failed {
        resume(&format!(
            "stopped: reading {}: {problem}",
            args.input.display()
        ));
        say_lost();
        return Ok(ExitCode::FAILURE);
    }
    if let Some(signal) = stopped_by {
        let name = if signal == SIGINT as usize {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        resume(&format!("stopped by {name}"));
        say_lost();
        return Ok(ExitCode::from(128 + signal as u8));
    }
    if args.start_line > last_line + 1 {
        say!(
            "note: {} has {last_line} line{}, all before --start-line {}: nothing was processed",
            args.input.display(),
            crate::plural(last_line),
            args.start_line
        );
    }
    say_lost();
    // Dead letters are a result; only bad input, or traces asked for and
    // lost, fail the run.
    Ok(if bad == 0 && lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How far a run with `--checkpoint` got: what [`checkpoint_of`] records
/// beside its outputs' lengths.
struct Progress {
    /// What the run runs with.
    setup: Setup,
    input_file: FileId,
    /// The line the run began at (its first run's, resumed).
    began_at: usize,
    /// Every line up to this one processed and written, at the last commit.
    line: usize,
    /// The bytes of the input's lines up to `line`.
    input_bytes: u64,
}

/// Writes `checkpoint` to `file`; with `sync` (`--sync`), only once the
/// bytes and lengths of the outputs it records are on the disk: after a crash
/// of the machine, the record read back never counts more than the files
/// hold.
fn record(
    file: &mut CheckpointFile,
    checkpoint: &Checkpoint,
    output: &Sink,
    dead_letters: &Option<Sink>,
    sync: bool,
) -> anyhow::Result<()> {
    if sync {
        for sink in std::iter::once(output).chain(dead_letters) {
            sink.out
                .sync_data()
                .with_context(|| format!("{}: flushing it to the disk", sink.what))?;
        }
    }
    file.write(checkpoint)
}

/// The checkpoint of a run at `progress`, its outputs as long as they were
/// at its last commit.
fn checkpoint_of(
    args: &Args,
    progress: &Progress,
    output: &Sink,
    dead_letters: &Option<Sink>,
    finished: bool,
) -> Checkpoint {
    // (Both are regular files, with an identity and a length: the run
    // refuses a checkpoint otherwise.)
    let recorded = |sink: &Sink| crate::checkpoint::Output {
        bytes: sink.committed.unwrap_or(0),
        file: sink.id.expect("a checkpoint's outputs are regular files"),
    };
    Checkpoint {
        input: args.input.display().to_string(),
        input_file: progress.input_file,
        input_bytes: progress.input_bytes,
        start_line: progress.began_at,
        line: progress.line,
        output: recorded(output),
        dead_letter: dead_letters.as_ref().map(recorded),
        finished,
        setup: Some(progress.setup.clone()),
        sync: args.sync,
    }
}

/// The summary on standard error; if it cannot be written there, it is lost
/// (nowhere else to say so) and the exit code still tells.
fn print_summary(summary: &mut Summary, input: u64, bad: u64) {
    let _ = summary.print(&mut io::stderr().lock(), input, bad);
}

/// How long input may be silent before the messages read so far are run.
const IDLE: Duration = Duration::from_millis(100);

/// A flag set to the number of SIGTERM or SIGINT when one arrives: `run`
/// finishes what it read, writes it, and says where to resume.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicUsize>> {
    let stop = Arc::new(AtomicUsize::new(0));
    // A second signal, while the first is being honoured (a slow batch, an
    // output nobody reads), exits at once.
    crate::exit_on_a_second_signal()?;
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_usize(signal, stop.clone(), signal as usize)
            .context("cannot install the signal handlers")?;
    }
    Ok(stop)
}

/// What the input thread reads: a line of [`crate::input::numbered_lines`]
/// (its number, the bytes read, the line or why it is not read), or why the
/// input cannot be read any further.
type Input = io::Result<(usize, usize, Result<Vec<u8>, String>)>;

/// The input's lines, read on a thread of their own (so that a signal is
/// noticed while standing input is silent). A line longer than
/// [`crate::input::MAX_LINE_BYTES`] is passed on as bad, and reading goes on.
fn read_lines(reader: Box<dyn Read + Send>) -> anyhow::Result<mpsc::Receiver<Input>> {
    let (lines, receiver) = mpsc::sync_channel(4 * BATCH);
    std::thread::Builder::new()
        .name("rustmq-etl-input".into())
        .spawn(move || {
            for line in crate::input::numbered_lines(BufReader::new(reader)) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the input thread")?;
    Ok(receiver)
}
