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
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
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
        }
        Some(Ok((number, read, Ok(bytes))))
    })
}
