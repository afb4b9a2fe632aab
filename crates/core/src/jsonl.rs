//! The JSON Lines form of a message (selection.md, "Messages").
//!
//! ```json
//! {"topic": "t", "key": "k", "headers": {"h": "v"}, "payload": {"a": 1}, "timestamp_ms": 1}
//! ```
//!
//! `payload` holding a JSON object, array, number, boolean or null stands for that
//! value's JSON text as written, with the whitespace outside strings removed and key
//! order kept; a JSON string stands for its UTF-8 bytes (unquoted). `payload_base64`
//! (instead of `payload`) gives raw bytes. `key` follows the same rules as `payload`
//! (`null` meaning no key; `key_base64` for raw bytes). `headers` keeps repeated
//! names in order.
//!
//! [`Message::to_json_line`] writes a message so that [`Message::from_json_line`]
//! reads it back equal: a payload that is compact JSON text as `payload` (JSON
//! stays JSON, unless a strict reader would refuse it: nested past 100, a
//! number past a double's range, a lone surrogate escape), other UTF-8 text
//! as a JSON string, other bytes as `payload_base64`.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Headers, Message};

/// Why a JSON line is not a message. The text names the field at fault and,
/// where the JSON reader found the fault, its place in the text given ("at
/// line 1 column 34": lines from 1, columns counting bytes, as `serde_json`
/// counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParseError {
    message: String,
    /// Line and column in the text given.
    at: Option<(usize, usize)>,
}

impl fmt::Display for MessageParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match self.at {
            Some((line, column)) => write!(f, " at line {line} column {column}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for MessageParseError {}

impl MessageParseError {
    fn new(message: impl Into<String>) -> Self {
        MessageParseError {
            message: message.into(),
            at: None,
        }
    }

    /// `context` followed by `serde_json`'s error `e`, found reading `read`
    /// (a part of `text`), placed in `text`.
    fn json(context: &str, e: &serde_json::Error, read: &str, text: &str) -> Self {
        let said = e.to_string();
        let place = format!(" at line {} column {}", e.line(), e.column());
        match said.strip_suffix(&place) {
            Some(said) if e.line() > 0 => MessageParseError {
                message: format!("{context}{said}"),
                at: Some((e.line(), e.column())),
            }
            .within(read, text),
            _ => MessageParseError::new(format!("{context}{said}")),
        }
    }

    /// The error found reading `read`, a part of `text`, placed in `text`.
    fn within(self, read: &str, text: &str) -> Self {
        MessageParseError {
            at: self.at.map(|at| place_in(text, read, at)),
            ..self
        }
    }
}

/// Where a place in `part` (`serde_json`'s: line from 1, column counting bytes
/// since the line's start) is in `text`, of which `part` is a slice (a place in
/// a text that is not its slice stays as it is).
fn place_in(text: &str, part: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let offset = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if offset
        .checked_add(part.len())
        .is_none_or(|end| end > text.len())
    {
        return (line, column);
    }
    let line_start = match line {
        0 | 1 => 0,
        line => part
            .match_indices('\n')
            .nth(line - 2)
            .map_or(part.len(), |(i, _)| i + 1),
    };
    let index = (offset + line_start + column).min(text.len());
    let before = &text.as_bytes()[..index];
    let start_of_line = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let lines_before = before[..start_of_line]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    (1 + lines_before, index - start_of_line)
}

/// Why a batch of messages was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// More messages than allowed (none was parsed).
    #[error("the batch has {count} messages; a batch holds at most {max}")]
    TooMany {
        /// How many the batch holds.
        count: usize,
        /// How many are allowed.
        max: usize,
    },
    /// The batch, or one of its messages, does not parse: which and why.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    topic: String,
    #[serde(borrow, default, deserialize_with = "present")]
    key: Option<&'a RawValue>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    headers: Option<Headers>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    timestamp_ms: Option<i64>,
}

/// A present field is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Standard base64 (with `=` padding), or what is wrong with it in words
/// (offsets count bytes of the trimmed text, from 0).
fn from_base64(text: &str) -> Result<Bytes, String> {
    use base64::DecodeError;
    let text = text.trim();
    let symbol = |byte: u8| match byte {
        b' '..=b'~' => format!("`{}`", byte as char),
        byte => format!("byte 0x{byte:02x}"),
    };
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| match e {
            DecodeError::InvalidByte(at, b'=') => format!(
                "invalid base64: the `=` at offset {at} is out of place (padding comes only at \
                 the end, one or two of them, to make the length a multiple of 4)"
            ),
            DecodeError::InvalidByte(at, byte) => format!(
                "invalid base64: {} at offset {at} is not a base64 character (A-Z, a-z, 0-9, +, /)",
                symbol(byte)
            ),
            DecodeError::InvalidLength(_) => format!(
                "invalid base64: {} characters is not a length base64 text can have (4 per 3 bytes, `=`-padded)",
                text.len()
            ),
            DecodeError::InvalidLastSymbol(at, byte) => format!(
                "invalid base64: {} at offset {at} ends the text with bits that encode nothing (truncated or corrupt?)",
                symbol(byte)
            ),
            DecodeError::InvalidPadding => {
                "invalid base64: the `=` padding at the end is missing or wrong".to_owned()
            }
        })
}

