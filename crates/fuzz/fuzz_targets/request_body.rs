//! The request bodies of `rustmq-etl serve`: `/v1/process` reads one message
//! (`Message::from_json_line`), `/v1/batch` a JSON array or JSON Lines
//! (`Message::batch_from_json`). Any body gives messages or an error, never a
//! panic; a batch never holds more than its limit, and each of its messages
//! writes back and reads back equal. A place an error gives ("at line L
//! column C") is in the text given: L one of its lines, C at most that
//! line's length in bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_etl_core::{BatchError, Message};

const MAX: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Message::from_json_line(text) {
        placed_in(&e.to_string(), text);
    }
    match Message::batch_from_json(text, MAX) {
        Ok(messages) => {
            assert!(messages.len() <= MAX);
            for message in messages {
                let again = Message::from_json_line(&message.to_json_line()).unwrap();
                assert_eq!(again, message);
            }
        }
        Err(BatchError::TooMany { count, max }) => assert!(count > max && max == MAX),
        Err(e) => placed_in(&e.to_string(), text),
    }
});

/// The place `said` ends with, if any, is in `text`.
fn placed_in(said: &str, text: &str) {
    let Some((_, place)) = said.rsplit_once(" at line ") else {
        return;
    };
    let Some((line, column)) = place.split_once(" column ") else {
        return;
    };
    let (Ok(line), Ok(column)) = (line.parse::<usize>(), column.parse::<usize>()) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(line >= 1 && line <= lines.len(), "{said}: line {line} of {}", lines.len());
    let length = lines[line - 1].len();
    assert!(column <= length, "{said}: column {column} of a line of {length} bytes");
}
