//! What a module call ends in, and its errors.

use std::fmt;

use bytes::Bytes;

use crate::headers::FEW_EDITS;
use crate::{HeaderEdit, Message};

/// One change a module makes to the message it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace the payload.
    SetPayload(Bytes),
    /// Set the key.
    SetKey(Bytes),
    /// Remove the key.
    ClearKey,
    /// Replace the topic.
    SetTopic(String),
    /// Replace every header of this name with one at the position of the
    /// first (or append it).
    SetHeader(String, String),
    /// Remove every header of this name.
    RemoveHeader(String),
    /// Set the timestamp (milliseconds since the Unix epoch).
    SetTimestamp(i64),
    /// Remove the timestamp.
    ClearTimestamp,
}

/// What a module call ended in, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The message goes on as it was.
    Unchanged,
    /// The module dropped the message (not an error).
    Dropped,
    /// The module's edits, to apply in order to the message it was given.
    Edited(Vec<Edit>),
}

impl Message {
    /// Applies `edits` in order: a field that several edits name ends with
    /// the last one's value. Header edits are applied in one pass linear in
    /// the headers and the edits ([`Headers::apply`](crate::Headers::apply)),
    /// or, when `edits` are known to be a handful, one by one, the headers
    /// keeping the strings the edits own.
    pub fn apply(&mut self, edits: impl IntoIterator<Item = Edit>) {
        let edits = edits.into_iter();
        let few = edits.size_hint().1.is_some_and(|n| n <= FEW_EDITS);
        let mut headers = Vec::new();
        for edit in edits {
            match edit {
                Edit::SetPayload(payload) => self.payload = payload,
                Edit::SetKey(key) => self.key = Some(key),
                Edit::ClearKey => self.key = None,
                Edit::SetTopic(topic) => self.topic = topic,
                Edit::SetTimestamp(ms) => self.timestamp_ms = Some(ms),
                Edit::ClearTimestamp => self.timestamp_ms = None,
                Edit::SetHeader(name, value) if few => self.headers.set(name, value),
                Edit::RemoveHeader(name) if few => {
                    self.headers.remove(&name);
                }
                Edit::SetHeader(name, value) => headers.push((name, Some(value))),
                Edit::RemoveHeader(name) => headers.push((name, None)),
            }
        }
        if !headers.is_empty() {
            self.headers
                .apply(headers.iter().map(|(name, value)| match value {
                    Some(value) => HeaderEdit::Set(name, value),
                    None => HeaderEdit::Remove(name),
                }));
        }
    }
}

/// What kind of failure a call ended in: execution.md's kinds, whose names
/// ([`ErrorKind::as_str`]) are the same in metrics labels, traces and
/// dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call ran past the module's own `execution_timeout_ms`.
    Timeout,
    /// The stage's `stage_timeout_ms` ran out while the module ran.
    StageTimeout,
    /// The pipeline's `global_timeout_ms` ran out while the module ran.
    PipelineTimeout,
    /// The module trapped: a panic, stack overflow, bad memory access, …
    Trap,
    /// The module tried to grow its memory past its limit.
    MemoryLimit,
    /// The host refused what the module answered.
    InvalidOutput,
    /// The module answered "error" with a text.
    GuestError,
    /// The module's circuit breaker is open.
    CircuitOpen,
    /// The module is not loaded or cannot start, or the engine is shutting down.
    Unavailable,
}

impl ErrorKind {
    /// Every kind, in a fixed order (metrics tables use it). A slice, not an
    /// array: its length is not part of the type, so a kind added later
    /// breaks no program that uses it.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Timeout,
        ErrorKind::StageTimeout,
        ErrorKind::PipelineTimeout,
        ErrorKind::Trap,
        ErrorKind::MemoryLimit,
        ErrorKind::InvalidOutput,
        ErrorKind::GuestError,
        ErrorKind::CircuitOpen,
        ErrorKind::Unavailable,
    ];

    /// The stable `snake_case` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::StageTimeout => "stage_timeout",
            ErrorKind::PipelineTimeout => "pipeline_timeout",
            ErrorKind::Trap => "trap",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::GuestError => "guest_error",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// Whether `RetryWithBackoff` calls the module again after this failure:
    /// every kind but the stage and pipeline timeouts and an open circuit.
    pub const fn is_retryable(self) -> bool {
        !matches!(
            self,
            ErrorKind::StageTimeout | ErrorKind::PipelineTimeout | ErrorKind::CircuitOpen
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`ErrorKind`]'s (see [`ErrorKind::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an error kind (one of {kinds})", kinds = ErrorKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownErrorKind(pub String);

impl std::str::FromStr for ErrorKind {
    type Err = UnknownErrorKind;

    /// The kind of a stable name, as [`ErrorKind::as_str`] gives it (a
    /// metrics label, a trace, a dead letter's `etl-dlq-error-kind`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownErrorKind(name.to_owned()))
    }
}