impl Message {
    /// Parses one JSON Lines message. White space around it (Unicode's, as
    /// [`str::trim`] has it), and a byte-order mark before it (as some
    /// editors write at the start of a file), are skipped; an error's place
    /// counts in `text` as given (the end of a message cut short is where
    /// its text ends before the white space after it).
    pub fn from_json_line(text: &str) -> Result<Message, MessageParseError> {
        let trimmed = text.trim();
        let line = trimmed.strip_prefix('\u{feff}').unwrap_or(trimmed);
        Message::from_trimmed_line(line).map_err(|e| e.within(line, text))
    }

    /// [`Message::from_json_line`] of a line trimmed; an error's place counts
    /// in `line`.
    fn from_trimmed_line(line: &str) -> Result<Message, MessageParseError> {
        let parsed: Line<'_> = serde_json::from_str(line).map_err(|e| {
            use serde_json::error::Category;
            // Read again, for the field the error is in (only when there is
            // an error: tracking the path costs every line).
            let field = serde_path_to_error::deserialize::<_, Line<'_>>(
                &mut serde_json::Deserializer::from_str(line),
            )
            .err()
            .map(|e| e.path().to_string())
            .unwrap_or_default();
            let holds = match line.trim_start().as_bytes().first() {
                Some(b'{') | None => None,
                Some(b'[') => Some("an array"),
                Some(b'"') => Some("a string"),
                Some(b't' | b'f') => Some("a boolean"),
                Some(b'n') => Some("null"),
                Some(b'-' | b'0'..=b'9') => Some("a number"),
                Some(_) => None,
            };
            match (e.classify(), holds) {
                (Category::Syntax | Category::Eof, _) => {
                    MessageParseError::json("not valid JSON: ", &e, line, line)
                }
                (_, Some(holds)) => MessageParseError::new(format!(
                    "a message is a JSON object ({{\"topic\": …, \"payload\": …}}); this is {holds}"
                )),
                // A value of the wrong type: the field it is in (unless the
                // text names it: an unknown or repeated field).
                _ if !field.is_empty()
                    && field != "."
                    && !e.to_string().contains(&format!("`{field}`")) =>
                {
                    MessageParseError::json(&format!("field `{field}`: "), &e, line, line)
                }
                _ => MessageParseError::json("", &e, line, line),
            }
        })?;
        let payload = match (parsed.payload, parsed.payload_base64) {
            (Some(_), Some(_)) => {
                return Err(MessageParseError::new(
                    "both `payload` and `payload_base64` are given; use one",
                ))
            }
            (None, None) => {
                return Err(MessageParseError::new(
                    "missing field `payload` (or `payload_base64`)",
                ))
            }
            (Some(raw), None) => value_bytes(raw)
                .map_err(|e| MessageParseError::json("field `payload`: ", &e, raw.get(), line))?,
            (None, Some(text)) => from_base64(&text)
                .map_err(|e| MessageParseError::new(format!("field `payload_base64`: {e}")))?,
        };
        let key = match (parsed.key, parsed.key_base64) {
            (Some(_), Some(_)) => {
                return Err(MessageParseError::new(
                    "both `key` and `key_base64` are given; use one",
                ))
            }
            (Some(raw), None) if raw.get() != "null" => Some(
                value_bytes(raw)
                    .map_err(|e| MessageParseError::json("field `key`: ", &e, raw.get(), line))?,
            ),
            (None, Some(text)) => Some(
                from_base64(&text)
                    .map_err(|e| MessageParseError::new(format!("field `key_base64`: {e}")))?,
            ),
            _ => None,
        };
        Ok(Message {
            topic: parsed.topic,
            key,
            headers: parsed.headers.unwrap_or_default(),
            payload,
            timestamp_ms: parsed.timestamp_ms,
        })
    }
}

