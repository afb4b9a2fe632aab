//! Run a transform natively, through the same encoding the engine uses.

use rustmq_etl_abi::{decode_message, encode_message, MessageParts};

use crate::outcome::OwnedEdit;
use crate::{Message, Outcome};

/// A message to test with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
}

/// What became of a message: `None` if dropped, `Err` if the module failed.
pub type Result = std::result::Result<Option<TestMessage>, String>;

/// Encodes `message` as the engine does, calls `transform` and applies its
/// outcome as the engine does.
pub fn apply(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> Result {
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
    let view = decode_message(&bytes).map_err(|e| e.to_string())?;
    let mut out = message.clone();
    match transform(&view) {
        Outcome::Unchanged => Ok(Some(out)),
        Outcome::Drop => Ok(None),
        Outcome::Error(e) => Err(e),
        Outcome::Edit(edits) => {
            for edit in edits.iter().cloned() {
                match edit {
                    OwnedEdit::Payload(p) => out.payload = p,
                    OwnedEdit::Key(k) => out.key = Some(k),
                    OwnedEdit::ClearKey => out.key = None,
                    OwnedEdit::Topic(t) => out.topic = t,
                    OwnedEdit::Header(n, v) => {
                        match out.headers.iter().position(|(h, _)| *h == n) {
                            Some(first) => {
                                out.headers[first].1 = v;
                                let mut i = 0;
                                out.headers.retain(|(h, _)| {
                                    i += 1;
                                    i - 1 == first || *h != n
                                });
                            }
                            None => out.headers.push((n, v)),
                        }
                    }
                    OwnedEdit::RemoveHeader(n) => out.headers.retain(|(h, _)| *h != n),
                    OwnedEdit::Timestamp(ms) => out.timestamp_ms = ms,
                }
            }
            Ok(Some(out))
        }
    }
}

/// Like [`apply`], for a transform expected to keep the message: panics (this is
/// for tests) if it drops it or fails.
pub fn run(transform: impl FnOnce(&Message<'_>) -> Outcome, message: &TestMessage) -> TestMessage {
    match apply(transform, message) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("the transform dropped the message"),
        Err(e) => panic!("the transform failed: {e}"),
    }
}
