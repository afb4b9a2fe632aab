//! The one pass [`Object::parse`](super::Object::parse) makes over a payload:
//! it checks the whole text as one JSON object, by the grammar serde_json
//! reads (RFC 8259), checks that it is UTF-8, and notes where each top-level
//! key and value lies.
//!
//! UTF-8 is checked inside strings only, where the search for a string's end
//! also stops at a non-ASCII byte: outside strings the grammar admits ASCII
//! alone, and every run of non-ASCII bytes in a string is checked whole with
//! `str::from_utf8` (a character's bytes are all non-ASCII, so the runs hold
//! whole characters). A separate check of the whole payload first cost
//! `temperature-converter` about 600 instructions a message in wasm.
//!
//! serde_json did this job before, through a map visitor and a `RawValue` per
//! field; this pass does the same checks without that machinery, and looks
//! for the end of a string sixteen bytes at a time with SIMD in WebAssembly,
//! whatever flags the module is built with, and eight at a time natively
//! (serde_json reads a `usize` at a time: four bytes on wasm32). A
//! top-level key with escapes is still decoded by serde_json. The tests
//! compare this pass with a serde_json reference on generated texts, valid
//! and broken, and so does the `json_object` fuzz target.

use std::borrow::Cow;
use std::ops::Range;

use super::NotAnObject;

/// A top-level field: its key, where the key's opening quote is, and where
/// its value's text lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field<'a> {
    pub key: Cow<'a, str>,
    pub key_at: usize,
    pub value: Range<usize>,
}

/// Checks `payload` as one JSON object in UTF-8 (whitespace around it
/// allowed) and returns it as text with its top-level fields in order, a
/// repeated key each time.
pub(super) fn object(payload: &[u8]) -> Result<(&str, Vec<Field<'_>>), NotAnObject> {
    let mut scan = Scan {
        bytes: payload,
        at: 0,
    };
    match scan.space() {
        Some(b'{') => scan.at += 1,
        Some(_) => return Err(scan.stop("expected a JSON object (`{`)").into()),
        None => return Err(scan.stop("expected a JSON object, found nothing").into()),
    }
    let mut fields = Vec::with_capacity(8);
    if scan.space() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            let key_at = scan.at;
            let escaped = scan.key()?;
            let raw = checked(&payload[key_at..scan.at]);
            let key = if escaped {
                // Escapes decoded as serde_json decodes them (a lone
                // surrogate is refused).
                let key: String = serde_json::from_str(raw).map_err(|e| NotAnObject {
                    reason: format!("the key at byte {key_at} is not a valid string: {e}"),
                })?;
                Cow::Owned(key)
            } else {
                Cow::Borrowed(&raw[1..raw.len() - 1])
            };
            scan.colon()?;
            scan.space();
            let start = scan.at;
            scan.value()?;
            fields.push(Field {
                key,
                key_at,
                value: start..scan.at,
            });
            match scan.space() {
                Some(b',') => {
                    scan.at += 1;
                    scan.space();
                }
                Some(b'}') => {
                    scan.at += 1;
                    break;
                }
                _ => {
                    return Err(scan
                        .stop("expected `,` or `}` after a value in the object")
                        .into())
                }
            }
        }
    }
    match scan.space() {
        None => Ok((checked(payload), fields)),
        Some(_) => Err(scan.stop("expected nothing after the object").into()),
    }
}

/// `bytes` as text: bytes the scan passed (a whole object, or a key in its
/// quotes), whose ASCII bytes are characters each and whose runs of other
/// bytes [`Scan::non_ascii`] checked.
fn checked(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok(), "{bytes:?}");
    // SAFETY: UTF-8, as above: outside strings the scan admits ASCII bytes
    // only, and inside them it checks every maximal run of non-ASCII bytes
    // with `str::from_utf8`; a run is whole characters, since every byte of
    // a multi-byte character is non-ASCII. The tests and the `json_object`
    // fuzz target compare the scan with `str::from_utf8` and serde_json.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// Where and why a text stopped being JSON: small, so that the scan's
/// results stay in registers until one is an error.
#[derive(Debug)]
struct Stop {
    what: &'static str,
    at: usize,
}