impl Message {
    /// The message as one JSON Lines line (no newline), which
    /// [`Message::from_json_line`] reads back equal.
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(64 + self.payload.len() * 4 / 3);
        out.push_str("{\"topic\":");
        push_json_string(&mut out, &self.topic);
        if let Some(key) = &self.key {
            push_bytes_field(&mut out, "key", key, false);
        }
        if !self.headers.is_empty() {
            out.push_str(",\"headers\":{");
            for (i, (name, value)) in self.headers.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, name);
                out.push(':');
                push_json_string(&mut out, value);
            }
            out.push('}');
        }
        push_bytes_field(&mut out, "payload", &self.payload, true);
        if let Some(ms) = self.timestamp_ms {
            out.push_str(",\"timestamp_ms\":");
            out.push_str(&ms.to_string());
        }
        out.push('}');
        out
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a string to JSON does not fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// `,"name":…`: compact JSON text as itself (payload only), UTF-8 as a
/// string, anything else as `name_base64`.
fn push_bytes_field(out: &mut String, name: &str, bytes: &[u8], json: bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) if json && is_compact_json(text) => {
            out.push_str(&format!(",\"{name}\":"));
            out.push_str(text);
        }
        Ok(text) => {
            out.push_str(&format!(",\"{name}\":"));
            push_json_string(out, text);
        }
        Err(_) => {
            out.push_str(&format!(",\"{name}_base64\":\""));
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push('"');
        }
    }
}

/// Whether `text` is one JSON value other than a string, without whitespace
/// outside strings, that a strict JSON reader takes too: what `payload`
/// reads back as exactly these bytes, and what every consumer of a result
/// reads. JSON nested past [`MAX_PAYLOAD_DEPTH`], or with a number past a
/// double's range or a lone surrogate escape (which strict readers refuse,
/// `serde_json`'s `Value` among them), or with [`RAW_VALUE_KEY`], is
/// written as a string.
fn is_compact_json(text: &str) -> bool {
    !text.starts_with('"')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        && match strict_reading(text) {
            Reading::Spaced | Reading::TooDeep => false,
            Reading::Sure => true,
            Reading::Maybe => serde_json::from_str::<StrictlyRead>(text).is_ok(),
        }
}

/// Reads JSON as `serde_json`'s `Value` does (numbers in a double's range,
/// string escapes decoded, its nesting limit) and keeps nothing: what
/// `IgnoredAny` skips unchecked, and a `Value` tree (about 32 bytes a value,
/// an answer's payload of up to 16 MiB) would hold.
struct StrictlyRead;

impl<'de> Deserialize<'de> for StrictlyRead {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictlyRead)
    }
}

impl<'de> Visitor<'de> for StrictlyRead {
    type Value = StrictlyRead;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(StrictlyRead)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<StrictlyRead>()?.is_some() {}
        Ok(StrictlyRead)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_key::<StrictKey>()?.is_some() {
            map.next_value::<StrictlyRead>()?;
        }
        Ok(StrictlyRead)
    }
}

/// The key `serde_json`'s `Value` (with its `raw_value` feature, on in this
/// workspace) takes for raw JSON text: an object whose first key it is is
/// refused, or read as the JSON its string holds — another value.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// A key [`StrictlyRead`] takes: any but [`RAW_VALUE_KEY`] (anywhere in
/// an object: stricter than `Value`, which reads only a first one so).
struct StrictKey;

impl<'de> Deserialize<'de> for StrictKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictKey)
    }
}

impl Visitor<'_> for StrictKey {
    type Value = StrictKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self, E> {
        if key == RAW_VALUE_KEY {
            return Err(E::custom("the key serde_json reserves for raw JSON"));
        }
        Ok(StrictKey)
    }
}

