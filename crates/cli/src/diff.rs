//! What a module changed in a message: topic, key, headers, payload and
//! timestamp, field by field; a JSON payload down to the values that differ.

use std::collections::HashMap;

use rustmq_etl_core::Message;
use serde::Serialize;
use serde_json::Value;

/// One difference between a message before and after a module.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "field", rename_all = "snake_case")]
pub(crate) enum Change {
    Topic {
        from: String,
        to: String,
    },
    Key {
        from: Option<Shown>,
        to: Option<Shown>,
    },
    /// A header present after and not before (counting repeats).
    HeaderAdded {
        name: String,
        value: String,
    },
    /// A header present before and not after (counting repeats).
    HeaderRemoved {
        name: String,
        value: String,
    },
    /// Headers with the same names and values, in another order.
    HeadersReordered,
    /// A JSON payload's value at `path` (`""` is the whole payload): `from`
    /// is absent if added, `to` if removed.
    Json {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<Value>,
    },
    /// A JSON payload written out anew (other whitespace or number form,
    /// another key order) with the same value.
    JsonRewritten {
        from_bytes: usize,
        to_bytes: usize,
    },
    /// A payload that is not JSON before or after.
    Payload {
        from: Shown,
        to: Shown,
    },
    Timestamp {
        from: Option<i64>,
        to: Option<i64>,
    },
}

/// Every difference between `before` and `after`, in the order topic, key,
/// headers, payload (a JSON object's fields by name: changed and removed ones,
/// then added ones), timestamp. Empty if the messages are equal.
pub(crate) fn diff(before: &Message, after: &Message) -> Vec<Change> {
    let mut changes = Vec::new();
    if before.topic != after.topic {
        changes.push(Change::Topic {
            from: before.topic.clone(),
            to: after.topic.clone(),
        });
    }
    if before.key != after.key {
        changes.push(Change::Key {
            from: before.key.as_deref().map(bytes_text),
            to: after.key.as_deref().map(bytes_text),
        });
    }
    headers(before, after, &mut changes);
    if before.payload != after.payload {
        let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
        match (parse(&before.payload), parse(&after.payload)) {
            (Some(from), Some(to)) if from == to => changes.push(Change::JsonRewritten {
                from_bytes: before.payload.len(),
                to_bytes: after.payload.len(),
            }),
            (Some(from), Some(to)) => json(String::new(), &from, &to, &mut changes),
            _ => changes.push(Change::Payload {
                from: bytes_text(&before.payload),
                to: bytes_text(&after.payload),
            }),
        }
    }
    if before.timestamp_ms != after.timestamp_ms {
        changes.push(Change::Timestamp {
            from: before.timestamp_ms,
            to: after.timestamp_ms,
        });
    }
    changes
}

fn headers(before: &Message, after: &Message, changes: &mut Vec<Change>) {
    let pairs = |m: &Message| -> Vec<(String, String)> {
        m.headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    };
    let (old, new) = (pairs(before), pairs(after));
    if old == new {
        return;
    }
    // A multiset difference, each side in its own order: linear in the
    // headers (a module may answer with tens of thousands of edits).
    let mut after_counts: HashMap<&(String, String), usize> = HashMap::new();
    for pair in &new {
        *after_counts.entry(pair).or_default() += 1;
    }
    let mut before_counts: HashMap<&(String, String), usize> = HashMap::new();
    let mut removed = Vec::new();
    for pair in &old {
        match after_counts.get_mut(pair) {
            Some(n) if *n > 0 => *n -= 1,
            _ => removed.push(pair.clone()),
        }
        *before_counts.entry(pair).or_default() += 1;
    }
    let mut unmatched = Vec::new();
    for pair in &new {
        match before_counts.get_mut(pair) {
            Some(n) if *n > 0 => *n -= 1,
            _ => unmatched.push(pair.clone()),
        }
    }
    if removed.is_empty() && unmatched.is_empty() {
        changes.push(Change::HeadersReordered);
        return;
    }
    for (name, value) in removed {
        changes.push(Change::HeaderRemoved { name, value });
    }
    for (name, value) in unmatched {
        changes.push(Change::HeaderAdded { name, value });
    }
}

