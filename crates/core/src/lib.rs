//! What every rustmq-etl crate agrees on: the message, and the contract between
//! the orchestrator and the engines that run modules.
//!
//! - A [`Message`] is what a broker hands to the ETL engine: a topic, an
//!   optional key, ordered headers, a payload and an optional timestamp. Key
//!   and payload are [`bytes::Bytes`], so a message is cheap to share between
//!   pipeline stages. Its JSON Lines form: [`Message::from_json_line`].
//! - A module occurrence ([`ModuleSpec`]: a module id with its
//!   [`ModuleSettings`]), what a call ends in ([`Outcome`], owned [`Edit`]s,
//!   [`Message::apply`]) or fails with ([`CallError`] of an [`ErrorKind`]).
//! - The contract ([`Engine`], [`ModuleRunner`], [`Task`], [`CallRequest`],
//!   [`CallReport`]): the wasmer pool implements it, and so does a plain-Rust
//!   stand-in for tests; the orchestrator runs modules through it only.
//!
//! ```
//! use rustmq_etl_core::Message;
//!
//! let line = r#"{"topic": "iot.sensors.temperature", "headers": {"content-type": "application/json"},
//!               "payload": {"unit": "celsius", "reading": 21.5}, "timestamp_ms": 1764201600000}"#;
//! let message = Message::from_json_line(line)?;
//! assert_eq!(message.topic, "iot.sensors.temperature");
//! assert_eq!(message.headers.get("content-type"), Some("application/json"));
//! assert_eq!(&message.payload[..], br#"{"unit":"celsius","reading":21.5}"#);
//! assert_eq!(message.size(), message.payload.len() + "content-type".len() + "application/json".len());
//! # Ok::<(), rustmq_etl_core::MessageParseError>(())
//! ```
#![warn(missing_docs)]

mod excerpt;
mod headers;
mod jsonl;
mod module;
mod outcome;
mod runner;
mod waiting;

pub use bytes::Bytes;
pub use excerpt::Excerpt;
pub use headers::{HeaderEdit, Headers};
pub use jsonl::{BatchError, MessageParseError};
pub use module::{defaults, ModuleSettings, ModuleSpec};
pub use outcome::{CallError, Edit, ErrorKind, Outcome, UnknownErrorKind};
pub use runner::{
    Busy, CallReport, CallRequest, Engine, LoadError, LoadStep, ModuleRunner, NoRunner, Step, Task,
};
pub use waiting::Waiting;

/// One message as the broker hands it to the ETL engine.
///
/// Fields carry no invariant beyond their types, so they are public.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The topic the message was published to.
    pub topic: String,
    /// The optional message key.
    pub key: Option<Bytes>,
    /// Headers in the order they were given; a name may repeat.
    pub headers: Headers,
    /// The message body.
    pub payload: Bytes,
    /// Milliseconds since the Unix epoch, if the producer set one.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    /// A message with the given topic and payload and nothing else.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            ..Message::default()
        }
    }

    /// The message's size as conditions see it: bytes of payload, key and every
    /// header name and value.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Bytes::len) + self.headers.byte_len()
    }

    /// The bytes the message holds: its topic's and [`size`](Self::size)'s,
    /// what limits on a message's growth and an answer's size count.
    pub fn full_size(&self) -> usize {
        self.topic.len() + self.size()
    }
}
