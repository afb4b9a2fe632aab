//! `run --checkpoint FILE`: after each batch it commits, a run records how
//! far it got and how long its output files were then, so that the same
//! command resumes exactly where it left off however the run ended —
//! SIGKILL, the OOM killer, a crash — cutting off what it wrote past the
//! last checkpoint.
//!
//! The file holds two slots of one page each, written in turn in place (one
//! `pwrite` a batch, no file made or renamed): each holds a record — its
//! sequence number, the checkpoint, and a checksum of both — padded with
//! spaces. A write cut short by the process's end can only damage the slot
//! being written, which its checksum then gives away; the other slot holds
//! the checkpoint before. A reader takes the valid record with the highest
//! number.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustmq_etl_config::Config;
use rustmq_etl_orchestrator::Options;
use sha2::Digest as _;

/// The bytes of one slot: a page, written in one call.
const SLOT: usize = 4096;

/// What a checkpoint records (one JSON object in a slot's record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    /// The input, as the command named it (for messages).
    pub input: String,
    /// The input file itself: another file under its name is not resumed.
    pub input_file: FileId,
    /// The bytes of the input's lines up to `line`.
    pub input_bytes: u64,
    /// The line the run began at (`--start-line`, 1 without it).
    pub start_line: usize,
    /// Every line up to this one was processed and its result written.
    pub line: usize,
    /// `--output` as that line's batch was committed.
    pub output: Output,
    /// `--dead-letter`, if the run has one.
    pub dead_letter: Option<Output>,
    /// The run read its whole input and wrote every result.
    pub finished: bool,
    /// What it ran with (none in a checkpoint of a version before it was
    /// recorded).
    #[serde(default)]
    pub setup: Option<Setup>,
    /// The run flushes its outputs and records to the disk (`--sync`); a
    /// resume goes on doing so. (Left out when not, so that a checkpoint
    /// without it reads as before.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
}

/// What a run's results depend on besides its input, as digests: the
/// configuration's pipelines ([`Config::canonical_json`]), the module files
/// the engine read for them, and the options that change results. A
/// checkpoint resumes only with the same, unless told to go on with changes:
/// the lines done keep the results of what they ran with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Setup {
    config: String,
    modules: String,
    options: String,
    /// The version of rustmq-etl that ran (a note if another resumes).
    #[serde(default)]
    version: String,
    /// Each module's own digest (its reads'), to name the modules that
    /// changed; left out when they would not fit a record's page beside the
    /// rest (`modules` decides either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    each_module: Option<std::collections::BTreeMap<String, String>>,
}

/// The most a setup's per-module digests may take in a record (of a page).
const EACH_MODULE_BYTES: usize = 2048;

impl Setup {
    /// The setup of a run of `config`, its engine having read `modules`
    /// ([`crate::ModulesRead`]: the bytes that run, not a second reading
    /// of the files), with `options`. A module file that could not be read
    /// counts as such (its calls fail `unavailable`): one there later is a
    /// change.
    pub fn of(
        config: &Config,
        modules: &std::collections::BTreeMap<String, Vec<Option<[u8; 32]>>>,
        options: &Options,
    ) -> Setup {
        let mut module_parts: Vec<Vec<u8>> = Vec::new();
        let mut each_module = std::collections::BTreeMap::new();
        for (id, reads) in modules {
            // (Read in whatever order the engine loaded the occurrences.)
            let mut reads = reads.clone();
            reads.sort_unstable();
            let reads: Vec<Vec<u8>> = reads
                .into_iter()
                .map(|read| match read {
                    Some(sha256) => [&[1u8][..], &sha256].concat(),
                    None => vec![0],
                })
                .collect();
            each_module.insert(id.clone(), digest(reads.iter().map(Vec::as_slice)));
            module_parts.push(id.as_bytes().to_vec());
            module_parts.extend(reads);
        }
        let each_module = (serde_json::to_string(&each_module).map_or(usize::MAX, |j| j.len())
            <= EACH_MODULE_BYTES)
            .then_some(each_module);
        let options = format!(
            "dead_letter_topic={:?} breaker_failures={} breaker_cool_down_ms={}",
            options.dead_letter_topic,
            options.breaker.failures,
            options.breaker.cool_down.as_millis()
        );
        Setup {
            config: digest([config.canonical_json().as_bytes()]),
            modules: digest(module_parts.iter().map(Vec::as_slice)),
            options: digest([options.as_bytes()]),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            each_module,
        }
    }

