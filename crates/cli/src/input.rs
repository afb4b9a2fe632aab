//! Reading JSON Lines messages: one line at a time, as bytes, so that a line
//! that is not UTF-8 is one bad line rather than the end of the input.

use std::io::BufRead;

use rustmq_etl_core::Message;

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

/// The lines of `reader`, numbered from 1, without their line ends.
pub(crate) fn numbered_lines(
    reader: impl BufRead,
) -> impl Iterator<Item = std::io::Result<(usize, Vec<u8>)>> {
    reader
        .split(b'\n')
        .enumerate()
        .map(|(i, line)| line.map(|line| (i + 1, line)))
}