/// The deepest a payload written as JSON is nested: a strict reader's limit
/// (`serde_json`'s 128) less room for what holds it (a line's object;
/// `serve`'s answer, four deep).
const MAX_PAYLOAD_DEPTH: usize = 100;

/// How a strict reader takes valid JSON text.
enum Reading {
    /// With whitespace outside strings: not as a payload is written.
    Spaced,
    /// Nested past [`MAX_PAYLOAD_DEPTH`].
    TooDeep,
    /// No number with an exponent or of more than 300 digits, no `\u`
    /// escape of a surrogate, no `$` (nor its escape): it reads.
    Sure,
    /// It may not (a number past a double's range, a lone surrogate,
    /// [`RAW_VALUE_KEY`]).
    Maybe,
}

fn strict_reading(text: &str) -> Reading {
    let bytes = text.as_bytes();
    let (mut depth, mut digits, mut in_string, mut sure) = (0usize, 0usize, false, true);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => {
                    if bytes.get(i + 1) == Some(&b'u')
                        && matches!(bytes.get(i + 2..i + 6), Some([b'd' | b'D', ..] | b"0024"))
                    {
                        sure = false;
                    }
                    i += 1;
                }
                b'"' => in_string = false,
                b'$' => sure = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_PAYLOAD_DEPTH {
                        return Reading::TooDeep;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                // A number's exponent (valid JSON has one only after a
                // digit; `true` and `false` have an `e` too).
                b'e' | b'E' if i > 0 && bytes[i - 1].is_ascii_digit() => sure = false,
                b' ' | b'\t' | b'\n' | b'\r' => return Reading::Spaced,
                _ => {}
            }
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            sure &= digits <= 300;
        }
        i += 1;
    }
    if sure {
        Reading::Sure
    } else {
        Reading::Maybe
    }
}

/// The bytes a JSON value stands for: a string's UTF-8 bytes, or any other value's
/// JSON text without the whitespace outside strings.
fn value_bytes(raw: &RawValue) -> Result<Bytes, serde_json::Error> {
    let text = raw.get();
    if text.starts_with('"') {
        let s: String = serde_json::from_str(text)?;
        Ok(Bytes::from(s))
    } else {
        Ok(Bytes::from(compact_json(text)))
    }
}

/// Removes the whitespace outside strings from valid JSON text.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers = Headers::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    match value {
                        serde_json::Value::String(value) => headers.push(name, value),
                        other => {
                            return Err(de::Error::custom(format_args!(
                                "header {name:?} must have a string value, not {other}"
                            )))
                        }
                    }
                }
                Ok(headers)
            }
        }
        d.deserialize_map(HeadersVisitor)
    }
}

impl Message {
    /// A batch of messages: a JSON array of message objects, or JSON Lines
    /// (blank lines skipped). A batch of more than `max` messages is refused
    /// before any is parsed; the first message that does not parse is named
    /// (`message i` counting from 0 in an array, `line n` counting from 1),
    /// and a place the JSON reader gives counts in `body`, not in the message.
    pub fn batch_from_json(body: &str, max: usize) -> Result<Vec<Message>, BatchError> {
        let too_many = |count| BatchError::TooMany { count, max };
        // A byte-order mark before the batch is skipped, as before a line.
        let text = body.strip_prefix('\u{feff}').unwrap_or(body);
        // What is held before the count is known is at most `max` entries:
        // the rest are counted, not kept (a body of millions of tiny lines
        // refused for their number took ten times its size otherwise).
        if text.trim_start().starts_with('[') {
            let mut reader = serde_json::Deserializer::from_str(text);
            let items = (&mut reader)
                .deserialize_seq(AtMost(max))
                // Nothing but white space after the array.
                .and_then(|items| reader.end().map(|()| items))
                .map_err(|e| {
                    let context = "the batch is not a JSON array of messages: ";
                    BatchError::Invalid(
                        MessageParseError::json(context, &e, text, body).to_string(),
                    )
                })?
                .map_err(too_many)?;
            items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    Message::from_json_line(raw.get()).map_err(|e| {
                        BatchError::Invalid(format!("message {i}: {}", e.within(raw.get(), body)))
                    })
                })
                .collect()
        } else {
            let mut lines = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty());
            let kept: Vec<(usize, &str)> = lines.by_ref().take(max).collect();
            let more = lines.count();
            if more > 0 {
                return Err(too_many(max + more));
            }
            kept.into_iter()
                .map(|(i, line)| {
                    Message::from_json_line(line).map_err(|e| {
                        BatchError::Invalid(format!("line {}: {}", i + 1, e.within(line, body)))
                    })
                })
                .collect()
        }
    }
}

