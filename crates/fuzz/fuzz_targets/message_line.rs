//! The JSON Lines message reader: any line gives a message or an error, and a
//! message written back reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_etl_core::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = Message::from_json_line(line) {
        let written = message.to_json_line();
        let again = Message::from_json_line(&written)
            .unwrap_or_else(|e| panic!("{written:?} does not read back: {e}"));
        assert_eq!(again, message, "{written}");
    }
});
