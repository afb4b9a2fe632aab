//! Run a transform natively, through the same encoding the engine uses.

use rustmq_etl_abi::{
    decode_message, decode_outcome, encode_message, Edit, MessageParts, OutcomeView,
};

use crate::{Message, Outcome};

/// A message to test with. Its `Debug` shows the key and the payload as text
/// where they are UTF-8 (a failed `assert_eq!` reads as the JSON it holds).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TestMessage {
    /// The topic.
    pub topic: String,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl TestMessage {
    /// A message with a topic and a payload.
    pub fn new(topic: &str, payload: impl Into<Vec<u8>>) -> Self {
        TestMessage {
            topic: topic.to_owned(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// The same message with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same message with a key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same message with a timestamp (milliseconds since the Unix epoch).
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

impl std::fmt::Debug for TestMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Bytes as a string if they are UTF-8, else as bytes.
        struct Text<'a>(&'a [u8]);
        impl std::fmt::Debug for Text<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match std::str::from_utf8(self.0) {
                    Ok(text) => text.fmt(f),
                    Err(_) => self.0.fmt(f),
                }
            }
        }
        f.debug_struct("TestMessage")
            .field("topic", &self.topic)
            .field("key", &self.key.as_deref().map(Text))
            .field("headers", &self.headers)
            .field("payload", &Text(&self.payload))
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

/// What became of a message: `None` if dropped, `Err` if the module failed.
/// (Not called `Result`, which a `use testing::*` would shadow.)
pub type Applied = std::result::Result<Option<TestMessage>, String>;

/// What became of a message, with why it failed told apart
/// ([`check`]): `None` if dropped.
pub type Checked = std::result::Result<Option<TestMessage>, Failure>;

/// Why a message failed at the module, by the engine's error kind
/// (execution.md). The kind is the engine's; the text of an
/// `InvalidOutput` is the SDK's own (the engine words it otherwise). A panic
/// in the transform (the engine's `trap`) is no `Failure`: it unwinds out of
/// [`check`] (`#[should_panic]` tests it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The module answered an error ([`Outcome::error`]): `guest_error`,
    /// with the text the engine would keep (an empty one replaced, a long
    /// one cut, each made one line: `rustmq_etl_abi::error_text`).
    GuestError(String),
    /// The engine refuses the answer (too many edits, an empty topic or
    /// header name, an answer that does not decode): `invalid_output`.
    InvalidOutput(String),
}

impl Failure {
    /// Its text: what [`apply`] answers.
    pub fn text(&self) -> &str {
        match self {
            Failure::GuestError(text) | Failure::InvalidOutput(text) => text,
        }
    }

    /// The engine's name for its kind: `guest_error` or `invalid_output`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::GuestError(_) => "guest_error",
            Failure::InvalidOutput(_) => "invalid_output",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.text())
    }
}

impl std::error::Error for Failure {}

