//! Reading and editing fields of a JSON object payload without rebuilding the
//! document (crate feature `json`).
//!
//! [`Object::parse`] checks the whole payload as JSON once and remembers where
//! each top-level field's value lies; reading a field parses only that value,
//! and [`ObjectEdit`] writes a new payload by splicing new values into the
//! original bytes: everything it does not touch — other fields, their order,
//! their formatting — is copied as it was. Compared with parsing the payload
//! into a `serde_json::Value` and writing it back, nothing is allocated per
//! field (but a key with escapes) and nothing is formatted again.
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
use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use scan::Field;

#[cfg(test)]
mod reference;
mod scan;

/// A module's `custom_config` read into `T` with serde, serde's error as it
/// is: none given (the engine hands `init` the text `null`) is
/// `T::default()`; anything else is JSON that `T` must accept, or serde's
/// error saying why — what `init` returns, so that the module is refused at
/// load with it (the engine says "init rejected its custom_config: …"; a
/// line and column in it count in the compact text the engine hands over,
/// not in the configuration file). For a struct, [`optional_config`] reads
/// the same and says more when it refuses: prefer it.
///
/// ```
/// #[derive(serde::Deserialize, Default, Debug, PartialEq)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config {
///     min_reading: f64,
///     max_reading: f64,
/// }
///
/// fn init(custom_config: &str) -> Result<Config, String> {
///     rustmq_etl_sdk::json::config(custom_config)
/// }
///
/// assert_eq!(init("null"), Ok(Config::default()));
/// assert_eq!(init(r#"{"max_reading": 40}"#).unwrap().max_reading, 40.0);
/// assert!(init(r#"{"max": 40}"#).unwrap_err().starts_with("unknown field `max`"));
/// ```
pub fn config<T: serde::de::DeserializeOwned + Default>(custom_config: &str) -> Result<T, String> {
    match custom_config.trim() {
        "" | "null" => Ok(T::default()),
        text => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
}

/// A module's `custom_config` read into `T` with serde, as the sample modules
/// read theirs: none given (the engine hands `init` the text `null`) is
/// `T::default()`; text that is not JSON, a value that is not an object, or
/// one that `T` does not accept is refused as [`required_config`] refuses
/// it, with a text that says why and shows `example`.
///
/// ```
/// #[derive(serde::Deserialize, Default, Debug, PartialEq)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config {
///     min_reading: f64,
///     max_reading: f64,
/// }
///
/// const EXAMPLE: &str = r#"{"min_reading": -100, "max_reading": 1000}"#;
///
/// fn init(custom_config: &str) -> Result<Config, String> {
///     rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)
/// }
///
/// assert_eq!(init("null"), Ok(Config::default()));
/// assert_eq!(init(r#"{"max_reading": 40}"#).unwrap().max_reading, 40.0);
/// assert_eq!(
///     init(r#"{"max": 40}"#).unwrap_err(),
///     "unknown field `max`, expected `min_reading` or `max_reading` \
///      (give {\"min_reading\": -100, \"max_reading\": 1000})"
/// );
/// assert!(init("[1]").unwrap_err().starts_with("not a JSON object"));
/// ```
pub fn optional_config<T: serde::de::DeserializeOwned + Default>(
    custom_config: &str,
    example: &str,
) -> Result<T, String> {
    Ok(given_config(custom_config, example)?.unwrap_or_default())
}

/// A module's `custom_config` that must be given, read into `T` with serde:
/// none given (the engine hands `init` the text `null`), text that is not
/// JSON, a value that is not an object, or one that `T` does not accept is
/// refused with a text that says why and shows `example` — what `init`
/// returns, so that the module is refused at load with it. What `T` does
/// not accept is said without a line or column, which would count in the
/// compact text the engine hands over, not in the user's configuration file
/// (only text that is not JSON, which the engine never hands over, is quoted
/// with serde's place in it). The text goes on from the engine's "init
/// rejected its custom_config: ", so it does not name `custom_config` again.
/// (`T` may be `serde_json::Value`, for checks of its own on the object.)
///
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     field: String,
/// }
///
/// fn init(custom_config: &str) -> Result<Config, String> {
///     rustmq_etl_sdk::json::required_config(custom_config, r#"{"field": "type"}"#)
/// }
///
/// assert_eq!(init(r#"{"field": "id"}"#).unwrap().field, "id");
/// assert_eq!(
///     init("null").unwrap_err(),
///     r#"none given (give {"field": "type"})"#
/// );
/// assert!(init("[1]").unwrap_err().starts_with("not a JSON object"));
/// assert!(init(r#"{"field": 1}"#).unwrap_err().contains("invalid type"));
/// ```
pub fn required_config<T: serde::de::DeserializeOwned>(
    custom_config: &str,
    example: &str,
) -> Result<T, String> {
    given_config(custom_config, example)?.ok_or_else(|| refused_config("none given", example))
}

/// `custom_config` read into `T` (none: none given), or why not, showing
/// `example` ([`required_config`]).
fn given_config<T: serde::de::DeserializeOwned>(
    custom_config: &str,
    example: &str,
) -> Result<Option<T>, String> {
    // Read as a value first: `T`'s errors then name no line or column.
    let value: serde_json::Value = match custom_config.trim() {
        "" | "null" => return Ok(None),
        text => serde_json::from_str(text)
            .map_err(|e| refused_config(&format!("not JSON: {e}"), example))?,
    };
    if !value.is_object() {
        return Err(refused_config("not a JSON object", example));
    }
    T::deserialize(value)
        .map(Some)
        .map_err(|e| refused_config(&e.to_string(), example))
}

/// A refusal of `custom_config`, as it follows the engine's "init rejected
/// its custom_config: ".
fn refused_config(why: &str, example: &str) -> String {
    format!("{why} (give {example})")
}

/// A JSON object payload, checked, with where each top-level value lies.
#[derive(Debug, Clone)]
pub struct Object<'a> {
    text: &'a str,
    fields: Vec<Field<'a>>,
}

