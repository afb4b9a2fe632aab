//! The byte encoding shared by the rustmq-etl host and its WebAssembly guests.
//!
//! One small `no_std` + `alloc` crate so that both sides use one tested codec.
//! The host encodes a [message](MessageParts) into the guest's memory; the guest
//! answers with an [outcome](Outcome): unchanged, dropped, a list of
//! [edits](Edit), or an error. Decoding borrows from the input and never panics,
//! whatever the bytes: every length is checked against what is left before it is
//! used, and nothing is allocated in proportion to a length read from the input.
//! A decoded outcome's strings are checked as it is decoded; a message's are
//! checked when the guest reads them (see [`MessageView`]), so a guest pays only
//! for what it reads.
//! `docs/abi.md` describes the whole contract; this crate is its byte layer.
//!
//! ```
//! use rustmq_etl_abi::{decode_message, encode_message, MessageParts};
//!
//! let headers = [("content-type", "application/json")];
//! let message = MessageParts {
//!     topic: "iot.sensors.temperature",
//!     key: Some(b"dev-1"),
//!     headers: headers.iter().copied(),
//!     payload: br#"{"reading": 21.5}"#,
//!     timestamp_ms: Some(1_764_201_600_000),
//! };
//! let mut bytes = Vec::new();
//! encode_message(message, &mut bytes);
//! let view = decode_message(&bytes)?;
//! view.check()?; // every string is UTF-8 (optional: reading checks too)
//! assert_eq!(view.topic(), "iot.sensors.temperature");
//! assert_eq!(view.header("content-type"), Some("application/json"));
//! assert_eq!(view.payload(), br#"{"reading": 21.5}"#);
//! # Ok::<(), rustmq_etl_abi::DecodeError>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

mod error;
mod message;
mod outcome;
mod reader;

pub use error::DecodeError;
pub use message::{
    decode_message, encode_message, encode_message_into, encoded_len, HeaderIter, MessageParts,
    MessageView,
};
pub use outcome::{
    decode_outcome, encode_edits, encode_outcome, Edit, EditIter, Outcome, OutcomeView,
    ENCODED_DROP, ENCODED_UNCHANGED,
};

/// The version of the guest ABI this crate encodes: the first byte of every
/// encoded message, and the value a guest's `rmq_abi_version` export returns.
pub const ABI_VERSION: u8 = 1;

/// Most edits one answer may hold (the host refuses an answer with more:
/// its work and memory for applying an answer stay linear in its size and
/// bounded whatever the output cap).
pub const MAX_EDITS: usize = 65_536;

/// What the host makes of an error answer without a text.
pub const ERROR_WITHOUT_TEXT: &str = "the module answered an error without a text";

/// The most of an error answer's text the host keeps (bytes): it becomes a
/// dead letter's header and a log line.
pub const MAX_ERROR_TEXT: usize = 4 << 10;

/// The error the host makes of an error answer's `text`: [`ERROR_WITHOUT_TEXT`]
/// for one that is empty or blank; cut after [`MAX_ERROR_TEXT`] bytes, at a
/// character, saying how many bytes more there were; then made one line
/// ([`printable`]: what would end it or change how it shows as escapes,
/// so that up to six times as long where it was control characters).
pub fn error_text(text: &str) -> alloc::string::String {
    use alloc::borrow::ToOwned;
    if text.trim().is_empty() {
        return ERROR_WITHOUT_TEXT.to_owned();
    }
    printable_cut(text, MAX_ERROR_TEXT)
}

/// A module's `text` as the host quotes it: cut after `most` bytes, at a
/// character, saying how many bytes more there were, and made one line
/// ([`printable`]).
pub fn printable_cut(text: &str, most: usize) -> alloc::string::String {
    if text.len() <= most {
        return printable(text).into_owned();
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    alloc::format!(
        "{}… ({} bytes more)",
        printable(&text[..end]),
        text.len() - end
    )
}

/// A module's text made one line that cannot pass for the host's, for the
/// host's log and the errors that quote it: control characters (line ends,
/// a terminal's escape sequences; a tab stays) and the characters that end
/// or reorder a line as shown (line and paragraph separators, bidirectional
/// marks and overrides) are written as escapes (`\n`, `\u{1b}`); the rest,
/// a backslash included, as it is.
pub fn printable(text: &str) -> alloc::borrow::Cow<'_, str> {
    let shown_as_escape = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    };
    if !text.chars().any(shown_as_escape) {
        return alloc::borrow::Cow::Borrowed(text);
    }
    let mut out = alloc::string::String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if shown_as_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    alloc::borrow::Cow::Owned(out)
}