    /// The modules whose files differ between `self` and `other`, if both
    /// name them.
    fn changed_modules<'a>(&'a self, other: &'a Setup) -> Option<Vec<&'a str>> {
        let (mine, theirs) = (self.each_module.as_ref()?, other.each_module.as_ref()?);
        let ids: std::collections::BTreeSet<&str> = mine
            .keys()
            .chain(theirs.keys())
            .map(String::as_str)
            .collect();
        Some(
            ids.into_iter()
                .filter(|id| mine.get(*id) != theirs.get(*id))
                .collect(),
        )
    }

    /// What differs from `other`, named as the command line gives it (and
    /// the modules by id where both name them): empty if nothing.
    fn changes(&self, other: &Setup) -> Vec<String> {
        let modules = match self.changed_modules(other) {
            Some(ids) if !ids.is_empty() => format!(
                "the module files (--modules: {})",
                ids.iter()
                    .map(|id| format!("{id}.wasm"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "the module files (--modules)".to_owned(),
        };
        [
            (
                self.config != other.config,
                "the pipelines (--config)".to_owned(),
            ),
            (self.modules != other.modules, modules),
            (
                self.options != other.options,
                "--dead-letter-topic, --breaker-failures or --breaker-cool-down-ms".to_owned(),
            ),
        ]
        .into_iter()
        .filter_map(|(changed, what)| changed.then_some(what))
        .collect()
    }
}

/// The first 16 hex digits of the SHA-256 of `parts`, each after its length.
fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex8(&hasher.finalize())
}

/// The first 8 bytes of `digest` as 16 hex digits.
fn hex8(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }

    /// Whether this is the file `recorded` identified: `Err` if not; a note
    /// if only its device number changed, as a reboot may number a disk anew
    /// (device-mapper volumes, btrfs): the same inode is taken as the same
    /// file, so that a run resumes after a crash of the machine.
    fn is(&self, recorded: &FileId, shown: &str) -> Result<Option<String>, ()> {
        match (self.ino == recorded.ino, self.dev == recorded.dev) {
            (true, true) => Ok(None),
            (true, false) => Ok(Some(format!(
                "{shown} is on device {:#x}, not {:#x} as recorded (a reboot may number a disk \
                 anew): taken as the same file, by its inode",
                self.dev, recorded.dev
            ))),
            (false, _) => Err(()),
        }
    }
}

/// An output file at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Output {
    /// Its length as the checkpoint's batch was committed.
    pub bytes: u64,
    pub file: FileId,
}

/// What a run does with the checkpoint it found.
#[derive(Debug)]
pub(crate) enum Resume {
    /// Nothing: the run finished, and its input has not grown since.
    Finished(String),
    /// Go on after `line` (the input's first `input_bytes` bytes), once
    /// `cuts` are made ([`cut`]); the notes say that the input grew.
    After {
        line: usize,
        input_bytes: u64,
        notes: Vec<String>,
        cuts: Vec<Cut>,
    },
}

/// An output to cut back to its length at the checkpoint: what is past it
/// was written after (a batch whose commit the run did not finish), and is
/// written again.
#[derive(Debug)]
pub(crate) struct Cut {
    shown: String,
    file: File,
    length: u64,
    to: u64,
}

/// Makes `cuts`; the notes say how much each took off.
pub(crate) fn cut(cuts: Vec<Cut>) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for Cut {
        shown,
        file,
        length,
        to,
    } in cuts
    {
        if length > to {
            file.set_len(to)
                .with_context(|| format!("{shown}: cutting it back to {to} bytes"))?;
            notes.push(format!(
                "{shown}: the {} bytes written after the last checkpoint were cut off (they \
                 are written again)",
                length - to
            ));
        }
    }
    Ok(notes)
}

/// One slot's record.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    seq: u64,
    checkpoint: Checkpoint,
    /// [`sum`] of the two above.
    sum: String,
}

/// The checksum of a record's number and checkpoint: the first 16 hex digits
/// of the SHA-256 of both, as written.
fn sum(seq: u64, checkpoint: &Checkpoint) -> String {
    let text = serde_json::to_string(checkpoint).expect("a checkpoint serialises");
    hex8(&sha2::Sha256::digest(format!("{seq}:{text}").as_bytes()))
}

/// Flushes to the disk the directory that holds the file at `path` (a
/// symbolic link's target's), so that the name of a file made in it outlives
/// a crash of the machine.
pub(crate) fn sync_directory_of(path: &Path) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("flushing the directory {} to the disk", directory.display()))
}

/// A run's checkpoint file, open for its records.
pub(crate) struct CheckpointFile {
    file: File,
    path: PathBuf,
    /// The last record's number.
    seq: u64,
    /// Each record is flushed to the disk before the run goes on (`--sync`).
    sync: bool,
}