/// Why a payload is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject {
    reason: String,
}

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotAnObject {}

impl<'a> Object<'a> {
    /// Checks `payload` as one JSON object (all of it) and notes where each
    /// top-level value lies.
    pub fn parse(payload: &'a [u8]) -> Result<Object<'a>, NotAnObject> {
        let (text, fields) = scan::object(payload)?;
        Ok(Object { text, fields })
    }

    /// The JSON text of field `key`'s value (of its last occurrence, as JSON
    /// readers see it).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        let field = self.fields.iter().rev().find(|f| f.key == key)?;
        // The scan's ranges end at ASCII delimiters: on char boundaries.
        self.text.get(field.value.clone())
    }

    /// Whether the object has field `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.fields.iter().any(|f| f.key == key)
    }

    /// The keys, in order (a repeated key each time).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.key.as_ref())
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

    /// Field `key` as a number, if it is one. A number set back from an `f64`
    /// is written as a float (`7` becomes `7.0`): read an integer field with
    /// [`Object::i64`] to keep it an integer. A number past `f64`'s range
    /// (`1e400`) is not one (it read as infinity; the engine's rules do not
    /// take such a payload for JSON).
    pub fn f64(&self, key: &str) -> Option<f64> {
        let raw = self.raw(key)?;
        if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok().filter(|n: &f64| n.is_finite())
    }

    /// Field `key` as an integer, if it is one written as such (`7`, `-3`;
    /// not `7.0` or `7e0`) within `i64`'s range: set back with
    /// [`ObjectEdit::set`], it stays an integer.
    ///
    /// ```
    /// use rustmq_etl_sdk::json::Object;
    ///
    /// let order = Object::parse(br#"{"total": 7, "rate": 2.5}"#).unwrap();
    /// assert_eq!(order.i64("total"), Some(7));
    /// assert_eq!(order.i64("rate"), None);
    /// let total = order.i64("total").unwrap() * 2;
    /// assert_eq!(order.edit().set("total", total).finish(), br#"{"total": 14, "rate": 2.5}"#);
    /// ```
    pub fn i64(&self, key: &str) -> Option<i64> {
        self.raw(key)?.parse().ok()
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
        let spare = SPARE.try_with(Cell::take).ok().flatten();
        let (values, text) = spare.unwrap_or_else(|| {
            // Room for a few edits, so that setting them rarely reallocates.
            (Vec::with_capacity(4), Vec::with_capacity(64))
        });
        ObjectEdit {
            object: self,
            values,
            text,
        }
    }
}

thread_local! {
    /// The buffers of the last [`ObjectEdit`] dropped, empty, for the next
    /// one: a module edits a payload a call, and reusing them saves two
    /// allocations and two frees a call.
    static SPARE: Cell<Option<(Vec<EditedValue>, Vec<u8>)>> = const { Cell::new(None) };
}

/// Where a set or removed key's name and its new JSON text (`None`: remove
/// the field) lie in [`ObjectEdit`]'s text.
type EditedValue = (Range<usize>, Option<Range<usize>>);

