//! What a transform answers.

use rustmq_etl_abi::Edit;

/// A module's answer for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass the message on as it came.
    Unchanged,
    /// Drop the message.
    Drop,
    /// Apply these edits, in order.
    Edit(Edits),
    /// The module failed on this message; the pipeline's error strategy decides
    /// what happens to it. Every error counts towards the module's circuit
    /// breaker (by default 5 in a row, retries included, stop the module for
    /// 30 s for every message; under `SkipModule` the messages go on without
    /// the module): a module that meets bad input as a matter of course should
    /// answer it without an error, unchanged with a header saying why, or
    /// dropped.
    Error(String),
}

impl Outcome {
    /// Starts a list of edits; finish with `.into()`.
    pub fn edit() -> Edits {
        Edits::default()
    }

    /// A failure with a message for the operator.
    pub fn error(message: impl Into<String>) -> Outcome {
        Outcome::Error(message.into())
    }
}

/// Edits to a message, applied in order by the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// The first edit, held inline: most answers make one, and a module then
    /// allocates nothing for the list.
    first: Option<OwnedEdit>,
    /// The others, in order.
    rest: Vec<OwnedEdit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedEdit {
    Payload(Vec<u8>),
    Key(Vec<u8>),
    ClearKey,
    Topic(String),
    Header(String, String),
    RemoveHeader(String),
    Timestamp(Option<i64>),
}

impl Edits {
    /// Replaces the payload.
    pub fn set_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.push(OwnedEdit::Payload(payload.into()));
        self
    }

    /// Sets the key.
    pub fn set_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.push(OwnedEdit::Key(key.into()));
        self
    }

    /// Removes the key.
    pub fn clear_key(mut self) -> Self {
        self.push(OwnedEdit::ClearKey);
        self
    }

    /// Replaces the topic.
    pub fn set_topic(mut self, topic: impl Into<String>) -> Self {
        self.push(OwnedEdit::Topic(topic.into()));
        self
    }

    /// Sets a header, replacing every header of that name.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(OwnedEdit::Header(name.into(), value.into()));
        self
    }

    /// Removes every header of that name.
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.push(OwnedEdit::RemoveHeader(name.into()));
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn set_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.push(OwnedEdit::Timestamp(Some(timestamp_ms)));
        self
    }

    /// Removes the timestamp.
    pub fn clear_timestamp(mut self) -> Self {
        self.push(OwnedEdit::Timestamp(None));
        self
    }

    /// Whether no edit was added.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, edit: OwnedEdit) {
        match self.first {
            None => self.first = Some(edit),
            Some(_) => self.rest.push(edit),
        }
    }

    /// The edits, in order, as the codec takes them.
    pub(crate) fn borrowed(&self) -> impl Iterator<Item = Edit<'_>> {
        self.first.iter().chain(&self.rest).map(|e| match e {
            OwnedEdit::Payload(b) => Edit::SetPayload(b),
            OwnedEdit::Key(b) => Edit::SetKey(b),
            OwnedEdit::ClearKey => Edit::ClearKey,
            OwnedEdit::Topic(t) => Edit::SetTopic(t),
            OwnedEdit::Header(n, v) => Edit::SetHeader(n, v),
            OwnedEdit::RemoveHeader(n) => Edit::RemoveHeader(n),
            OwnedEdit::Timestamp(Some(ms)) => Edit::SetTimestamp(*ms),
            OwnedEdit::Timestamp(None) => Edit::ClearTimestamp,
        })
    }
}

impl From<Edits> for Outcome {
    fn from(edits: Edits) -> Outcome {
        if edits.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Edit(edits)
        }
    }
}

impl Outcome {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use rustmq_etl_abi::Outcome as Wire;
        match self {
            Outcome::Unchanged => rustmq_etl_abi::encode_outcome(&Wire::Unchanged, out),
            Outcome::Drop => rustmq_etl_abi::encode_outcome(&Wire::Drop, out),
            Outcome::Error(e) => rustmq_etl_abi::encode_outcome(&Wire::Error(e), out),
            // Straight from the owned edits, with no slice of borrowed ones.
            Outcome::Edit(edits) => rustmq_etl_abi::encode_edits(edits.borrowed(), out),
        }
    }
}
