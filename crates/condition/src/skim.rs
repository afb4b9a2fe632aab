//! The fast path of [`PathTrie::extract`]: one pass over the payload that
//! checks the JSON grammar itself and hands serde_json only the values some
//! path ends at.
//!
//! It answers as parsing the whole payload into a `serde_json::Value` would,
//! or not at all: whatever it does not decide itself — a key with an escape,
//! an object whose first key is serde_json's raw-value token, a
//! surrogate escape (serde_json refuses one that does not pair up), nesting
//! deeper than [`MAX_DEPTH`], a number that might not fit an `f64` — and any
//! error make it answer [`Unsure`], and the caller parses the payload into a
//! `Value` ([`PathTrie::extract_from_value`]), which decides. So a payload that
//! is not JSON costs two reads; one that is, one.

use std::ops::Range;

use crate::extract::{Capture, Extracted, PathTrie};
use crate::value::Num;

/// Give the payload to serde_json.
#[derive(Debug)]
pub(crate) struct Unsure;

/// Nesting this pass handles: well below serde_json's limit of 128 levels,
/// which it counts from the payload's root where a value read on its own
/// starts a new count.
const MAX_DEPTH: u32 = 100;

/// The key by which serde_json marks a raw value (`serde_json::raw`).
const RAW_VALUE_TOKEN: &[u8] = b"$serde_json::private::RawValue";

/// Digits before a number's point that this pass takes (see `Skim::number`).
const SURE_DIGITS: usize = 100;

/// The largest exponent (either sign) this pass takes: with at most
/// [`SURE_DIGITS`] digits before the point, below `f64::MAX`'s 1.8e308.
const SURE_EXPONENT: u32 = 200;

/// Fills `out` (emptied, one entry per slot, by the caller) from `payload`.
/// UTF-8 is checked inside strings only, run by run of non-ASCII bytes: the
/// grammar admits no other byte outside them (so a payload this pass takes is
/// UTF-8 from end to end), and a character's bytes are all non-ASCII (so a
/// run holds whole characters). Checking the whole payload first cost 131
/// engine instructions a message for design.md's first pipeline.
pub(crate) fn extract(
    trie: &PathTrie,
    payload: &[u8],
    out: &mut [Option<Extracted>],
) -> Result<(), Unsure> {
    let mut skim = Skim {
        bytes: payload,
        at: 0,
        depth: 0,
        trie,
        out,
    };
    skim.space();
    skim.value(Some(0))?;
    skim.space();
    if skim.at == skim.bytes.len() {
        Ok(())
    } else {
        Err(Unsure)
    }
}

struct Skim<'a, 'o> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
    trie: &'a PathTrie,
    out: &'o mut [Option<Extracted>],
}

