//! `run --checkpoint FILE`: after each batch it commits, a run records how
//! far it got and how long its output files were then, so that the same
//! command resumes exactly where it left off however the run ended —
//! SIGKILL, the OOM killer, a crash — cutting off what it wrote past the
//! last checkpoint.

use std::path::Path;

use anyhow::Context as _;

/// What a checkpoint file holds (one JSON object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    /// The input, as the command named it.
    pub input: String,
    /// Every line up to this one was processed and its result written.
    pub line: usize,
    /// `--output`'s length as that line's batch was committed.
    pub output_bytes: u64,
    /// `--dead-letter`'s, if the run has one.
    pub dead_letter_bytes: Option<u64>,
    /// The run read its whole input and wrote every result.
    pub finished: bool,
}

impl Checkpoint {
    /// The checkpoint at `path`; none if there is no such file.
    pub fn read(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read --checkpoint {}", path.display()))
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "--checkpoint {} is not a checkpoint of `rustmq-etl run` ({e}): name another \
                 file, or remove it to start the run afresh",
                path.display()
            )
        })
    }

    /// Writes it to `path` whole or not at all: to a file beside it, then
    /// renamed over it (a run killed meanwhile leaves the last checkpoint).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let mut text = serde_json::to_string(self).expect("a checkpoint serialises");
        text.push('\n');
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the checkpoint to {}", path.display()))
    }

    /// Checks that this is the checkpoint of a run on `input` with these
    /// outputs, and cuts each output file back to its length at the
    /// checkpoint (what is past it is the results of a batch whose commit
    /// the run did not finish). Says what it cut.
    pub fn cut_back(
        &self,
        path: &Path,
        input: &Path,
        output: &Path,
        dead_letter: Option<&Path>,
    ) -> anyhow::Result<Vec<String>> {
        let here = path.display();
        let given = input.display().to_string();
        if self.input != given {
            anyhow::bail!(
                "--checkpoint {here} is of a run on {}, not on {given}: run that input, or name \
                 another checkpoint file",
                self.input
            );
        }
        let files = match (dead_letter, self.dead_letter_bytes) {
            (None, None) => vec![(output, self.output_bytes)],
            (Some(dead_letter), Some(bytes)) => {
                vec![(output, self.output_bytes), (dead_letter, bytes)]
            }
            (Some(_), None) => anyhow::bail!(
                "--checkpoint {here} is of a run without --dead-letter: run the same command"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--checkpoint {here} is of a run with a --dead-letter file: run the same command"
            ),
        };
        let mut cut = Vec::new();
        for (file, bytes) in files {
            let shown = file.display();
            let open = std::fs::File::options()
                .write(true)
                .open(file)
                .with_context(|| format!("cannot open {shown} to resume the run of {here}"))?;
            let length = open
                .metadata()
                .with_context(|| format!("{shown}: reading its length"))?
                .len();
            if length < bytes {
                anyhow::bail!(
                    "{shown} is {length} bytes, shorter than the {bytes} that --checkpoint {here} \
                     recorded: it was changed since, and the run cannot resume exactly (remove \
                     the checkpoint to start afresh)"
                );
            }
            if length > bytes {
                open.set_len(bytes)
                    .with_context(|| format!("{shown}: cutting it back to {bytes} bytes"))?;
                cut.push(format!(
                    "{shown}: {} bytes past the checkpoint cut off (results of a batch whose \
                     commit the run before did not finish; they are written again)",
                    length - bytes
                ));
            }
        }
        Ok(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_cuts_back_to_its_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let (path, output) = (dir.path().join("cp"), dir.path().join("out"));
        let checkpoint = Checkpoint {
            input: "in.jsonl".to_owned(),
            line: 7,
            output_bytes: 4,
            dead_letter_bytes: None,
            finished: false,
        };
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
        checkpoint.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), Some(checkpoint.clone()));
        assert!(!dir.path().join("cp.tmp").exists());

        std::fs::write(&output, "one\ntwo, cut sh").unwrap();
        let cut = checkpoint
            .cut_back(&path, Path::new("in.jsonl"), &output, None)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "one\n");
        assert!(cut[0].contains("11 bytes past the checkpoint"), "{cut:?}");

        // Another input, a file shorter than recorded, a dead-letter file
        // the run had not: refused, nothing cut.
        let refused = |input: &str, dead: Option<&Path>| {
            checkpoint
                .cut_back(&path, Path::new(input), &output, dead)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("other.jsonl", None).contains("is of a run on in.jsonl"));
        assert!(refused("in.jsonl", Some(&output)).contains("without --dead-letter"));
        std::fs::write(&output, "on").unwrap();
        assert!(refused("in.jsonl", None).contains("shorter than the 4"));
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "on");

        std::fs::write(&path, "{\"line\": 3}").unwrap();
        let error = Checkpoint::read(&path).unwrap_err().to_string();
        assert!(error.contains("is not a checkpoint"), "{error}");
    }
}
