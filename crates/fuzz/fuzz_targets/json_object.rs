//! The SDK's JSON object pass (`json::Object::parse`) against the serde_json
//! reference of `crates/sdk/src/json/reference.rs`: both refuse a text or
//! both read the same keys in order, each key's value the same text; any
//! disagreement is a crash. An object that parses also edits into one.
#![no_main]

#[path = "../../sdk/src/json/reference.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use rustmq_etl_sdk::json::Object;

fuzz_target!(|data: &[u8]| {
    let ours = Object::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(ours.is_err(), "a text that is not UTF-8 parsed");
        return;
    };
    match (ours, reference::fields(text)) {
        (Ok(object), Ok(fields)) => {
            let keys: Vec<&str> = object.keys().collect();
            let expected: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, expected, "{text:?}");
            for (key, _) in &fields {
                // `raw` reads a key's last occurrence.
                let last = fields
                    .iter()
                    .rfind(|(k, _)| k == key)
                    .map(|(_, r)| r.clone());
                assert_eq!(object.raw(key), last.map(|r| &text[r]), "{text:?}");
            }
            let edited = object
                .edit()
                .set("fuzz", 1)
                .remove(expected.first().copied().unwrap_or(""))
                .finish();
            assert!(
                Object::parse(&edited).is_ok(),
                "{text:?} edited: {:?}",
                String::from_utf8_lossy(&edited)
            );
        }
        (Err(_), Err(_)) => {}
        (ours, reference) => panic!("{text:?}: the SDK {ours:?}, serde_json {reference:?}"),
    }
});