impl Drop for ObjectEdit<'_, '_> {
    fn drop(&mut self) {
        let (mut values, mut text) = (
            std::mem::take(&mut self.values),
            std::mem::take(&mut self.text),
        );
        // A buffer grown large by one payload is not kept for every later one.
        if text.capacity() <= 4096 && values.capacity() <= 64 {
            values.clear();
            text.clear();
            // (Not while the thread's locals are being destroyed.)
            let _ = SPARE.try_with(|spare| spare.set(Some((values, text))));
        }
    }
}

/// Changes to an [`Object`]'s fields.
#[derive(Debug)]
pub struct ObjectEdit<'o, 'a> {
    object: &'o Object<'a>,
    /// Each key set or removed, in the order first set.
    values: Vec<EditedValue>,
    /// The keys' names and the new values' JSON texts, one after another
    /// (one buffer, not a `String` each).
    text: Vec<u8>,
}

impl ObjectEdit<'_, '_> {
    /// Sets field `key` to `value` (as JSON): every occurrence of the field
    /// is replaced in place; a field the object lacks is appended. A float
    /// that is not finite (NaN, ±∞) is written `null`, as `serde_json`
    /// writes it (JSON has no such number): check `is_finite` first.
    pub fn set(mut self, key: &str, value: impl Serialize) -> Self {
        let start = self.text.len();
        // Serializing a value serde can express as JSON does not fail; one
        // that cannot (a map with non-string keys) becomes `null`.
        if serde_json::to_writer(&mut self.text, &value).is_err() {
            self.text.truncate(start);
            self.text.extend_from_slice(b"null");
        }
        let value = start..self.text.len();
        self.put(key, Some(value));
        self
    }

    /// Sets field `key` to a JSON text the caller vouches for (not checked).
    pub fn set_raw(mut self, key: &str, json: impl AsRef<str>) -> Self {
        let start = self.text.len();
        self.text.extend_from_slice(json.as_ref().as_bytes());
        let value = start..self.text.len();
        self.put(key, Some(value));
        self
    }

    /// Removes every occurrence of field `key`.
    pub fn remove(mut self, key: &str) -> Self {
        self.put(key, None);
        self
    }

    fn put(&mut self, key: &str, value: Option<Range<usize>>) {
        match self.find(key) {
            Some(i) => self.values[i].1 = value,
            None => {
                let start = self.text.len();
                self.text.extend_from_slice(key.as_bytes());
                self.values.push((start..self.text.len(), value));
            }
        }
    }

    /// Where `key` is in `values`.
    // Inlined into `finish`'s uses: left to itself, the wasm build called
    // it, which cost temperature-converter ~300 instructions a message.
    #[inline(always)]
    fn find(&self, key: &str) -> Option<usize> {
        self.values
            .iter()
            .position(|(k, _)| &self.text[k.clone()] == key.as_bytes())
    }

    /// The new JSON text for `key`: `None` if it is not edited, `Some(None)`
    /// if it is removed.
    #[inline(always)]
    fn edited(&self, key: &str) -> Option<Option<&[u8]>> {
        let (_, value) = &self.values[self.find(key)?];
        Some(value.clone().map(|v| &self.text[v]))
    }

