//! Reading JSON Lines messages: one line at a time, as bytes, so that a line
//! that is not UTF-8 is one bad line rather than the end of the input.

use std::io::{BufRead, Read};

use rustmq_etl_core::Message;

/// The messages' file `path` to read lines from (`-`: standard input); a
/// directory is refused as `run` refuses it.
pub(crate) fn open(path: &std::path::Path) -> anyhow::Result<Box<dyn BufRead>> {
    use anyhow::Context;
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    if path.is_dir() {
        anyhow::bail!(
            "--input {} is a directory: give a file of JSON Lines (or - for standard input)",
            path.display()
        );
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::new(file)))
}

/// One input line as a message: `None` if blank, or why it is not one.
pub(crate) fn parse_line(bytes: &[u8]) -> Result<Option<Message>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("the line is not UTF-8 (at byte {})", e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    // Untrimmed: an error's column counts in the line as read.
    Message::from_json_line(text)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The longest input line read (a message line is rarely more than a
/// megabyte; this is serve's default request limit).
pub(crate) const MAX_LINE_BYTES: u64 = 16 << 20;

/// The lines of `reader`, numbered from 1: each one's number, the bytes read
/// for it (its line end included) and the line without its line end — or,
/// for a line longer than [`MAX_LINE_BYTES`], why it is not read (the rest
/// of it is skipped, and reading goes on). Every command that reads JSON
/// Lines reads them so.
pub(crate) fn numbered_lines(
    mut reader: impl BufRead,
) -> impl Iterator<Item = std::io::Result<(usize, usize, Result<Vec<u8>, String>)>> {
    let mut number = 0;
    // A read failed, or a line ended without a line end: the input's end
    // as it stood. (A file a writer is appending to may go on; read on, its
    // line would come back split in two, and every number after it one
    // ahead of the file's: what was added is for a later run to read.)
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut bytes = Vec::new();
        let read = match (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut bytes)
        {
            Ok(0) => return None,
            Ok(read) => read,
            Err(e) => {
                failed = true;
                return Some(Err(e));
            }
        };
        number += 1;
        if read as u64 > MAX_LINE_BYTES && !bytes.ends_with(b"\n") {
            // Skip the rest of the line.
            let rest = match reader.skip_until(b'\n') {
                Ok(rest) => rest,
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            };
            let why = format!("the line is longer than {MAX_LINE_BYTES} bytes");
            return Some(Ok((number, read + rest, Err(why))));
        }
        if bytes.ends_with(b"\n") {
            bytes.pop();
        } else {
            failed = true;
        }
        Some(Ok((number, read, Ok(bytes))))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::{BufReader, Read};

    /// Reads its chunks in turn; an empty one is an end of file that a
    /// writer appending to the file then moves on.
    struct Growing(VecDeque<&'static [u8]>);

    impl Read for Growing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(chunk) = self.0.pop_front() else {
                return Ok(0);
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(&chunk[n..]);
            }
            Ok(n)
        }
    }

    /// A line without its line end is the input's last: what a writer adds
    /// after it is not read as lines of their own (the rest of that line
    /// would be one, and every line after it numbered one ahead).
    #[test]
    fn a_line_without_its_end_is_the_last_read() {
        let reader = Growing(VecDeque::from([&b"a\nb"[..], b"", b"c\nd\n"]));
        let lines: Vec<_> = super::numbered_lines(BufReader::new(reader))
            .map(|line| line.unwrap())
            .collect();
        assert_eq!(
            lines,
            [(1, 2, Ok(b"a".to_vec())), (2, 1, Ok(b"b".to_vec()))]
        );
        // As an end of file after a whole line always ended the input.
        let reader = Growing(VecDeque::from([&b"a\n"[..], b"", b"b\n"]));
        assert_eq!(super::numbered_lines(BufReader::new(reader)).count(), 1);
    }
}