/// Encodes `message` as the engine does, calls `transform`, encodes its
/// outcome as a module does, and decodes and applies it as the engine does:
/// an answer of more than [`MAX_EDITS`](rustmq_etl_abi::MAX_EDITS) edits, an
/// empty topic or header name are refused, an error without a text gets the
/// engine's, and a long one is cut as the engine cuts it. Not checked here (natively, nothing is limited): the engine's
/// cap on an answer (`max_output_bytes`, 16 MiB by default), a module's memory limit and
/// time budget, and what the WebAssembly build lacks: `std`'s clock
/// (`SystemTime::now`, `Instant::now`) works here and panics in the module
/// built for `wasm32-unknown-unknown` (a `trap` on every call; the message's
/// timestamp is the time to use), and `println!` prints here and goes nowhere
/// there (log with [`crate::log`]). `test-module` runs the built module on the
/// real engine.
pub fn apply(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> Applied {
    check(transform, message).map_err(|failure| failure.text().to_owned())
}

/// [`apply`], with why a message failed told apart: the module's own error
/// answer ([`Failure::GuestError`]) or an answer the engine refuses
/// ([`Failure::InvalidOutput`]), as a test that a module rejects bad input
/// (and does not break the ABI doing it) wants to say.
///
/// ```
/// use rustmq_etl_sdk::testing::{check, Failure, TestMessage};
/// use rustmq_etl_sdk::Outcome;
///
/// let message = TestMessage::new("orders", "not json");
/// let rejected = check(|_| Outcome::error("payload is not JSON"), &message);
/// assert_eq!(rejected, Err(Failure::GuestError("payload is not JSON".to_owned())));
/// let broken = check(|_| Outcome::edit().set_topic("").into(), &message);
/// assert!(matches!(broken, Err(Failure::InvalidOutput(_))));
/// ```
pub fn check(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> Checked {
    let mut bytes = Vec::new();
    encode_message(
        MessageParts {
            topic: &message.topic,
            key: message.key.as_deref(),
            headers: message
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            payload: &message.payload,
            timestamp_ms: message.timestamp_ms,
        },
        &mut bytes,
    );
    // (What `encode_message` wrote decodes: a test message of owned fields
    // is always one the engine can hand a module.)
    let view = decode_message(&bytes).expect("an encoded message decodes");
    let mut answer = Vec::new();
    transform(&view).encode(&mut answer);
    let edits = match decode_outcome(&answer) {
        Ok(OutcomeView::Unchanged) => return Ok(Some(message.clone())),
        Ok(OutcomeView::Drop) => return Ok(None),
        Ok(OutcomeView::Error(e)) => {
            return Err(Failure::GuestError(rustmq_etl_abi::error_text(e)))
        }
        Err(rustmq_etl_abi::DecodeError::TooManyEdits { .. }) => {
            return Err(Failure::InvalidOutput(format!(
                "the engine refuses an answer of more than {} edits",
                rustmq_etl_abi::MAX_EDITS
            )))
        }
        Ok(OutcomeView::Edits(edits)) => edits,
        Err(e) => {
            return Err(Failure::InvalidOutput(format!(
                "the answer does not decode: {e}"
            )))
        }
    };
    let mut out = message.clone();
    for edit in edits {
        match edit {
            Edit::SetPayload(p) => out.payload = p.to_vec(),
            Edit::SetKey(k) => out.key = Some(k.to_vec()),
            Edit::ClearKey => out.key = None,
            Edit::SetTopic("") => {
                return Err(Failure::InvalidOutput(
                    "the engine refuses an empty topic".to_owned(),
                ))
            }
            Edit::SetTopic(t) => out.topic = t.to_owned(),
            Edit::SetHeader("", _) | Edit::RemoveHeader("") => {
                return Err(Failure::InvalidOutput(
                    "the engine refuses a header named with the empty string".to_owned(),
                ))
            }
            Edit::SetHeader(n, v) => match out.headers.iter().position(|(h, _)| h == n) {
                Some(first) => {
                    out.headers[first].1 = v.to_owned();
                    let mut i = 0;
                    out.headers.retain(|(h, _)| {
                        i += 1;
                        i - 1 == first || h != n
                    });
                }
                None => out.headers.push((n.to_owned(), v.to_owned())),
            },
            Edit::RemoveHeader(n) => out.headers.retain(|(h, _)| h != n),
            Edit::SetTimestamp(ms) => out.timestamp_ms = Some(ms),
            Edit::ClearTimestamp => out.timestamp_ms = None,
        }
    }
    Ok(Some(out))
}

/// Like [`apply`], for a transform expected to keep the message: panics (this is
/// for tests) if it drops it or fails.
pub fn run(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> TestMessage {
    match check(transform, message) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("the transform dropped the message"),
        Err(failure) => panic!("the transform failed: {failure}"),
    }
}

/// Like [`check`], for a transform expected to answer an error: its text;
/// panics (this is for tests) if it keeps or drops the message, or breaks
/// the ABI instead.
///
/// ```
/// use rustmq_etl_sdk::testing::{reject, TestMessage};
/// use rustmq_etl_sdk::Outcome;
///
/// let why = reject(|_| Outcome::error("payload is not JSON"), &TestMessage::new("t", "x"));
/// assert!(why.starts_with("payload is not JSON"));
/// ```
pub fn reject(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> String {
    match check(transform, message) {
        Err(Failure::GuestError(text)) => text,
        Err(failure) => {
            panic!("the transform broke the ABI instead of answering an error: {failure}")
        }
        Ok(Some(_)) => panic!("the transform kept the message instead of answering an error"),
        Ok(None) => panic!("the transform dropped the message instead of answering an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test message reads as text where it is text, as bytes where not.
    #[test]
    fn a_test_message_shows_its_text() {
        let m = TestMessage::new("t", r#"{"a":1}"#)
            .key("k-1")
            .timestamp_ms(7);
        assert_eq!(
            format!("{m:?}"),
            r#"TestMessage { topic: "t", key: Some("k-1"), headers: [], payload: "{\"a\":1}", timestamp_ms: Some(7) }"#
        );
        let binary = TestMessage::new("t", vec![0xff, 0]);
        assert!(
            format!("{binary:?}").contains("payload: [255, 0]"),
            "{binary:?}"
        );
    }

    /// Edits apply in the order the module lists them, each edit of a field
    /// over the one before; a header set keeps the place of its first
    /// occurrence (as the engine keeps it), and every kind of edit reaches
    /// its own field.
    #[test]
    fn edits_apply_in_their_order_and_a_set_header_keeps_its_place() {
        let message = TestMessage::new("t", "p")
            .header("a", "1")
            .header("b", "2")
            .key("k")
            .timestamp_ms(5);
        let out = run(
            |_| {
                Outcome::edit()
                    .set_key("x")
                    .clear_key()
                    .set_header("h", "1")
                    .remove_header("h")
                    .set_header("a", "x")
                    .clear_timestamp()
                    .set_payload("q")
                    .set_payload("r")
                    .into()
            },
            &message,
        );
        assert_eq!(out.key, None);
        assert_eq!(
            out.headers,
            [
                ("a".to_owned(), "x".to_owned()),
                ("b".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(out.timestamp_ms, None);
        assert_eq!(out.payload, b"r");
        let out = run(
            |_| Outcome::edit().clear_key().set_key("y").into(),
            &message,
        );
        assert_eq!(out.key.as_deref(), Some(&b"y"[..]));
    }

    /// Every edit arrives through the encoding and applies as the engine
    /// applies it; what the engine refuses, `apply` refuses.
    #[test]
    fn edits_go_through_the_encoding_and_apply_in_order() {
        let mut message = TestMessage::new("in", "old")
            .header("a", "1")
            .header("b", "2")
            .header("a", "3");
        message.key = Some(b"k".to_vec());
        let out = run(
            |_| {
                Outcome::edit()
                    .set_topic("out")
                    .set_payload("new")
                    .set_header("a", "x")
                    .remove_header("b")
                    .clear_key()
                    .set_timestamp(7)
                    .into()
            },
            &message,
        );
        assert_eq!(out.topic, "out");
        assert_eq!(out.payload, b"new");
        assert_eq!(out.headers, [("a".to_owned(), "x".to_owned())]);
        assert_eq!((out.key, out.timestamp_ms), (None, Some(7)));
        let refused = apply(|_| Outcome::edit().set_topic("").into(), &message);
        assert_eq!(refused.unwrap_err(), "the engine refuses an empty topic");
        let refused = apply(|_| Outcome::edit().remove_header("").into(), &message);
        assert!(refused.unwrap_err().contains("empty string"));
        assert_eq!(apply(|_| Outcome::Drop, &message), Ok(None));
        // Told apart by `check`.
        assert_eq!(
            check(|_| Outcome::edit().set_topic("").into(), &message),
            Err(Failure::InvalidOutput(
                "the engine refuses an empty topic".to_owned()
            ))
        );
        assert_eq!(
            check(|_| Outcome::error("no"), &message),
            Err(Failure::GuestError("no".to_owned()))
        );
        assert_eq!(
            apply(|_| Outcome::error("no"), &message),
            Err("no".to_owned())
        );
        assert_eq!(
            apply(|_| Outcome::error(""), &message),
            Err(rustmq_etl_abi::ERROR_WITHOUT_TEXT.to_owned())
        );
        let long = "x".repeat(rustmq_etl_abi::MAX_ERROR_TEXT + 5);
        assert_eq!(
            apply(|_| Outcome::error(&long), &message),
            Err(format!(
                "{}… (5 bytes more)",
                &long[..rustmq_etl_abi::MAX_ERROR_TEXT]
            ))
        );
        let many = |count: usize| {
            move |_: &Message<'_>| {
                let mut edit = Outcome::edit();
                for _ in 0..count {
                    edit = edit.set_header("h", "v");
                }
                Outcome::from(edit)
            }
        };
        assert!(apply(many(rustmq_etl_abi::MAX_EDITS), &message).is_ok());
        assert!(apply(many(rustmq_etl_abi::MAX_EDITS + 1), &message)
            .unwrap_err()
            .contains("more than 65536 edits"));
        assert!(matches!(
            check(many(rustmq_etl_abi::MAX_EDITS + 1), &message),
            Err(Failure::InvalidOutput(_))
        ));
    }
}