impl Skim<'_, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Unsure> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// The value at the cursor (white space before it already skipped), at
    /// trie node `node` (`None`: off the trie).
    fn value(&mut self, node: Option<usize>) -> Result<(), Unsure> {
        let Some(node) = node else {
            return self.skip();
        };
        if let Some(slot) = self.trie.slot(node) {
            let value = self.capture()?;
            if let Extracted::Compound(v) = &value {
                self.trie.fill_from_value(node, v, self.out);
            }
            self.out[slot] = Some(value);
            return Ok(());
        }
        match self.peek() {
            Some(b'{') => self.object(Some(node)),
            Some(b'[') => self.array(Some(node)),
            _ => self.skip(),
        }
    }

    /// The value at the cursor, as a rule sees it: strings without escapes,
    /// literals and small integers read here, the rest by serde_json from the
    /// value's own bytes.
    fn capture(&mut self) -> Result<Extracted, Unsure> {
        let start = self.at;
        match self.peek().ok_or(Unsure)? {
            b'"' => {
                let (range, escaped) = self.string()?;
                if !escaped {
                    return Ok(Extracted::Span(range));
                }
            }
            b't' => return self.literal(b"true").map(|()| Extracted::Bool(true)),
            b'f' => return self.literal(b"false").map(|()| Extracted::Bool(false)),
            b'n' => return self.literal(b"null").map(|()| Extracted::Null),
            b'-' | b'0'..=b'9' => {
                self.number()?;
                // At most 18 digits: an `i64`, as serde_json reads it (but
                // `-0`, which it reads as a float).
                // A number's bytes are ASCII.
                let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| Unsure)?;
                if text.len() <= 18
                    && text != "-0"
                    && text.bytes().all(|b| b == b'-' || b.is_ascii_digit())
                {
                    if let Ok(n) = text.parse::<i64>() {
                        return Ok(Extracted::Num(Num::Int(n.into())));
                    }
                }
            }
            _ => self.skip()?,
        }
        let mut de = serde_json::Deserializer::from_slice(&self.bytes[start..self.at]);
        serde::Deserializer::deserialize_any(&mut de, Capture::new(self.bytes)).map_err(|_| Unsure)
    }

    /// The value at the cursor, checked and passed over.
    fn skip(&mut self) -> Result<(), Unsure> {
        match self.peek().ok_or(Unsure)? {
            b'{' => self.object(None),
            b'[' => self.array(None),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Unsure),
        }
    }

    /// Steps into the array or object at the cursor; whether it is empty
    /// (then it is passed over whole).
    fn enter(&mut self, close: u8) -> Result<bool, Unsure> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Unsure);
        }
        self.at += 1;
        self.space();
        Ok(self.close(close))
    }

    /// Passes over `close` (leaving the array or object) if it is next.
    fn close(&mut self, close: u8) -> bool {
        if self.peek() != Some(close) {
            return false;
        }
        self.at += 1;
        self.depth -= 1;
        true
    }

    /// After a member or element: whether another follows (a comma), or
    /// the array or object ends (`close`).
    fn more(&mut self, close: u8) -> Result<bool, Unsure> {
        self.space();
        if self.peek() == Some(b',') {
            self.at += 1;
            self.space();
            Ok(true)
        } else if self.close(close) {
            Ok(false)
        } else {
            Err(Unsure)
        }
    }

    /// A member's or element's value at trie node `child`, which replaces
    /// whatever an earlier member of the same name left below it.
    fn member(&mut self, child: Option<usize>) -> Result<(), Unsure> {
        if let Some(child) = child {
            self.trie.clear_subtree(child, self.out);
        }
        self.value(child)
    }

    fn object(&mut self, node: Option<usize>) -> Result<(), Unsure> {
        if self.enter(b'}')? {
            return Ok(());
        }
        let mut first = true;
        loop {
            if self.peek() != Some(b'"') {
                return Err(Unsure);
            }
            let (key, escaped) = self.string()?;
            let key = &self.bytes[key];
            // serde_json's `raw_value` feature (on in this workspace) reads an
            // object whose first key is its private token as a raw value, not
            // as an object: that is the `Value` parse's to decide.
            if first && (escaped || key == RAW_VALUE_TOKEN) {
                return Err(Unsure);
            }
            first = false;
            self.space();
            self.expect(b':')?;
            self.space();
            // A key with an escape would need decoding before it is looked up.
            let child = match node {
                Some(_) if escaped => return Err(Unsure),
                Some(node) => self.trie.field(node, key),
                None => None,
            };
            self.member(child)?;
            if !self.more(b'}')? {
                return Ok(());
            }
        }
    }

    fn array(&mut self, node: Option<usize>) -> Result<(), Unsure> {
        if self.enter(b']')? {
            return Ok(());
        }
        for index in 0.. {
            self.member(node.and_then(|node| self.trie.index(node, index)))?;
            if !self.more(b']')? {
                break;
            }
        }
        Ok(())
    }

    /// A string at the cursor: where its bytes between the quotes are
    /// (escapes as written), and whether it has escapes; its runs of non-ASCII
    /// bytes checked as UTF-8.
    fn string(&mut self) -> Result<(Range<usize>, bool), Unsure> {
        self.at += 1;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at = plain_end(self.bytes, self.at);
            match self.peek().ok_or(Unsure)? {
                b'"' => {
                    self.at += 1;
                    return Ok((start..self.at - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                b if !b.is_ascii() => {
                    let rest = &self.bytes[self.at..];
                    let run = rest.iter().position(u8::is_ascii).unwrap_or(rest.len());
                    std::str::from_utf8(&rest[..run]).map_err(|_| Unsure)?;
                    self.at += run;
                }
                // A control character.
                _ => return Err(Unsure),
            }
        }
    }

    /// An escape. A `\u` escape of a surrogate is serde_json's to pair up.
    fn escape(&mut self) -> Result<(), Unsure> {
        match self.bytes.get(self.at + 1).ok_or(Unsure)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
            b'u' => {
                let hex = self.bytes.get(self.at + 2..self.at + 6).ok_or(Unsure)?;
                if !hex.iter().all(u8::is_ascii_hexdigit)
                    || matches!(hex[0], b'd' | b'D')
                        && matches!(hex[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                {
                    return Err(Unsure);
                }
                self.at += 6;
            }
            _ => return Err(Unsure),
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Unsure> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// A number. serde_json refuses one too large for an `f64`; one with at
    /// most [`SURE_DIGITS`] digits before its point and an exponent of at
    /// most [`SURE_EXPONENT`] is well inside the range (and a tiny one reads
    /// as zero), so only others are left to it.
    fn number(&mut self) -> Result<(), Unsure> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let start = self.at;
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(Unsure);
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        }
        if self.at - start > SURE_DIGITS {
            return Err(Unsure);
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            let digits = self.at;
            self.some_digits()?;
            let exponent = &self.bytes[digits..self.at];
            if exponent.len() > 3
                || exponent.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')) > SURE_EXPONENT
            {
                return Err(Unsure);
            }
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Unsure> {
        let start = self.at;
        self.digits();
        if self.at == start {
            Err(Unsure)
        } else {
            Ok(())
        }
    }
}

/// The first position at or after `at` holding a quote, a backslash, a
/// control character or a byte that is not ASCII (or the end), eight bytes a
/// step.
fn plain_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte below 0x20, a quote or a backslash sets its high bit in the
        // first three terms (bytes at or above 0x80 never do: `!x` clears
        // their high bit), and a byte at or above 0x80 its own.
        let stops = (x.wrapping_sub(ONES * 0x20) & !x)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | x;
        if stops & HIGHS != 0 {
            // The lowest byte marked is a stop (a borrow only ever marks
            // bytes above a true one).
            return at + (stops & HIGHS).trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 || !b.is_ascii() {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::path::JsonPath;

    const PATHS: [&str; 10] = [
        "$", "$.a", "b", "$.a.b", "$.a[0]", "$['c d']", "$.a[1].a", "$[0]", "$[1][0]", "$.é",
    ];

    fn trie(paths: &[&str]) -> PathTrie {
        let mut trie = PathTrie::new();
        for p in paths {
            trie.insert(&JsonPath::parse(p).unwrap());
        }
        trie
    }

    fn shown(text: &str, out: &[Option<Extracted>]) -> Vec<Option<String>> {
        out.iter()
            .map(|e| {
                e.as_ref()
                    .map(|e| format!("{:?}", e.as_ref(text.as_bytes())))
            })
            .collect()
    }

    /// Whether the fast pass took `text` (`Some`: its values), after checking
    /// that serde_json then agrees exactly.
    fn agree(trie: &PathTrie, text: &str) -> Result<Option<Vec<Option<String>>>, TestCaseError> {
        let mut fast = vec![None; trie.slot_len()];
        let mut slow = vec![None; trie.slot_len()];
        let taken = extract(trie, text.as_bytes(), &mut fast).is_ok();
        let is_json = trie.extract_from_value(text, &mut slow);
        if !taken {
            return Ok(None);
        }
        prop_assert!(
            is_json,
            "the fast pass took what serde_json refuses: {:?}",
            text
        );
        let values = shown(text, &fast);
        prop_assert_eq!(&values, &shown(text, &slow), "payload {:?}", text);
        Ok(Some(values))
    }

    /// JSON values; `wide`: numbers from all of `f64`'s range, not only
    /// those the fast pass decides itself.
    fn json_value(wide: bool) -> impl Strategy<Value = Value> {
        let float = if wide {
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .boxed()
        } else {
            prop_oneof![-1e15..1e15f64, -1e-150..1e-150f64].boxed()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            float.prop_map(Value::from),
            "[a-c é\"\\\\/\u{1}\u{7f}\u{10000}]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(
                    (prop::sample::select(vec!["a", "b", "c d", "é", "z"]), inner),
                    0..4
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    /// Pieces of JSON, right and wrong, to put together at random.
    const PIECES: [&str; 44] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\r",
        "\u{c}",
        "\"a\"",
        "\"b\"",
        "\"c d\"",
        "\"é\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\a\"",
        "\"\\u12g4\"",
        "\"x\u{1}\"",
        "\"\\\"\"",
        "\"a\\\\\"",
        "\"",
        "1",
        "-0",
        "01",
        "1.",
        "1.5e3",
        "1e400",
        "-",
        "2E-2",
        "1e+",
        "123456789012345678901234567890",
        "true",
        "tru",
        "null",
        "nul",
        "false",
        "é",
        "{\"a\":",
        "{\"a\":1}",
        "[1,",
        "\"a\"\"",
        "0x1",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn valid_json_takes_the_fast_pass_and_agrees(
            value in json_value(false),
            pretty in any::<bool>(),
            paths in prop::sample::subsequence(PATHS.to_vec(), 1..5),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let trie = trie(&paths);
            prop_assert!(agree(&trie, &text)?.is_some(), "not taken: {:?}", text);
        }

        #[test]
        fn pieces_agree(
            pieces in prop::collection::vec(prop::sample::select(PIECES.to_vec()), 0..14),
            paths in prop::sample::subsequence(PATHS.to_vec(), 1..5),
        ) {
            agree(&trie(&paths), &pieces.concat())?;
        }

        #[test]
        fn broken_json_agrees(
            value in json_value(true),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(b"{}[],:\"\\ 0e.-+tx\x01".to_vec()),
            paths in prop::sample::subsequence(PATHS.to_vec(), 1..5),
        ) {
            let mut text = value.to_string().into_bytes();
            let at = at.index(text.len() + 1);
            match edit {
                0 => text.insert(at, byte),
                1 if at < text.len() => { text.remove(at); }
                _ if at < text.len() => text[at] = byte,
                _ => text.push(byte),
            }
            if let Ok(text) = String::from_utf8(text) {
                agree(&trie(&paths), &text)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Payloads that are not all UTF-8 (bytes put anywhere, inside
        /// strings or not: lone continuation bytes, a lead byte without its
        /// continuation, bytes never in UTF-8, and whole characters) are read
        /// as the reference reads them: not JSON unless the whole payload is
        /// UTF-8 and serde_json reads it, then the same values.
        #[test]
        fn bytes_that_are_not_utf8_agree_with_the_reference(
            value in json_value(false),
            inserts in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(vec![
                    &b"\x80"[..], b"\xbf", b"\xc3", b"\xe9", b"\xff", b"\xed\xa0\x80",
                    b"\xc3\xa9", b"\xf0\x90\x80\x80",
                ])),
                1..3,
            ),
            paths in prop::sample::subsequence(PATHS.to_vec(), 1..5),
        ) {
            let mut payload = value.to_string().into_bytes();
            for (at, bytes) in inserts {
                let at = at.index(payload.len() + 1);
                payload.splice(at..at, bytes.iter().copied());
            }
            let trie = trie(&paths);
            let mut fast = Vec::new();
            let read = trie.extract(&payload, &mut fast);
            let mut slow = vec![None; trie.slot_len()];
            let reference = std::str::from_utf8(&payload)
                .is_ok_and(|text| trie.extract_from_value(text, &mut slow));
            prop_assert_eq!(read, reference, "payload {:?}", payload);
            let shown = |out: &[Option<Extracted>]| -> Vec<Option<String>> {
                out.iter()
                    .map(|e| e.as_ref().map(|e| format!("{:?}", e.as_ref(&payload))))
                    .collect()
            };
            prop_assert_eq!(shown(&fast), shown(&slow), "payload {:?}", payload);
        }
    }

    #[test]
    fn a_string_that_is_not_utf8_is_no_json() {
        let trie = trie(&["$.a", "$.b"]);
        let mut out = Vec::new();
        for bad in [
            &b"{\"a\": \"x\xc3y\"}"[..],
            b"{\"a\": \"\xed\xa0\x80\"}",
            b"{\"a\": \"\xff\"}",
            b"{\"a\": 1}\xff",
            b"{\"a\": \"ok\", \"b\": \"\x80\"}",
        ] {
            assert!(!trie.extract(bad, &mut out), "{bad:?}");
            assert!(out.iter().all(Option::is_none), "{bad:?}");
        }
        let good = "{\"a\": \"\u{e9}t\u{e9}\", \"b\": \"\u{10000}\"}";
        assert!(trie.extract(good.as_bytes(), &mut out));
        assert!(
            extract(&trie, good.as_bytes(), &mut out).is_ok(),
            "the fast pass takes it"
        );
        let values: Vec<String> = out
            .iter()
            .map(|e| format!("{:?}", e.as_ref().unwrap().as_ref(good.as_bytes())))
            .collect();
        assert_eq!(values, ["Str(\"\u{e9}t\u{e9}\")", "Str(\"\u{10000}\")"]);
    }

    #[test]
    fn nesting_past_the_fast_pass_is_serde_jsons_to_decide() {
        let trie = trie(&["$[0]", "$.a"]);
        for depth in [99, 100, 101, 127, 128, 129, 200] {
            let array = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let object = format!("{{\"a\": 1, \"b\": {array}}}");
            for (text, levels) in [(array, depth), (object, depth + 1)] {
                let taken = agree(&trie, &text).unwrap().is_some();
                assert_eq!(taken, levels <= MAX_DEPTH as usize, "{levels} levels");
            }
        }
    }

    #[test]
    fn numbers_at_the_edges_of_f64_agree() {
        let trie = trie(&["$.a", "$.b"]);
        let long = "9".repeat(SURE_DIGITS);
        let longer = "9".repeat(SURE_DIGITS + 1);
        let tiny = format!("0.{}1e-200", "0".repeat(400));
        let huge = format!("{}e200", long);
        for number in [
            "1e200",
            "1e-200",
            "1e201",
            "1e308",
            "1e309",
            "1e400",
            "-1e400",
            "1e-400",
            "1E+200",
            "1e0200",
            "18446744073709551616",
            "-9223372036854775809",
            &long,
            &longer,
            &tiny,
            &huge,
        ] {
            for text in [
                format!("{{\"a\": {number}}}"),
                format!("{{\"b\": {number}, \"a\": 1}}"),
                format!("[{number}]"),
            ] {
                agree(&trie, &text).unwrap();
            }
        }
        // Well inside the range: the fast pass decides.
        for number in ["1e200", "1e-200", "-1E+200", &long, &huge, &tiny] {
            let text = format!("{{\"b\": {number}, \"a\": 1}}");
            assert!(agree(&trie, &text).unwrap().is_some(), "{text}");
        }
    }

    #[test]
    fn surrogate_escapes_are_serde_jsons_to_pair() {
        let trie = trie(&["$.a"]);
        for text in [
            r#"{"b": "\ud800", "a": 1}"#,
            r#"{"b": "\udc00", "a": 1}"#,
            r#"{"b": "\ud83d\ude00", "a": 1}"#,
            r#"{"a": "\uD83D\uDE00"}"#,
        ] {
            assert_eq!(agree(&trie, text).unwrap(), None, "{text}");
        }
        assert!(agree(&trie, r#"{"b": "\u00e9\ucafe", "a": 1}"#)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_key_with_an_escape_is_serde_jsons_to_read() {
        let trie = trie(&["$.a"]);
        assert_eq!(agree(&trie, r#"{"\u0061": 1}"#).unwrap(), None);
        assert_eq!(agree(&trie, r#"{"b\n": 1}"#).unwrap(), None);
        // A value's escapes are no reason to leave it to serde_json.
        assert_eq!(
            agree(&trie, r#"{"b": "\n", "a": "x\ty"}"#).unwrap(),
            Some(vec![Some(r#"Str("x\ty")"#.to_owned())])
        );
    }

    /// With serde_json's `raw_value` feature a `Value` reads such an object as
    /// the raw value it holds (or refuses it): the fast pass leaves it to that
    /// parse, wherever the object is and whether or not a path names it.
    #[test]
    fn serde_jsons_raw_value_token_is_its_to_read() {
        let trie = trie(&["$.a", "$.a.x", "$", "$['$serde_json::private::RawValue']"]);
        for text in [
            r#"{"a":1,"b":{"$serde_json::private::RawValue":5}}"#,
            r#"{"a":1,"b":{"$serde_json::private::RawValue":"x"}}"#,
            r#"{"a":{"$serde_json::private::RawValue":"7"}}"#,
            r#"{"a":{"$serde_json::private::RawValue":"{\"x\":2}"}}"#,
            r#"{"$serde_json::private::RawValue":"1"}"#,
            r#"{"a":1,"b":{"$serde_json::private::RawValu\u0065":"2"}}"#,
        ] {
            assert_eq!(agree(&trie, text).unwrap(), None, "{text}");
        }
        // Not the first key: an ordinary member.
        assert!(agree(
            &trie,
            r#"{"a":1,"b":{"c":1,"$serde_json::private::RawValue":5}}"#
        )
        .unwrap()
        .is_some());
    }

    proptest! {
        // Long runs, so that both step widths (eight bytes, one) meet stops
        // at every offset.
        #[test]
        fn plain_end_agrees_with_a_byte_loop(
            text in prop::collection::vec(
                prop_oneof![
                    8 => prop::sample::select(b"ab ~\x7f".to_vec()),
                    1 => prop::sample::select(b"\"\\\x00\x1f\x20\x80\xe9\xff".to_vec()),
                ],
                0..80,
            ),
            start in any::<prop::sample::Index>(),
        ) {
            let start = start.index(text.len() + 1);
            let by_byte = (start..text.len())
                .find(|&i| matches!(text[i], b'"' | b'\\' | 0..=0x1f | 0x80..))
                .unwrap_or(text.len());
            prop_assert_eq!(plain_end(&text, start), by_byte);
        }
    }

    #[test]
    fn plain_end_stops_where_a_byte_loop_does() {
        let text = "abcdefgh\u{e9}ijklmnop\"q\\r\u{1}s".as_bytes();
        for start in 0..text.len() {
            let by_byte = (start..text.len())
                .find(|&i| matches!(text[i], b'"' | b'\\' | 0..=0x1f | 0x80..))
                .unwrap_or(text.len());
            assert_eq!(plain_end(text, start), by_byte, "from {start}");
        }
    }
}
