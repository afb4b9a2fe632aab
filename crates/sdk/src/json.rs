//! Reading and editing fields of a JSON object payload without rebuilding the
//! document (crate feature `json`).
//!
//! [`Object::parse`] checks the whole payload as JSON once and remembers where
//! each top-level field's value lies; reading a field parses only that value,
//! and [`ObjectEdit`] writes a new payload by splicing new values into the
//! original bytes: everything it does not touch — other fields, their order,
//! their formatting — is copied as it was. Compared with parsing the payload
//! into a `serde_json::Value` and writing it back, nothing is allocated per
//! field and nothing is formatted again.
//!
//! ```
//! use rustmq_etl_sdk::json::Object;
//!
//! let payload = br#"{"unit": "celsius", "reading": 21.5, "id": "a"}"#;
//! let object = Object::parse(payload).unwrap();
//! assert_eq!(object.str("unit").as_deref(), Some("celsius"));
//! assert_eq!(object.f64("reading"), Some(21.5));
//! let edited = object.edit().set("reading", 70.7).set("unit", "fahrenheit").finish();
//! assert_eq!(edited, br#"{"unit": "fahrenheit", "reading": 70.7, "id": "a"}"#);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON object payload, checked, with where each top-level value lies.
#[derive(Debug, Clone)]
pub struct Object<'a> {
    text: &'a [u8],
    fields: Vec<(Cow<'a, str>, Range<usize>)>,
}

/// Why a payload is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject(String);

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAnObject {}

/// A key, borrowed from the payload unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The top-level entries, in order.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

impl<'a> Object<'a> {
    /// Checks `payload` as one JSON object (all of it) and notes where each
    /// top-level value lies.
    pub fn parse(payload: &'a [u8]) -> Result<Object<'a>, NotAnObject> {
        let entries: Entries<'a> =
            serde_json::from_slice(payload).map_err(|e| NotAnObject(e.to_string()))?;
        let base = payload.as_ptr() as usize;
        let fields = entries
            .0
            .into_iter()
            .map(|(key, value)| {
                let start = value.get().as_ptr() as usize - base;
                (key, start..start + value.get().len())
            })
            .collect();
        Ok(Object {
            text: payload,
            fields,
        })
    }

    /// The JSON text of field `key`'s value (of its last occurrence, as JSON
    /// readers see it).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        let range = self.fields.iter().rev().find(|(k, _)| k == key)?.1.clone();
        // The range came from a `RawValue`: valid UTF-8, on char boundaries.
        std::str::from_utf8(&self.text[range]).ok()
    }

    /// Whether the object has field `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == key)
    }

    /// The keys, in order (a repeated key each time).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_ref())
    }

    /// Field `key` as a string, if it is one.
    pub fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(key)?;
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    }

    /// Field `key` as a number, if it is one.
    pub fn f64(&self, key: &str) -> Option<f64> {
        let raw = self.raw(key)?;
        if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok()
    }

    /// Field `key` as a boolean, if it is one.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.raw(key)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// Field `key` deserialized as `T`.
    pub fn get<T: Deserialize<'a>>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.raw(key)?).ok()
    }

    /// Starts a list of changes; [`ObjectEdit::finish`] writes the new payload.
    pub fn edit(&self) -> ObjectEdit<'_, 'a> {
        ObjectEdit {
            object: self,
            values: Vec::new(),
        }
    }
}

/// Changes to an [`Object`]'s fields.
#[derive(Debug)]
pub struct ObjectEdit<'o, 'a> {
    object: &'o Object<'a>,
    /// New JSON text by key (`None`: remove the field), in the order set.
    values: Vec<(String, Option<String>)>,
}

impl ObjectEdit<'_, '_> {
    /// Sets field `key` to `value` (as JSON): every occurrence of the field
    /// is replaced in place; a field the object lacks is appended.
    pub fn set(mut self, key: &str, value: impl Serialize) -> Self {
        // Serializing a value serde can express as JSON does not fail; one
        // that cannot (a map with non-string keys) becomes `null`.
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.put(key, Some(text));
        self
    }

    /// Sets field `key` to a JSON text the caller vouches for (not checked).
    pub fn set_raw(mut self, key: &str, json: impl Into<String>) -> Self {
        self.put(key, Some(json.into()));
        self
    }

    /// Removes every occurrence of field `key`.
    pub fn remove(mut self, key: &str) -> Self {
        self.put(key, None);
        self
    }

    fn put(&mut self, key: &str, value: Option<String>) {
        match self.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key.to_owned(), value)),
        }
    }

    /// The new payload: the original bytes with the changed values spliced
    /// in (a removed field takes the comma before or after it along).
    pub fn finish(self) -> Vec<u8> {
        let object = self.object;
        let text = object.text;
        let mut out = Vec::with_capacity(text.len() + 16 * self.values.len());
        let mut copied = 0;
        let mut kept = 0;
        for (i, (key, range)) in object.fields.iter().enumerate() {
            let Some((_, value)) = self.values.iter().find(|(k, _)| k == key) else {
                kept += 1;
                continue;
            };
            match value {
                Some(value) => {
                    out.extend_from_slice(&text[copied..range.start]);
                    out.extend_from_slice(value.as_bytes());
                    copied = range.end;
                    kept += 1;
                }
                None => {
                    // From the field's key to the next field's key, or, for
                    // the last field, from the previous field's value on.
                    let key_start = key_start(text, range.start);
                    let (cut_from, cut_to) = match object.fields.get(i + 1) {
                        Some((_, next)) => (key_start, self::key_start(text, next.start)),
                        None if kept > 0 => (comma_before(text, key_start), range.end),
                        None => (key_start, range.end),
                    };
                    out.extend_from_slice(&text[copied..cut_from.max(copied)]);
                    copied = cut_to.max(copied);
                }
            }
        }
        let close = text.iter().rposition(|&b| b == b'}').unwrap_or(text.len());
        out.extend_from_slice(&text[copied..close]);
        let mut any = kept > 0;
        for (key, value) in &self.values {
            let (Some(value), false) = (value, object.contains(key)) else {
                continue;
            };
            if any {
                out.push(b',');
            }
            out.extend_from_slice(
                serde_json::to_string(key)
                    .unwrap_or_else(|_| "\"\"".to_owned())
                    .as_bytes(),
            );
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            any = true;
        }
        out.extend_from_slice(&text[close..]);
        out
    }
}