impl From<Stop> for NotAnObject {
    fn from(stop: Stop) -> NotAnObject {
        NotAnObject {
            reason: format!("{} at byte {}", stop.what, stop.at),
        }
    }
}

/// A position in a text being checked.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn stop(&self, what: &'static str) -> Stop {
        Stop { what, at: self.at }
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, Stop> {
        Err(self.stop(what))
    }

    /// Skips whitespace; the byte after it, if any.
    fn space(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// A key (at its opening quote, whitespace skipped); whether it holds
    /// escapes.
    fn key(&mut self) -> Result<bool, Stop> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return self.fail("expected a key (a string)");
        }
        self.at += 1;
        self.string()
    }

    /// The colon after a key, whitespace before it skipped.
    fn colon(&mut self) -> Result<(), Stop> {
        if self.space() != Some(b':') {
            return self.fail("expected `:` after a key");
        }
        self.at += 1;
        Ok(())
    }

    /// A key and its colon inside a nested object (decoded by no one).
    fn member_key(&mut self) -> Result<(), Stop> {
        self.space();
        self.key()?;
        self.colon()
    }

    /// The rest of a string, after its opening quote; whether it holds
    /// escapes.
    fn string(&mut self) -> Result<bool, Stop> {
        let mut escaped = false;
        loop {
            self.at = plain_end(self.bytes, self.at);
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(b) if !b.is_ascii() => self.non_ascii()?,
                Some(_) => {
                    return self
                        .fail("a control character (U+0000 to U+001F) not escaped in a string")
                }
                None => return self.fail("a string not closed"),
            }
        }
    }

    /// A run of non-ASCII bytes in a string, at its first: checked as UTF-8.
    fn non_ascii(&mut self) -> Result<(), Stop> {
        let rest = &self.bytes[self.at..];
        let run = rest.iter().position(u8::is_ascii).unwrap_or(rest.len());
        match std::str::from_utf8(&rest[..run]) {
            Ok(_) => {
                self.at += run;
                Ok(())
            }
            Err(e) => {
                self.at += e.valid_up_to();
                self.fail("a byte sequence that is not UTF-8 in a string")
            }
        }
    }

    /// An escape, at its backslash. `\u` takes any four hex digits: as for
    /// serde_json, whether they pair up as surrogates is for whoever decodes
    /// the string.
    fn escape(&mut self) -> Result<(), Stop> {
        let length = match self.bytes.get(self.at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
            Some(b'u') => match self.bytes.get(self.at + 2..self.at + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => 6,
                _ => return self.fail("expected four hex digits after `\\u`"),
            },
            _ => return self.fail("an invalid escape in a string"),
        };
        self.at += length;
        Ok(())
    }

    /// Any JSON value, at its first byte (whitespace skipped), nested arrays
    /// and objects checked without recursion (so without a depth limit, as
    /// serde_json checks a value it does not keep).
    fn value(&mut self) -> Result<(), Stop> {
        // The arrays (`false`) and objects (`true`) open around the value
        // being read, innermost last.
        let mut open: Vec<bool> = Vec::new();
        loop {
            match self.space() {
                Some(b'"') => {
                    self.at += 1;
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(bracket @ (b'[' | b'{')) => {
                    self.at += 1;
                    let in_object = bracket == b'{';
                    if self.space() == Some(if in_object { b'}' } else { b']' }) {
                        self.at += 1;
                    } else {
                        open.push(in_object);
                        if in_object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(_) => return self.fail("expected a value"),
                None => return self.fail("expected a value, found the end"),
            }
            // A value ended: close what ends after it, up to the next value.
            loop {
                let Some(&in_object) = open.last() else {
                    return Ok(());
                };
                match self.space() {
                    Some(b',') => {
                        self.at += 1;
                        if in_object {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b']') if !in_object => {
                        self.at += 1;
                        open.pop();
                    }
                    Some(b'}') if in_object => {
                        self.at += 1;
                        open.pop();
                    }
                    _ if in_object => return self.fail("expected `,` or `}` in an object"),
                    _ => return self.fail("expected `,` or `]` in an array"),
                }
            }
        }
    }

    /// A number, at its first byte: `-`? then `0` or digits not starting
    /// with `0`, then optionally a fraction and an exponent.
    fn number(&mut self) -> Result<(), Stop> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("expected a digit in a number"),
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.fail("expected a digit after a number's `.`");
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.fail("expected a digit in a number's exponent");
            }
        }
        Ok(())
    }

    /// Skips ASCII digits; how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }

    /// `true`, `false` or `null`, at its first byte.
    fn literal(&mut self, word: &str) -> Result<(), Stop> {
        if !self.bytes[self.at..].starts_with(word.as_bytes()) {
            return self.fail("expected a value (`true`, `false` or `null`?)");
        }
        self.at += word.len();
        Ok(())
    }
}