    /// The new payload: the original bytes with the changed values spliced
    /// in (a removed field takes the comma before or after it along).
    pub fn finish(self) -> Vec<u8> {
        let object = self.object;
        let text = object.text.as_bytes();
        let mut out = Vec::with_capacity(text.len() + self.text.len() + 4 * self.values.len());
        let mut copied = 0;
        // The last field that stays: removed fields before it go with the
        // comma after them, those after it with the comma before them.
        let last_kept = if self.values.iter().any(|(_, value)| value.is_none()) {
            object
                .fields
                .iter()
                .rposition(|f| !matches!(self.edited(&f.key), Some(None)))
        } else {
            object.fields.len().checked_sub(1)
        };
        // Bit `v`: the key of `values[v]` occurs in the object (kept for
        // the first 64 values; the others are looked for again below). A
        // flag in each value instead, with no second search, cost
        // temperature-converter ~330 more instructions a message in wasm.
        let mut found = 0u64;
        for (i, field) in object.fields.iter().enumerate() {
            let range = &field.value;
            let edited = self.find(&field.key).map(|v| {
                found |= bit(v).unwrap_or(0);
                self.values[v].1.clone().map(|value| &self.text[value])
            });
            match edited {
                None => {}
                Some(Some(value)) => {
                    out.extend_from_slice(&text[copied..range.start]);
                    out.extend_from_slice(value);
                    copied = range.end;
                }
                Some(None) => {
                    let (cut_from, cut_to) = match last_kept {
                        // From the field's key to the next field's key.
                        Some(last) if i < last => (field.key_at, object.fields[i + 1].key_at),
                        // The first removed after the last kept field: from
                        // the comma after that field's value.
                        Some(last) if i == last + 1 => {
                            (comma_before(text, field.key_at), range.end)
                        }
                        None if i == 0 => (field.key_at, range.end),
                        // Later ones: on from where the one before ended.
                        _ => (copied, range.end),
                    };
                    out.extend_from_slice(&text[copied..cut_from.max(copied)]);
                    copied = cut_to.max(copied);
                }
            }
        }
        let close = text.iter().rposition(|&b| b == b'}').unwrap_or(text.len());
        out.extend_from_slice(&text[copied..close]);
        let mut any = last_kept.is_some();
        for (v, (key, value)) in self.values.iter().enumerate() {
            let key = &self.text[key.clone()];
            let present = match bit(v) {
                Some(bit) => found & bit != 0,
                None => object.fields.iter().any(|f| f.key.as_bytes() == key),
            };
            let (Some(value), false) = (value, present) else {
                continue;
            };
            if any {
                out.push(b',');
            }
            // Keys were `&str`s, so still UTF-8, and a string always serializes.
            let key = std::str::from_utf8(key).unwrap_or_default();
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(&self.text[value.clone()]);
            any = true;
        }
        out.extend_from_slice(&text[close..]);
        out
    }
}