fn json(path: String, from: &Value, to: &Value, changes: &mut Vec<Change>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (name, old) in a {
                let at = field_path(&path, name);
                match b.get(name) {
                    Some(new) => json(at, old, new, changes),
                    None => changes.push(Change::Json {
                        path: at,
                        from: Some(old.clone()),
                        to: None,
                    }),
                }
            }
            for (name, new) in b.iter().filter(|(name, _)| !a.contains_key(*name)) {
                changes.push(Change::Json {
                    path: field_path(&path, name),
                    from: None,
                    to: Some(new.clone()),
                });
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                json(format!("{path}[{i}]"), old, new, changes);
            }
        }
        _ => changes.push(Change::Json {
            path,
            from: Some(from.clone()),
            to: Some(to.clone()),
        }),
    }
}

/// `.name`, or `["name"]` when the name is not a plain identifier.
fn field_path(path: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{path}.{name}")
    } else {
        format!("{path}[{}]", Value::from(name))
    }
}

/// Bytes as shown: their text if UTF-8, else their hexadecimal digits, told
/// apart (in JSON a string or `{"hex": …}`; for a person a quoted text or
/// unquoted `0x…` digits), so that the bytes `ff 00` never read as the text
/// "0xff00".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Shown {
    Text(String),
    Hex { hex: String },
}

fn bytes_text(bytes: &[u8]) -> Shown {
    match std::str::from_utf8(bytes) {
        Ok(text) => Shown::Text(text.to_owned()),
        Err(_) => Shown::Hex {
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        },
    }
}

impl Shown {
    /// For a person: the text quoted (cut at 120 characters), or the bytes
    /// as `0x…` digits unquoted, with their count.
    fn show(&self) -> String {
        match self {
            Shown::Text(text) => short(text),
            Shown::Hex { hex } => {
                let bytes = hex.len() / 2;
                let cut = hex.get(..240).unwrap_or(hex);
                let more = if cut.len() < hex.len() { "…" } else { "" };
                format!("0x{cut}{more} ({bytes} bytes, not UTF-8)")
            }
        }
    }
}

/// One change as a line for a person.
pub(crate) fn describe(change: &Change) -> String {
    let optional = |v: &Option<Shown>| v.as_ref().map_or("(none)".to_owned(), Shown::show);
    match change {
        Change::Topic { from, to } => format!("topic      {} → {}", quote(from), quote(to)),
        Change::Key { from, to } => format!("key        {} → {}", optional(from), optional(to)),
        Change::HeaderAdded { name, value } => {
            format!("header   + {}: {}", quote(name), quote(value))
        }
        Change::HeaderRemoved { name, value } => {
            format!("header   - {}: {}", quote(name), quote(value))
        }
        Change::HeadersReordered => "headers    reordered".to_owned(),
        Change::Json { path, from, to } => {
            let path = if path.is_empty() { "(whole)" } else { path };
            match (from, to) {
                (Some(from), Some(to)) => format!("payload    {path}: {from} → {to}"),
                (None, Some(to)) => format!("payload  + {path}: {to}"),
                (Some(from), None) => format!("payload  - {path}: {from}"),
                (None, None) => format!("payload    {path}"),
            }
        }
        Change::JsonRewritten {
            from_bytes,
            to_bytes,
        } => {
            format!("payload    the same JSON value, written anew: {from_bytes} → {to_bytes} bytes")
        }
        Change::Payload { from, to } => format!("payload    {} → {}", from.show(), to.show()),
        Change::Timestamp { from, to } => {
            let ms = |v: &Option<i64>| v.map_or("(none)".to_owned(), |ms| ms.to_string());
            format!("timestamp  {} → {}", ms(from), ms(to))
        }
    }
}

fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// A quoted text, cut at 120 characters.
fn short(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes)", quote(&text[..at]), text.len()),
        None => quote(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(line: &str) -> Message {
        Message::from_json_line(line).unwrap()
    }

    #[test]
    fn equal_messages_have_no_changes() {
        let m = message(r#"{"topic":"a","headers":{"x":"1"},"payload":{"v":1}}"#);
        assert_eq!(diff(&m, &m.clone()), vec![]);
    }

    #[test]
    fn every_field_is_compared() {
        let before = message(
            r#"{"topic":"a","key":"k","headers":{"x":"1","y":"2"},"payload":{"t":20.0,"s":{"id":1},"gone":true,"list":[1,2]},"timestamp_ms":5}"#,
        );
        let after = message(
            r#"{"topic":"b","headers":{"y":"2","z":"3"},"payload":{"t":68.0,"s":{"id":2},"list":[1,3],"unit":"F","odd key":null}}"#,
        );
        let lines: Vec<String> = diff(&before, &after).iter().map(describe).collect();
        assert_eq!(
            lines,
            [
                r#"topic      "a" → "b""#,
                r#"key        "k" → (none)"#,
                r#"header   - "x": "1""#,
                r#"header   + "z": "3""#,
                "payload  - .gone: true",
                "payload    .list[1]: 2 → 3",
                "payload    .s.id: 1 → 2",
                "payload    .t: 20.0 → 68.0",
                r#"payload  + ["odd key"]: null"#,
                r#"payload  + .unit: "F""#,
                "timestamp  5 → (none)",
            ]
        );
    }

    #[test]
    fn the_same_json_written_anew_is_a_change() {
        let before = message(r#"{"topic":"a","payload":{"a":1,"b":[1,2]}}"#);
        let mut after = before.clone();
        after.payload = "{\n  \"b\": [1, 2],\n  \"a\": 1\n}".into();
        let lines: Vec<String> = diff(&before, &after).iter().map(describe).collect();
        assert_eq!(
            lines,
            ["payload    the same JSON value, written anew: 17 → 27 bytes"]
        );
    }

    #[test]
    fn payloads_that_are_not_json_are_shown_as_text_or_bytes() {
        let before = message(r#"{"topic":"a","payload":"hello"}"#);
        let mut after = before.clone();
        after.payload = vec![0xff, 0x00].into();
        assert_eq!(
            diff(&before, &after),
            vec![Change::Payload {
                from: Shown::Text("hello".into()),
                to: Shown::Hex { hex: "ff00".into() }
            }]
        );
        assert_eq!(
            describe(&diff(&before, &after)[0]),
            r#"payload    "hello" → 0xff00 (2 bytes, not UTF-8)"#
        );
        // The text "0xff00" is not the bytes ff 00, for a person or in JSON.
        let mut text = before.clone();
        text.key = Some(b"0xff00".to_vec().into());
        let mut bytes = before.clone();
        bytes.key = Some(vec![0xff, 0x00].into());
        let (text, bytes) = (&diff(&before, &text)[0], &diff(&before, &bytes)[0]);
        assert_eq!(describe(text), r#"key        (none) → "0xff00""#);
        assert_eq!(
            describe(bytes),
            "key        (none) → 0xff00 (2 bytes, not UTF-8)"
        );
        assert_eq!(
            serde_json::to_value(text).unwrap(),
            serde_json::json!({"field": "key", "to": "0xff00", "from": null})
        );
        assert_eq!(
            serde_json::to_value(bytes).unwrap(),
            serde_json::json!({"field": "key", "to": {"hex": "ff00"}, "from": null})
        );
    }

    #[test]
    fn headers_count_repeats_and_notice_a_new_order() {
        let before = message(r#"{"topic":"a","payload":"","headers":{"x":"1","y":"2"}}"#);
        let mut after = before.clone();
        let mut pairs: Vec<(&str, &str)> = before.headers.iter().collect();
        pairs.reverse();
        after.headers = pairs.into_iter().collect();
        assert_eq!(diff(&before, &after), vec![Change::HeadersReordered]);
        // A repeat added, then taken away: counted, not a new order.
        let mut repeated = before.clone();
        repeated.headers.push("x", "1");
        let x = || ("x".to_owned(), "1".to_owned());
        assert_eq!(
            diff(&before, &repeated),
            vec![Change::HeaderAdded {
                name: x().0,
                value: x().1
            }]
        );
        assert_eq!(
            diff(&repeated, &before),
            vec![Change::HeaderRemoved {
                name: x().0,
                value: x().1
            }]
        );
    }

    /// An array that grows or shrinks is one change of the whole array (its
    /// elements are compared one by one only at equal lengths).
    #[test]
    fn an_array_of_another_length_is_a_change() {
        let before = message(r#"{"topic":"a","payload":{"l":[1,2]}}"#);
        for (after, line) in [
            (r#"{"l":[1,2,3]}"#, "payload    .l: [1,2] → [1,2,3]"),
            (r#"{"l":[1]}"#, "payload    .l: [1,2] → [1]"),
        ] {
            let mut changed = before.clone();
            changed.payload = after.into();
            let lines: Vec<String> = diff(&before, &changed).iter().map(describe).collect();
            assert_eq!(lines, [line], "{after}");
        }
    }
}