/// Where the run of plain string bytes starting at `at` ends: the first `"`,
/// `\`, control character (below U+0020) or non-ASCII byte from `at`, or the
/// end.
fn plain_end(bytes: &[u8], mut at: usize) -> usize {
    // Sixteen bytes at a time in WebAssembly, then eight.
    #[cfg(target_arch = "wasm32")]
    match sixteen_at_a_time(bytes, at) {
        Ok(stop) => return stop,
        Err(rest) => at = rest,
    }
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // Eight bytes at a time. For each test, a byte's high bit is set in
    // `(x - ONES * n) & !x` if the byte is below `n` (a zero byte of `x ^
    // c` is a byte equal to `c`), and a borrow can only mark bytes after a
    // true match: the lowest mark is the first match. `x`'s own high bits
    // mark its non-ASCII bytes, which is why the control character test
    // needs no `& !x`.
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | x.wrapping_sub(ONES * 0x20)
            | x)
            & HIGH;
        if marks != 0 {
            return at + (marks.trailing_zeros() / 8) as usize;
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

/// [`plain_end`] sixteen bytes a step with WebAssembly SIMD: `Ok` with the
/// first stop, or `Err` with where fewer than sixteen bytes are left to look
/// at. Compiled with SIMD whatever the module's build flags (the engine admits
/// SIMD), so a module built with a plain `cargo build` gets it too; a module
/// built with `+simd128` (as `cargo xtask build-modules` builds the samples)
/// has it inlined.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn sixteen_at_a_time(bytes: &[u8], mut at: usize) -> Result<usize, usize> {
    use core::arch::wasm32::{i8x16_bitmask, i8x16_eq, i8x16_lt, i8x16_splat, v128, v128_or};
    while let Some(chunk) = bytes.get(at..at + 16) {
        let x = u128::from_le_bytes(chunk.try_into().unwrap_or_default());
        // SAFETY: `v128` and `u128` are both 16 plain bytes.
        let x: v128 = unsafe { core::mem::transmute(x) };
        // A signed byte below 0x20 is a control character or non-ASCII.
        let stops = v128_or(
            v128_or(
                i8x16_eq(x, i8x16_splat(b'"' as i8)),
                i8x16_eq(x, i8x16_splat(b'\\' as i8)),
            ),
            i8x16_lt(x, i8x16_splat(0x20)),
        );
        let marks = i8x16_bitmask(stops);
        if marks != 0 {
            return Ok(at + marks.trailing_zeros() as usize);
        }
        at += 16;
    }
    Err(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `object` and the reference agree: both refuse `text`, or both read
    /// the same fields.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let ours = object(text.as_bytes()).map(|(checked, fields)| {
            assert_eq!(checked, text);
            fields
                .into_iter()
                .map(|f| {
                    // The key's text starts at `key_at`, in quotes.
                    assert_eq!(text.as_bytes()[f.key_at], b'"', "{text}");
                    (f.key.into_owned(), f.value)
                })
                .collect::<Vec<_>>()
        });
        match (ours, super::super::reference::fields(text)) {
            (Ok(ours), Ok(reference)) => prop_assert_eq!(ours, reference, "{}", text),
            (Err(_), Err(_)) => {}
            (ours, reference) => {
                prop_assert!(
                    false,
                    "{text:?}: this pass {ours:?}, serde_json {reference:?}"
                )
            }
        }
        Ok(())
    }

    /// As [`agree`], for bytes: what is not UTF-8 is refused.
    fn agree_on_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => agree(text),
            Err(_) => {
                prop_assert!(object(bytes).is_err(), "{:?} is not UTF-8", bytes);
                Ok(())
            }
        }
    }

    #[test]
    fn refuses_what_is_not_utf8_and_reads_what_is() {
        let cases: [&[u8]; 22] = [
            b"{\"a\":\"\xff\"}",
            b"{\"\xff\":1}",
            b"{\"a\":\"x\xc3\"}",
            b"{\"a\":\"\xc3\"}",
            b"{\"a\":\"\xc3\xa9\xc3\"}",
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xf4\x90\x80\x80\"}",
            b"{\"a\":\"\xf0\x9f\x98\"}",
            b"{\"a\":\"\x80\"}",
            b"{\"a\":\"\\\xc3\xa9\"}",
            b"{\"a\":1\xc3\xa9}",
            b"{\"a\":\xc3\xa9}",
            b"\xef\xbb\xbf{}",
            b"{}\xc3\xa9",
            b"{\"a\":[\"\xff\"]}",
            b"{\"a\":{\"\xc3\xa9\xff\":1}}",
            b"{\"a\":\"\xc3\xa9\"}",
            b"{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}",
            b"{\"a\":\"x\xe2\x82\xacy\xc3\xa9z\"}",
            b"{\"a\":\"01234567\xe2\x82\xac89abcdef\xc3\xa9\"}",
            b"{\"a\":[\"\xc3\xa9\",{\"\xe2\x82\xac\":\"\xf0\x9f\x98\x80\"}]}",
        ];
        for bytes in cases {
            agree_on_bytes(bytes).unwrap();
        }
        // Where: the first byte that is not UTF-8.
        let error = object(b"{\"a\":\"\xc3\xa9\xc3\"}").unwrap_err();
        assert_eq!(
            error.reason,
            "a byte sequence that is not UTF-8 in a string at byte 8"
        );
        let error = object(b"{\"ok\":\"\xc3\xa9\",\"\xf0\x9f\x98\x80\xf0\x9f\":1}").unwrap_err();
        assert_eq!(
            error.reason,
            "a byte sequence that is not UTF-8 in a string at byte 16"
        );
        // Non-ASCII characters at every offset of the search's eight-byte
        // steps: found there, checked whole.
        for before in 0..12 {
            let text = format!("{{\"a\":\"{}\u{1f600}é\"}}", "x".repeat(before));
            agree(&text).unwrap();
            assert!(object(text.as_bytes()).is_ok(), "{text}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        let cases = [
            "",
            " ",
            "{",
            "}",
            "{}",
            " {} ",
            "{}x",
            "{},",
            "[]",
            "1",
            "\"a\"",
            "null",
            r#"{"a":1}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":-}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":1E-7}"#,
            r#"{"a":-1.5e+10}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":null}"#,
            r#"{"a":[}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":[[],[{}]]}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":[}]}"#,
            r#"{"a":{]}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"\ud83d\ude00":1}"#,
            r#"{"\udc00\ud800":1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a\"b":1}"#,
            "{\"a\":\"\t\"}",
            "{\"a\":\"\u{7f}\"}",
            "{\"a\":\"\u{1f}\"}",
            "{\"a\"\n:\r1\t}",
            "{\"a\":1}\u{a0}",
            "\u{feff}{}",
            r#"{"a":"ab\\"}"#,
            r#"{"a":"ab\\\"}"#,
            r#"{"a":"0123456789abcdef\"0123456789"}"#,
        ];
        for text in cases {
            agree(text).unwrap();
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(1000), "]".repeat(1000));
        agree(&deep).unwrap();
        assert!(
            object(deep.as_bytes()).is_ok(),
            "nesting is not limited, as in serde_json"
        );
    }

    #[test]
    fn says_what_and_where() {
        let error = object(br#"{"a":1,"b" 2}"#).unwrap_err();
        assert_eq!(error.reason, "expected `:` after a key at byte 11");
        let error = object(b"{\"a\":\"x\ny\"}").unwrap_err();
        assert!(error.reason.contains("control character") && error.reason.ends_with("byte 7"));
        let error = object(br#"{"\udc00":1}"#).unwrap_err();
        assert!(error
            .reason
            .starts_with("the key at byte 1 is not a valid string"));
    }

    #[test]
    fn finds_the_first_stop_in_every_position() {
        for length in 0..20 {
            for stop in [b'"', b'\\', 0, 0x1f, 0x80, 0xc3, 0xff] {
                for at in 0..length {
                    let mut bytes = vec![b'a'; length];
                    bytes[at] = stop;
                    if at + 1 < length {
                        // A later stop does not hide the first.
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(plain_end(&bytes, 0), at, "{bytes:?}");
                }
            }
            // Bytes that are none of those, including 0x20 and 0x7f.
            let plain: Vec<u8> = (0..length)
                .map(|i| [0x20, 0x7f, b'~', b'!'][i % 4])
                .collect();
            assert_eq!(plain_end(&plain, 0), length);
        }
    }

    /// Texts that are JSON objects, and texts close to them.
    fn near_object() -> impl Strategy<Value = String> {
        // A string's pieces: plain text, escapes good and bad, surrogates
        // paired and not, and a lone quote or backslash.
        let piece = prop_oneof![
            4 => "[a-c/\u{1}\u{7f}é😀 ]{1,10}",
            1 => r#"\\[bfnrt"/\\x0]"#,
            1 => r#"\\u[0-9a-fA-Fg]{0,4}"#,
            1 => r#"\\ud[89ab][0-9a-f]{2}(\\ud[c-f][0-9a-f]{2})?"#,
            1 => r#"\\ud[c-f][0-9a-f]{2}"#,
            1 => r#"["\\]"#,
        ];
        let token = prop_oneof![
            4 => Just("\"k\"".to_owned()),
            3 => prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat())),
            2 => "-?[0-9]{0,3}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
            1 => prop::sample::select(vec!["true", "false", "null", "tru", "nul"]).prop_map(str::to_owned),
            6 => prop::sample::select(vec!["{", "}", "[", "]", ":", ",", " ", "\n", "\t"]).prop_map(str::to_owned),
        ];
        let object = prop::collection::vec(token, 0..24)
            .prop_map(|tokens| format!("{{{}}}", tokens.concat()));
        prop_oneof![
            object,
            (
                super::super::tests::generated::object(),
                any::<prop::sample::Index>(),
                "[\\PC\u{1}]{0,2}",
                0..3usize
            )
                .prop_map(|((text, _), at, insert, remove)| {
                    // One change somewhere in a valid object.
                    let mut at = at.index(text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    let mut end = (at + remove).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    format!("{}{insert}{}", &text[..at], &text[end..])
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_serde_json(text in near_object()) {
            agree(&text)?;
        }

        /// One byte of a text close to an object replaced by any byte: most
        /// such texts with a non-ASCII byte are not UTF-8 (and most are
        /// refused by the grammar anyway: see the next test).
        #[test]
        fn agrees_with_serde_json_on_bytes(
            text in near_object(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            agree_on_bytes(&bytes)?;
        }

        /// Any bytes as a string's content, as a key and as a value: where
        /// the UTF-8 check decides.
        #[test]
        fn agrees_with_serde_json_on_any_string_bytes(
            content in prop::collection::vec(
                prop_oneof![
                    3 => 0x80..=0xffu8,
                    1 => prop::sample::select(vec![b'a', b' ', b'"', b'\\', 0x1f]),
                    1 => prop::sample::select(vec!["é", "€", "😀"]).prop_map(|c| c.as_bytes()[0]),
                ],
                0..24,
            ),
        ) {
            let value = [b"{\"k\":\"".as_slice(), &content, b"\"}"].concat();
            agree_on_bytes(&value)?;
            let key = [b"{\"".as_slice(), &content, b"\":1}"].concat();
            agree_on_bytes(&key)?;
        }

        /// The eight-byte search finds what a byte-at-a-time search finds,
        /// from any start.
        #[test]
        fn plain_end_is_the_first_stop(
            bytes in prop::collection::vec(
                prop_oneof![
                    2 => any::<u8>(),
                    1 => prop::sample::select(vec![b'"', b'\\', b'!', b'#', b'[', b']', 0x1f, 0x20, 0x7f, 0x80]),
                ],
                0..40,
            ),
            start in any::<prop::sample::Index>(),
        ) {
            let start = start.index(bytes.len() + 1);
            let expected = bytes[start..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
                .map_or(bytes.len(), |i| start + i);
            prop_assert_eq!(plain_end(&bytes, start), expected, "{:?} from {}", bytes, start);
        }
    }
}