/// Where the key of the value starting at `value_start` starts: back over
/// the colon and whitespace to the key's opening quote.
fn key_start(text: &[u8], value_start: usize) -> usize {
    let colon = text[..value_start]
        .iter()
        .rposition(|&b| b == b':')
        .unwrap_or(0);
    let close_quote = text[..colon].iter().rposition(|&b| b == b'"').unwrap_or(0);
    // The key's opening quote: the first unescaped quote before its closing one.
    let mut i = close_quote;
    while i > 0 {
        i -= 1;
        if text[i] == b'"' && !escaped(text, i) {
            return i;
        }
    }
    0
}

/// Whether the byte at `i` is escaped by an odd run of backslashes.
fn escaped(text: &[u8], i: usize) -> bool {
    text[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The comma before `at` (only whitespace between).
fn comma_before(text: &[u8], at: usize) -> usize {
    text[..at]
        .iter()
        .rposition(|&b| !b.is_ascii_whitespace())
        .filter(|&i| text[i] == b',')
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(
        text: &str,
        edit: impl for<'o, 'a> FnOnce(ObjectEdit<'o, 'a>) -> ObjectEdit<'o, 'a>,
    ) -> String {
        let object = Object::parse(text.as_bytes()).unwrap();
        String::from_utf8(edit(object.edit()).finish()).unwrap()
    }

    #[test]
    fn reads_fields_without_parsing_the_others() {
        let o =
            Object::parse(br#"{"a":"x\"y","b":-1.5e2,"c":true,"d":{"e":[1]},"a":"last"}"#).unwrap();
        assert_eq!(
            o.str("a").as_deref(),
            Some("last"),
            "the last occurrence wins"
        );
        assert_eq!(o.f64("b"), Some(-150.0));
        assert_eq!(o.bool("c"), Some(true));
        assert_eq!(o.raw("d"), Some(r#"{"e":[1]}"#));
        assert_eq!(o.get::<Vec<u8>>("d"), None);
        assert_eq!(o.f64("a"), None);
        assert_eq!(o.str("missing"), None);
        assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "b", "c", "d", "a"]);
        let escaped = Object::parse(br#"{"k":"a\nb"}"#).unwrap();
        assert_eq!(escaped.str("k").as_deref(), Some("a\nb"));
    }

    #[test]
    fn refuses_what_is_not_one_json_object() {
        for text in ["[1]", "1", "{", r#"{"a":1} x"#, r#"{"a":}"#, ""] {
            assert!(Object::parse(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn edits_splice_values_and_keep_everything_else() {
        assert_eq!(
            edited(r#"{ "a" : 1 , "b" : [2, 3] }"#, |e| e.set("a", "one")),
            r#"{ "a" : "one" , "b" : [2, 3] }"#
        );
        assert_eq!(
            edited(r#"{"a":1}"#, |e| e.set("z", 2.5)),
            r#"{"a":1,"z":2.5}"#
        );
        assert_eq!(edited("{}", |e| e.set("z", true)), r#"{"z":true}"#);
        assert_eq!(
            edited(r#"{"a":1,"a":2}"#, |e| e.set("a", 0)),
            r#"{"a":0,"a":0}"#
        );
        assert_eq!(
            edited(r#"{"a":1,"b":2,"c":3}"#, |e| e.remove("b")),
            r#"{"a":1,"c":3}"#
        );
        assert_eq!(edited(r#"{"a":1,"b":2}"#, |e| e.remove("b")), r#"{"a":1}"#);
        assert_eq!(edited(r#"{"a":1,"b":2}"#, |e| e.remove("a")), r#"{"b":2}"#);
        assert_eq!(edited(r#"{"a":1}"#, |e| e.remove("a")), "{}");
        assert_eq!(
            edited(r#"{"q\"k":1,"b":2}"#, |e| e.remove("b").set("n", "x")),
            r#"{"q\"k":1,"n":"x"}"#
        );
    }

    /// Every edit gives what a `serde_json::Value` round trip gives, as JSON.
    #[test]
    fn edits_agree_with_a_value_round_trip() {
        let cases = [
            r#"{"sensor_type":"temperature","unit":"celsius","reading":21.5,"id":"a"}"#,
            r#"{ "unit" : "celsius" ,"reading":-3 , "nested":{"unit":"x"} }"#,
            r#"{"reading":1,"unit":"celsius","reading":2}"#,
        ];
        for text in cases {
            let out = edited(text, |e| {
                e.set("reading", 70.7)
                    .set("unit", "fahrenheit")
                    .set("new", [1, 2])
            });
            let mut expected: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).unwrap();
            expected.insert("reading".into(), 70.7.into());
            expected.insert("unit".into(), "fahrenheit".into());
            expected.insert("new".into(), serde_json::json!([1, 2]));
            let got: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&out).unwrap();
            assert_eq!(got, expected, "{text} -> {out}");
        }
    }
}