/// A JSON array's first `max` elements, as raw text; past them, how many it
/// has in all (`Err`), counted without keeping them.
struct AtMost(usize);

impl<'de> Visitor<'de> for AtMost {
    type Value = Result<Vec<&'de RawValue>, usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of messages")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while items.len() < self.0 {
            match seq.next_element::<&'de RawValue>()? {
                Some(item) => items.push(item),
                None => return Ok(Ok(items)),
            }
        }
        let mut more = 0;
        while seq.next_element::<de::IgnoredAny>()?.is_some() {
            more += 1;
        }
        Ok(if more == 0 {
            Ok(items)
        } else {
            Err(self.0 + more)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base64_is_said_in_words() {
        let said = |text: &str| from_base64(text).unwrap_err();
        assert_eq!(
            from_base64(" AAEC/w== ").unwrap(),
            Bytes::from_static(&[0, 1, 2, 255])
        );
        assert_eq!(
            said("%AAA"),
            "invalid base64: `%` at offset 0 is not a base64 character (A-Z, a-z, 0-9, +, /)"
        );
        assert!(said("A\u{1}AA").contains("byte 0x01 at offset 1"));
        assert!(said("AA=A").contains("the `=` at offset 2 is out of place"));
        // Padding too long, at the end: the same words (no group needs it).
        assert!(said("AAAA=").contains("the `=` at offset 4 is out of place"));
        assert!(said("AA===").contains("is out of place"));
        assert!(said("AAAAA").contains("5 characters is not a length"));
        assert!(said("AB==").contains("`B` at offset 1 ends the text with bits"));
        assert!(said("AA").contains("padding at the end is missing or wrong"));
        let line = r#"{"topic":"t","payload_base64":"%"}"#;
        assert!(Message::from_json_line(line)
            .unwrap_err()
            .to_string()
            .starts_with("field `payload_base64`: invalid base64: `%` at offset 0"));
    }

    #[test]
    fn a_byte_order_mark_before_a_line_is_skipped() {
        let line = r#"{"topic":"t","payload":"p"}"#;
        assert_eq!(
            Message::from_json_line(&format!("\u{feff}{line}")).unwrap(),
            Message::from_json_line(line).unwrap()
        );
        // Only before the line: inside it, it is what it always was.
        assert!(Message::from_json_line(r#"{"topic":"t","payload":"p"}\u{feff}"#).is_err());
        // And before a batch, an array as JSON Lines.
        for batch in [format!("[{line},{line}]"), format!("{line}\n{line}\n")] {
            assert_eq!(
                Message::batch_from_json(&format!("\u{feff}{batch}"), 10).unwrap(),
                Message::batch_from_json(&batch, 10).unwrap(),
                "{batch}"
            );
        }
    }

    #[test]
    fn a_batch_is_an_array_or_json_lines_and_its_limit_comes_first() {
        let array = r#"[{"topic":"a","payload":1}, {"topic":"b","payload":"x"}]"#;
        let lines = "{\"topic\":\"a\",\"payload\":1}\n\n{\"topic\":\"b\",\"payload\":\"x\"}\n";
        for text in [array, lines] {
            let batch = Message::batch_from_json(text, 2).unwrap();
            assert_eq!(batch, [Message::new("a", "1"), Message::new("b", "x")]);
            assert_eq!(
                Message::batch_from_json(text, 1),
                Err(BatchError::TooMany { count: 2, max: 1 })
            );
        }
        let bad = |text| match Message::batch_from_json(text, 9) {
            Err(BatchError::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(bad(r#"[{"topic":"a","payload":1}, {"topic":7}]"#).starts_with("message 1: "));
        assert!(
            bad("{\"topic\":\"a\",\"payload\":1}\n\nnope").starts_with("line 3: not valid JSON")
        );
        assert!(bad("[1,").starts_with("the batch is not a JSON array of messages"));
        assert!(bad("[] x").starts_with("the batch is not a JSON array of messages"));
        // Past the limit, every message is counted, none kept; a batch of
        // exactly the limit is taken. (An element past the limit is read
        // only as JSON: the count of a batch that is also malformed there
        // is its error.)
        let message = r#"{"topic":"t","payload":"p"}"#;
        for count in [3, 4, 1000] {
            let array = format!("[{}]", vec![message; count].join(","));
            let lines = vec![message; count].join("\n \n");
            for text in [array, lines] {
                let taken = Message::batch_from_json(&text, count).unwrap();
                assert_eq!(taken.len(), count);
                assert_eq!(
                    Message::batch_from_json(&text, 2),
                    Err(BatchError::TooMany { count, max: 2 })
                );
            }
        }
        assert!(bad("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ]").starts_with("the batch is not"));
        assert_eq!(
            Message::batch_from_json("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, {}]", 9),
            Err(BatchError::TooMany { count: 11, max: 9 })
        );
    }

    fn parse(line: &str) -> Message {
        Message::from_json_line(line).unwrap()
    }

    fn error(line: &str) -> String {
        Message::from_json_line(line).unwrap_err().to_string()
    }

    /// A value of the wrong type is said with the field it is in.
    #[test]
    fn a_type_error_names_its_field() {
        for (line, starts) in [
            (
                r#"{"topic": 5, "payload": 1}"#,
                "field `topic`: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"topic": "t", "payload": 1, "timestamp_ms": 1.5}"#,
                "field `timestamp_ms`: invalid type: floating point `1.5`, expected i64",
            ),
            (
                r#"{"topic": "t", "payload_base64": 5}"#,
                "field `payload_base64`: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"topic": "t", "payload": 1, "headers": {"h": 1}}"#,
                "field `headers`: header \"h\" must have a string value, not 1",
            ),
            (
                r#"{"topic": "t", "payload": 1, "headers": []}"#,
                "field `headers`: invalid type: sequence",
            ),
        ] {
            let said = error(line);
            assert!(said.starts_with(starts), "{line}: {said}");
        }
        // Not a field's: the line's own.
        assert!(error(r#"{"topic": "t"}"#).starts_with("missing field `payload`"));
        let unknown = error(r#"{"topic": "t", "payload": 1, "x": 2}"#);
        assert!(unknown.starts_with("unknown field `x`"), "{unknown}");
        let twice = error(r#"{"topic": "t", "payload": 1, "topic": "u"}"#);
        assert!(twice.starts_with("duplicate field `topic`"), "{twice}");
        assert!(error(r#"{"topic": "t", "payload": 1} x"#)
            .starts_with("not valid JSON: trailing characters"));
    }

    /// The place the JSON reader gives, " at line L column C" (or none).
    fn place(said: &str) -> Option<(usize, usize)> {
        let (_, place) = said.rsplit_once(" at line ")?;
        let (line, column) = place.split_once(" column ")?;
        Some((line.parse().ok()?, column.parse().ok()?))
    }

    /// An error's place counts in the text given: the line, white space and
    /// byte-order mark included, or a batch's whole body — not the field's
    /// value or the message read on its own. Where `serde_json` finds the
    /// fault reading the whole text as a value, the place is its place (but
    /// for a text cut short: white space after it is not read).
    #[test]
    fn an_error_is_placed_in_the_text_given() {
        let said_by_serde = |text: &str| {
            let e = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
            Some((e.line(), e.column()))
        };
        for line in [
            r#"{"topic":"t","payload":"ab\ud800"}"#,
            r#"{"topic":"t","payload":"x","key":"\udc00"}"#,
            r#"  {"topic":"t","payload":"ab\ud800"}  "#,
            "\u{feff}{\"topic\":\"t\",\"payload\":\"\\udc00\"}",
            r#" {"topic":"t","payload":[1, 2"#,
        ] {
            let text = line.trim_start_matches('\u{feff}');
            let expected = said_by_serde(text).map(|(l, c)| (l, c + line.len() - text.len()));
            assert_eq!(place(&error(line)), expected, "{line}: {}", error(line));
        }
        // A fault serde_json would not find in a value: the message read on
        // its own, shifted to where the message is.
        let message = r#"{"topic": 7, "payload": 1}"#;
        let (_, column) = place(&error(message)).unwrap();
        let array = format!("[\n  {{\"topic\": \"a\", \"payload\": 1}},\n  {message}\n]");
        let said = Message::batch_from_json(&array, 10)
            .unwrap_err()
            .to_string();
        assert!(
            said.starts_with("message 1: field `topic`: invalid type"),
            "{said}"
        );
        assert_eq!(place(&said), Some((3, 2 + column)), "{said}");
        let lines = format!("{{\"topic\": \"a\", \"payload\": 1}}\n\n {message}\n");
        let said = Message::batch_from_json(&lines, 10)
            .unwrap_err()
            .to_string();
        assert!(said.starts_with("line 3: field `topic`"), "{said}");
        assert_eq!(place(&said), Some((3, 1 + column)), "{said}");
        // Before a batch, the byte-order mark's three bytes count too.
        let said = Message::batch_from_json(&format!("\u{feff}[{message}]"), 10)
            .unwrap_err()
            .to_string();
        assert_eq!(place(&said), Some((1, 4 + column)), "{said}");
        // A message's escape error in an array, and the array's own error,
        // where serde_json places them reading the body.
        for body in [
            "[\n {\"topic\": \"a\", \"payload\": 1},\n {\"topic\": \"b\", \"payload\": \"\\ud800\"}]",
            "[\n {\"topic\": \"a\", \"payload\": 1},\n {\"topic\": \"b\", \"payload\": 1]",
        ] {
            let said = Message::batch_from_json(body, 10).unwrap_err().to_string();
            assert_eq!(place(&said), said_by_serde(body), "{body}: {said}");
        }
        // No place where the reader gives none.
        assert_eq!(place(&error(r#"{"topic": "t"}"#)), None);
    }

    /// A payload a strict JSON reader refuses (nested past 100, a number
    /// past a double's range, a lone surrogate escape) is written as a
    /// string, which reads back as the same bytes; one it takes stays JSON.
    /// Either way the line reads in a strict reader.
    #[test]
    fn json_a_strict_reader_refuses_is_written_as_a_string() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        let (deep, fine) = (nested(MAX_PAYLOAD_DEPTH + 1), nested(MAX_PAYLOAD_DEPTH));
        let (huge, large) = (format!("1{}", "0".repeat(309)), "9".repeat(301));
        for (payload, as_json) in [
            (deep.as_str(), false),
            (fine.as_str(), true),
            ("1e400", false),
            ("[1e300,-2.5E-3,{\"e\":\"E\"}]", true),
            (huge.as_str(), false),
            (large.as_str(), true),
            (r#"{"a":"\ud800"}"#, false),
            (r#"{"a":"\ud83d\ude00 \u00e9"}"#, true),
            (r#"[true,false,{"e":null}]"#, true),
            ("[1, 2]", false),
            (r#"{"$serde_json::private::RawValue":"{\"x\":2}"}"#, false),
            (r#"{"\u0024serde_json::private::RawValue":1}"#, false),
            (r#"{"$":"\u0024"}"#, true),
        ] {
            let message = Message::new("t", payload.to_owned());
            let line = message.to_json_line();
            let written_as_json = line.contains(&format!(r#""payload":{payload}"#));
            assert_eq!(written_as_json, as_json, "{line:.80}");
            assert_eq!(Message::from_json_line(&line).unwrap(), message);
            serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
        // Booleans (their `e`s are no exponent) are decided by the scan
        // alone, with no second reading.
        assert!(matches!(
            strict_reading(r#"[true,false,{"e":1,"E":"1e400"}]"#),
            Reading::Sure
        ));
    }

    #[test]
    fn payload_object_is_compact_text_in_written_order() {
        let m = parse(r#"{"topic":"t","payload": { "b" : [1, 2.50 , "x y\" z"], "a":null }}"#);
        assert_eq!(&m.payload[..], br#"{"b":[1,2.50,"x y\" z"],"a":null}"#);
    }

    #[test]
    fn payload_scalars_and_strings() {
        assert_eq!(
            &parse(r#"{"topic":"t","payload":"a\nb"}"#).payload[..],
            b"a\nb"
        );
        assert_eq!(
            &parse(r#"{"topic":"t","payload":null}"#).payload[..],
            b"null"
        );
        assert_eq!(&parse(r#"{"topic":"t","payload":1e3}"#).payload[..], b"1e3");
        assert_eq!(
            &parse(r#"{"topic":"t","payload":true}"#).payload[..],
            b"true"
        );
        assert_eq!(
            &parse(r#"{"topic":"t","payload_base64":"AAEC/w=="}"#).payload[..],
            [0, 1, 2, 255]
        );
    }

    #[test]
    fn key_headers_and_timestamp() {
        let m = parse(
            r#"{"topic":"t","key":"k1","headers":{"a":"1","b":"2","a":"3"},"payload":"","timestamp_ms":-5}"#,
        );
        assert_eq!(m.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(m.headers.len(), 3);
        assert_eq!(m.headers.get("a"), Some("3"));
        assert_eq!(m.timestamp_ms, Some(-5));
        let m = parse(r#"{"topic":"t","key":null,"payload":""}"#);
        assert_eq!(m.key, None);
        assert!(m.headers.is_empty());
        assert_eq!(m.timestamp_ms, None);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(error(r#"{"payload":""}"#).contains("missing field `topic`"));
        assert!(error(r#"{"topic":"t"}"#).contains("missing field `payload`"));
        assert!(error(r#"{"topic":"t","payload":"","payload_base64":""}"#).contains("both"));
        assert!(error(r#"{"topic":"t","payload":"","extra":1}"#).contains("unknown field `extra`"));
        assert!(error(r#"{"topic":"t","payload":"","headers":{"h":1}}"#).contains("header \"h\""));
        assert!(
            error(r#"{"topic":"t","payload":"","timestamp_ms":1.5}"#).contains("floating point")
        );
        assert!(error(r#"{"topic":"t","payload_base64":"!!"}"#).contains("payload_base64"));
        assert!(error(r#"{"topic":"t","payload":"#).contains("column"));
        assert!(error("").contains("EOF"));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Every message written as a line reads back equal.
        #[test]
        fn written_lines_read_back_equal(
            topic in ".{1,8}",
            key in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8)),
            headers in proptest::collection::vec(("[a-c]{1,2}", ".{0,4}"), 0..4),
            payload in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
                json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                json_value().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
            ],
            timestamp_ms in proptest::option::of(proptest::prelude::any::<i64>()),
        ) {
            let message = Message {
                topic,
                key: key.map(Bytes::from),
                headers: headers.into_iter().collect(),
                payload: Bytes::from(payload),
                timestamp_ms,
            };
            let line = message.to_json_line();
            proptest::prop_assert_eq!(Message::from_json_line(&line).unwrap(), message, "{}", line);
        }

        /// Whether a payload is written as JSON agrees with `serde_json`'s
        /// `Value` (the reference strict reader) and the compact form on
        /// arrays of numbers near and past a double's range, strings with
        /// surrogate escapes, keys and white space.
        #[test]
        fn a_payload_is_json_when_a_strict_reader_takes_it(
            items in proptest::collection::vec(
                proptest::prop_oneof![
                    "-?[0-9]{1,3}(\\.[0-9]{1,2})?([eE][+-]?[0-9]{1,3})?",
                    "[1-9][0-9]{295,315}",
                    r#""(\\u[dD][89a-fA-F][0-9a-f]{2}|\\u00e9|x| ){0,3}""#,
                    "\\[\\]|\\{\\}|null|true|false",
                    r#"\{"(e|\\ud800| |\$serde_json::private::RawValue)": ?(true|1e400)\}"#,
                ],
                0..6,
            ),
            spaced in proptest::bool::ANY,
        ) {
            let text = format!("[{}]", items.join(if spaced { ", " } else { "," }));
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
                let strict = serde_json::from_str::<serde_json::Value>(&text).is_ok()
                    && compact_json(&text) == text;
                proptest::prop_assert_eq!(is_compact_json(&text), strict, "{}", text);
            }
        }

        #[test]
        fn compact_text_parses_to_the_same_value(value in json_value()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let line = format!(r#"{{"topic":"t","payload":{pretty}}}"#);
            let m = parse(&line);
            let text = std::str::from_utf8(&m.payload).unwrap();
            proptest::prop_assert!(!text.contains('\n'));
            if !value.is_string() {
                let back: serde_json::Value = serde_json::from_str(text).unwrap();
                proptest::prop_assert_eq!(back, value);
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ a-z\"\\\\]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z ]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
