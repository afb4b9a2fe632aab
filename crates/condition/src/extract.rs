//! One pass over a JSON payload that keeps only the values some rule asks for.
//!
//! The paths of every `PayloadField` rule form a trie, and the payload is read
//! once for all of them, as selection.md says: the values found at the paths
//! of the payload parsed as JSON. If the payload is not JSON from end to end, no
//! path has a value.
//!
//! The read is `crate::skim`'s pass, which skips members and elements off the
//! trie without storing them, keeps strings without escapes as byte ranges into
//! the payload, and builds `Value`s only for arrays and objects a rule compares
//! whole. Where that pass is unsure (any error, a key with an escape, a
//! surrogate escape, deep nesting, a number near the edge of `f64`'s range,
//! serde_json's raw-value token), the payload is parsed into a
//! `serde_json::Value` ([`PathTrie::extract_from_value`]), which decides.

use std::fmt;
use std::ops::Range;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::path::{JsonPath, PathSegment};
use crate::value::{JsonRef, Num};

/// A value read from the payload at one path.
#[derive(Debug, Clone)]
pub(crate) enum Extracted {
    Null,
    Bool(bool),
    Num(Num),
    /// A string without escapes: its bytes in the payload.
    Span(Range<usize>),
    /// A string with escapes, decoded.
    Owned(String),
    Compound(Value),
}

impl Extracted {
    pub(crate) fn as_ref<'a>(&'a self, payload: &'a [u8]) -> JsonRef<'a> {
        match self {
            Extracted::Null => JsonRef::Null,
            Extracted::Bool(b) => JsonRef::Bool(*b),
            Extracted::Num(n) => JsonRef::Num(*n),
            // The span lies in this payload, between a string's quotes, and
            // was checked as UTF-8 (by the skim, or by serde_json).
            Extracted::Span(r) => {
                JsonRef::Str(std::str::from_utf8(&payload[r.clone()]).unwrap_or(""))
            }
            Extracted::Owned(s) => JsonRef::Str(s),
            Extracted::Compound(v) => JsonRef::Compound(v),
        }
    }

    fn from_value(value: &Value) -> Extracted {
        match value {
            Value::Null => Extracted::Null,
            Value::Bool(b) => Extracted::Bool(*b),
            Value::Number(n) => Extracted::Num(Num::from_json(n)),
            Value::String(s) => Extracted::Owned(s.clone()),
            compound => Extracted::Compound(compound.clone()),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    /// The slot of the path ending here, if one does.
    slot: Option<usize>,
    fields: Vec<(String, usize)>,
    indices: Vec<(usize, usize)>,
    /// Every slot at or below this node.
    subtree: Vec<usize>,
}

/// The paths of a condition set, merged.
#[derive(Debug)]
pub(crate) struct PathTrie {
    nodes: Vec<Node>,
    slots: usize,
}

impl PathTrie {
    pub(crate) fn new() -> Self {
        PathTrie {
            nodes: vec![Node::default()],
            slots: 0,
        }
    }

    /// Adds a path; returns its slot (the same slot for the same path).
    pub(crate) fn insert(&mut self, path: &JsonPath) -> usize {
        let mut node = 0;
        let mut visited = vec![0];
        for segment in path.segments() {
            let next = self.nodes.len();
            let existing = match segment {
                PathSegment::Field(name) => self.nodes[node]
                    .fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|&(_, c)| c),
                PathSegment::Index(i) => self.nodes[node]
                    .indices
                    .iter()
                    .find(|(n, _)| n == i)
                    .map(|&(_, c)| c),
            };
            node = match existing {
                Some(child) => child,
                None => {
                    match segment {
                        PathSegment::Field(name) => {
                            self.nodes[node].fields.push((name.clone(), next))
                        }
                        PathSegment::Index(i) => self.nodes[node].indices.push((*i, next)),
                    }
                    self.nodes.push(Node::default());
                    next
                }
            };
            visited.push(node);
        }
        if let Some(slot) = self.nodes[node].slot {
            return slot;
        }
        let slot = self.slots;
        self.slots += 1;
        self.nodes[node].slot = Some(slot);
        for n in visited {
            self.nodes[n].subtree.push(slot);
        }
        slot
    }

    pub(crate) fn slot_len(&self) -> usize {
        self.slots
    }

    /// Reads `payload` and fills `out` (one entry per slot). Returns whether
    /// the payload is JSON; if it is not, every entry is `None`.
    pub(crate) fn extract(&self, payload: &[u8], out: &mut Vec<Option<Extracted>>) -> bool {
        out.clear();
        out.resize_with(self.slots, || None);
        // JSON text is Unicode: the fast pass checks what it reads; the
        // slow one, the whole payload first.
        if crate::skim::extract(self, payload, out).is_ok() {
            return true;
        }
        match std::str::from_utf8(payload) {
            Ok(text) => self.extract_from_value(text, out),
            Err(_) => {
                out.iter_mut().for_each(|e| *e = None);
                false
            }
        }
    }

    /// [`PathTrie::extract`] by parsing the whole payload into a `Value`: the
    /// slow path, and the plain reference the fast one is tested against.
    pub(crate) fn extract_from_value(&self, text: &str, out: &mut [Option<Extracted>]) -> bool {
        out.iter_mut().for_each(|e| *e = None);
        match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                self.fill_child(0, &value, out);
                true
            }
            Err(_) => false,
        }
    }

    /// The slot of the path ending at `node`, if one does.
    pub(crate) fn slot(&self, node: usize) -> Option<usize> {
        self.nodes[node].slot
    }

    /// The child of `node` for the member named `key`.
    pub(crate) fn field(&self, node: usize, key: &[u8]) -> Option<usize> {
        self.nodes[node]
            .fields
            .iter()
            .find(|(name, _)| name.as_bytes() == key)
            .map(|&(_, c)| c)
    }

    /// The child of `node` for element `index`.
    pub(crate) fn index(&self, node: usize, index: usize) -> Option<usize> {
        self.nodes[node]
            .indices
            .iter()
            .find(|&&(i, _)| i == index)
            .map(|&(_, c)| c)
    }

    /// Forgets every value found at or below `node` (a repeated member
    /// replaces the earlier one whole).
    pub(crate) fn clear_subtree(&self, node: usize, out: &mut [Option<Extracted>]) {
        for &slot in &self.nodes[node].subtree {
            out[slot] = None;
        }
    }

    pub(crate) fn fill_from_value(
        &self,
        node: usize,
        value: &Value,
        out: &mut [Option<Extracted>],
    ) {
        let node = &self.nodes[node];
        for (name, child) in &node.fields {
            if let Some(v) = value.as_object().and_then(|o| o.get(name)) {
                self.fill_child(*child, v, out);
            }
        }
        for (index, child) in &node.indices {
            if let Some(v) = value.as_array().and_then(|a| a.get(*index)) {
                self.fill_child(*child, v, out);
            }
        }
    }

    fn fill_child(&self, child: usize, value: &Value, out: &mut [Option<Extracted>]) {
        if let Some(slot) = self.nodes[child].slot {
            out[slot] = Some(Extracted::from_value(value));
        }
        self.fill_from_value(child, value, out);
    }
}