/// A failed call: its kind, and what happened, for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CallError {
    kind: ErrorKind,
    message: String,
}

impl CallError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One edit at a time, each as plainly as it reads.
    fn reference(mut m: Message, edits: &[Edit]) -> Message {
        for edit in edits.iter().cloned() {
            match edit {
                Edit::SetPayload(payload) => m.payload = payload,
                Edit::SetKey(key) => m.key = Some(key),
                Edit::ClearKey => m.key = None,
                Edit::SetTopic(topic) => m.topic = topic,
                Edit::SetTimestamp(ms) => m.timestamp_ms = Some(ms),
                Edit::ClearTimestamp => m.timestamp_ms = None,
                Edit::SetHeader(name, value) => m.headers.set(name.as_str(), value.as_str()),
                Edit::RemoveHeader(name) => {
                    m.headers.remove(&name);
                }
            }
        }
        m
    }

    #[test]
    fn an_error_kind_reads_back_from_its_name_and_nothing_else_does() {
        for &kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
        let unknown = "Timeout".parse::<ErrorKind>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "\"Timeout\" is not an error kind (one of timeout, stage_timeout, pipeline_timeout, \
             trap, memory_limit, invalid_output, guest_error, circuit_open, unavailable)"
        );
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let name = (0u8..4).prop_map(|n| format!("h{n}"));
        prop_oneof![
            (0u8..3).prop_map(|p| Edit::SetPayload(Bytes::from(vec![p]))),
            (0u8..3).prop_map(|k| Edit::SetKey(Bytes::from(vec![k]))),
            Just(Edit::ClearKey),
            (0u8..3).prop_map(|t| Edit::SetTopic(format!("t{t}"))),
            (0i64..3).prop_map(Edit::SetTimestamp),
            Just(Edit::ClearTimestamp),
            (name.clone(), 0u8..3).prop_map(|(n, v)| Edit::SetHeader(n, format!("v{v}"))),
            name.prop_map(Edit::RemoveHeader),
        ]
    }

    proptest! {
        // A list of a known handful of edits takes the one-by-one path, a
        // longer one or one of unknown length the headers' one pass.
        #[test]
        fn apply_agrees_with_one_edit_at_a_time(
            start in proptest::collection::vec((0u8..4, 0u8..3), 0..6),
            edits in proptest::collection::vec(edit(), 0..20),
        ) {
            let mut m = Message::new("t", "p");
            for (n, v) in start {
                m.headers.push(format!("h{n}"), format!("v{v}"));
            }
            let expected = reference(m.clone(), &edits);
            let mut known = m.clone();
            known.apply(edits.clone());
            prop_assert_eq!(&known, &expected);
            let mut unknown = m;
            let mut each = edits.into_iter();
            unknown.apply(std::iter::from_fn(move || each.next()));
            prop_assert_eq!(unknown, expected);
        }
    }

    #[test]
    fn edits_apply_in_order_and_each_field_once() {
        let mut m = Message::new("t", "p");
        m.headers.push("a", "1");
        m.headers.push("a", "2");
        m.apply([
            Edit::SetPayload(Bytes::from_static(b"q")),
            Edit::SetTopic("u".into()),
            Edit::SetHeader("a".into(), "3".into()),
            Edit::SetHeader("b".into(), "4".into()),
            Edit::RemoveHeader("b".into()),
            Edit::SetKey(Bytes::from_static(b"k")),
            Edit::ClearKey,
            Edit::SetTimestamp(7),
        ]);
        assert_eq!(&m.payload[..], b"q");
        assert_eq!(m.topic, "u");
        assert_eq!(m.headers.iter().collect::<Vec<_>>(), [("a", "3")]);
        assert_eq!((m.key, m.timestamp_ms), (None, Some(7)));
    }

    #[test]
    fn kinds_have_stable_names_and_retry_rules() {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "timeout",
                "stage_timeout",
                "pipeline_timeout",
                "trap",
                "memory_limit",
                "invalid_output",
                "guest_error",
                "circuit_open",
                "unavailable"
            ]
        );
        let not_retried: Vec<ErrorKind> = ErrorKind::ALL
            .iter()
            .copied()
            .filter(|k| !k.is_retryable())
            .collect();
        assert_eq!(
            not_retried,
            [
                ErrorKind::StageTimeout,
                ErrorKind::PipelineTimeout,
                ErrorKind::CircuitOpen
            ]
        );
    }
}