/// Value `v`'s bit in `ObjectEdit::finish`'s set of keys found.
fn bit(v: usize) -> Option<u64> {
    (v < 64).then(|| 1 << v)
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
        // Past f64's range: not a number (serde_json refuses such a text).
        let huge = Object::parse(br#"{"h":1e400,"n":-1e400,"t":1e-400}"#).unwrap();
        assert_eq!((huge.f64("h"), huge.f64("n")), (None, None));
        assert_eq!(huge.f64("t"), Some(0.0));
        assert!(serde_json::from_str::<serde_json::Value>(r#"{"h":1e400}"#).is_err());
        assert_eq!(o.str("missing"), None);
        assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "b", "c", "d", "a"]);
        let escaped = Object::parse(br#"{"k":"a\nb"}"#).unwrap();
        assert_eq!(escaped.str("k").as_deref(), Some("a\nb"));
    }

    /// `i64` is an integer written as one: not a number with a fraction or
    /// an exponent, however whole its value; exact past 2^53.
    #[test]
    fn an_integer_is_one_written_as_one() {
        let o = Object::parse(br#"{"a":7,"b":7.0,"c":7e0,"d":9007199254740993,"e":-3,"f":"7"}"#)
            .unwrap();
        assert_eq!(o.i64("a"), Some(7));
        assert_eq!((o.i64("b"), o.i64("c")), (None, None));
        assert_eq!(o.i64("d"), Some(9_007_199_254_740_993));
        assert_eq!(o.i64("e"), Some(-3));
        assert_eq!(o.i64("f"), None);
    }

    /// `set_raw` writes the JSON text it is given as it is (not as a string),
    /// as modules.md's rename example has it.
    #[test]
    fn set_raw_writes_its_text_as_it_is() {
        assert_eq!(
            edited(r#"{"temp":21.5,"id":"a"}"#, |e| e
                .remove("temp")
                .set_raw("temperature_c", "21.5")),
            r#"{"id":"a","temperature_c":21.5}"#
        );
        assert_eq!(
            edited(r#"{"a":1}"#, |e| e.set_raw("a", r#"{"b":[true]}"#)),
            r#"{"a":{"b":[true]}}"#
        );
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
            edited(r#"{"a":1, "b":2, "b":3}"#, |e| e.remove("b")),
            r#"{"a":1}"#,
            "a run of removed fields at the end takes the comma before it"
        );
        assert_eq!(
            edited(r#"{"b":1, "b":2, "a":3}"#, |e| e.remove("b")),
            r#"{"a":3}"#
        );
        assert_eq!(edited(r#"{"b":1,"b":2}"#, |e| e.remove("b")), "{}");
        assert_eq!(
            edited(r#"{"q\"k":1,"b":2}"#, |e| e.remove("b").set("n", "x")),
            r#"{"q\"k":1,"n":"x"}"#
        );
    }

    /// Past the 64 values whose keys `finish` remembers finding, keys are
    /// looked for again: an existing one is still replaced in place.
    #[test]
    fn many_edits_find_their_fields() {
        let out = edited(r#"{"k70":0,"a":1}"#, |mut e| {
            for i in 0..72 {
                e = e.set(&format!("k{i}"), i);
            }
            e
        });
        let expected = (0..72)
            .filter(|&i| i != 70)
            .map(|i| format!(",\"k{i}\":{i}"))
            .collect::<String>();
        assert_eq!(out, format!(r#"{{"k70":70,"a":1{expected}}}"#));
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

    pub(crate) mod generated {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// Keys from a small alphabet, so that they repeat, with characters
        /// that need escaping.
        fn key() -> impl Strategy<Value = String> {
            "[ab\"\\\né]{0,2}"
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                // Binary fractions with few digits: serde_json's own float
                // parsing (without `float_roundtrip`) reads them exactly.
                (-1_000_000i64..1_000_000, 0..8)
                    .prop_map(|(m, e)| Value::from(m as f64 / f64::from(1u32 << e))),
                "[a-c\"\\\n\t/é😀]{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(2, 8, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                    prop::collection::vec((key(), inner), 0..3)
                        .prop_map(|v| Value::Object(v.into_iter().collect())),
                ]
            })
        }

        /// An object's text with repeated keys and varied spacing, and the
        /// entries it was written from.
        pub(crate) fn object() -> impl Strategy<Value = (String, Vec<(String, Value)>)> {
            (
                prop::collection::vec((key(), value()), 0..6),
                prop::sample::select(vec![
                    ("", ":", ","),
                    (" ", " : ", " , "),
                    ("\n  ", ": ", ",\n  "),
                ]),
            )
                .prop_map(|(entries, (pad, colon, comma))| {
                    let fields: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| format!("{}{colon}{v}", Value::from(k.as_str())))
                        .collect();
                    (
                        format!("{{{pad}{}{pad}}}{pad}", fields.join(comma)),
                        entries,
                    )
                })
        }

        proptest! {
            /// Reading agrees with a `serde_json::Value` of the same text:
            /// each key's last value.
            #[test]
            fn reads_agree_with_a_value((text, entries) in object()) {
                let object = Object::parse(text.as_bytes()).unwrap();
                let expected: Map<String, Value> = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(object.keys().count(), entries.len());
                for (key, want) in &expected {
                    let raw: Value = serde_json::from_str(object.raw(key).unwrap()).unwrap();
                    prop_assert_eq!(&raw, want);
                    let read = object.str(key);
                    prop_assert_eq!(read.as_deref(), want.as_str());
                    prop_assert_eq!(object.f64(key), want.as_f64());
                    prop_assert_eq!(object.bool(key), want.as_bool());
                    prop_assert!(object.contains(key));
                }
                prop_assert_eq!(object.raw("missing key"), None);
            }

            /// Any edits give, as JSON, what the same edits to a `Value` give.
            #[test]
            fn edits_agree_with_a_value(
                (text, _) in object(),
                edits in prop::collection::vec((key(), prop::option::of(value())), 0..4),
            ) {
                let object = Object::parse(text.as_bytes()).unwrap();
                let mut expected: Map<String, Value> = serde_json::from_str(&text).unwrap();
                let mut edit = object.edit();
                for (key, value) in edits {
                    edit = match value {
                        Some(value) => {
                            expected.insert(key.clone(), value.clone());
                            edit.set(&key, value)
                        }
                        None => {
                            expected.remove(&key);
                            edit.remove(&key)
                        }
                    };
                }
                let out = edit.finish();
                let got: Map<String, Value> = serde_json::from_slice(&out)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
                prop_assert_eq!(got, expected);
            }

            /// No proper prefix of an object is one.
            #[test]
            fn prefixes_are_refused((text, _) in object(), cut in any::<prop::sample::Index>()) {
                let text = text.trim_end();
                let cut = cut.index(text.len());
                if text.is_char_boundary(cut) {
                    prop_assert!(Object::parse(&text.as_bytes()[..cut]).is_err());
                }
            }
        }

        #[test]
        fn non_utf8_payloads_are_refused_with_where() {
            let error = Object::parse(b"{\"a\":\"\xff\"}").unwrap_err();
            assert_eq!(
                error.to_string(),
                "a byte sequence that is not UTF-8 in a string at byte 6"
            );
        }
    }
}
