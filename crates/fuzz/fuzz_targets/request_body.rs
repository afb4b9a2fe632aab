//! The request bodies of `rustmq-etl serve`: `/v1/process` reads one message
//! (`Message::from_json_line`), `/v1/batch` a JSON array or JSON Lines
//! (`Message::batch_from_json`). Any body gives messages or an error, never a
//! panic; a batch never holds more than its limit, and each of its messages
//! writes back and reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_etl_core::{BatchError, Message};

const MAX: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Message::from_json_line(text.trim());
    match Message::batch_from_json(text, MAX) {
        Ok(messages) => {
            assert!(messages.len() <= MAX);
            for message in messages {
                let again = Message::from_json_line(&message.to_json_line()).unwrap();
                assert_eq!(again, message);
            }
        }
        Err(BatchError::TooMany { count, max }) => assert!(count > max && max == MAX),
        Err(_) => {}
    }
});