/// Captures a whole value at the end of a path.
pub(crate) struct Capture {
    base: usize,
    len: usize,
}

impl Capture {
    /// Strings found inside `payload` are kept as ranges into it.
    pub(crate) fn new(payload: &[u8]) -> Capture {
        Capture {
            base: payload.as_ptr() as usize,
            len: payload.len(),
        }
    }
}

impl<'de> Visitor<'de> for Capture {
    type Value = Extracted;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Extracted, E> {
        Ok(Extracted::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Extracted, E> {
        Ok(Extracted::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Extracted, E> {
        Ok(Extracted::Num(Num::Int(n.into())))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Extracted, E> {
        Ok(Extracted::Num(Num::Int(n.into())))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Extracted, E> {
        Ok(Extracted::Num(Num::Float(n)))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Extracted, E> {
        let start = (s.as_ptr() as usize).wrapping_sub(self.base);
        if start <= self.len && s.len() <= self.len - start {
            Ok(Extracted::Span(start..start + s.len()))
        } else {
            Ok(Extracted::Owned(s.to_owned()))
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Extracted, E> {
        Ok(Extracted::Owned(s.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Extracted, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Extracted::Compound)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Extracted, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Extracted::Compound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(paths: &[&str], payload: &str) -> Vec<Option<String>> {
        let mut trie = PathTrie::new();
        let slots: Vec<_> = paths
            .iter()
            .map(|p| trie.insert(&JsonPath::parse(p).unwrap()))
            .collect();
        let mut out = Vec::new();
        trie.extract(payload.as_bytes(), &mut out);
        slots
            .iter()
            .map(|&s| {
                out[s]
                    .as_ref()
                    .map(|e| format!("{:?}", e.as_ref(payload.as_bytes())))
            })
            .collect()
    }

    #[test]
    fn keeps_only_the_named_values() {
        let got = extract(
            &["$.a", "$.b[1]", "$.c.d", "$.e", "$.missing", "$.s"],
            r#"{"a": 1, "b": [true, "x"], "c": {"d": null, "z": [1,2]}, "e": [1, {"f": 2}], "s": "q\"uote"}"#,
        );
        assert_eq!(
            got,
            [
                Some("Num(Int(1))".into()),
                Some(r#"Str("x")"#.into()),
                Some("Null".into()),
                Some(r#"Compound(Array [Number(1), Object {"f": Number(2)}])"#.into()),
                None,
                Some(r#"Str("q\"uote")"#.into()),
            ]
        );
    }

    #[test]
    fn the_last_repeated_member_wins() {
        let got = extract(&["$.a.b", "$.a"], r#"{"a": {"b": 1}, "a": {"c": 2}}"#);
        assert_eq!(got[0], None);
        assert!(got[1].as_ref().unwrap().contains("\"c\""));
        let got = extract(&["$.a.b"], r#"{"a": 5, "a": {"b": 1}}"#);
        assert_eq!(got[0], Some("Num(Int(1))".into()));
    }

    #[test]
    fn nested_paths_under_a_whole_value() {
        let got = extract(&["$.a", "$.a.b[0]", "$"], r#"{"a": {"b": ["x"]}}"#);
        assert_eq!(got[1], Some(r#"Str("x")"#.into()));
        assert!(got[2].as_ref().unwrap().starts_with("Compound(Object"));
    }

    #[test]
    fn a_payload_that_is_not_json_has_no_values() {
        for payload in [
            r#"{"a": 1} x"#,
            r#"{"a": 1"#,
            "",
            "nope",
            r#"{"a": 1, "b": [}"#,
        ] {
            assert_eq!(extract(&["$.a"], payload), [None], "{payload:?}");
        }
    }
}