impl CheckpointFile {
    /// The checkpoint at `path` (none if there is no such file, or it is
    /// empty: a run killed before its first record), and the file, opened
    /// for the records to come (made if it is not there).
    pub fn open(path: &Path) -> anyhow::Result<(CheckpointFile, Option<Checkpoint>)> {
        let shown = path.display();
        let not_one = |why: String| {
            anyhow::anyhow!(
                "--checkpoint {shown} is not a checkpoint of `rustmq-etl run` ({why}): name \
                 another file, or remove it to start the run afresh"
            )
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open --checkpoint {shown}"))?;
        // One run at a time: two would cut back and append to each other's
        // outputs.
        if let Err(e) = file.try_lock() {
            anyhow::bail!("--checkpoint {shown}: another run holds it ({e}); wait for it to end");
        }
        let length = file
            .metadata()
            .with_context(|| format!("--checkpoint {shown}: reading its length"))?
            .len();
        if length > 2 * SLOT as u64 {
            return Err(not_one(format!("{length} bytes, more than a checkpoint's")));
        }
        let mut bytes = vec![0u8; length as usize];
        file.read_exact_at(&mut bytes, 0)
            .with_context(|| format!("cannot read --checkpoint {shown}"))?;
        // Each slot: a record, or nothing yet (zeros, or past the file's end).
        let mut found: Option<Record> = None;
        let mut damaged = 0;
        for slot in bytes.chunks(SLOT) {
            if slot.iter().all(|b| *b == 0) {
                continue;
            }
            match serde_json::from_slice::<Record>(slot.trim_ascii_end())
                .ok()
                .filter(|r| r.sum == sum(r.seq, &r.checkpoint))
                // (A line past any count of lines would resume nowhere.)
                .filter(|r| r.checkpoint.line < usize::MAX)
            {
                Some(record) if found.as_ref().is_none_or(|f| record.seq > f.seq) => {
                    found = Some(record)
                }
                Some(_) => {}
                None => damaged += 1,
            }
        }
        // The first record (in the second slot) cut short, the first slot
        // never written: the machine stopped as a run began, before it read
        // a line. There is nothing to resume, as with an empty file.
        let first_cut_short = bytes.len() > SLOT
            && bytes[..SLOT].iter().all(|b| *b == 0)
            && (bytes[SLOT] == 0 || bytes[SLOT..].starts_with(br#"{"seq":1,"#));
        if found.is_none() && damaged > 0 && !first_cut_short {
            return Err(not_one("no whole record in it".to_owned()));
        }
        let seq = found.as_ref().map_or(0, |r| r.seq);
        let checkpoint_file = CheckpointFile {
            file,
            path: path.to_owned(),
            seq,
            sync: false,
        };
        Ok((checkpoint_file, found.map(|r| r.checkpoint)))
    }

    /// From now on, flushes each record to the disk (`fdatasync`) before
    /// [`CheckpointFile::write`] returns (`--sync`); flushes now the
    /// directory that holds the file, so that its name outlives a crash of
    /// the machine if the run made it.
    pub fn sync_each_record(&mut self) -> anyhow::Result<()> {
        sync_directory_of(&self.path)?;
        self.sync = true;
        Ok(())
    }

    /// Records `checkpoint` in the slot after the last one's.
    pub fn write(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let seq = self.seq + 1;
        let mut record = Record {
            seq,
            sum: sum(seq, checkpoint),
            checkpoint: checkpoint.clone(),
        };
        let mut text = serde_json::to_string(&record).expect("a record serialises");
        if let (true, Some(setup)) = (text.len() >= SLOT, &mut record.checkpoint.setup) {
            // Too long a name of the input beside the modules' digests: the
            // modules go unnamed in a refusal, as for many modules.
            setup.each_module = None;
            record.sum = sum(seq, &record.checkpoint);
            text = serde_json::to_string(&record).expect("a record serialises");
        }
        if text.len() >= SLOT {
            anyhow::bail!(
                "writing the checkpoint to {}: its record is {} bytes, more than the {} a \
                 record may take (the input's name is too long)",
                self.path.display(),
                text.len(),
                SLOT - 1
            );
        }
        text.extend(std::iter::repeat_n(' ', SLOT - 1 - text.len()));
        text.push('\n');
        self.file
            .write_all_at(text.as_bytes(), (seq % 2) * SLOT as u64)
            .with_context(|| format!("writing the checkpoint to {}", self.path.display()))?;
        if self.sync {
            self.file.sync_data().with_context(|| {
                format!(
                    "flushing the checkpoint to the disk ({})",
                    self.path.display()
                )
            })?;
        }
        self.seq = seq;
        Ok(())
    }
}

impl Checkpoint {
    /// Whether a run with `setup` may resume this checkpoint, found at
    /// `path`: with the same setup, or with another if `with_changes` (then
    /// a note says so). Checked before [`Checkpoint::resume`] cuts anything.
    pub fn check_setup(
        &self,
        path: &Path,
        setup: &Setup,
        with_changes: bool,
    ) -> anyhow::Result<Option<String>> {
        let here = path.display();
        let Some(recorded) = &self.setup else {
            return Ok(Some(format!(
                "--checkpoint {here} does not record what its run ran with (an earlier \
                 version wrote it): the pipelines, modules and options are not compared"
            )));
        };
        let changes = recorded.changes(setup);
        if changes.is_empty() {
            // The same setup on another version: said, not refused (a
            // version is there to change how things run).
            return Ok((recorded.version != setup.version).then(|| {
                format!(
                    "--checkpoint {here} was written by rustmq-etl {}; this is {}: the lines \
                     after line {} run on this one",
                    if recorded.version.is_empty() {
                        "before 0.1"
                    } else {
                        &recorded.version
                    },
                    setup.version,
                    self.line
                )
            }));
        }
        let changes = changes.join(", ");
        if !with_changes {
            anyhow::bail!(
                "changed since the run of --checkpoint {here}: {changes}. Its lines up to {} \
                 have the results of what it ran with; run with that again to resume, remove \
                 the checkpoint to run every line afresh, or pass --resume-with-changes to go \
                 on with the new",
                self.line
            );
        }
        Ok(Some(format!(
            "changed since the run of --checkpoint {here}: {changes}; going on with the new \
             (--resume-with-changes): the lines up to {} keep the results of the old",
            self.line
        )))
    }

    /// What a run with these arguments does with this checkpoint, found at
    /// `path`: the same input file (not shorter than it had read), the same
    /// output files, begun at the same `--start-line` (or given none) — a
    /// finished run's too, before it answers that there is nothing to do.
    /// Cuts nothing: a resume cuts each output back to its length at the
    /// checkpoint ([`cut`]) once every check has passed.
    pub fn resume(
        &self,
        path: &Path,
        input: &Path,
        start_line: usize,
        output: &Path,
        dead_letter: Option<&Path>,
    ) -> anyhow::Result<Resume> {
        let here = path.display();
        if start_line != 1 && start_line != self.start_line {
            anyhow::bail!(
                "--start-line {start_line} is not where the run of --checkpoint {here} began \
                 (line {}): leave it out, and the checkpoint resumes after line {}",
                self.start_line,
                self.line
            );
        }
        let shown = input.display();
        let metadata = std::fs::metadata(input)
            .with_context(|| format!("--input {shown}: cannot read what it is"))?;
        let mut notes = Vec::new();
        match FileId::of(&metadata).is(&self.input_file, &format!("--input {shown}")) {
            Ok(note) => notes.extend(note),
            Err(()) => anyhow::bail!(
                "--input {shown} is not the file the run of --checkpoint {here} read ({}): it \
                 was replaced since, or another file is named; run on that file, or remove the \
                 checkpoint to start afresh",
                self.input
            ),
        }
        let length = metadata.len();
        if length < self.input_bytes {
            anyhow::bail!(
                "--input {shown} is {length} bytes, fewer than the {} the run of --checkpoint \
                 {here} had read: it was changed since, and the run cannot resume exactly",
                self.input_bytes
            );
        }
        // Where the resume goes on: after the line recorded, unless that
        // line had no line end then and has grown since.
        let (mut line, mut input_bytes) = (self.line, self.input_bytes);
        if length > self.input_bytes {
            let grown = grown_last_line(input, self.input_bytes)
                .with_context(|| format!("--input {shown}: cannot read it"))?;
            if let Some(grown) = grown {
                let processed = matches!(crate::input::parse_line(&grown.then), Ok(Some(_)));
                if processed {
                    anyhow::bail!(
                        "line {} of --input {shown} had no line end when the run of \
                         --checkpoint {here} read it, and it has grown since: the result of the \
                         line as it was then is in the outputs, and the run cannot resume \
                         exactly; remove the checkpoint to run every line afresh",
                        self.line
                    );
                }
                notes.push(format!(
                    "line {} of {shown} had no line end when the run of --checkpoint {here} \
                     read it, and has grown since: it was no message then (nothing was written \
                     for it), and runs now as it is",
                    self.line
                ));
                (line, input_bytes) = (self.line.saturating_sub(1), grown.start);
            }
        }
        let files = match (dead_letter, self.dead_letter) {
            (None, None) => vec![("--output", output, self.output)],
            (Some(dead_letter), Some(recorded)) => vec![
                ("--output", output, self.output),
                ("--dead-letter", dead_letter, recorded),
            ],
            (Some(_), None) => anyhow::bail!(
                "the run of --checkpoint {here} had no --dead-letter file: run the same command"
            ),
            (None, Some(_)) => anyhow::bail!(
                "the run of --checkpoint {here} had a --dead-letter file: run the same command"
            ),
        };
        let mut cuts = Vec::new();
        for (flag, file, recorded) in files {
            let shown = file.display();
            let not_it = || {
                format!(
                    "{flag} {shown} is not the file the run of --checkpoint {here} wrote: give \
                     that file, or remove the checkpoint to start afresh"
                )
            };
            let open = std::fs::File::options()
                .write(true)
                .open(file)
                .with_context(not_it)?;
            let metadata = open.metadata().with_context(not_it)?;
            match FileId::of(&metadata).is(&recorded.file, &format!("{flag} {shown}")) {
                Ok(note) => notes.extend(note),
                Err(()) => anyhow::bail!(not_it()),
            }
            if metadata.len() < recorded.bytes {
                anyhow::bail!(
                    "{flag} {shown} is {} bytes, fewer than the {} that --checkpoint {here} \
                     recorded: it was changed since, and the run cannot resume exactly (remove \
                     the checkpoint to start afresh)",
                    metadata.len(),
                    recorded.bytes
                );
            }
            cuts.push(Cut {
                shown: shown.to_string(),
                file: open,
                length: metadata.len(),
                to: recorded.bytes,
            });
        }
        // (After the outputs' checks: a finished run given other files, or
        // another --dead-letter, is refused rather than answered "nothing to
        // do" while nothing is written where it was asked to be.)
        if self.finished {
            if length == self.input_bytes {
                return Ok(Resume::Finished(format!(
                    "--checkpoint {here} says this run finished: every line of {shown} (up to \
                     line {}) was processed and its result written; nothing to do, whatever \
                     the configuration, modules and options now (remove the checkpoint to run \
                     again)",
                    self.line
                )));
            }
            notes.push(format!(
                "{shown} grew since the run of --checkpoint {here} finished: going on after \
                 line {line}"
            ));
        }
        Ok(Resume::After {
            line,
            input_bytes,
            notes,
            cuts,
        })
    }
}

/// The input's last line as a run read it, when it had no line end then
/// and the input has since grown it.
struct GrownLine {
    /// Where the line starts in the input.
    start: u64,
    /// The line as the run read it (up to the end it had then).
    then: Vec<u8>,
}

/// The line of `input` that ended at byte `at` without a line end when a
/// run read it, if the input now goes on past `at` with more of that line
/// than white space (which a line is read without: a `\r\n` or spaces
/// added before the line end leave it as it was). `None` when the run read
/// whole lines, `at` is 0, or the line was longer than a line may be (it
/// was refused then, and is refused again whatever was added: the resume
/// goes on after it).
fn grown_last_line(input: &Path, at: u64) -> std::io::Result<Option<GrownLine>> {
    use std::io::{BufRead as _, Read as _, Seek as _};
    let limit = crate::input::MAX_LINE_BYTES;
    if at == 0 {
        return Ok(None);
    }
    let mut file = File::open(input)?;
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, at - 1)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    // What was added to the line: up to its line end, or the input's end.
    file.seek(std::io::SeekFrom::Start(at))?;
    let mut added = Vec::new();
    std::io::BufReader::new(&file)
        .take(limit + 1)
        .read_until(b'\n', &mut added)?;
    if added.last() == Some(&b'\n') {
        added.pop();
    }
    if String::from_utf8_lossy(&added).trim().is_empty() {
        return Ok(None);
    }
    // Back to the line's start.
    let from = at.saturating_sub(limit + 1);
    let mut before = vec![0u8; (at - from) as usize];
    file.read_exact_at(&mut before, from)?;
    let start = match before.iter().rposition(|&b| b == b'\n') {
        Some(end) => from + end as u64 + 1,
        None if from == 0 => 0,
        // Longer than a line may be.
        None => return Ok(None),
    };
    if at - start > limit {
        return Ok(None);
    }
    let then = before.split_off((start - from) as usize);
    Ok(Some(GrownLine { start, then }))
}

#[cfg(test)]
mod tests {
    use rustmq_etl_orchestrator::BreakerSettings;

    use super::*;

    fn id(path: &Path) -> FileId {
        FileId::of(&std::fs::metadata(path).unwrap())
    }

    /// A checkpoint at `line` of `input`, `output` recorded at 4 bytes.
    fn at(line: usize, input: &Path, output: &Path) -> Checkpoint {
        Checkpoint {
            input: input.display().to_string(),
            input_file: id(input),
            input_bytes: 10,
            start_line: 1,
            line,
            output: Output {
                bytes: 4,
                file: id(output),
            },
            dead_letter: None,
            finished: false,
            setup: None,
            sync: false,
        }
    }

    #[test]
    fn the_last_whole_record_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("cp"), dir.path().join("other"));
        std::fs::write(&other, "").unwrap();
        let at = |line| at(line, &other, &other);
        let (mut file, none) = CheckpointFile::open(&path).unwrap();
        assert_eq!(none, None);
        // One run at a time.
        let error = CheckpointFile::open(&path).err().unwrap().to_string();
        assert!(error.contains("another run holds it"), "{error}");
        for line in 1..=5 {
            file.write(&at(line)).unwrap();
        }
        drop(file);
        let (mut file, read) = CheckpointFile::open(&path).unwrap();
        assert_eq!(read, Some(at(5)));
        // Records go on from the last one's number.
        file.write(&at(6)).unwrap();
        drop(file);
        assert_eq!(CheckpointFile::open(&path).unwrap().1, Some(at(6)));

        // A record damaged in its slot (a write cut short, here one digit
        // of its line) gives away the one before; both damaged, nothing.
        let bytes = std::fs::read(&path).unwrap();
        let newest = bytes
            .chunks(SLOT)
            .position(|s| s.starts_with(b"{\"seq\":6,"))
            .unwrap();
        let mut torn = bytes.clone();
        let text = std::str::from_utf8(&torn[newest * SLOT..]).unwrap();
        let digit = newest * SLOT + text.find("\"line\":6").unwrap() + 7;
        torn[digit] = b'9';
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(CheckpointFile::open(&path).unwrap().1, Some(at(5)));
        torn[(1 - newest) * SLOT] = b'x';
        std::fs::write(&path, &torn).unwrap();
        let error = CheckpointFile::open(&path).err().unwrap().to_string();
        assert!(error.contains("no whole record"), "{error}");

        // The first record cut short, the first slot never written (the
        // machine stopped as the run began): no checkpoint yet, as for an
        // empty file; cut at its first sector, whose zeros are all that
        // reached the disk, likewise.
        std::fs::remove_file(&path).unwrap();
        let (mut file, _) = CheckpointFile::open(&path).unwrap();
        file.write(&at(1)).unwrap();
        drop(file);
        let first = std::fs::read(&path).unwrap();
        assert!(first[..SLOT].iter().all(|b| *b == 0));
        assert_eq!(CheckpointFile::open(&path).unwrap().1, Some(at(1)));
        for cut in [SLOT + 100, SLOT + 600] {
            let mut torn = first[..cut].to_vec();
            if cut > SLOT + 512 {
                torn[SLOT..SLOT + 512].fill(0);
            }
            std::fs::write(&path, &torn).unwrap();
            assert_eq!(CheckpointFile::open(&path).unwrap().1, None, "{cut}");
        }

        // Another file altogether is refused, and left as it was.
        std::fs::write(&path, "precious notes\n").unwrap();
        let error = CheckpointFile::open(&path).err().unwrap().to_string();
        assert!(error.contains("is not a checkpoint"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious notes\n");
    }

    proptest::proptest! {
        /// Whatever a file named as a checkpoint holds, reading it answers
        /// (a checkpoint, none, or an error) without panicking, and leaves
        /// it as it was; a record read back is one whose checksum holds.
        #[test]
        fn any_file_is_read_without_harm(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9000),
            seq in 0u64..3,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cp");
            // Sometimes a real record amid the noise, in a slot of its own.
            let mut bytes = bytes;
            if seq > 0 && bytes.len() > SLOT {
                let checkpoint = at(9, dir.path(), dir.path());
                let record = Record { seq, sum: sum(seq, &checkpoint), checkpoint };
                let text = serde_json::to_vec(&record).unwrap();
                bytes[..SLOT].fill(b' ');
                bytes[..text.len()].copy_from_slice(&text);
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Ok((_, Some(found))) = CheckpointFile::open(&path) {
                proptest::prop_assert_eq!(found.line, 9);
            }
            proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn a_checkpoint_resumes_its_own_files_only_and_cuts_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let path = dir.path().join("cp");
        let input = file("in", "0123456789\nmore\n");
        let output = file("out", "one\ntwo, cut sh");
        let checkpoint = at(7, &input, &output);
        let resume = |input: &Path, start: usize, output: &Path, dead: Option<&Path>| {
            checkpoint.resume(&path, input, start, output, dead)
        };
        let refused = |input: &Path, start: usize, output: &Path, dead: Option<&Path>| {
            resume(input, start, output, dead).unwrap_err().to_string()
        };
        // Refused, nothing cut: another input or output file (even under
        // the same contents), another --start-line, a dead-letter file the
        // run had not, an output shorter than recorded.
        let copy = file("copy", "0123456789\nmore\n");
        assert!(refused(&copy, 1, &output, None).contains("is not the file the run"));
        let other = file("other", "one\ntwo, cut sh");
        assert!(refused(&input, 1, &other, None).contains("--output"));
        assert!(refused(&input, 3, &output, None).contains("--start-line 3 is not where"));
        assert!(refused(&input, 1, &output, Some(&other)).contains("had no --dead-letter"));
        let short = file("short", "on");
        let short_checkpoint = at(7, &input, &short);
        let error = short_checkpoint
            .resume(&path, &input, 1, &short, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("fewer than the 4"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "one\ntwo, cut sh"
        );

        // Its own files: the output cut back to its length then.
        match resume(&input, 1, &output, None).unwrap() {
            Resume::After {
                line: 7,
                input_bytes: 10,
                notes,
                cuts,
            } => {
                assert!(notes.is_empty(), "{notes:?}");
                // Nothing cut until told.
                assert_eq!(
                    std::fs::read_to_string(&output).unwrap(),
                    "one\ntwo, cut sh"
                );
                let notes = cut(cuts).unwrap();
                assert!(notes[0].contains("the 11 bytes written after"), "{notes:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "one\n");

        // Finished: nothing to do, unless the input grew since.
        let finished = Checkpoint {
            finished: true,
            input_bytes: 16,
            ..checkpoint.clone()
        };
        let resumed = finished.resume(&path, &input, 1, &output, None).unwrap();
        assert!(matches!(resumed, Resume::Finished(_)), "{resumed:?}");
        std::fs::write(&input, "0123456789\nmore\nyet more\n").unwrap();
        match finished.resume(&path, &input, 1, &output, None).unwrap() {
            Resume::After { notes, .. } => assert!(notes[0].contains("grew"), "{notes:?}"),
            other => panic!("{other:?}"),
        }

        // The same files on a device numbered anew (as after a reboot):
        // resumed, with a note for each; another inode is still refused.
        let mut renumbered = checkpoint.clone();
        renumbered.input_file.dev ^= 1;
        renumbered.output.file.dev ^= 1;
        match renumbered.resume(&path, &input, 1, &output, None).unwrap() {
            Resume::After { notes, .. } => {
                assert_eq!(notes.len(), 2, "{notes:?}");
                assert!(
                    notes[0].contains("a reboot may number a disk anew"),
                    "{notes:?}"
                );
                assert!(notes[1].starts_with("--output"), "{notes:?}");
            }
            other => panic!("{other:?}"),
        }
        renumbered.input_file.ino ^= 1;
        assert!(renumbered
            .resume(&path, &input, 1, &output, None)
            .unwrap_err()
            .to_string()
            .contains("is not the file the run"));
    }

    /// A record that would not fit its page with the modules' own digests
    /// is written without them (its refusals then name no module).
    #[test]
    fn a_long_input_name_costs_the_modules_names_not_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, input) = (dir.path().join("cp"), dir.path().join("in"));
        std::fs::write(&input, "").unwrap();
        let modules: std::collections::BTreeMap<_, _> = (0..50)
            .map(|i| (format!("module-{i:02}"), vec![Some([7; 32])]))
            .collect();
        let config = Config::from_text(
            "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]",
            rustmq_etl_config::Format::Yaml,
            None,
        )
        .unwrap()
        .config;
        let setup = Setup::of(&config, &modules, &Options::default());
        assert!(setup.each_module.is_some());
        let checkpoint = Checkpoint {
            input: "i".repeat(2500),
            setup: Some(setup),
            ..at(3, &input, &input)
        };
        let (mut file, _) = CheckpointFile::open(&path).unwrap();
        file.write(&checkpoint).unwrap();
        drop(file);
        let (_, read) = CheckpointFile::open(&path).unwrap();
        let setup = read.unwrap().setup.unwrap();
        assert_eq!(setup.each_module, None);
        assert_eq!(setup.modules, checkpoint.setup.unwrap().modules);
    }

    /// The setup's digests: each changes with what it covers, and only
    /// with that; `check_setup` refuses a change unless told to go on, notes
    /// another version, and takes a checkpoint that recorded none with a
    /// note.
    #[test]
    fn a_setup_tells_what_changed() {
        let config = |yaml: &str| {
            Config::from_text(yaml, rustmq_etl_config::Format::Yaml, None)
                .unwrap()
                .config
        };
        let yaml = "pipeline_id: p\nstages: [{priority: 0, modules: [{module_id: m}]}]";
        // The engine's reads of module `m`, one per occurrence.
        let read = |reads: &[Option<u8>]| {
            let reads = reads.iter().map(|r| r.map(|b| [b; 32])).collect();
            std::collections::BTreeMap::from([("m".to_owned(), reads)])
        };
        let (one, options) = (read(&[Some(1)]), Options::default());
        let setup = Setup::of(&config(yaml), &one, &options);
        assert_eq!(setup, Setup::of(&config(yaml), &one, &options));
        let changed = |other: Setup| setup.changes(&other);
        let other_config = config(&yaml.replace("priority: 0", "priority: 1"));
        assert_eq!(
            changed(Setup::of(&other_config, &one, &options)),
            ["the pipelines (--config)"]
        );
        let options_named = ["--dead-letter-topic, --breaker-failures or --breaker-cool-down-ms"];
        for other in [
            Options::default().dead_letter_topic("elsewhere"),
            Options::default().breaker(BreakerSettings::default().failures(9)),
            Options::default()
                .breaker(BreakerSettings::default().cool_down(std::time::Duration::from_millis(7))),
        ] {
            assert_eq!(
                changed(Setup::of(&config(yaml), &one, &other)),
                options_named
            );
        }
        // Other bytes; a file that could not be read; one read twice (two
        // occurrences) in either order.
        let modules_named = ["the module files (--modules: m.wasm)"];
        for other in [read(&[Some(2)]), read(&[None]), read(&[Some(1), Some(2)])] {
            assert_eq!(
                changed(Setup::of(&config(yaml), &other, &options)),
                modules_named
            );
        }
        assert_eq!(
            Setup::of(&config(yaml), &read(&[Some(1), Some(2)]), &options),
            Setup::of(&config(yaml), &read(&[Some(2), Some(1)]), &options)
        );
        // Of several modules, those that changed are named; a module gone
        // or new is named too.
        let several = |reads: &[(&str, u8)]| {
            reads
                .iter()
                .map(|(id, b)| (id.to_string(), vec![Some([*b; 32])]))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let before = Setup::of(
            &config(yaml),
            &several(&[("a", 1), ("b", 1), ("c", 1)]),
            &options,
        );
        let after = Setup::of(
            &config(yaml),
            &several(&[("a", 1), ("b", 2), ("d", 1)]),
            &options,
        );
        assert_eq!(
            before.changes(&after),
            ["the module files (--modules: b.wasm, c.wasm, d.wasm)"]
        );
        // A setup without them (too many modules for a page, or written
        // before they were kept): the modules are not named.
        let unnamed = Setup {
            each_module: None,
            ..after.clone()
        };
        assert_eq!(before.changes(&unnamed), ["the module files (--modules)"]);
        let many: std::collections::BTreeMap<_, _> = (0..200)
            .map(|i| (format!("module-number-{i}"), vec![Some([1; 32])]))
            .collect();
        assert_eq!(Setup::of(&config(yaml), &many, &options).each_module, None);

        let dir = tempfile::tempdir().unwrap();
        let (path, input) = (dir.path().join("cp"), dir.path().join("in"));
        std::fs::write(&input, "").unwrap();
        let checkpoint = Checkpoint {
            setup: Some(setup.clone()),
            ..at(3, &input, &input)
        };
        assert_eq!(checkpoint.check_setup(&path, &setup, false).unwrap(), None);
        let gone = Setup::of(&config(yaml), &read(&[None]), &options);
        let error = checkpoint
            .check_setup(&path, &gone, false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the module files (--modules: m.wasm). Its lines up to 3"),
            "{error}"
        );
        let note = checkpoint.check_setup(&path, &gone, true).unwrap().unwrap();
        assert!(note.contains("going on with the new"), "{note}");
        // Another version: a note, not a refusal.
        let later = Setup {
            version: "99.0.0".to_owned(),
            ..setup.clone()
        };
        let note = checkpoint
            .check_setup(&path, &later, false)
            .unwrap()
            .unwrap();
        assert!(note.contains("this is 99.0.0"), "{note}");
        let unrecorded = Checkpoint {
            setup: None,
            ..checkpoint
        };
        let note = unrecorded
            .check_setup(&path, &gone, false)
            .unwrap()
            .unwrap();
        assert!(note.contains("not compared"), "{note}");
    }
}
