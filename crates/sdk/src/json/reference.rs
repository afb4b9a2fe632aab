//! The reference for `scan`: serde_json reading a JSON object as its keys
//! (decoded) and raw values, in order, as `Object::parse` did before it had
//! a pass of its own. Used by `scan`'s tests and, included by path, by the
//! `json_object` fuzz target.

use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of `text`, each key with where its value lies, or
/// serde_json's reason to refuse the text.
pub fn fields(text: &str) -> Result<Vec<(String, Range<usize>)>, serde_json::Error> {
    /// Reads a map's entries; holds where the text starts.
    struct Entries(usize);
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, Range<usize>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                let start = value.get().as_ptr() as usize - self.0;
                entries.push((key, start..start + value.get().len()));
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = (&mut de).deserialize_map(Entries(text.as_ptr() as usize))?;
    de.end()?;
    Ok(entries)
}
