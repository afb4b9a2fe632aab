//! The ABI decoder fed arbitrary guest output: an outcome, a message or an
//! error, never a panic (nor on reading a message's strings once `check`
//! passes). A decoded outcome yields every edit it counted and encodes back to
//! the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_etl_abi::{decode_message, decode_outcome, encode_outcome, Edit, Outcome, OutcomeView};

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = decode_outcome(data) {
        let edits: Vec<Edit<'_>>;
        let outcome = match view {
            OutcomeView::Unchanged => Outcome::Unchanged,
            OutcomeView::Drop => Outcome::Drop,
            OutcomeView::Error(text) => Outcome::Error(text),
            OutcomeView::Edits(iter) => {
                let counted = iter.size_hint().1;
                edits = iter.collect();
                assert_eq!(Some(edits.len()), counted, "an edit went missing");
                Outcome::Edits(&edits)
            }
        };
        let mut again = Vec::new();
        encode_outcome(&outcome, &mut again);
        assert_eq!(again, data, "decode → encode changed the bytes");
    }
    if let Ok(message) = decode_message(data) {
        let _ = (message.key(), message.payload(), message.timestamp_ms());
        // Reading a string that is not UTF-8 panics: checked first.
        if message.check().is_ok() {
            let _ = (message.topic(), message.header("content-type"));
            assert!(message.headers().count() <= data.len());
        }
    }
});
