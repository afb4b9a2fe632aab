//! One pass over a JSON payload that keeps only the values some rule asks for.
//!
//! The paths of every `PayloadField` rule form a trie. The payload is read once by
//! `serde_json`; members and elements off the trie are skipped without being
//! stored, strings without escapes are kept as byte ranges into the payload, and
//! only arrays and objects a rule compares whole are built as `Value`s. A repeated
//! object member replaces the earlier one, as when parsing into a `Value`. If the
//! payload is not JSON from end to end, no path has a value.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
            // The span was a `&str` borrowed from this payload: valid UTF-8.
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

    /// Reads `payload` once and fills `out` (one entry per slot). Returns whether
    /// the payload is JSON; if it is not, every entry is `None`.
    pub(crate) fn extract(&self, payload: &[u8], out: &mut Vec<Option<Extracted>>) -> bool {
        out.clear();
        out.resize_with(self.slots, || None);
        // JSON text is Unicode: check the whole payload once, up front, so that
        // neither kept nor skipped strings need checking again.
        let Ok(text) = std::str::from_utf8(payload) else {
            return false;
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = NodeSeed {
            trie: self,
            node: 0,
            out,
            base: payload.as_ptr() as usize,
            len: payload.len(),
        };
        let is_json = seed.deserialize(&mut de).and_then(|()| de.end()).is_ok();
        if !is_json {
            out.iter_mut().for_each(|e| *e = None);
        }
        is_json
    }

    fn fill_from_value(&self, node: usize, value: &Value, out: &mut [Option<Extracted>]) {
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

struct NodeSeed<'t, 'o> {
    trie: &'t PathTrie,
    node: usize,
    out: &'o mut [Option<Extracted>],
    base: usize,
    len: usize,
}

impl NodeSeed<'_, '_> {
    fn child(&mut self, node: usize) -> NodeSeed<'_, '_> {
        for &slot in &self.trie.nodes[node].subtree {
            self.out[slot] = None;
        }
        NodeSeed {
            trie: self.trie,
            node,
            out: self.out,
            base: self.base,
            len: self.len,
        }
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let node = &self.trie.nodes[self.node];
        match node.slot {
            Some(slot) => {
                let value = d.deserialize_any(Capture {
                    base: self.base,
                    len: self.len,
                })?;
                if let Extracted::Compound(v) = &value {
                    self.trie.fill_from_value(self.node, v, self.out);
                }
                self.out[slot] = Some(value);
                Ok(())
            }
            None => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let fields = &self.trie.nodes[self.node].fields;
        while let Some(child) = map.next_key_seed(Key(fields))? {
            match child {
                Some(child) => map.next_value_seed(self.child(child))?,
                None => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let indices = &self.trie.nodes[self.node].indices;
        for i in 0.. {
            let more = match indices.iter().find(|(n, _)| *n == i) {
                Some(&(_, child)) => seq.next_element_seed(self.child(child))?.is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads an object key and answers which child, if any, it names.
struct Key<'t>(&'t [(String, usize)]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        // Bytes, not str: names compare as bytes, with no second UTF-8 check.
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        Ok(self
            .0
            .iter()
            .find(|(name, _)| name.as_bytes() == key)
            .map(|&(_, c)| c))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(key.as_bytes())
    }
}

/// Captures a whole value at the end of a path.
struct Capture {
    base: usize,
    len: usize,
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
